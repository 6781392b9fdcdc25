"""Time to accuracy: the strong recipe as committed (fp32, 30 epochs) against faster ways to train
the same plain CNN, in one script on one machine, and how close a training step comes to the
machine's own limit.

    python -m experiments.time_to_target                 # Fashion-MNIST, 3 seeds: about 50 minutes on 2 CPU cores
    python -m experiments.time_to_target --quick         # a smoke run of every part, seconds

It prints, and writes to <results>/<dataset>-time-to-target.md:
  1. the machine (CPU, AMX or not, threads, torch, date) and a 1024x1024 matrix product's
     GFLOP/s in each precision the CPU trains in: the limit;
  2. the compact CNN's training step (forward, backward, optimizer; FLOPs counted by torch's
     FlopCounterMode) in the project's loop, per precision, eager and compiled: milliseconds,
     GFLOP/s and their fraction of the same precision's matrix rate; beside it a plain PyTorch
     fp32 loop of the same model (no augmentation, no evaluation), the reference
     (both on the CPU, whatever device the runs train on); each compiled step is compiled with
     an empty cache, as on a fresh machine, and the table says after how many epochs that
     compilation has paid for itself;
  3. each recipe (RECIPES) trained with train_phase2.run for every seed, the recipes taking
     turns within each seed so that the machine's drift falls on all alike: test accuracy at
     the epoch validation chose, training minutes (everything before the export: data, the
     precision measurement, compilation, training, evaluation, checkpoints) and their ratio to
     the reference recipe's. Where a recipe averages flipped images (tta), the same model's
     accuracy without it is shown too.
A finished run is found again in <runs>/<dataset>/time-to-target/ and reported, not retrained;
a stopped one is trained again from its start, so every time shown is one uninterrupted run.
"""

import contextlib
import dataclasses
import io
import statistics
import time
from pathlib import Path

import torch
import torch.nn.functional as F
from torch.utils.flop_counter import FlopCounterMode

from experiments.common.tables import fmt, mean_std
from experiments.common.runner import add_outputs, exit_status, run_in
from neuroshrink import augment, build, data, precision
from neuroshrink.config import RunConfig
from neuroshrink.flags import Parser, positive
from neuroshrink.machine import cpu_name, matmul_gflops, today
from neuroshrink.options import add_options
from neuroshrink.training import evaluate, train_one_epoch

REFERENCE = "today"
RECIPES = {  # what each changes of the strong recipe's plain run of compact at 75,000 parameters
    REFERENCE: dict(precision="fp32"),                                  # as committed (docs/recipe.md)
    "fast": dict(precision="auto", compile=True, epochs=24, tta=True),  # bf16 where faster, compiled, fewer
                                                                        # epochs, flip TTA
    "best": dict(precision="auto", compile=True, epochs=40, tta=True,
                 params=98_000),                                        # the time saved spent on accuracy
}
BASE = dict(model="compact", params=75_000, recipe="strong", no_dendrites=True, graph_at_end=True)
REFERENCE_LOOP, PROJECT_LOOP = "plain PyTorch, no augmentation (the reference)", "the project's, strong recipe"
TRAINING_PARTS = ("data", "setup", "train", "evaluate", "tracker", "checkpoint")  # of a record's timing_seconds


def get_args_parser():
    p = Parser(prog="python -m experiments.time_to_target", description=__doc__.split("\n\n")[0])
    add_options(p, ["dataset", "threads", "quick"], {"dataset": "fashion-mnist", "threads": None, "quick": False},
                default_notes={"dataset": "fashion-mnist"})
    p.add_argument("--recipes", nargs="+", default=list(RECIPES), choices=list(RECIPES),
                   help=f"which to train (the first is the ratios' reference; default: all, {REFERENCE} first)")
    add_outputs(p, "the report goes to <results>/<dataset>-time-to-target.md", runs="<runs>/<dataset>/time-to-target/",
                seeds=(3, "every recipe"), results_default="results/speed")
    return p


def step_flops(model, images, labels):
    """FLOPs of one training step's forward and backward (what torch counts: convolutions and
    matrix products; the optimizer's element-wise work is not counted)."""
    with FlopCounterMode(display=False) as counter:
        F.cross_entropy(model(images), labels).backward()
    model.zero_grad(set_to_none=True)
    return counter.get_total_flops()


def textbook_pass(model, optimizer, images, labels, batch_size, label_smoothing):
    """The reference: a plain PyTorch fp32 loop over shuffled batches, nothing else."""
    model.train()
    order = torch.randperm(len(labels))
    for start in range(0, len(labels), batch_size):
        idx = order[start:start + batch_size]
        optimizer.zero_grad()
        F.cross_entropy(model(images[idx]), labels[idx], label_smoothing=label_smoothing).backward()
        optimizer.step()


