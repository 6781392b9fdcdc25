"""Speed benchmark: where the demo's time goes, measured against a plain PyTorch loop.

In one process it times, on the same model, data and batches:
  (a) a plain PyTorch loop with no library (the reference),
  (b) the demo's loop with --no-dendrites,
  (c) the demo's loop with the library, before and after each dendrite set (its capacity
      test adds one set per epoch),
(b) and (c) at each precision the CPU trains in (--precisions). It prints per-epoch times,
the ratios b/a and c/a (against the fp32 reference) and c/b (against the demo's plain loop
at the same precision), plain-loop variants (bf16 autocast, channels-last), the CPU's
matrix-multiply rate and the rate the model's big layers reach, 1 vs 2 threads, and (for digits) the breakdown of
a full default run in a fresh process and a check that drawing the library's graph only
at restructures gives the same graph as drawing it every epoch. Timing numbers are
printed, never asserted: run nothing else meanwhile.

    python -m experiments.speed                                  # digits, about a minute
    python -m experiments.speed --quick                          # every loop on a few images: a check, seconds
    python -m experiments.speed --dataset fashion-mnist --width 0.25
    python -m experiments.speed --dataset fashion-mnist --width 0.25 --profile   # where a dendritic pass goes
    python -m experiments.speed --dataset fashion-mnist --recipe-costs           # what the strong recipe's parts cost
    python -m experiments.speed --dataset fashion-mnist --dendritic-costs        # a dendritic epoch, eager and compiled

    python -m experiments.speed --time-to-target                 # the strong recipe against faster ones: minutes to accuracy

--time-to-target trains full runs with records of their own (time_to_target.py): the strong
recipe as committed against faster ones, and the training step against the CPU's matrix rate.
"""

import argparse
import contextlib
import io
import json
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import numpy as np
import torch

import train_phase2
from experiments.common.runner import add_outputs
from experiments.speed import time_to_target
from experiments.speed.costs import dendritic_costs, recipe_costs
from neuroshrink.machine import cpu_name, matmul_gflops
from model import Net
from neuroshrink import allocator, data, precision
from neuroshrink.config import QUICK, RunConfig
from neuroshrink.flags import Parser, positive
from neuroshrink.options import add_options
from neuroshrink.training import train_one_epoch

ROOT = Path(__file__).resolve().parents[2]


def get_args_parser():
    p = Parser(prog="python -m experiments.speed", description=__doc__.split("\n\n")[0])
    add_options(p, ["dataset", "width", "epochs", "batch_size", "threads"],
                {"dataset": None, "width": 0.125, "epochs": None, "batch_size": 64, "threads": None},
                default_notes={"dataset": "digits; --time-to-target: fashion-mnist", "width": "0.125",
                               "epochs": "20 digits, 2 otherwise", "batch_size": "64", "threads": "torch's"})
    p.add_argument("--profile", action="store_true",
                   help="only profile one training pass of the converted model with 2 dendrite sets, per precision")
    p.add_argument("--precisions", nargs="+", default=None, choices=precision.PRECISIONS,
                   help="precisions of (b) and (c) (default: every one this CPU trains in)")
    p.add_argument("--recipe-costs", action="store_true",
                   help="only time one epoch of the compact CNN at --params under each part of the strong recipe "
                        "(batch size, channels-last, augmentation, label smoothing, bf16, threads)")
    p.add_argument("--dendritic-costs", action="store_true",
                   help="only time one epoch of the compact CNN at --params converted with one dendrite set, eager "
                        "and compiled, in each precision, beside the plain CNN of that budget")
    p.add_argument("--params", type=positive(int), default=75000,
                   help="with --recipe-costs or --dendritic-costs: the compact CNN's budget")
    p.add_argument("--quick", action="store_true",
                   help="every loop for 2 epochs on --quick's few images, without the full default run (with "
                        "--time-to-target: every part on them, nothing compiled): seconds, to check that the "
                        "benchmark runs (its numbers mean nothing)")
    timed = p.add_argument_group("time to accuracy (--time-to-target)")
    timed.add_argument("--time-to-target", action="store_true",
                       help="only the time to accuracy: the strong recipe as committed against faster ones, seed by "
                            "seed, and the training step against this CPU's matrix rate (58 minutes on 2 CPU cores)")
    timed.add_argument("--recipes", nargs="+", default=list(time_to_target.RECIPES),
                       choices=list(time_to_target.RECIPES),
                       help=f"which to train (the first is the ratios' reference; default: all, "
                            f"{time_to_target.REFERENCE} first)")
    timed.add_argument("--report-only", action="store_true", help="its report again from its records, training nothing")
    add_outputs(timed, "its records and report go to <results>/<dataset>-time-to-target.json and .md",
                runs="<runs>/<dataset>/time-to-target/", seeds=(3, "every recipe"), results_default="results/speed")
    return p


