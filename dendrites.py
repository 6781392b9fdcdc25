"""Everything this project asks of perforatedai, in one place.

The library keeps its state in module globals (GPA.pc settings, GPA.pai_tracker) and
writes its files into ./<save_name>/ of the current directory; the caller runs inside
the output folder's parent. See ../shared/notes/perforatedai.md for the behaviour
this file works around: persisted settings, pdb and sys.exit(0) on error paths, and
a 2800x1400 graph redrawn on every epoch.
"""

import contextlib
import io
import pdb
from dataclasses import dataclass

import torch

with contextlib.redirect_stdout(io.StringIO()):  # it prints a banner on import
    from perforatedai import globals_perforatedai as GPA
    from perforatedai import utils_perforatedai as UPA

# perforatedai 3.2 renamed initialize_pai to perforate_model; accept either.
_convert = getattr(UPA, "perforate_model", None) or UPA.initialize_pai

# Normalisation layers get no dendrites; untracked ones send the library into pdb.
NORM_LAYERS = ["BatchNorm1d", "BatchNorm2d", "BatchNorm3d", "GroupNorm", "LayerNorm",
               "InstanceNorm1d", "InstanceNorm2d", "InstanceNorm3d"]


# When the library draws its graph (see add_scores): after a restructure, in the next call,
# or in every call when asked to.
_graph_due = False
_graph_every_epoch = False


class LibraryError(RuntimeError):
    """perforatedai failed; raised instead of its debugger or its sys.exit(0)."""


@contextlib.contextmanager
def guarded():
    """Run library code so that its error paths raise instead of hanging or 'succeeding'.

    Some paths call pdb.set_trace() (waits forever at a terminal) and some sys.exit(0)
    (a failure that reports success).
    """
    def refuse_debugger(*args, **kwargs):
        raise LibraryError("perforatedai reached an internal error path and tried to open "
                           "the debugger; its message is printed above")

    saved = pdb.set_trace
    pdb.set_trace = refuse_debugger
    try:
        yield
    except SystemExit as e:
        raise LibraryError(f"perforatedai stopped the run with sys.exit({e.code}); "
                           "its message is printed above") from None
    finally:
        pdb.set_trace = saved


def _has_setting(name):
    return hasattr(GPA.pc, f"get_{name}")  # set_<anything> exists; it prints and ignores


def _set(name, value):
    """Set GPA.pc.<name>; a misspelt or removed setting raises (the library only prints)."""
    if not _has_setting(name):
        raise LibraryError(f"this perforatedai has no setting {name!r}; requirements.txt pins "
                           "the version this project was written for")
    getattr(GPA.pc, f"set_{name}")(value)


def configure(patience, max_dendrites, capacity_test=False, graph_every_epoch=False):
    """Fresh library settings for one run; call before convert().

    graph_every_epoch: the library's default, redrawing its graph in every epoch (about
    0.4-0.8 s a time here); otherwise it is drawn after each restructure and at the end.
    """
    global _graph_due, _graph_every_epoch
    _graph_due, _graph_every_epoch = False, graph_every_epoch
    GPA.pc = type(GPA.pc)()  # forget settings of any earlier run in this process
    if _has_setting("configuration_confirmed"):  # 3.2+: skip its interactive picker
        _set("configuration_confirmed", True)
    _set("testing_dendrite_capacity", capacity_test)  # True: the library's smoke test
    _set("switch_mode", GPA.pc.DOING_HISTORY)         # add dendrites when val stalls...
    _set("n_epochs_to_switch", patience)               # ...for this many epochs
    _set("max_dendrites", max_dendrites)
    _set("find_best_lr", False)                        # its LR search needs a scheduler
    _set("module_names_to_track", NORM_LAYERS)
    _set("silent", True)
    _set("verbose", False)


def convert(model, save_name):
    """Phase 1: wrap every conv and linear layer with dendrite capacity."""
    printed = io.StringIO()
    try:
        with guarded(), contextlib.redirect_stdout(printed):
            return _convert(model, save_name=save_name, making_graphs=False, maximizing_score=True)
    finally:  # pass its messages on, less the note that it saved its settings file
        print("".join(line for line in printed.getvalue().splitlines(keepends=True)
                      if not line.startswith("[PAI Config]")), end="")


# The files in <save_name>/ the library reloads later: at resume, and at each switch.
CHECKPOINT_FILES = ("latest.pt", "best_model.pt")


