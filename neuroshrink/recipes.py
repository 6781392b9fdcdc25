"""Training recipes: the optimizer, its learning-rate schedule, and what the loss and the
batches get (label smoothing, augmentation).

A recipe is given to the tracker, which builds the optimizer and its schedule at the start
and again after every restructure (the library drops both when it restructures the model,
so every restructure also starts the schedule again). The library steps the schedule
itself, once per validation score; the plain loop does the same per epoch.

    adam, none        this project's default (Adam at 1e-3, no schedule)
    adadelta, step    the library's MNIST example: Adadelta at lr 1.0, StepLR(step 1, gamma 0.7)
    adam, plateau     the library's API README: Adam with ReduceLROnPlateau(mode max), whose
                      patience is half the switch patience (5 at the library's default 10)
    any, cosine       cosine annealing to 0 over the schedule's epochs, after `warmup` epochs
                      rising linearly to the learning rate (a schedule people pick today)

`--recipe` names a set of defaults for these flags (RECIPES); a flag given on the command
line overrides its recipe's value.
"""

import math
from dataclasses import dataclass, fields

import torch

OPTIMIZERS = {"adam": torch.optim.Adam, "adamw": torch.optim.AdamW, "adadelta": torch.optim.Adadelta}
SCHEDULES = ("none", "cosine", "step", "plateau")
AUGMENTS = ("none", "shift", "shift-flip", "auto")  # auto: shift-flip where the data allows flips

# Each recipe's defaults of train_phase2's flags. "default" is what every committed command
# before --recipe meant; "strong" is the modern recipe (docs/recipe.md says how it was chosen).
# Its plain runs train the whole fixed budget and report the epoch validation chose; its
# dendritic runs add dendrites as each schedule ends (switch "fixed"), not when validation
# stalls mid-schedule (switch "history", after `patience` epochs).
RECIPES = {
    "default": dict(optimizer="adam", lr=1e-3, weight_decay=0.0, schedule="none", warmup=0, label_smoothing=0.0,
                    augment="none", batch_size=64, epochs=200, patience=5, channels_last=False, switch="history"),
    "strong": dict(optimizer="adamw", lr=3e-3, weight_decay=0.05, schedule="cosine", warmup=2, label_smoothing=0.1,
                   augment="auto", batch_size=256, epochs=30, patience=3, channels_last=True, switch="fixed"),
}


# A recipe's changes for one data set. Digits (1,077 training images of 8x8 pixels): batch 256
# is 5 steps an epoch, and a 2-pixel shift moves a quarter of the image. Measured (net 3,658
# parameters, plain, seed 1, 30 epochs): 60.0 % at batch 256 with shifts, 89.4 % at batch 32
# with shifts, 97.8 % at batch 32 without.
VARIANTS = {("strong", "digits"): dict(batch_size=32, augment="none")}


def defaults(recipe, dataset):
    """The flags' values of `recipe` on `dataset` (a data.label): the recipe's, with its variant."""
    return RECIPES[recipe] | VARIANTS.get((recipe, dataset), {})


class WarmupCosine(torch.optim.lr_scheduler.LRScheduler):
    """Linear warm-up from lr/(warmup+1) to lr over `warmup` steps, then cosine annealing to
    0 at step `total`, then 0. A class with plain arguments (not a LambdaLR), so that the
    library can build it from (class, kwargs) and pickle it in its saves."""

    def __init__(self, optimizer, total, warmup=0, last_epoch=-1):
        self.total, self.warmup = total, warmup
        super().__init__(optimizer, last_epoch)

    def factor(self, step):
        if step < self.warmup:
            return (step + 1) / (self.warmup + 1)
        progress = min(1.0, (step - self.warmup) / max(1, self.total - self.warmup))
        return 0.5 * (1 + math.cos(math.pi * progress))

    def get_lr(self):
        return [base * self.factor(self.last_epoch) for base in self.base_lrs]


DEFAULT = RECIPES["default"]


@dataclass(frozen=True)
class Recipe:
    """What builds a run's optimizer and schedule; the defaults are the default recipe's."""
    optimizer: str = DEFAULT["optimizer"]
    lr: float = DEFAULT["lr"]
    schedule: str = DEFAULT["schedule"]
    schedule_epochs: int = DEFAULT["epochs"]  # the cosine schedule's length; each restructure starts a new one
    patience: int = DEFAULT["patience"]  # epochs without improvement before a switch; plateau uses half
    weight_decay: float = DEFAULT["weight_decay"]  # AdamW: decoupled; Adam and Adadelta: added to the gradient
    warmup: int = DEFAULT["warmup"]  # epochs of linear warm-up before the cosine schedule

    @classmethod
    def of(cls, config):
        """The recipe a run's (resolved) config trains with: its settings of these names."""
        return cls(**{f.name: getattr(config, f.name) for f in fields(cls)})

    def optimizer_class(self):
        return OPTIMIZERS[self.optimizer]

    def optimizer_args(self):
        """The optimizer's arguments but its parameters."""
        return {"lr": self.lr, **({"weight_decay": self.weight_decay} if self.weight_decay else {})}

    def scheduler(self):
        """(scheduler class, its arguments but the optimizer), or (None, None)."""
        lr_scheduler = torch.optim.lr_scheduler
        return {"none": (None, None),
                "cosine": ((WarmupCosine, {"total": self.schedule_epochs, "warmup": self.warmup}) if self.warmup
                           else (lr_scheduler.CosineAnnealingLR, {"T_max": self.schedule_epochs})),  # as before warm-up existed
                "step": (lr_scheduler.StepLR, {"step_size": 1, "gamma": 0.7}),
                "plateau": (lr_scheduler.ReduceLROnPlateau, {"mode": "max", "patience": max(1, self.patience // 2)}),
                }[self.schedule]

    def build(self, parameters):
        """(optimizer, scheduler or None) for the plain loop."""
        optimizer = self.optimizer_class()(parameters, **self.optimizer_args())
        cls, kwargs = self.scheduler()
        return optimizer, (cls(optimizer, **kwargs) if cls else None)


def step_schedule(scheduler, val_acc):
    """One epoch's step, as the library takes it: ReduceLROnPlateau watches the score."""
    if isinstance(scheduler, torch.optim.lr_scheduler.ReduceLROnPlateau):
        scheduler.step(val_acc)
    elif scheduler is not None:
        scheduler.step()
