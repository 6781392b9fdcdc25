"""What a study will cost before it starts, a time budget, and its progress as it goes.

The cost model: a run costs OVERHEAD_S (starting, exporting, quantizing and timing its model)
plus, per epoch, its training images times the seconds one training image takes at its model's
width, and its validation and test images times the seconds one takes to evaluate. Those two
rates are measured here, on this machine, on the user's model and images (a few batches of
each width, timed; `measure_rates`). A dendritic run trains its first schedule at its base
width and its second with one dendrite set, which doubles the layers' work: DENDRITE_FACTOR
on its epochs. As runs finish, the estimate of what is left is scaled by how far the finished
runs were from their own estimates.
"""

import time
from dataclasses import dataclass

import torch

from neuroshrink import augment, data, models, precision, recipes
from neuroshrink.training import CrossEntropy, evaluate, train_one_epoch

OVERHEAD_S = 3.0       # per run beside its epochs: set-up, export, ONNX checks, int8, timing (2-core AMD EPYC)
DENDRITE_OVERHEAD_S = 1.0  # a dendritic run's besides: the library's tracker and its graph
DENDRITE_FACTOR = 1.5  # a dendritic run's epochs: half at the base width, half with one set (about 2x)
DISTIL_FACTOR = 1.3    # a distilled run's epochs: the wide teacher's forward pass on every batch
TIMED_BATCHES = 4      # batches per width timed for the estimate, after one of warm-up

# Trials per method, seeds and the search's share of the training images, from the most certain
# answer to the cheapest: --minutes takes the first that fits.
LADDER = [(8, 3, 1), (6, 3, 1), (4, 3, 1), (4, 3, 2), (4, 2, 2), (3, 2, 2), (2, 2, 2), (2, 2, 4), (1, 2, 4)]


@dataclass(frozen=True)
class Run:
    stage: str          # "search", "seeds" or "wide"
    method: str
    budget: int | None  # None: the wide model
    width: float        # the width whose training speed it has
    epochs: int
    images: int         # training images
    factor: float = 1.0  # on its epochs' cost
    dendritic: bool = False


def measure_rates(model_name, splits, widths, recipe):
    """Seconds per training image and per evaluated image at each width, on this machine: a few
    batches of the recipe's batch size, timed after a warm-up batch."""
    settings = recipes.defaults(recipe, data.label(splits.name))
    batch = settings.get("batch_size", 64)
    augmentation = augment.Augment.named(augment.resolve(settings.get("augment", "none"), data.label(splits.name)))
    amp = precision.Precision("fp32", torch.device("cpu"))
    generator = torch.Generator().manual_seed(0)
    rates = {}
    for width in sorted(set(widths)):
        torch.manual_seed(0)
        model = models.build(model_name, splits, width)
        optimizer = torch.optim.AdamW(model.parameters(), lr=1e-3)
        x, y = splits.train
        train_one_epoch(model, optimizer, x[:batch], y[:batch], batch, generator, amp, CrossEntropy(), augmentation)
        n = min(len(y), TIMED_BATCHES * batch)
        start = time.perf_counter()
        train_one_epoch(model, optimizer, x[:n], y[:n], batch, generator, amp, CrossEntropy(), augmentation)
        train_rate = (time.perf_counter() - start) / n
        images = splits.val[0][:4096]
        start = time.perf_counter()
        evaluate(model, images, splits.val[1][:4096])
        rates[width] = (train_rate, (time.perf_counter() - start) / len(images))
    return rates


def seconds(run, rates, eval_images):
    train_rate, eval_rate = rates[run.width]
    return (OVERHEAD_S + DENDRITE_OVERHEAD_S * run.dendritic
            + run.epochs * run.factor * (run.images * train_rate + eval_images * eval_rate))


def fit_ladder(estimate, minutes, trials=None, seeds=None):
    """The first (trials, seeds, search share) of LADDER, with --trials/--seeds where given,
    whose estimate(trials, seeds, share) in seconds fits `minutes`; else the cheapest. Returns
    it with its estimate and whether it fits."""
    options = list(dict.fromkeys((trials or t, seeds or s, share) for t, s, share in LADDER))
    for option in options:
        cost = estimate(*option)
        if cost <= 60 * minutes:
            return option, cost, True
    return options[-1], estimate(*options[-1]), False


def minutes(s):
    return f"{s / 60:.1f}" if s < 600 else f"{s / 60:.0f}"


class Progress:
    """One line per finished run: a bar over every run of the plan, and the time left, the
    estimate of the runs still to come scaled by actual / estimated of those finished (without
    estimates: the finished runs' mean time for each run still to come)."""

    def __init__(self, remaining, out=None):  # None: sys.stdout as it is when a run finishes
        self.left = list(remaining)  # (key, estimated seconds) of each run still to train
        self.total, self.done = len(self.left), 0
        self.estimated = self.actual = 0.0
        self.started, self.out = time.perf_counter(), out

    def finished(self, key, actual):
        """A run of `key` (stage, method, budget) finished after `actual` seconds."""
        estimate = next((e for k, e in self.left if k == key), None)
        if estimate is None:  # not in the plan (another worker's share, say): nothing to scale by
            return
        self.left.remove((key, estimate))
        self.done += 1
        self.estimated, self.actual = self.estimated + estimate, self.actual + actual
        if self.estimated:
            scale = self.actual / self.estimated
            left, how = scale * sum(e for _, e in self.left), f"finished runs took {scale:.2f}x their estimate"
        else:  # no estimate (early stopping decides the epochs): the finished runs' mean
            left, how = self.actual / self.done * len(self.left), "at the finished runs' mean"
        filled = round(20 * self.done / max(self.total, 1))
        print(f"progress: [{'#' * filled}{'.' * (20 - filled)}] {self.done}/{self.total} runs, "
              f"{minutes(time.perf_counter() - self.started)} min so far, about {minutes(left)} min left "
              f"({how})", file=self.out, flush=True)