def reference_epochs(splits, width, epochs, batch_size, seed=1, bf16=False, channels_last=False):
    """(a): the textbook loop, no library; per-epoch (train s, evaluate s). bf16: autocast
    in training; channels_last: the model and images in NHWC memory format."""
    torch.manual_seed(seed)
    generator = torch.Generator().manual_seed(seed)
    model = Net(splits.in_channels, splits.image_size, splits.num_classes, width)
    optimizer = torch.optim.Adam(model.parameters(), lr=1e-3)
    (x, y), times = (splits.normalise(splits.train[0]), splits.train[1]), []
    if channels_last:
        model, x = model.to(memory_format=torch.channels_last), x.contiguous(memory_format=torch.channels_last)
    for _ in range(epochs):
        t0 = time.perf_counter()
        time_to_target.textbook_pass(model, optimizer, x, y, batch_size, bf16=bf16, generator=generator)
        t1 = time.perf_counter()
        model.eval()
        with torch.no_grad():
            for pixels, labels in (splits.val, splits.test):
                (model(splits.normalise(pixels)).argmax(1) == labels).float().mean().item()
        times.append((t1 - t0, time.perf_counter() - t1))
    return times


def profile_dendritic(splits, width, batch_size, precisions, tmp, n=4096):
    """The top operators of one training pass over n images of the converted model with 2
    dendrite sets (added by the library's capacity test), at each precision."""
    from torch.profiler import ProfilerActivity, profile

    from neuroshrink import dendrites

    torch.manual_seed(1)
    x, y = splits.train[0][:n], splits.train[1][:n]
    fp32 = precision.Precision("fp32", torch.device("cpu"))
    with contextlib.chdir(tmp), contextlib.redirect_stdout(io.StringIO()):
        tracker = dendrites.PerforatedTracker("PAI", patience=1, max_dendrites=2, capacity_test=True)
        model = tracker.convert(Net(splits.in_channels, splits.image_size, splits.num_classes, width))
        for epoch in (1, 2):  # the library needs a trained epoch before each switch
            optimizer = tracker.new_optimizer(model)
            train_one_epoch(model, optimizer, x[:512], y[:512], splits.normalise, batch_size, torch.Generator(), fp32)
            model = tracker.add_scores(model, epoch, 50.0, 50.0, 50.0).model
        optimizer = tracker.new_optimizer(model)
    print(f"profile: {tracker.dendrite_sets()} dendrite sets, {tracker.count_params(model):,} params, {n} images")
    for name in precisions:
        amp = precision.Precision(name, torch.device("cpu"))
        for _ in range(2):  # warm-up, then profile
            with profile(activities=[ProfilerActivity.CPU]) as prof:
                t0 = time.perf_counter()
                train_one_epoch(model, optimizer, x, y, splits.normalise, batch_size, torch.Generator(), amp)
        print(f"\n[{name}] one pass {time.perf_counter() - t0:.2f} s (with profiling)")
        print(prof.key_averages().table(sort_by="self_cpu_time_total", row_limit=10))


def demo(out, **settings):
    """train_phase2's run of these settings, its log kept out of this report."""
    with contextlib.redirect_stdout(io.StringIO()):
        return train_phase2.run(RunConfig(**settings), out)


def cpu_model():
    return cpu_name() + (", native bf16" if "bf16" in precision.available(torch.device("cpu")) else "")


