"""What drives Phase 2: a tracker that takes each epoch's scores and says what happens next.

`Tracker` is the interface the training loop relies on. Two classes satisfy it:
dendrites.PerforatedTracker (perforatedai's tracker: adds dendrite sets, rolls back sets that do not
help, ends with the best model over all architectures) and EarlyStopping here (the plain
loop: keeps the best-validation weights, stops when validation stalls, and can replay a
dendritic run's restarts and learning rates as its control). This module never imports
perforatedai: a plain run does not load it.
"""

import contextlib
import dataclasses
from dataclasses import dataclass
from typing import ContextManager, Protocol, runtime_checkable

import torch

from model import count_parameters

from .recipes import Recipe, step_schedule


@dataclass
class Restructure:
    epoch: int
    kind: str           # "dendrites added" | "dendrites rolled back" | "reloaded" | "training complete"
                        # | "optimizer restarted" (the restart control)
    detail: str
    params_before: int
    params_after: int
    dendrite_sets: int  # after the restructure
    val_acc: float


@dataclass
class Step:
    """What one epoch's scores made the tracker do."""
    model: torch.nn.Module         # the tracker may return a different object
    restructure: Restructure | None
    complete: bool                 # training is over; the best model is loaded
    new_best: bool                 # this epoch's model is the tracker's new best
    drew_graph: bool = False       # the library drew its graph during this call


@runtime_checkable
class Tracker(Protocol):
    """The tracker the training loop drives, one epoch at a time."""

    files: tuple[str, ...]  # the files it keeps in the run folder, snapshotted for --resume
    reads_test: bool  # whether add_scores uses each epoch's test score (else it is not measured)

    def guarded(self) -> ContextManager:
        """Context in which its library's error paths raise instead of hanging or exiting 0."""

    def convert(self, model: torch.nn.Module) -> torch.nn.Module:
        """Phase 1: the model as this tracker trains it."""

    def dendrite_modules(self) -> list[str]:
        """Names of the layers that can grow dendrites (none for a plain run)."""

    def new_optimizer(self, model: torch.nn.Module) -> torch.optim.Optimizer:
        """The recipe's optimizer and schedule; again after every restructure."""

    @property
    def scheduler(self) -> object | None:
        """The learning-rate schedule the tracker steps itself, or None."""

    def add_scores(self, model: torch.nn.Module, epoch: int, train_acc: float, val_acc: float,
                   test_acc: float | None) -> Step:
        """Hand over one epoch's scores; the tracker may restructure or end training."""

    def count_params(self, model: torch.nn.Module) -> int: ...

    def dendrite_sets(self) -> int: ...

    def state_dict(self, model: torch.nn.Module) -> dict:
        """What --resume needs from the tracker besides its files."""

    def resume(self, model: torch.nn.Module, state: dict) -> torch.nn.Module: ...

    def draw_graph(self) -> None:
        """Draw the library's graph now (plain runs: nothing)."""

    def final_model(self, model: torch.nn.Module) -> torch.nn.Module:
        """The model the run reports: the one validation chose."""

    def clean_copy(self, model: torch.nn.Module) -> torch.nn.Module:
        """The model for inference, training scaffolding removed."""


class EarlyStopping:
    """The plain loop's tracker: keep the best-validation weights; stop after `patience`
    epochs without a strictly better validation accuracy, but not before `min_epochs`.
    Steps the recipe's schedule once per epoch, as the library does. The restart control of
    a dendritic run: after each epoch in `restarts` it has the optimizer and schedule
    rebuilt, as the library does at a restructure, and epoch e trains at the learning rate
    lr_trace[e - 1], as the dendritic run's did (the library advances a rebuilt schedule by
    steps of its own)."""

    files = ()  # nothing on disk besides the checkpoint's state
    reads_test = False  # the test split is scored once, on the model validation chose

    def __init__(self, patience, min_epochs=1, recipe=Recipe(), restarts=(), lr_trace=(), restart_lr=1.0):
        self.patience, self.min_epochs, self.recipe, self.restarts = patience, min_epochs, recipe, set(restarts)
        self.lr_trace, self.restart_lr = list(lr_trace), restart_lr
        self.best_acc, self.best_epoch, self.best_state = -1.0, 0, None
        self.scheduler, self.optimizer, self.epochs_scored, self.optimizers_built = None, None, 0, 0

    def guarded(self):
        return contextlib.nullcontext()

    def convert(self, model):
        return model

    def dendrite_modules(self):
        return []

    def new_optimizer(self, model):
        """The recipe's optimizer and schedule; after a restart at restart_lr times its rate."""
        lr = self.recipe.lr * (self.restart_lr if self.optimizers_built else 1)
        self.optimizer, self.scheduler = dataclasses.replace(self.recipe, lr=lr).build(model.parameters())
        self.optimizers_built += 1
        self._follow_trace()
        return self.optimizer

    def _follow_trace(self):
        """The next epoch's learning rate from lr_trace, where it has one."""
        if self.epochs_scored < len(self.lr_trace):
            for group in self.optimizer.param_groups:
                group["lr"] = self.lr_trace[self.epochs_scored]

    def add_scores(self, model, epoch, train_acc, val_acc, test_acc):
        self.epochs_scored = epoch
        step_schedule(self.scheduler, val_acc)
        self._follow_trace()
        if val_acc > self.best_acc:
            self.best_acc, self.best_epoch = val_acc, epoch
            self.best_state = {k: v.detach().clone() for k, v in model.state_dict().items()}
        complete = epoch - self.best_epoch >= self.patience and epoch >= self.min_epochs
        restart = None
        if epoch in self.restarts and not complete:
            params = count_parameters(model)
            restart = Restructure(epoch, "optimizer restarted", "restart control: optimizer and schedule "
                                  "rebuilt, as at the paired dendritic run's restructure", params, params, 0, val_acc)
        return Step(model, restart, complete, self.best_epoch == epoch)

    def count_params(self, model):
        return count_parameters(model)

    def dendrite_sets(self):
        return 0

    def state_dict(self, model):
        return {"model": model.state_dict(),
                "stopper": {"best_acc": self.best_acc, "best_epoch": self.best_epoch, "best_state": self.best_state},
                "optimizers_built": self.optimizers_built}

    def resume(self, model, state):
        model.load_state_dict(state["model"])
        self.best_acc, self.best_epoch, self.best_state = (state["stopper"][k] for k in
                                                           ("best_acc", "best_epoch", "best_state"))
        self.optimizers_built = state.get("optimizers_built", 0)  # saved since restart_lr
        return model

    def draw_graph(self):
        pass

    def final_model(self, model):
        model.load_state_dict(self.best_state)  # the weights of the epoch validation chose
        return model

    def clean_copy(self, model):
        return model
