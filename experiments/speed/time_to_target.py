"""Time to accuracy (`python -m experiments.speed --time-to-target`): the strong recipe as
committed (fp32, 30 epochs) against faster ways to train the same plain CNN, in one process on
one machine, and how close a training step comes to the machine's own limit.

    python -m experiments.speed --time-to-target                 # Fashion-MNIST, 3 seeds: 58 minutes on 2 CPU cores
    python -m experiments.speed --time-to-target --quick         # every part on a few images, nothing compiled: seconds
    python -m experiments.speed --time-to-target --report-only   # its report again, from its records

It measures, and records in <results>/<dataset>-time-to-target.json (its report beside it, .md):
  1. the machine (CPU, AMX or not, threads, torch, date) and a 1024x1024 matrix product's
     GFLOP/s in each precision the CPU trains in: the limit;
  2. the compact CNN's training step (forward, backward, optimizer; FLOPs counted by torch's
     FlopCounterMode) in the project's loop, per precision, eager and compiled: milliseconds,
     GFLOP/s and their fraction of the same precision's matrix rate; beside it the plain
     PyTorch fp32 loop of the same model (speed's reference: no augmentation, no evaluation);
     each compiled step is compiled with an empty cache, as on a fresh machine, and the report
     says after how many epochs that compilation has paid for itself;
  3. each recipe (RECIPES) trained with train_phase2.run for every seed, the recipes taking
     turns within each seed so that the machine's drift falls on all alike: test accuracy at
     the epoch validation chose, training minutes (everything before the export: data, the
     precision measurement, compilation, training, evaluation, checkpoints) and their ratio to
     the strong recipe's. Where a recipe averages flipped images (tta), the same model's
     accuracy without it is recorded too.
A finished run is found again in <runs>/<dataset>/time-to-target/ and recorded, not retrained;
a stopped one is trained again from its start, so every time recorded is one uninterrupted run.
"""

import contextlib
import dataclasses
import io
import json
import statistics
import time

import torch
import torch.nn.functional as F
from torch.utils.flop_counter import FlopCounterMode

from experiments.common.runner import run_in
from experiments.common.tables import fmt, mean_std
from neuroshrink import augment, build, data, precision
from neuroshrink.config import RunConfig
from neuroshrink.errors import UsageError
from neuroshrink.machine import cpu_name, matmul_gflops, today
from neuroshrink.training import evaluate, train_one_epoch

REFERENCE = "strong"
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


def textbook_pass(model, optimizer, images, labels, batch_size, label_smoothing=0.0, bf16=False, generator=None):
    """The reference: one plain PyTorch loop over shuffled batches of normalised images, nothing
    else (bf16: autocast)."""
    model.train()
    order = torch.randperm(len(labels), generator=generator)
    for start in range(0, len(labels), batch_size):
        idx = order[start:start + batch_size]
        optimizer.zero_grad()
        with torch.autocast("cpu", dtype=torch.bfloat16, enabled=bf16):
            loss = F.cross_entropy(model(images[idx]), labels[idx], label_smoothing=label_smoothing)
        loss.backward()
        optimizer.step()


def step_flops(model, images, labels):
    """FLOPs of one training step's forward and backward (what torch counts: convolutions and
    matrix products; the optimizer's element-wise work is not counted)."""
    with FlopCounterMode(display=False) as counter:
        F.cross_entropy(model(images), labels).backward()
    model.zero_grad(set_to_none=True)
    return counter.get_total_flops()


def seconds_of(one_pass):
    start = time.perf_counter()
    one_pass()
    return time.perf_counter() - start


