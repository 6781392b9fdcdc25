"""Perforated NeuroShrink: dendritic optimization of a plain PyTorch CNN with perforatedai.

Phase 1 converts a plain PyTorch CNN (model.py's, or your own with --model) with the
library (`perforate_model`, called `initialize_pai` before 3.2): every conv and linear
layer gets dendrite capacity.
Phase 2 trains it; each epoch's validation accuracy goes to the library's tracker,
which adds a dendrite set when validation stops improving, rolls back sets that do not
help, and ends the run with the best model over all architectures loaded. Every
restructure is logged, and the library draws its own graph at <out>/<name>.png.

    python train_phase2.py                       # digits, offline, seconds on 2 CPU cores
    python train_phase2.py --no-dendrites        # the same loop without the library
    python train_phase2.py --model rescnn        # a BatchNorm residual CNN; or --model my_module:my_factory
    python train_phase2.py --dataset fashion-mnist --width 0.25 --out PAI_fashion
    python train_phase2.py --dataset fashion-mnist --model compact --params 75000 --no-dendrites --recipe strong
    python train_phase2.py --resume              # continue an interrupted run in PAI/
    python train_phase2.py --evaluate            # reload PAI/model.ts, recompute test accuracy
    python train_phase2.py --evaluate --quantize int8   # int8 ONNX model of the finished run in PAI/

From Python, the same run: `run(RunConfig(...), out)` returns its record (results.json).
Every setting is a field of neuroshrink.config.RunConfig; the command line offers the demo's.
"""

import dataclasses
import sys
from contextlib import chdir

import torch

from neuroshrink import augment, build, export, journal
from neuroshrink.config import QUICK, RunConfig, flag
from neuroshrink.options import add_options, config_of, demo_names
from neuroshrink.records import migrate
from neuroshrink.errors import NeuroShrinkError, UsageError
from neuroshrink.flags import Parser
from neuroshrink.run_folder import Interrupted, RunFolder, read_run
from neuroshrink.training import evaluate, train_one_epoch


def run(config, out="PAI"):
    """Train as `config` says into the run folder `out` (or a resumed run's RunFolder); returns its record
    (<out>/results.json). Raises NeuroShrinkError on bad input or a library failure, Interrupted on a signal."""
    folder, clock = out if isinstance(out, RunFolder) else RunFolder(out), journal.Clock()
    config = config.resolved()
    device = build.hardware(config)
    # Data and model before the folder is touched: bad input leaves it as it was.
    splits = build.splits_of(config).to(device)
    torch.manual_seed(config.seed)
    (model, width), loss_fn = build.model_of(config, splits), build.loss_of(config, splits, device)
    if config.channels_last:
        model = model.to(memory_format=torch.channels_last)
    amp, chosen = build.training_precision(config, device, model, splits, (folder.result or {}).get("precision"))
    tracker = build.tracker_of(config, folder.name, model)
    folder.open(journal.run_settings(config, device, splits, model, width), precision=chosen)
    generator = torch.Generator().manual_seed(config.seed)  # batch order and augmentation
    augmentation, judged = augment.Augment.named(config.augment), augment.test_time(config.tta)
    print(journal.describe(config, device, splits, model, folder))
    clock.lap("data")

    # The library writes into ./<out name>/; guarded(): its pdb and sys.exit(0) paths raise.
    with chdir(folder.path.parent), tracker.guarded():
        model = tracker.convert(model)  # Phase 1: dendrite capacity where config.placement puts it
        journal.report_phase1(folder, tracker, model, config)
        state = folder.load_snapshot(tracker.files, device) if folder.resuming else None
        model = (tracker.resume(model, state) if state else model).to(device)
        optimizer = tracker.new_optimizer(model)
        if state:
            journal.restore(state, optimizer, tracker.scheduler, generator, amp)
        clock.lap("setup")

        log, step = journal.Journal(folder, clock, config.wandb), None
        compiled = build.compiled(model, device) if config.compile else None  # plain runs: one model throughout
        with folder.stopping_safely(before_stop=tracker.draw_graph):
            for epoch in range(folder.epochs_done + 1, config.epochs + 1):  # Phase 2
                row = log.new_row(epoch, optimizer, tracker, model)
                row["train_loss"], row["train_acc"] = train_one_epoch(compiled if config.compile else model, optimizer,
                                                                      *splits.train, splits.normalise, config.batch_size,
                                                                      generator, amp, loss_fn, augmentation)
                row["train_seconds"] = clock.lap("train")
                row.update(val_acc=evaluate(judged(model), *splits.val, splits.normalise, amp),  # drives the tracker
                           test_acc=evaluate(judged(model), *splits.test, splits.normalise, amp)
                           if tracker.reads_test or config.test_every_epoch else None)
                clock.lap("evaluate")
                with folder.safe_point():  # a signal now waits until this epoch is saved
                    step = tracker.add_scores(model, epoch, row["train_acc"], row["val_acc"], row["test_acc"])
                    model = step.model
                    if step.restructure and not step.complete:  # the tracker dropped the optimizer and schedule
                        optimizer = tracker.new_optimizer(model)
                    log.epoch(row, step, journal.checkpoint_state(tracker, model, optimizer, generator, amp), tracker)
                if step.complete:
                    break

        if not config.no_export:
            tracker.draw_graph()
            clock.lap("graph")
        model = tracker.final_model(model)  # the best model over all architectures and epochs
        exported = {} if config.no_export else export_model(folder, judged(model), judged(tracker.clean_copy(model)),
                                                            splits, config, clock)

    final = dict(test_acc=evaluate(judged(model), *splits.test, splits.normalise),
                 val_acc=evaluate(judged(model), *splits.val, splits.normalise))
    log.finish(journal.summary(folder, final | exported, model, tracker, step, not config.no_dendrites, clock),
               config.capacity_test)
    return folder.result


