"""Training recipes: which optimizer, and which learning-rate schedule.

A recipe is given to the tracker, which builds the optimizer and its schedule at the start
and again after every restructure (the library drops both when it restructures the model,
so every restructure also puts the learning rate back to its start). The library steps the
schedule itself, once per validation score; the plain loop does the same per epoch.

    adam, none        this project's default (Adam at 1e-3, no schedule)
    adadelta, step    the library's MNIST example: Adadelta at lr 1.0, StepLR(step 1, gamma 0.7)
    adam, plateau     the library's API README: Adam with ReduceLROnPlateau(mode max), whose
                      patience is half the switch patience (5 at the library's default 10)
    any, cosine       cosine annealing to 0 over the epoch cap (a schedule people pick today)
"""

from dataclasses import dataclass

import torch

OPTIMIZERS = {"adam": torch.optim.Adam, "adadelta": torch.optim.Adadelta}
SCHEDULES = ("none", "cosine", "step", "plateau")


@dataclass(frozen=True)
class Recipe:
    optimizer: str = "adam"
    lr: float = 1e-3
    schedule: str = "none"
    epochs: int = 200     # the cosine schedule anneals over the epoch cap
    patience: int = 5     # epochs without improvement before a switch; plateau uses half

    def optimizer_class(self):
        return OPTIMIZERS[self.optimizer]

    def scheduler(self):
        """(scheduler class, its arguments but the optimizer), or (None, None)."""
        lr_scheduler = torch.optim.lr_scheduler
        return {"none": (None, None),
                "cosine": (lr_scheduler.CosineAnnealingLR, {"T_max": self.epochs}),
                "step": (lr_scheduler.StepLR, {"step_size": 1, "gamma": 0.7}),
                "plateau": (lr_scheduler.ReduceLROnPlateau, {"mode": "max", "patience": max(1, self.patience // 2)}),
                }[self.schedule]

    def build(self, parameters):
        """(optimizer, scheduler or None) for the plain loop."""
        optimizer = self.optimizer_class()(parameters, lr=self.lr)
        cls, kwargs = self.scheduler()
        return optimizer, (cls(optimizer, **kwargs) if cls else None)


def step_schedule(scheduler, val_acc):
    """One epoch's step, as the library takes it: ReduceLROnPlateau watches the score."""
    if isinstance(scheduler, torch.optim.lr_scheduler.ReduceLROnPlateau):
        scheduler.step(val_acc)
    elif scheduler is not None:
        scheduler.step()