def load_latest(model, save_name):
    """Resume: the model, its dendrites and the tracker's state from <save_name>/latest.pt."""
    with guarded():
        return UPA.load_system(model, save_name, "latest", load_from_restart=True)


def dendrite_modules():
    """Names of the layers that can grow dendrites."""
    return [m.name for m in GPA.pai_tracker.neuron_module_vector]


def count_params(model):
    return UPA.count_params(model)


def dendrite_sets():
    return GPA.pai_tracker.member_vars["num_dendrites_added"]


def new_optimizer(model, lr):
    """The tracker's optimizer; rebuild after every restructure (it drops the old one)."""
    GPA.pai_tracker.set_optimizer(torch.optim.Adam)
    params = [p for p in model.parameters() if p.requires_grad]
    with guarded():
        made = GPA.pai_tracker.setup_optimizer(model, {"params": params, "lr": lr})
    return made[0] if isinstance(made, tuple) else made  # 3.2: (optimizer, scheduler); 3.1: optimizer


@dataclass
class Restructure:
    epoch: int
    kind: str           # "dendrites added" | "dendrites rolled back" | "reloaded" | "training complete"
    detail: str
    params_before: int
    params_after: int
    dendrite_sets: int  # after the restructure
    val_acc: float


@dataclass
class Step:
    model: torch.nn.Module         # the tracker may return a different object
    restructure: Restructure | None
    complete: bool                 # training is over; the best model is loaded
    new_best: bool                 # this epoch's model is the tracker's new best
    drew_graph: bool               # the library drew its graph during this call


def add_scores(model, epoch, train_acc, val_acc, test_acc):
    """Hand one epoch's scores to the tracker, which may add dendrites, roll back a set
    that did not help, or end training with the best model over all architectures."""
    global _graph_due
    tracker, mv = GPA.pai_tracker, GPA.pai_tracker.member_vars
    params, sets, tries, best = (count_params(model), dendrite_sets(), mv["num_dendrite_tries"],
                                 mv["global_best_validation_score"])
    drawing = tracker.making_graphs = _graph_due or _graph_every_epoch  # it draws in this call when on
    try:
        with guarded():
            tracker.add_extra_score(train_acc, "Train")
            tracker.add_test_score(test_acc, "Test")
            model, restructured, complete = tracker.add_validation_score(val_acc, model)
    finally:
        tracker.making_graphs = False
    # After a restructure the library's plotting fails on its own state until the next
    # epoch's scores are in, so the graph is redrawn inside the next call.
    _graph_due = bool(restructured and not complete)
    step = Step(model, None, complete, mv["global_best_validation_score"] != best, drawing)
    if not (restructured or complete):
        return step

    now_sets, now_tries = dendrite_sets(), mv["num_dendrite_tries"]
    if complete:
        kind, detail = "training complete", (f"best model loaded: {now_sets} dendrite set(s), "
                                             f"best val {best_val_score():.2f}")
    elif now_sets > sets:
        kind = "dendrites added"
        detail = (f"dendrite set {now_sets} added " + (
            "(capacity test: one set per epoch)" if GPA.pc.get_testing_dendrite_capacity() else
            f"after {GPA.pc.get_n_epochs_to_switch()} epochs without validation improvement"))
    elif now_tries > tries:
        kind, detail = "dendrites rolled back", (
            f"dendrite set {now_sets} did not improve validation: rolled back to the best model, "
            f"retrying with new dendrites (try {now_tries + 1} of {GPA.pc.get_max_dendrite_tries()})")
    else:
        kind, detail = "reloaded", "the tracker reloaded its best model"
    step.restructure = Restructure(epoch, kind, detail, params, count_params(model), now_sets, val_acc)
    return step


def best_val_score():
    return GPA.pai_tracker.member_vars["global_best_validation_score"]


def draw_graph():
    """Have the library draw <save_name>/<save_name>.png now, e.g. when training ends.

    Skipped right after a restructure, when the library cannot plot (the next epoch's
    add_scores() draws it instead).
    """
    if _graph_due:
        return
    tracker = GPA.pai_tracker
    tracker.making_graphs = True
    try:
        with guarded():
            tracker.save_graphs()
    finally:
        tracker.making_graphs = False


def clean_copy(model):
    """The library's inference model: training scaffolding removed."""
    with guarded():
        return UPA.prepare_final_model(model)
