"""What the strong recipe's parts and a dendritic model cost per training epoch, each timed on
the project's train_one_epoch after a warm-up pass (`--recipe-costs`, `--dendritic-costs` of
python -m experiments.speed)."""

import contextlib
import io
import time

import torch

from neuroshrink import build, precision
from neuroshrink.training import train_one_epoch


def recipe_costs(splits, budget, fraction=0.25):
    """Seconds per training epoch (the project's train_one_epoch over a `fraction` of the
    training images, scaled to the whole) of the compact CNN at `budget` parameters, under
    each part of the strong recipe in turn, then compiled (torch.compile) in each precision;
    one warm-up pass before each timed one (a compiled variant's compilation is in its warm-up
    pass, whose seconds are printed too)."""
    from model import CompactCNN, width_for_params
    from neuroshrink.augment import Augment
    from neuroshrink.training import CrossEntropy

    shape = dict(in_channels=splits.in_channels, image_size=splits.image_size, num_classes=splits.num_classes)
    width = width_for_params(CompactCNN, budget, **shape)
    n = int(len(splits.train[1]) * fraction)
    x, y = splits.train[0][:n], splits.train[1][:n]
    cpu, threads = torch.device("cpu"), torch.get_num_threads()
    variants = [(f"batch {b}", dict(batch=b)) for b in (64, 128, 256, 512)]
    variants += [("batch 256, channels-last", dict(cl=True)),
                 ("batch 256, channels-last, augmentation (shift-flip)", dict(cl=True, aug=True)),
                 ("batch 256, channels-last, augmentation, label smoothing 0.1", dict(cl=True, aug=True, smooth=True))]
    variants += [("the same, bf16 autocast", dict(cl=True, aug=True, smooth=True, amp="bf16"))
                 ] if "bf16" in precision.available(cpu) else []
    variants += [("the same, fp32, 1 thread", dict(cl=True, aug=True, smooth=True, threads=1))] if threads > 1 else []
    variants += [(f"the same, {name}, compiled", dict(cl=True, aug=True, smooth=True, amp=name, compiled=True))
                 for name in precision.available(cpu)]
    print(f"\nrecipe costs: compact CNN width {width:g}, {budget:,} parameters budget; seconds per epoch of "
          f"{len(splits.train[1]):,} images (timed on {n:,}), fp32 and {threads} threads unless said")
    for name, v in variants:
        torch.set_num_threads(v.get("threads", threads))
        torch.manual_seed(1)
        model = CompactCNN(width=width, **shape)
        if v.get("cl"):
            model = model.to(memory_format=torch.channels_last)
        optimizer = torch.optim.AdamW(model.parameters(), lr=1e-3, weight_decay=0.05)
        loss = CrossEntropy(0.1 if v.get("smooth") else 0.0)
        augment = Augment(2, flip=True) if v.get("aug") else None
        amp = precision.Precision(v.get("amp", "fp32"), cpu)
        timed_epoch(name, model, v.get("compiled"), optimizer, splits, x, y, v.get("batch", 256), amp, loss, augment,
                    fraction)
    torch.set_num_threads(threads)


def timed_epoch(label, model, compile_it, optimizer, splits, x, y, batch, amp, loss, augment, fraction):
    """Print the seconds of one training pass over (x, y), scaled by 1/fraction: a warm-up pass
    (a compiled model's compilation, whose seconds are printed too), then the timed one."""
    forward = build.compiled(model, torch.device("cpu")) if compile_it else model
    seconds = []
    for _ in range(2):
        t0 = time.perf_counter()
        train_one_epoch(forward, optimizer, x, y, splits.normalise, batch, torch.Generator().manual_seed(1), amp, loss,
                        augment)
        seconds.append(time.perf_counter() - t0)
    warm_up = f"  (warm-up pass with compilation: {seconds[0]:.1f} s)" if compile_it else ""
    print(f"    {label:60s} {seconds[1] / fraction:6.1f} s{warm_up}", flush=True)


def dendritic_costs(splits, budget, tmp, fraction=0.25, sets=1):
    """Seconds per training epoch (as recipe_costs: the strong recipe's batch, channels-last,
    augmentation and smoothing, timed on a `fraction`, scaled to the whole) of the compact CNN
    at `budget` parameters converted by the library with `sets` dendrite sets added, eager and
    compiled (torch.compile of the converted model, as a dendritic run would compile it again
    after each restructure; its compilation is in the warm-up pass, printed), in each precision;
    the plain CNN of the same budget beside it, eager and compiled."""
    from model import CompactCNN, width_for_params
    from neuroshrink import dendrites
    from neuroshrink.augment import Augment
    from neuroshrink.training import CrossEntropy

    shape = dict(in_channels=splits.in_channels, image_size=splits.image_size, num_classes=splits.num_classes)
    n = int(len(splits.train[1]) * fraction)
    x, y = splits.train[0][:n], splits.train[1][:n]
    cpu, loss, augment = torch.device("cpu"), CrossEntropy(0.1), Augment(2, flip=True)

    def dendritic():
        torch.manual_seed(1)
        with contextlib.chdir(tmp), contextlib.redirect_stdout(io.StringIO()):
            tracker = dendrites.PerforatedTracker("PAI", patience=1, max_dendrites=sets, capacity_test=True)
            model = tracker.convert(CompactCNN(width=width_for_params(CompactCNN, budget // (sets + 1), **shape),
                                               **shape))
            for epoch in range(1, sets + 1):  # the library needs a trained epoch before each switch
                optimizer = tracker.new_optimizer(model)
                train_one_epoch(model, optimizer, x[:512], y[:512], splits.normalise, 256, torch.Generator(),
                                precision.Precision("fp32", cpu))
                model = tracker.add_scores(model, epoch, 50.0, 50.0, 50.0).model
        return model, f"dendritic, {tracker.dendrite_sets()} set(s), {tracker.count_params(model):,} parameters"

    def plain():
        torch.manual_seed(1)
        model = CompactCNN(width=width_for_params(CompactCNN, budget, **shape), **shape)
        return model, f"plain, {sum(p.numel() for p in model.parameters()):,} parameters"

    print(f"\ndendritic costs: compact CNN, {budget:,} parameters budget; seconds per epoch of "
          f"{len(splits.train[1]):,} images (timed on {n:,}), {torch.get_num_threads()} threads")
    for make in (plain, dendritic):
        for name in precision.available(cpu):
            for compile_it in (False, True):
                model, what = make()
                model = model.to(memory_format=torch.channels_last)
                optimizer = torch.optim.AdamW(model.parameters(), lr=1e-3, weight_decay=0.05)
                torch.compiler.reset()
                timed_epoch(f"{what}, {name}{', compiled' if compile_it else ''}", model, compile_it, optimizer, splits,
                            x, y, 256, precision.Precision(name, cpu), loss, augment, fraction)