def step_costs(splits, config, batches, compiled=(False, True), rounds=3):
    """Parts 1 and 2: the training step per precision against the matrix rates and the plain
    PyTorch loop, as a record. Every loop first makes a warm-up pass (which compiles, where
    compiled); then the loops take turns for `rounds` timed passes and each keeps its fastest,
    so that a busy moment of a shared machine does not decide alone."""
    cpu = torch.device("cpu")
    rates = {name: matmul_gflops(precision.DTYPES.get(name, torch.float32)) for name in precision.available(cpu)}
    b = config.batch_size
    x, y = splits.train[0][:batches * b], splits.train[1][:batches * b]
    (model, width), loss = build.model_of(config, splits), build.loss_of(config, splits, cpu)
    flops = step_flops(model, splits.normalise(x[:b]), y[:b])

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

    cases = [(REFERENCE_LOOP, "fp32", False)] + [(PROJECT_LOOP, name, c) for name in precision.available(cpu)
                                                 for c in compiled]
    torch.compiler.reset()
    passes, warm, best = {}, {}, {}
    for case in cases:
        with contextlib.redirect_stdout(io.StringIO()), empty_compiler_cache():  # the fallback line; a fresh machine
            passes[case] = one_pass(*case)
            warm[case] = seconds_of(passes[case])
    for _ in range(rounds):
        for case in cases:
            best[case] = min(seconds_of(passes[case]), best.get(case, float("inf")))
    return {"matrix_gflops": {name: round(rate, 1) for name, rate in rates.items()}, "model": config.model,
            "width": width, "params": sum(p.numel() for p in model.parameters()), "batch_size": b,
            "flops": flops, "batches": batches, "rounds": rounds, "epoch_images": len(splits.train[1]),
            "cases": [{"loop": loop, "precision": name, "compiled": c, "seconds": round(best[loop, name, c], 4),
                       "warm_up_seconds": round(warm[loop, name, c], 2)} for loop, name, c in cases]}


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


def recipes_of(args):
    """Each recipe's changes to the strong recipe: with --quick nothing compiled (a first
    compilation takes tens of seconds; the smoke run checks every other part)."""
    return {name: RECIPES[name] | (dict(compile=False) if args.quick and RECIPES[name].get("compile") else {})
            for name in args.recipes}


def measure(args):
    """The benchmark's record: the machine, the training step, every recipe's runs."""
    recipes = recipes_of(args)
    configs = {name: RunConfig(**BASE | changes, dataset=args.dataset, threads=args.threads, quick=args.quick).resolved()
               for name, changes in recipes.items()}
    splits = build.splits_of(configs[args.recipes[0]])
    record = {"dataset": args.dataset, "quick": args.quick, "cpu": cpu_name(), "threads": torch.get_num_threads(),
              "torch": torch.__version__, "date": today(), "recipes": recipes}
    print(f"time to accuracy on {args.dataset}: the training step, then {len(recipes)} recipes x {args.seeds} seeds",
          flush=True)
    record["step"] = step_costs(splits, configs[args.recipes[0]], 4 if args.quick else 40,
                                (False,) if args.quick else (False, True))
    record["runs"] = []
    runs = args.runs / data.label(args.dataset) / "time-to-target"
    for seed in range(1, args.seeds + 1):  # recipes take turns: the machine's drift falls on each alike
        for name, config in configs.items():
            folder = runs / f"{name}-seed{seed}"
            run = trained(dataclasses.replace(config, seed=seed), folder)
            settings, final = run["settings"], run["final"]
            record["runs"].append({
                "recipe": name, "seed": seed, "params": final["params"], "precision": run["precision"]["chosen"],
                "test_acc": final["test_acc"], "without_tta": without_tta(folder, splits) if config.tta else None,
                "epochs": settings["epochs"],
                "training_seconds": round(sum(final["timing_seconds"].get(part, 0.0) for part in TRAINING_PARTS), 2),
                "cpu": settings["cpu"], "threads": settings["threads"], "date": settings["date"]})
            print(f"{name} seed {seed}: test {final['test_acc']:.2f} % ({run['precision']['chosen']})", flush=True)
    return record


# ---------------------------------------------------------------- the report, from the record

def report(record):
    """The benchmark's report (markdown) from its record alone."""
    lines = [f"# Time to accuracy on {record['dataset']}: `python -m experiments.speed --time-to-target"
             f"{' --quick' if record['quick'] else ''}`", "",
             f"Machine: {record['cpu']}, {record['threads']} threads, torch {record['torch']}, {record['date']}.", "",
             "## The training step against this CPU's limit", "", *step_table(record["step"]), "",
             "## Recipes: test accuracy and training time", "", *recipe_table(record)]
    return "\n".join(lines) + "\n"


