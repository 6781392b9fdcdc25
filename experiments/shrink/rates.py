"""What a run of each width costs on this machine, as a study's runs will train: the seconds per
training and per evaluated image in each precision, an epoch's snapshot, and for a dendritic
run both of its schedules, on the model the library converted and with the set it adds. The
plan's cost model (plan.py) is built on these."""

import contextlib
import io
import tempfile
import time
from pathlib import Path
from typing import NamedTuple

import torch

from neuroshrink import allocator, augment, build, data, placement, precision, recipes
from neuroshrink.training import CrossEntropy, evaluate, train_one_epoch

TIMED_BATCHES = 4      # batches per width timed for the estimate, after one of warm-up
EVALUATED = 4096       # validation images per width timed for it, after one pass of warm-up


class Rate(NamedTuple):
    """What a run of one width costs on this machine, in one precision."""
    train: float        # seconds per training image
    evaluate: float     # seconds per evaluated image
    checkpoint: float   # seconds per epoch's snapshot (the model and its optimizer, written to disk)
    params: int
    grown: tuple | None = None  # a dendritic run's (train, evaluate) over its two schedules, measured


def measure_rates(model_name, splits, widths, recipe, names, dendritic_widths=()):
    """{precision: {width: Rate}} on this machine, as the runs will train and evaluate: the
    recipe's batch size and memory format, in each precision of `names`; a few batches, timed
    after a warm-up batch; and one snapshot written. At `dendritic_widths` also the model the
    library converted, before and after it adds a dendrite set (its second schedule's)."""
    allocator.keep_freed_memory()  # as the runs will have it (build.hardware)
    settings = recipes.defaults(recipe, data.label(splits.name))
    batch = settings.get("batch_size", 64)
    augmentation = augment.Augment.named(augment.resolve(settings.get("augment", "none"), data.label(splits.name)))
    (x, y), (images, labels) = splits.train, (splits.val[0][:EVALUATED], splits.val[1][:EVALUATED])
    n = min(len(y), TIMED_BATCHES * batch)

    def model_at(width):
        torch.manual_seed(0)
        model = build.build(model_name, splits, width)
        return model.to(memory_format=torch.channels_last) if settings.get("channels_last") else model

    def timed(model, optimizer, amp):
        """(seconds per training image, per evaluated image), each after a warm-up pass."""
        generator = torch.Generator().manual_seed(0)
        train_one_epoch(model, optimizer, x[:batch], y[:batch], splits.normalise, batch, generator, amp,
                        CrossEntropy(), augmentation)
        start = time.perf_counter()
        train_one_epoch(model, optimizer, x[:n], y[:n], splits.normalise, batch, generator, amp, CrossEntropy(),
                        augmentation)
        train = (time.perf_counter() - start) / n
        evaluate(model, images, labels, splits.normalise, amp)  # the first pass costs several times more
        start = time.perf_counter()
        evaluate(model, images, labels, splits.normalise, amp)
        return train, (time.perf_counter() - start) / len(images)

    rates = {name: {} for name in names}
    for width in sorted(set(widths)):
        model = model_at(width)
        optimizer = torch.optim.AdamW(model.parameters(), lr=1e-3)
        for name in names:
            amp = precision.Precision(name, torch.device("cpu"))  # each epoch's evaluation runs in it too
            grown = None
            if width in dendritic_widths:
                with library_folder():
                    converted, tracker = converted_at(model_at(width))
                    before = timed(converted, tracker.new_optimizer(converted), amp)
                    step = tracker.add_scores(converted, 1, 10.0, 10.0, 10.0)  # its capacity test adds a set
                    after = timed(step.model, tracker.new_optimizer(step.model), amp)
                grown = tuple((a + b) / 2 for a, b in zip(before, after))  # a schedule each
            rates[name][width] = Rate(*timed(model, optimizer, amp), snapshot_seconds(model, optimizer),
                                      sum(p.numel() for p in model.parameters()), grown)
    return rates


@contextlib.contextmanager
def library_folder():
    """The library writes into ./<its save name>/ and prints: here, a folder deleted after, and
    nothing printed."""
    with tempfile.TemporaryDirectory() as folder, contextlib.chdir(folder), contextlib.redirect_stdout(io.StringIO()):
        yield


def converted_at(model):
    """`model` converted by the library as a dendritic run converts it (every layer), with a
    tracker whose capacity test adds a dendrite set at its first score (train it first: the
    library sizes its dendrites' storage from a forward pass)."""
    from neuroshrink import dendrites  # perforatedai: loaded only where a study has dendritic runs
    tracker = dendrites.PerforatedTracker("timing", 1, 1, capacity_test=True, graph=False, graph_at_end=True,
                                          placed=placement.place(model, "all"))
    return tracker.convert(model), tracker


def snapshot_seconds(model, optimizer):
    """Seconds to write an epoch's snapshot as a run does: the model, its best weights so far and
    its optimizer's state (run_folder.save_epoch)."""
    with tempfile.TemporaryDirectory() as folder:
        start = time.perf_counter()
        torch.save({"model": model.state_dict(), "best": model.state_dict(), "optimizer": optimizer.state_dict()},
                   Path(folder) / "state.pt")
        return time.perf_counter() - start
