"""Everything this project asks of perforatedai, in one place.

The library keeps its state in module globals (GPA.pc settings, GPA.pai_tracker) and
writes its files into ./<save_name>/ of the current directory; the caller runs inside
the output folder's parent. What this file works around (docs/own-model.md and
docs/troubleshooting.md say more): settings persisted in the save folder, pdb and
sys.exit(0) on error paths, and a 2800x1400 graph redrawn on every epoch.
"""

import contextlib
import copy
import io
import pdb
import re
import warnings


from .config import DENDRITE_ACTIVATIONS
from .errors import LibraryError
from .recipes import Recipe
from .stopping import Restructure, Step

with contextlib.redirect_stdout(io.StringIO()):  # it prints a banner on import
    from perforatedai import globals_perforatedai as GPA
    from perforatedai import utils_perforatedai as UPA

# perforatedai 3.2 renamed initialize_pai to perforate_model; accept either.
_convert = getattr(UPA, "perforate_model", None) or UPA.initialize_pai

# Normalisation layers get no dendrites; untracked ones send the library into pdb.
NORM_LAYERS = ["BatchNorm1d", "BatchNorm2d", "BatchNorm3d", "GroupNorm", "LayerNorm",
               "InstanceNorm1d", "InstanceNorm2d", "InstanceNorm3d"]


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


# --dendrite-activation: the library's pai_forward_function, applied to a dendrite's output


def configure(patience, max_dendrites, capacity_test=False, improvement_threshold=None, candidate_init=None,
              activation="sigmoid", scheduled=False, switch_every=None, track=(), convert=()):
    """Fresh library settings for one run; they must all be set before conversion.
    Dendrites are added once validation has not improved for `patience` epochs (the library's
    history mode), or with `switch_every` every that many epochs (its fixed mode: at the end
    of each schedule, so that no architecture is cut off mid-schedule).
    None keeps the library's default (improvement_threshold [0.001, 0.0001, 0.0],
    candidate_weight_initialization_multiplier 0.01). With a learning-rate schedule
    (`scheduled`) its learning-rate search and dont_give_up_unless_learning_rate_lowered
    keep their defaults (on); without one they cannot work, and the search is turned off.
    `track`: ids of modules to leave without dendrites ("." + their name in the model);
    `convert`: class names of modules the library wraps whole (a block: one dendrite on its output)."""
    GPA.pc = type(GPA.pc)()  # forget settings of any earlier run in this process
    if _has_setting("configuration_confirmed"):  # 3.2+: skip its interactive picker
        _set("configuration_confirmed", True)
    _set("testing_dendrite_capacity", capacity_test)  # True: the library's smoke test
    _set("switch_mode", GPA.pc.DOING_HISTORY)         # add dendrites when val stalls...
    _set("n_epochs_to_switch", patience)               # ...for this many epochs
    if switch_every:                                   # or every this many epochs
        _set("switch_mode", GPA.pc.DOING_FIXED_SWITCH)
        _set("fixed_switch_num", switch_every)
    _set("max_dendrites", max_dendrites)
    if not scheduled or switch_every:
        _set("find_best_lr", False)                    # its LR search needs a scheduler
    _set("module_names_to_track", NORM_LAYERS)
    _set("module_ids_to_track", list(track))
    _set("unwrapped_modules_confirmed", bool(track))  # tracked on purpose: not its warning of untracked ones
    if convert:
        _set("module_names_to_perforate", GPA.pc.get_module_names_to_perforate() + list(convert))
    _set("pai_forward_function", DENDRITE_ACTIVATIONS[activation])
    if improvement_threshold is not None:  # the score gain that counts as improvement, per set added
        _set("improvement_threshold", list(improvement_threshold))
    if candidate_init is not None:         # scale of a new dendrite's initial weights
        _set("candidate_weight_initialization_multiplier", candidate_init)
    _set("silent", True)
    _set("verbose", False)


def count_params(model):
    """The library's count: a plain sum over parameters() double-counts wrapped layers."""
    return UPA.count_params(model)


UNWRAPPED = "The following params are not wrapped."
UNTRACKED = "The following params are not tracked or wrapped."