def layer_rates(model, image_size, batch_size, repeats=30):
    """GFLOP/s that conv2 and fc1 (the big layers) reach, forward + backward."""
    c1, c2 = model.conv1.out_channels, model.conv2.out_channels
    side = image_size - 4
    pooled = side // 2
    cases = {"conv2": (model.conv2, torch.randn(batch_size, c1, image_size - 2, image_size - 2),
                       2 * 3 * batch_size * side * side * c2 * c1 * 9),
             "fc1": (model.fc1, torch.randn(batch_size, c2 * pooled * pooled),
                     2 * 3 * batch_size * model.fc1.in_features * model.fc1.out_features)}
    rates = {}
    for name, (layer, x, flops) in cases.items():
        x.requires_grad_(True)
        layer(x).sum().backward()
        t0 = time.perf_counter()
        for _ in range(repeats):
            layer(x).sum().backward()
        rates[name] = flops * repeats / (time.perf_counter() - t0) / 1e9
    return rates


def same_graph(tmp):
    """Run --quick twice, drawing every epoch and only at restructures; compare what the
    library drew: its score CSVs byte for byte, and the upper half of PAI.png (scores and
    dendrite panels) pixel for pixel. The lower half plots wall-clock times."""
    from PIL import Image

    outs = {}
    for name, every_epoch in (("every_epoch", True), ("at_restructures", False)):
        outs[name] = Path(tmp) / name / "PAI"
        demo(outs[name], quick=True, graph_every_epoch=every_epoch)
    csvs = sorted(p.name for p in outs["at_restructures"].glob("PAI*.csv") if "Times" not in p.name)
    same_csv = all((outs["every_epoch"] / c).read_bytes() == (outs["at_restructures"] / c).read_bytes()
                   for c in csvs)
    images = [np.asarray(Image.open(outs[n] / "PAI.png").convert("RGB")) for n in outs]
    top = images[0].shape[0] // 2
    return same_csv, csvs, bool((images[0][:top] == images[1][:top]).all())