def resume(out="PAI", **changes):
    """Continue the interrupted run in `out` with its own config. `changes` may set what does
    not define the run (device, threads); a setting that does must agree with the run's."""
    folder = RunFolder(out)
    config = RunConfig.of_record(folder.reopen())
    for key, value in changes.items():
        if config.defining().get(key, value) != value:
            raise UsageError(f"--resume: {flag(key)} {value} conflicts with the run's {getattr(config, key)}; "
                             "drop the flag to continue the run as it was")
    return run(dataclasses.replace(config, **changes), folder)


def export_model(folder, model, clean, splits, config, clock):
    """model.ts and model_clean.pt (`clean`: training scaffolding removed) in the run folder, then
    model.onnx (and with quantize model.int8.onnx), each checked, with what it costs to run on the CPU."""
    difference = export.export(folder.path, model, clean, splits)
    clock.lap("export")
    min_seconds = None if config.no_timing else QUICK["timing_seconds"] if config.quick else 0.3
    inference = None if config.no_timing else export.inference_ms(
        folder.path / "model.ts", splits.normalise(splits.test[0][:256]), min_seconds=min_seconds)
    clock.lap("inference timing")  # TorchScript, batch 1 and 256, the process's threads
    deployed = export.deployment(folder.path, model, splits.to("cpu"), config.quantize, min_seconds,
                                 provenance(folder.result["settings"]))
    clock.lap("onnx")
    return {"clean_model_max_logit_difference": difference, "inference_ms": inference, **deployed}


def evaluate_saved(out="PAI", quantize=None, device="auto"):
    """Reload the TorchScript model of a finished run, recompute its test accuracy, and export
    it again (no training): a self-contained model.onnx, and model.int8.onnx where the run had
    one or `quantize` asks; what the export measured replaces the old in its results.json."""
    folder, flag_name = RunFolder(out), "--quantize" if quantize else "--evaluate"
    run_record = read_run(folder.path)
    if run_record is None or run_record["status"] != "complete" or not (folder.path / "model.ts").exists():
        raise UsageError(f"{flag_name}: {folder.path} holds no finished run (results.json and model.ts)")
    run_record = migrate(run_record)
    settings = run_record["settings"]
    splits = build.splits_of(settings)
    device = build.device_named(device)
    model = export.load_torchscript(folder.path / "model.ts", device)
    test_acc = evaluate(model, *(tensor.to(device) for tensor in splits.test), splits.normalise)
    reported = run_record["final"]["test_acc"]
    print(f"evaluate: {folder.path}/model.ts test_acc={test_acc:.2f} (the run reported {reported:.2f})")
    quantize = quantize or ("int8" if "int8" in run_record["final"] else None)
    deployed = export.deployment(folder.path, model.cpu(), splits, quantize,
                                 QUICK["timing_seconds"] if settings["quick"] else 0.3, provenance(settings))
    settings["normalisation"] = splits.normalisation  # what the export above embedded (older records lack it)
    folder.result = run_record
    folder.finish({k: v for k, v in run_record["final"].items() if k != "export_errors"} | deployed)
    journal.report_deployment(deployed)
    return {"test_acc": test_acc, "reported_test_acc": reported, **deployed}


def provenance(settings):
    """What made a run's model, for its self-contained ONNX files; how predict must read image files
    where it was a choice (--pixel-range)."""
    return ({key: settings.get(key) for key in ("dataset", "model", "params", "seed", "torch", "perforatedai")}
            | ({"pixel_range": settings["pixel_range"]} if settings.get("pixel_range") else {}))


# ---------------------------------------------------------------- the command line

def get_args_parser(names=None, prog=None):
    """Options generated from RunConfig's fields (`names`; default: the demo's), and the run
    folder's modes."""
    p = Parser(prog=prog, description=__doc__.split("\n\n")[0])
    groups = add_options(p, names or demo_names())
    where = groups["the run"]
    where.add_argument("--out", default="PAI",
                       help="run folder: results.json, checkpoints, exported model, the library's files and graph")
    mode = where.add_mutually_exclusive_group()
    mode.add_argument("--resume", action="store_true", help="continue the interrupted run in --out with its settings")
    mode.add_argument("--evaluate", action="store_true",
                      help="reload <out>/model.ts, recompute the run's test accuracy and export it again "
                           "(with --quantize: quantize the finished run, no training)")
    return p


def cli(argv=None, parser=None):
    """The command line (`parser`: the demo's unless another is given) -> run, resume or evaluate;
    errors and a failed export end it with one line and a non-zero status."""
    args = (parser or get_args_parser()).parse_args(argv)
    given = config_of(args)
    try:
        if args.evaluate:
            record = evaluate_saved(args.out, given.get("quantize"), given.get("device", "auto"))
        elif args.resume:
            record = resume(args.out, **given)
        else:
            record = run(RunConfig(**given), args.out)
    except NeuroShrinkError as e:
        sys.exit(f"error: {e}")
    except Interrupted as stop:
        sys.exit(128 + stop.signum)
    errors = (record.get("final") or record).get("export_errors")  # a run's record, or --evaluate's
    if errors:  # the run is saved; what failed is said, and the exit status says so
        sys.exit(f"error: the run in {args.out} is saved, but its export failed: {'; '.join(errors)}")


if __name__ == "__main__":
    cli()