def conversion_messages(printed):
    """What the library printed while converting, passed on less the note that it saved its
    settings file, and with its lists of the parameters it leaves unwrapped (a line each and five
    lines of advice: 80 lines for a MobileNetV3-small's BatchNorm layers) said in a line each."""
    lines = [line for line in printed.splitlines() if not line.startswith("[PAI Config]")]
    if UNWRAPPED not in lines:
        return "".join(line + "\n" for line in lines)

    def listed(title):  # (the names under the title's dashed line up to the blank line, where they end)
        if title not in lines:
            return [], 0
        start = lines.index(title) + 2
        end = next((i for i in range(start, len(lines)) if not lines[i].strip()), len(lines))
        return lines[start:end], end

    (unwrapped, end), (untracked, untracked_end) = listed(UNWRAPPED), listed(UNTRACKED)
    modules = list(dict.fromkeys(name.rsplit(".", 1)[0].removesuffix(".main_module") for name in unwrapped))
    advice = next((i for i, line in enumerate(lines) if line.startswith("Modules that are not wrapped")), None)
    rest = advice + 5 if advice is not None else max(end, untracked_end)  # past its 5 lines of advice
    kept = lines[:lines.index(UNWRAPPED) - 2] + lines[rest:]
    said = [f"perforatedai: no dendrites on {len(modules)} modules it does not wrap ({len(unwrapped)} parameter "
            f"tensors): {', '.join(modules[:4])}{', ...' if len(modules) > 4 else ''}"]
    if untracked:  # the library warns that these can cause errors: every one named
        said.append(f"perforatedai: {len(untracked)} parameter tensors neither tracked nor wrapped, which it warns "
                    f"can cause errors: {', '.join(untracked)}")
    return "".join(line + "\n" for line in kept + said)