def seconds_of(one_pass):
    start = time.perf_counter()
    one_pass()
    return time.perf_counter() - start


def step_costs(splits, config, batches, out, rounds=3):
    """Parts 1 and 2: the training step per precision against the matrix rates and a plain PyTorch
    loop. Every loop first makes a warm-up pass (which compiles, where compiled); then the loops
    take turns for `rounds` timed passes and each keeps its fastest, so that a busy moment of a
    shared machine does not decide alone."""
    cpu = torch.device("cpu")
    rates = {name: matmul_gflops(precision.DTYPES.get(name, torch.float32)) for name in precision.available(cpu)}
    out("matrix product 1024x1024: " + ", ".join(f"{k} {v:.0f} GFLOP/s" for k, v in rates.items()))
    b = config.batch_size
    x, y = splits.train[0][:batches * b], splits.train[1][:batches * b]
    (model, width), loss = build.model_of(config, splits), build.loss_of(config, splits, cpu)
    flops = step_flops(model, splits.normalise(x[:b]), y[:b])
    epoch_steps = len(splits.train[1]) / b
    out(f"training step of {config.model} width {width:g} ({sum(p.numel() for p in model.parameters()):,} "
        f"parameters), batch {b}: {flops / 1e9:.2f} GFLOP forward + backward, {flops / b / 1e6:.1f} MFLOP an image; "
        f"passes of {batches} batches, the fastest of {rounds} taken in turns after a warm-up pass; "
        f"seconds scaled to one {len(splits.train[1]):,}-image epoch")
    out("| loop | precision | compiled | ms per step | GFLOP/s | of the matrix rate | seconds per epoch | "
        "warm-up pass s |")
    out("|---|---|---|---|---|---|---|---|")

    def one_pass(loop, name, compiled):
        torch.manual_seed(1)
        model = build.model_of(config, splits)[0]
        if loop == PROJECT_LOOP:
            model = model.to(memory_format=torch.channels_last)
        optimizer = torch.optim.AdamW(model.parameters(), lr=config.lr, weight_decay=config.weight_decay)
        if loop == REFERENCE_LOOP:
            images = splits.normalise(x)  # the textbook loop holds its images normalised
            return lambda: textbook_pass(model, optimizer, images, y, b, config.label_smoothing)
        forward = build.compiled(model, cpu) if compiled else model
        amp, augmentation = precision.Precision(name, cpu), augment.Augment.named(config.augment)
        return lambda: train_one_epoch(forward, optimizer, x, y, splits.normalise, b, torch.Generator(), amp, loss,
                                       augmentation)

    cases = [(REFERENCE_LOOP, "fp32", False)] + [(PROJECT_LOOP, name, compiled)
                                                 for name in precision.available(cpu) for compiled in (False, True)]
    torch.compiler.reset()
    passes, warm, best = {}, {}, {}
    for case in cases:
        with contextlib.redirect_stdout(io.StringIO()), empty_compiler_cache():  # the fallback line; a fresh machine
            passes[case] = one_pass(*case)
            warm[case] = seconds_of(passes[case])
    for _ in range(rounds):
        for case in cases:
            best[case] = min(seconds_of(passes[case]), best.get(case, float("inf")))

    eager, repaid = {}, []
    for loop, name, compiled in cases:
        seconds = best[loop, name, compiled]
        ms, rate = 1000 * seconds / batches, flops * batches / seconds / 1e9
        epoch_seconds = ms * epoch_steps / 1000
        out(f"| {loop} | {name} | {'yes' if compiled else 'no'} | {ms:.1f} | {rate:.1f} | {rate / rates[name]:.0%} | "
            f"{epoch_seconds:.1f} | {warm[loop, name, compiled]:.1f} |")
        if loop == PROJECT_LOOP and not compiled:
            eager[name] = epoch_seconds
        elif loop == PROJECT_LOOP:
            compiling, saved = warm[loop, name, compiled] - seconds, eager[name] - epoch_seconds
            repaid.append(f"{name}: compiling took {compiling:.1f} s and saved {saved:.1f} s an epoch, " + (
                f"so it pays after {compiling / saved:.1f} epochs" if saved > 0 else "so it never pays"))
    out()
    out("Compiling with an empty cache, as on a fresh machine (later runs reuse Inductor's cache): " +
        "; ".join(repaid) + ".")