def step_table(step):
    rates, flops, batches, b = step["matrix_gflops"], step["flops"], step["batches"], step["batch_size"]
    epoch_steps = step["epoch_images"] / b
    lines = ["matrix product 1024x1024: " + ", ".join(f"{k} {v:.0f} GFLOP/s" for k, v in rates.items()),
             f"training step of {step['model']} width {step['width']:g} ({step['params']:,} parameters), batch {b}: "
             f"{flops / 1e9:.2f} GFLOP forward + backward, {flops / b / 1e6:.1f} MFLOP an image; passes of {batches} "
             f"batches, the fastest of {step['rounds']} taken in turns after a warm-up pass; seconds scaled to one "
             f"{step['epoch_images']:,}-image epoch",
             "| loop | precision | compiled | ms per step | GFLOP/s | of the matrix rate | seconds per epoch | "
             "warm-up pass s |", "|---|---|---|---|---|---|---|---|"]
    eager, repaid = {}, []
    for case in step["cases"]:
        name, seconds = case["precision"], case["seconds"]
        ms, rate = 1000 * seconds / batches, flops * batches / seconds / 1e9
        epoch_seconds = ms * epoch_steps / 1000
        lines.append(f"| {case['loop']} | {name} | {'yes' if case['compiled'] else 'no'} | {ms:.1f} | {rate:.1f} "
                     f"| {rate / rates[name]:.0%} | {epoch_seconds:.1f} | {case['warm_up_seconds']:.1f} |")
        if case["loop"] == PROJECT_LOOP and not case["compiled"]:
            eager[name] = epoch_seconds
        elif case["loop"] == PROJECT_LOOP:
            compiling, saved = case["warm_up_seconds"] - seconds, eager[name] - epoch_seconds
            repaid.append(f"{name}: compiling took {compiling:.1f} s and saved {saved:.1f} s an epoch, " + (
                f"so it pays after {compiling / saved:.1f} epochs" if saved > 0 else "so it never pays"))
    if repaid:
        lines += ["", "Compiling with an empty cache, as on a fresh machine (later runs reuse Inductor's cache): "
                  + "; ".join(repaid) + "."]
    return lines


def recipe_table(record):
    by_recipe = {name: [r for r in record["runs"] if r["recipe"] == name] for name in record["recipes"]}
    reference = statistics.mean(r["training_seconds"] for r in next(iter(by_recipe.values())))
    first = next(iter(record["recipes"]))
    lines = ["| recipe | changes to the strong recipe | params | precision | test acc % | without flip TTA | "
             f"epochs | training minutes | time / {first}'s |", "|---|---|---|---|---|---|---|---|---|"]
    for name, runs in by_recipe.items():
        no_tta = [r["without_tta"] for r in runs if r["without_tta"] is not None]
        changes = ", ".join(f"{k} {v}" for k, v in record["recipes"][name].items())
        minutes = [r["training_seconds"] / 60 for r in runs]
        lines.append(f"| {name} | {changes} | {runs[0]['params']:,} | {'/'.join(r['precision'] for r in runs)} "
                     f"| {fmt(mean_std([r['test_acc'] for r in runs]))} | {fmt(mean_std(no_tta)) if no_tta else '-'} "
                     f"| {runs[0]['epochs']} | {fmt(mean_std(minutes))} "
                     f"| {statistics.mean(r['training_seconds'] for r in runs) / reference:.2f} |")
    trained_on = sorted({(r["cpu"], r["threads"], r["date"]) for r in record["runs"]})
    seeds = len(next(iter(by_recipe.values())))
    return lines + ["", f"{seeds} seed(s) each (precision: each seed's, in order); test accuracy at the epoch "
                    "validation chose (mean ± std); training minutes: data, the precision measurement, compilation, "
                    "training, evaluation and checkpoints (not the export). The runs trained on "
                    + "; ".join(f"{cpu}, {threads} threads, {date}" for cpu, threads, date in trained_on)
                    + " (a finished run is recorded again, not retrained)."]


def main(args):
    """Measure and record (or with --report-only read the record), then write the report."""
    path = args.results / f"{data.label(args.dataset)}-time-to-target.json"
    if args.report_only:
        if not path.exists():
            raise UsageError(f"--report-only: no records at {path}; run the benchmark first")
        record = json.loads(path.read_text())
    else:
        record = measure(args)
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text(json.dumps(record, indent=1) + "\n")
    text = report(record)
    path.with_suffix(".md").write_text(text)
    print("\n" + text + f"\nwrote {path} and its report {path.with_suffix('.md').name}")
    return record