class PerforatedTracker:
    """The library's tracker, driven by validation scores (stopping.Tracker is the interface,
    stopping.EarlyStopping the plain loop's counterpart).

    The library keeps its state in module globals (GPA.pc, GPA.pai_tracker) and writes
    into ./<save_name>/: one at a time, run inside the output folder's parent.
    """

    files = ("latest.pt", "best_model.pt")  # what it reloads later: at resume and at each switch

    reads_test = True  # the library plots each epoch's test score in its graph (a run that draws none: False)

    def __init__(self, save_name, patience, max_dendrites, recipe=Recipe(), capacity_test=False,
                 graph_every_epoch=False, graph_at_end=False, switch_every=None, placed=None, restructure_lr=1.0,
                 graph=True, **library_settings):
        configure(patience, max_dendrites, capacity_test, scheduled=recipe.schedule != "none",
                  switch_every=switch_every, track=placed.track if placed else (),
                  convert=placed.convert if placed else (), **library_settings)
        self.switch_every = switch_every
        # Every optimizer after the first trains at restructure_lr times the recipe's rate.
        self.restructure_lr, self.optimizers_built = restructure_lr, 0
        self.save_name, self.recipe = save_name, recipe
        # The library redraws its 2800x1400 graph in every add_validation_score (0.4-0.8 s
        # here). Unless asked to, it is drawn only where it changes: in the call after a
        # restructure (right after one, its plotting fails on its own state) and at the end;
        # or at the end only.
        self.graph_every_epoch, self.graph_at_end = graph_every_epoch, graph_at_end
        self._graph_due = False
        # The graph is the test score's only reader (the tracker's decisions follow validation):
        # a run that never draws it (graph=False, and drawn only at the end) scores no test split.
        self.reads_test = graph or not graph_at_end

    def guarded(self):
        return guarded()

    def convert(self, model):
        """Phase 1: wrap every conv and linear layer with dendrite capacity."""
        printed = io.StringIO()
        try:
            with guarded(), contextlib.redirect_stdout(printed):
                return _convert(model, save_name=self.save_name, making_graphs=False, maximizing_score=True)
        finally:
            print(conversion_messages(printed.getvalue()), end="")

    def dendrite_modules(self):
        """Names of the modules that can grow dendrites."""
        return [m.name for m in GPA.pai_tracker.neuron_module_vector]

    def count_params(self, model):
        return count_params(model)

    def dendrite_sets(self):
        return GPA.pai_tracker.member_vars["num_dendrites_added"]

    def new_optimizer(self, model):
        """The recipe's optimizer and schedule, made by the tracker, which steps the schedule
        itself; rebuild after every restructure (it drops both)."""
        tracker = GPA.pai_tracker
        tracker.set_optimizer(self.recipe.optimizer_class())
        scheduler, scheduler_args = self.recipe.scheduler()
        if scheduler:
            tracker.set_scheduler(scheduler)
        params = [p for p in model.parameters() if p.requires_grad]
        args = self.recipe.optimizer_args()
        args["lr"] *= self.restructure_lr if self.optimizers_built else 1
        with guarded(), warnings.catch_warnings():
            # It steps a new schedule to its place before the optimizer's first step; torch warns.
            warnings.filterwarnings("ignore", re.escape("Detected call of `lr_scheduler.step()`"))
            made = tracker.setup_optimizer(model, {"params": params, **args}, scheduler_args)
        self.optimizers_built += 1
        return made[0] if isinstance(made, tuple) else made  # 3.2: (optimizer, scheduler); 3.1: optimizer

    @property
    def scheduler(self):
        """The schedule the tracker made and steps, or None."""
        mv = GPA.pai_tracker.member_vars
        return mv.get("scheduler_instance") if mv.get("scheduler") is not None else None

    @property
    def drawing_graph(self):
        """Whether the library will draw its graph in the next add_scores()."""
        return not self.graph_at_end and (self._graph_due or self.graph_every_epoch)

    def add_scores(self, model, epoch, train_acc, val_acc, test_acc):
        """Hand one epoch's scores to the tracker, which may add dendrites, roll back a set
        that did not help, or end training with the best model over all architectures."""
        tracker, mv = GPA.pai_tracker, GPA.pai_tracker.member_vars
        params, sets, tries, best = (count_params(model), self.dendrite_sets(), mv["num_dendrite_tries"],
                                     mv["global_best_validation_score"])
        drawing = tracker.making_graphs = self.drawing_graph  # it draws in this call when on
        try:
            with guarded():
                tracker.add_extra_score(train_acc, "Train")
                if self.reads_test:
                    tracker.add_test_score(test_acc, "Test")
                model, restructured, complete = tracker.add_validation_score(val_acc, model)
        finally:
            tracker.making_graphs = False
        self._graph_due = bool(restructured and not complete)
        step = Step(model, None, complete, mv["global_best_validation_score"] != best, drawing)
        if not (restructured or complete):
            return step

        now_sets, now_tries = self.dendrite_sets(), mv["num_dendrite_tries"]
        if complete:
            kind, detail = "training complete", (f"best model loaded: {now_sets} dendrite set(s), "
                                                 f"best val {mv['global_best_validation_score']:.2f}")
        elif now_sets > sets:
            kind = "dendrites added"
            detail = (f"dendrite set {now_sets} added " + (
                "(capacity test: one set per epoch)" if GPA.pc.get_testing_dendrite_capacity() else
                f"at the end of a {self.switch_every}-epoch schedule" if self.switch_every else
                f"after {GPA.pc.get_n_epochs_to_switch()} epochs without validation improvement"))
        elif now_tries > tries:
            kind, detail = "dendrites rolled back", (
                f"dendrite set {now_sets} did not improve validation: rolled back to the best model, "
                f"retrying with new dendrites (try {now_tries + 1} of {GPA.pc.get_max_dendrite_tries()})")
        else:
            kind, detail = "reloaded", "the tracker reloaded its best model"
        step.restructure = Restructure(epoch, kind, detail, params, count_params(model), now_sets, val_acc)
        return step

    # The library saves its own state in `files` at every epoch, all but this: its reload
    # resets the current architecture's best validation score to 0 and the epoch it last
    # improved to a later one, and with a schedule its learning-rate search's state, so a
    # resumed run would switch (or finish) later than an unbroken one.
    KEPT = ("current_best_validation_score", "epoch_last_improved", "committed_to_initial_rate",
            "current_step_count", "last_max_learning_rate_steps", "last_max_learning_rate_value",
            "current_n_learning_rate_initial_skip_steps", "initial_lr_test_epoch_count",
            "current_cycle_lr_max_scores")

    def state_dict(self, model):
        return {"tracker": {key: copy.deepcopy(GPA.pai_tracker.member_vars[key]) for key in self.KEPT},
                "optimizers_built": self.optimizers_built}

    def resume(self, model, state):
        """The model, its dendrites and the tracker's state from <save_name>/latest.pt."""
        with guarded():
            model = UPA.load_system(model, self.save_name, "latest", load_from_restart=True)
        GPA.pai_tracker.member_vars.update(state.get("tracker", {}))  # runs saved before it lack it
        self.optimizers_built = state.get("optimizers_built", 0)
        return model

    def draw_graph(self):
        """Have the library draw <save_name>/<save_name>.png now. Skipped right after a
        restructure, when it cannot plot (the next add_scores() draws it instead)."""
        if self._graph_due or not self.reads_test:  # (not reading test scores: a run that draws no graph)
            return
        tracker = GPA.pai_tracker
        tracker.making_graphs = True
        try:
            with guarded():
                tracker.save_graphs()
        finally:
            tracker.making_graphs = False

    def final_model(self, model):
        return model  # at completion the tracker has already loaded the best model

    def clean_copy(self, model):
        """The library's inference model: training scaffolding removed."""
        with guarded():
            return UPA.prepare_final_model(model)