@contextlib.contextmanager
def empty_compiler_cache():
    """torch.compile as on a fresh machine: Inductor's caches empty (an empty temporary cache
    folder, which torch's own benchmarks use to time a first compilation)."""
    from torch._inductor.utils import fresh_cache

    with fresh_cache():
        yield


def trained(config, folder):
    """The finished run of `config` in `folder`: found there, or trained there from its start
    (its time is what is reported; a compiled one with an empty compiler cache)."""
    torch.compiler.reset()  # nothing compiled by an earlier run is kept
    with contextlib.redirect_stdout(io.StringIO()), empty_compiler_cache():  # a first compilation, as on a fresh machine
        return run_in(config, folder, continue_stopped=False)


def without_tta(folder, splits):
    """Test accuracy % of a tta run's chosen model on the images alone (its fp32 model_clean.pt)."""
    model = torch.load(folder / "model_clean.pt", weights_only=False)
    return evaluate(model.model, *splits.test, splits.normalise)


def main(args):
    if args.threads:
        torch.set_num_threads(args.threads)
    results = Path(args.results) / f"{data.label(args.dataset)}-time-to-target.md"
    lines = []

    def out(line=""):
        print(line, flush=True)
        lines.append(line)

    configs = {name: RunConfig(**BASE | RECIPES[name], dataset=args.dataset, threads=args.threads,
                               quick=args.quick).resolved() for name in args.recipes}
    splits = build.splits_of(configs[args.recipes[0]])
    out(f"# Time to accuracy on {args.dataset}: `python -m experiments.time_to_target"
        f"{' --quick' if args.quick else ''}`")
    out()
    out(f"Machine: {cpu_name()}, {torch.get_num_threads()} threads, torch {torch.__version__}, {today()}.")
    out()
    out("## The training step against this CPU's limit")
    out()
    step_costs(splits, configs[args.recipes[0]], 4 if args.quick else 40, out)

    out()
    out("## Recipes: test accuracy and training time")
    out()
    records = {name: [] for name in args.recipes}
    runs = Path(args.runs) / data.label(args.dataset) / "time-to-target"
    for seed in range(1, args.seeds + 1):  # recipes take turns: the machine's drift falls on each alike
        for name, config in configs.items():
            folder = runs / f"{name}-seed{seed}"
            record = trained(dataclasses.replace(config, seed=seed), folder)
            minutes = sum(record["final"]["timing_seconds"].get(part, 0.0) for part in TRAINING_PARTS) / 60
            no_tta = without_tta(folder, splits) if config.tta else None
            records[name].append((record, minutes, no_tta))
            print(f"{name} seed {seed}: test {record['final']['test_acc']:.2f} % in {minutes:.2f} min "
                  f"({record['precision']['chosen']})", flush=True)
    out("| recipe | changes to the strong recipe | params | precision | test acc % | without flip TTA | "
        "epochs | training minutes | time / today's |")
    out("|---|---|---|---|---|---|---|---|---|")
    reference = statistics.mean(m for _, m, _ in records[args.recipes[0]])
    for name, rows in records.items():
        chosen = sorted({r["precision"]["chosen"] for r, _, _ in rows})
        no_tta = [n for _, _, n in rows if n is not None]
        changes = ", ".join(f"{k} {v}" for k, v in RECIPES[name].items())
        out(f"| {name} | {changes} | {rows[0][0]['final']['params']:,} | {'/'.join(chosen)} | "
            f"{fmt(mean_std([r['final']['test_acc'] for r, _, _ in rows]))} | "
            f"{fmt(mean_std(no_tta)) if no_tta else '-'} | "
            f"{configs[name].epochs} | {fmt(mean_std([m for _, m, _ in rows]))} | "
            f"{statistics.mean(m for _, m, _ in rows) / reference:.2f} |")
    out()
    trained_on = sorted({(r["settings"]["cpu"], r["settings"]["threads"], r["settings"]["date"])
                         for rows in records.values() for r, _, _ in rows})
    out(f"{args.seeds} seed(s) each; test accuracy at the epoch validation chose (mean ± std); training minutes: "
        "data, the precision measurement, compilation, training, evaluation and checkpoints (not the export). "
        "The runs trained on " + "; ".join(f"{cpu}, {threads} threads, {date}" for cpu, threads, date in trained_on) +
        " (a finished run is reported again, not retrained).")
    results.parent.mkdir(parents=True, exist_ok=True)
    results.write_text("\n".join(lines) + "\n")
    print(f"\nwrote {results}")


if __name__ == "__main__":
    with exit_status():
        main(get_args_parser().parse_args())