def main(args):
    allocator.keep_freed_memory()  # every loop timed here as a run trains, the reference loop's too
    if args.threads:
        torch.set_num_threads(args.threads)
    if args.time_to_target:
        return time_to_target.main(argparse.Namespace(**vars(args) | dict(
            dataset=args.dataset or "fashion-mnist", results=Path(args.results), runs=Path(args.runs))))
    dataset = args.dataset or "digits"
    epochs = args.epochs or (20 if dataset == "digits" and not args.quick else 2)
    print(f"speed benchmark: {dataset}, width {args.width}, batch {args.batch_size}, "
          f"{epochs} epochs per loop, {torch.get_num_threads()} threads, torch {torch.__version__}, "
          f"CPU: {cpu_model()}")
    t0 = time.perf_counter()
    splits = data.load(dataset)
    if args.quick:  # the images a --quick run of the demo trains on
        splits = data.subset(splits, QUICK["n_train"], QUICK["n_eval"])
    print(f"data load: {time.perf_counter() - t0:.2f} s {splits.sizes()}")
    if args.recipe_costs:
        return recipe_costs(splits, args.params)
    if args.dendritic_costs:
        with tempfile.TemporaryDirectory() as tmp:
            return dendritic_costs(splits, args.params, tmp)
    if args.profile:
        with tempfile.TemporaryDirectory() as tmp:
            return profile_dendritic(splits, args.width, args.batch_size,
                                     args.precisions or precision.available(torch.device("cpu")), tmp)

    print(f"\nmatrix multiply 1024x1024 fp32: {matmul_gflops():.1f} GFLOP/s")
    for width in sorted({args.width, 1.0}):
        model = Net(splits.in_channels, splits.image_size, splits.num_classes, width)
        for name, rate in layer_rates(model, splits.image_size, args.batch_size).items():
            print(f"  width {width:g}: {name} ({tuple(model.get_submodule(name).weight.shape)}) forward+backward "
                  f"at batch {args.batch_size}: {rate:.1f} GFLOP/s")

    threads = torch.get_num_threads()
    per_thread = {}
    for n in sorted({1, threads}):
        torch.set_num_threads(n)
        per_thread[n] = np.mean([t for t, _ in reference_epochs(splits, args.width, max(2, epochs // 4), args.batch_size)])
    torch.set_num_threads(threads)
    print("train epoch by thread count: " + ", ".join(f"{n}: {s:.3f} s" for n, s in per_thread.items()))

    reference = reference_epochs(splits, args.width, epochs, args.batch_size)
    ref_train = np.median([t for t, _ in reference])
    ref_epoch = np.median([t + e for t, e in reference])
    print(f"\n(a) plain PyTorch loop: train {ref_train:.3f} s, train+evaluate {ref_epoch:.3f} s per epoch (median)")
    if "bf16" in precision.available(torch.device("cpu")):
        print("(a) variants, train time per epoch against (a):")
        for bf16, cl in ((True, False), (False, True), (True, True)):
            t = np.median([t for t, _ in reference_epochs(splits, args.width, epochs, args.batch_size,
                                                           bf16=bf16, channels_last=cl)])
            print(f"    {'bf16 autocast' if bf16 else 'fp32'}{' + channels-last' if cl else ''}: "
                  f"{t:.3f} s (speed-up over (a): {ref_train / t:.2f}x)")
    with tempfile.TemporaryDirectory() as tmp:
        for name in args.precisions or precision.available(torch.device("cpu")):
            # what is timed is each epoch: no export at the end (and --quick draws no graph either)
            settings = dict(dataset=dataset, width=args.width, batch_size=args.batch_size, precision=name,
                            no_export=True, quick=args.quick, graph_at_end=args.quick)
            plain = demo(Path(tmp) / f"plain_{name}", **settings, no_dendrites=True, epochs=epochs,
                         min_epochs=epochs, patience=epochs)
            rows = plain["history"]
            b_train = np.median([r["train_seconds"] for r in rows])
            b_epoch = np.median([r["seconds"] for r in rows])
            print(f"\n[{name}] (b) demo --no-dendrites: train {b_train:.3f} s (b/a {b_train / ref_train:.2f}, "
                  f"speed-up over fp32 (a): {ref_train / b_train:.2f}x), whole epoch {b_epoch:.3f} s (b/a {b_epoch / ref_epoch:.2f})")
            capacity = demo(Path(tmp) / f"capacity_{name}", **settings, capacity_test=True)
            print(f"[{name}] (c) demo with perforatedai (its capacity test adds one dendrite set per epoch):")
            for r in capacity["history"]:
                whole = "" if r["graph_drawn"] else f", whole epoch {r['seconds']:.3f} s (c/a {r['seconds'] / ref_epoch:.2f})"
                k = r["dendrite_sets"]
                print(f"    {k} set(s), {r['params']:,} params: train {r['train_seconds']:.3f} s "
                      f"(c/a {r['train_seconds'] / ref_train:.2f}; c/b {r['train_seconds'] / b_train:.2f}, "
                      f"target <= {k + 1}){whole}" + (" [graph drawn in this epoch]" if r["graph_drawn"] else ""))

        if dataset == "digits" and not args.quick:
            print("\nfull default run, `python train_phase2.py`, in a fresh process:")
            out = Path(tmp) / "PAI"
            t0 = time.perf_counter()
            subprocess.run([sys.executable, str(ROOT / "train_phase2.py"), "--out", str(out)],
                           check=True, capture_output=True)
            wall = time.perf_counter() - t0
            result = json.loads((out / "results.json").read_text())
            timing = dict(result["final"]["timing_seconds"])
            timing["python start-up and imports"] = wall - result["final"]["wall_seconds"]
            for part, seconds in sorted(timing.items(), key=lambda kv: -kv[1]):
                print(f"    {part:28s} {seconds:6.2f} s  {100 * seconds / wall:5.1f} %")
            bookkeeping = sum(timing[k] for k in ("tracker", "graph", "checkpoint", "export"))
            print(f"    {'total':28s} {wall:6.2f} s; tracker + graph + checkpoints + export: "
                  f"{100 * bookkeeping / wall:.1f} % ({result['final']['epochs']} epochs, "
                  f"{sum(r['graph_drawn'] for r in result['history']) + 1} graph draws)")
            reference_run = json.loads((ROOT / "results" / "demo" / "results.json").read_text())
            keys = ("epoch", "val_acc", "test_acc", "params", "dendrite_sets")
            same = ([[r[k] for k in keys] for r in result["history"]] ==
                    [[r[k] for k in keys] for r in reference_run["history"]]
                    and result["final"]["test_acc"] == reference_run["final"]["test_acc"])
            print(f"    same epochs, restructures and final metrics as results/demo/results.json: {same}")

            same_csv, csvs, same_pixels = same_graph(tmp)
            print(f"\ngraph drawn every epoch vs only after restructures and at the end: score CSVs "
                  f"({', '.join(csvs)}) identical: {same_csv}; PAI.png upper half identical: {same_pixels}")
