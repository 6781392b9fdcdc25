"""Perforated NeuroShrink: dendritic optimization of a plain PyTorch CNN with perforatedai.

Phase 1 converts the CNN of model.py with the library (`perforate_model`, called
`initialize_pai` before 3.2): every conv and linear layer gets dendrite capacity.
Phase 2 trains it; each epoch's validation accuracy goes to the library's tracker,
which adds a dendrite set when validation stops improving, rolls back sets that do
not help, and ends the run with the best model over all architectures loaded. Every
restructure is logged, and the library draws its own graph at <out>/<name>.png.

    python train_phase2.py                       # digits, offline, seconds on 2 CPU cores
    python train_phase2.py --no-dendrites        # the same loop without the library
    python train_phase2.py --dataset fashion-mnist --width 0.25 --out PAI_fashion
    python train_phase2.py --resume              # continue an interrupted run in PAI/
    python train_phase2.py --evaluate            # reload PAI/model.ts, recompute test accuracy
"""

import argparse
import json
import math
import os
import shutil
import signal
import sys
import time
import warnings
from collections import defaultdict
from contextlib import chdir, contextmanager
from importlib.metadata import version
from pathlib import Path

import torch
import torch.nn.functional as F

import data
import dendrites
from model import Net, count_parameters, layer_widths

RUN_FORMAT = 1  # layout of a run folder; --resume refuses any other
DEVICES = ("auto", "cpu", "cuda", "mps")
QUICK = dict(n_train=1024, n_eval=256, epochs=30, patience=1, max_dendrites=1)  # --quick
# Settings that define a run: --resume takes them from the run folder.
RUN_SETTINGS = ("dataset", "data_dir", "width", "epochs", "batch_size", "lr", "seed", "patience",
                "max_dendrites", "min_epochs", "no_dendrites", "capacity_test", "quick",
                "graph_every_epoch")


class UsageError(Exception):
    """Bad input from the user; the message is one line that names the valid choices."""


# ---------------------------------------------------------------- settings

def positive(kind):
    def parse(text):
        try:
            value = kind(text)
        except ValueError:
            raise argparse.ArgumentTypeError(f"{text!r} is not a number") from None
        if not (value > 0 and math.isfinite(value)):
            raise argparse.ArgumentTypeError(f"{text!r} must be a finite number > 0")
        return value
    return parse


class _Parser(argparse.ArgumentParser):
    def error(self, message):  # one line, not argparse's usage block
        self.exit(2, f"error: {message} (see --help)\n")


def get_args_parser():
    p = _Parser(description=__doc__.split("\n\n")[0], allow_abbrev=False)
    p.add_argument("--dataset", default="digits", choices=data.DATASETS)
    p.add_argument("--data-dir", default=None,
                   help=f"folder the dataset is read from (default ./{data.DEFAULT_DATA_DIR}, "
                        "and for fashion-mnist also Debian's dataset-fashion-mnist package)")
    p.add_argument("--width", type=positive(float), default=0.125,
                   help="multiplier on the PyTorch MNIST example's widths (32, 64 channels, 128 hidden)")
    p.add_argument("--epochs", type=positive(int), default=200,
                   help="cap on epochs; the tracker (or early stopping) normally ends the run first")
    p.add_argument("--batch-size", type=positive(int), default=64)
    p.add_argument("--lr", type=positive(float), default=1e-3, help="Adam learning rate")
    p.add_argument("--seed", type=int, default=1)
    p.add_argument("--device", default="auto", choices=DEVICES)
    p.add_argument("--threads", type=positive(int), default=None,
                   help="CPU threads for torch (default: torch's choice, one per core; "
                        "on an idle 2-core machine 2 were as fast as 1 or faster at every width measured)")
    p.add_argument("--out", default="PAI",
                   help="run folder: results.json, checkpoints, exported model, the library's files and graph")
    p.add_argument("--patience", type=positive(int), default=5,
                   help="epochs without validation improvement before the tracker adds dendrites "
                        "(plain runs: before early stopping)")
    p.add_argument("--max-dendrites", type=positive(int), default=3, help="most dendrite sets to add")
    p.add_argument("--min-epochs", type=positive(int), default=1,
                   help="plain runs: train at least this many epochs (to match a dendritic run's budget)")
    mode = p.add_mutually_exclusive_group()
    mode.add_argument("--no-dendrites", action="store_true",
                      help="plain baseline: the same loop without the library, early stopping on validation")
    mode.add_argument("--capacity-test", action="store_true",
                      help="Phase 1 check: the library's own test, adding a dendrite set every epoch, 3 in all")
    mode.add_argument("--evaluate", action="store_true",
                      help="reload <out>/model.ts and recompute the run's test accuracy")
    mode.add_argument("--resume", action="store_true",
                      help="continue the interrupted run in --out with its own settings")
    p.add_argument("--graph-every-epoch", action="store_true",
                   help="let the library redraw PAI.png after every epoch, as it does by default "
                        "(slow: by default it is drawn after each restructure and at the end)")
    p.add_argument("--quick", action="store_true",
                   help="smoke run: {n_train} train / {n_eval} val / {n_eval} test samples, patience "
                        "{patience}, {max_dendrites} dendrite set, at most {epochs} epochs".format(**QUICK))
    return p


def parse_args(argv=None):
    """Parsed arguments, plus `given`: the settings named on the command line."""
    parser = get_args_parser()
    args = parser.parse_args(argv)
    for action in parser._actions:
        action.default = argparse.SUPPRESS
    args.given = set(vars(parser.parse_args(argv)))
    return args


def load_splits(dataset, data_dir, quick):
    splits = data.load(dataset, data_dir)
    return data.subset(splits, QUICK["n_train"], QUICK["n_eval"]) if quick else splits


def resolve_device(name):
    available = ["cpu"] + [d for d, ok in (("cuda", torch.cuda.is_available()),
                                           ("mps", torch.backends.mps.is_available())) if ok]
    if name == "auto":
        return torch.device(available[-1])
    if name not in available:
        raise UsageError(f"--device {name} is not available here; choose from auto, {', '.join(available)}")
    return torch.device(name)


# ---------------------------------------------------------------- one epoch

def train_one_epoch(model, optimizer, images, labels, batch_size, generator):
    """One pass over shuffled in-memory batches. Returns (mean loss, accuracy %)."""
    model.train()
    order = torch.randperm(len(labels), generator=generator).to(labels.device)
    total_loss = torch.zeros((), device=labels.device)
    correct = torch.zeros((), dtype=torch.int64, device=labels.device)
    for start in range(0, len(labels), batch_size):
        idx = order[start:start + batch_size]
        x, y = images[idx], labels[idx]
        optimizer.zero_grad(set_to_none=True)
        logits = model(x)
        loss = F.cross_entropy(logits, y)
        loss.backward()
        optimizer.step()
        total_loss += loss.detach() * len(y)  # summed on the device: no sync per batch
        correct += (logits.argmax(1) == y).sum()
    return total_loss.item() / len(labels), 100.0 * correct.item() / len(labels)


@torch.no_grad()
def evaluate(model, images, labels, batch_size=4096):
    """Accuracy % in eval mode, in large batches."""
    model.eval()
    correct = sum((model(images[i:i + batch_size]).argmax(1) == labels[i:i + batch_size]).sum().item()
                  for i in range(0, len(labels), batch_size))
    return 100.0 * correct / len(labels)


class EarlyStopping:
    """Plain runs: keep the best-validation weights; stop after `patience` epochs without
    a strictly better validation accuracy, but not before `min_epochs`."""

    def __init__(self, patience, min_epochs):
        self.patience, self.min_epochs = patience, min_epochs
        self.best_acc, self.best_epoch, self.best_state = -1.0, 0, None

    def step(self, epoch, val_acc, model):
        if val_acc > self.best_acc:
            self.best_acc, self.best_epoch = val_acc, epoch
            self.best_state = {k: v.detach().clone() for k, v in model.state_dict().items()}
        return epoch - self.best_epoch >= self.patience and epoch >= self.min_epochs

    def state_dict(self):
        return {"best_acc": self.best_acc, "best_epoch": self.best_epoch, "best_state": self.best_state}

    def load_state_dict(self, state):
        self.best_acc, self.best_epoch, self.best_state = state["best_acc"], state["best_epoch"], state["best_state"]


# ---------------------------------------------------------------- stopping safely

class Interrupted(Exception):
    def __init__(self, signum):
        super().__init__(signal.Signals(signum).name)
        self.signum = signum


class SignalGuard:
    """SIGINT / SIGTERM stop training at once, but never in the middle of a save:
    inside `held()` the signal waits until the block is done."""

    def __enter__(self):
        self.holding, self.pending = False, None
        self.saved = {s: signal.signal(s, self._handle) for s in (signal.SIGINT, signal.SIGTERM)}
        return self

    def __exit__(self, *exc):
        for s, handler in self.saved.items():
            signal.signal(s, handler)

    def _handle(self, signum, frame):
        if self.holding:
            self.pending = signum
        else:
            raise Interrupted(signum)

    @contextmanager
    def held(self):
        self.holding = True
        try:
            yield
        finally:
            self.holding = False
        if self.pending:
            raise Interrupted(self.pending)


@contextmanager
def timed(clock, key):
    t0 = time.perf_counter()
    try:
        yield
    finally:
        clock[key] += time.perf_counter() - t0


# ---------------------------------------------------------------- the run folder

def write_json(path, obj):
    """Write by temporary name and rename, so a killed run never leaves half a file."""
    tmp = path.with_name(path.name + ".tmp")
    tmp.write_text(json.dumps(obj, indent=1) + "\n")
    os.replace(tmp, path)


def read_run(out):
    """results.json of a run folder, or None if there is none; UsageError if unreadable."""
    path = out / "results.json"
    if not path.is_file():
        return None
    try:
        run = json.loads(path.read_text())
    except ValueError:
        run = None
    if not (isinstance(run, dict) and {"status", "format", "settings"} <= run.keys()):
        raise UsageError(f"{path} is damaged; delete {out} or choose another --out")
    return run


def claim_run_folder(out):
    """Make `out` ready for a new run without losing anything the user still needs."""
    if out.exists() and not out.is_dir():
        raise UsageError(f"--out {out} is a file; give a folder")
    existing = next(p for p in (out, *out.parents) if p.exists())
    if not (existing.is_dir() and os.access(existing, os.W_OK)):
        raise UsageError(f"--out {out}: {existing} is not a writable folder")
    if out.is_dir() and any(out.iterdir()):
        run = read_run(out)
        if run is None:
            raise UsageError(f"--out {out} holds files that are not a run of this script; "
                             "choose a new or empty folder")
        if run["status"] != "complete":
            raise UsageError(f"--out {out} holds an unfinished run; continue it with --resume, "
                             "or delete the folder to start again")
        print(f"replacing the previous run in {out}/")
        for f in out.iterdir():  # the library would silently reload a settings file left here
            f.unlink() if f.is_file() else shutil.rmtree(f)
    out.mkdir(parents=True, exist_ok=True)


def resume_settings(args, out):
    """The interrupted run's settings; a flag given now that disagrees is an error."""
    run = read_run(out)
    if run is None:
        raise UsageError(f"--resume: {out} holds no run to resume")
    if run["format"] != RUN_FORMAT:
        raise UsageError(f"--resume: {out} was written by an incompatible version "
                         f"(run format {run['format']}, this script reads {RUN_FORMAT})")
    if run["status"] == "complete":
        raise UsageError(f"--resume: the run in {out} is already complete")
    if "checkpoint" in run and not (out / run["checkpoint"] / "state.pt").is_file():
        raise UsageError(f"--resume: the run's checkpoint {out / run['checkpoint']} is missing")
    saved = {key: getattr(args, key) for key in RUN_SETTINGS} | run["settings"]  # older runs lack new keys
    for key in RUN_SETTINGS:
        if key in args.given and getattr(args, key) != saved[key]:
            raise UsageError(f"--resume: --{key.replace('_', '-')} {getattr(args, key)} conflicts with "
                             f"the run's {saved[key]}; drop the flag to continue the run as it was")
        setattr(args, key, saved[key])
    return run


def save_checkpoint(out, result, state, library_files):
    """Snapshot the run after an epoch: new folder, then switch results.json to it, then
    delete older ones. A kill at any moment leaves a complete snapshot to resume from."""
    snapshot = out / "checkpoint" / f"epoch{len(result['history']):04d}"
    snapshot.mkdir(parents=True, exist_ok=True)
    torch.save(state, snapshot / "state.pt")
    for name in library_files:
        shutil.copyfile(out / name, snapshot / name)
    result["checkpoint"] = str(snapshot.relative_to(out))
    write_json(out / "results.json", result)
    for old in (out / "checkpoint").iterdir():
        if old != snapshot:
            shutil.rmtree(old)


def export(model, clean, images, out):
    """Save the final model for inference twice, and return how far apart the two are.

    model_clean.pt: `clean`, for dendritic runs the library's cleaned model (unpickling
    it needs perforatedai). model.ts: a TorchScript trace of the trained model itself,
    which loads with torch alone. torch.export fails on the library's modules, and the
    cleaned model can differ from the trained one (perforatedai 3.2.9 drops the dendrites
    of a layer with exactly one dendrite set), so the trace is taken from `model`.
    """
    model.eval(), clean.eval()
    with torch.no_grad():
        difference = (clean(images) - model(images)).abs().max().item()
    torch.save(clean, out / "model_clean.pt")
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", FutureWarning)  # TorchScript is deprecated; it works here
        # The library's forward branches on tensors that are fixed once training is over;
        # the trace records one branch, so check it reproduces the model's outputs.
        warnings.simplefilter("ignore", torch.jit.TracerWarning)
        traced = torch.jit.trace(model, images[:2], check_trace=False)
        with torch.no_grad():
            torch.testing.assert_close(traced(images), model(images))
    traced.save(str(out / "model.ts.tmp"))
    os.replace(out / "model.ts.tmp", out / "model.ts")
    return difference


# ---------------------------------------------------------------- the run

def log_epoch(row):
    print(f"epoch={row['epoch']:<3d} train_loss={row['train_loss']:.4f} train_acc={row['train_acc']:.2f} "
          f"val_acc={row['val_acc']:.2f} test_acc={row['test_acc']:.2f} params={row['params']} "
          f"dendrite_sets={row['dendrite_sets']} seconds={row['seconds']:.2f}", flush=True)


def log_restructure(e):
    print(f">>> MODEL RESTRUCTURED (Phase 2 triggered) epoch {e['epoch']}: {e['kind']}: {e['detail']} | "
          f"params {e['params_before']:,} -> {e['params_after']:,} | val_acc {e['val_acc']:.2f}", flush=True)


def main(args):
    """Train as `args` says (see parse_args); returns the result also written to
    <out>/results.json. Raises UsageError / data.DataError / dendrites.LibraryError on bad
    input or a library failure, and Interrupted after saving on SIGINT or SIGTERM."""
    clock = defaultdict(float)
    t_start = time.perf_counter()
    out = Path(args.out).resolve()
    device = resolve_device(args.device)
    if args.evaluate:
        return evaluate_saved(out, device)
    previous = resume_settings(args, out) if args.resume else None
    if args.quick:
        args.epochs = min(args.epochs, QUICK["epochs"])
        args.patience, args.max_dendrites = QUICK["patience"], QUICK["max_dendrites"]
    try:
        widths = layer_widths(args.width)
    except ValueError as e:
        raise UsageError(f"--width: {e}") from None
    use_library = not args.no_dendrites
    if use_library and not all(c.isalnum() or c in "_-." for c in out.name):
        raise UsageError(f"--out {args.out}: the folder's name may hold only letters, digits, _ - . "
                         "(the library uses it as its save name)")

    with timed(clock, "data"):  # before touching --out: bad data leaves it as it was
        splits = load_splits(args.dataset, args.data_dir, args.quick)
        splits.train, splits.val, splits.test = ((x.to(device), y.to(device))
                                                 for x, y in (splits.train, splits.val, splits.test))
    if previous is not None and "checkpoint" not in previous:  # stopped inside its first epoch
        shutil.rmtree(out)
        args.resume, previous = False, None
    if not args.resume:
        claim_run_folder(out)

    torch.manual_seed(args.seed)
    generator = torch.Generator().manual_seed(args.seed)
    model = Net(splits.in_channels, splits.image_size, splits.num_classes, args.width)
    if args.threads:
        torch.set_num_threads(args.threads)
    settings = {**{k: v for k, v in vars(args).items() if k != "given"},
                "device": str(device), "threads": torch.get_num_threads(), "torch": torch.__version__,
                "perforatedai": version("perforatedai") if use_library else None,
                "data_sizes": splits.sizes(), "layer_widths": widths, "plain_params": count_parameters(model)}
    result = previous or {"format": RUN_FORMAT, "status": "running", "settings": settings,
                          "phase1": {}, "history": [], "restructures": [], "final": {}}
    result["status"] = "running"
    elapsed_before = result.get("elapsed_seconds", 0.0)  # a resumed run counts its earlier time
    print(f"data: {args.dataset} {splits.sizes()} on {device}, {torch.get_num_threads()} thread(s); "
          f"model: widths {widths}, {count_parameters(model):,} parameters"
          + (f"; resuming after epoch {len(result['history'])}" if args.resume else ""))

    # The library writes to ./<out.name>/. Its error paths (in forward passes too) call
    # pdb.set_trace() or sys.exit(): guarded() turns them into a LibraryError.
    with chdir(out.parent), SignalGuard() as guard, dendrites.guarded():
        with timed(clock, "setup"):
            if use_library:  # Phase 1: dendritic capacity injection
                dendrites.configure(args.patience, args.max_dendrites, args.capacity_test,
                                    args.graph_every_epoch)
                model = dendrites.convert(model, out.name).to(device)
                result["phase1"] = {"dendrite_modules": dendrites.dendrite_modules(),
                                    "params": dendrites.count_params(model)}
                print(f"Phase 1: dendrite capacity on {', '.join(dendrites.dendrite_modules())}; "
                      f"{dendrites.count_params(model):,} parameters"
                      + (" (the library's capacity test)" if args.capacity_test else ""))
            else:
                model = model.to(device)
                stopper = EarlyStopping(args.patience, args.min_epochs)
            if args.resume:
                snapshot = out / result["checkpoint"]
                state = torch.load(snapshot / "state.pt", map_location=device, weights_only=False)
                if use_library:
                    for name in dendrites.CHECKPOINT_FILES:
                        shutil.copyfile(snapshot / name, out / name)
                    model = dendrites.load_latest(model, out.name).to(device)
                else:
                    model.load_state_dict(state["model"])
                    stopper.load_state_dict(state["stopper"])
                torch.set_rng_state(state["rng"])
                generator.set_state(state["generator"])
            optimizer = (dendrites.new_optimizer(model, args.lr) if use_library
                         else torch.optim.Adam(model.parameters(), lr=args.lr))
            if args.resume:
                optimizer.load_state_dict(state["optimizer"])
            params = dendrites.count_params(model) if use_library else count_parameters(model)

        complete = False
        try:
            for epoch in range(len(result["history"]) + 1, args.epochs + 1):  # Phase 2
                t0 = time.perf_counter()
                with timed(clock, "train"):
                    train_loss, train_acc = train_one_epoch(model, optimizer, *splits.train,
                                                            args.batch_size, generator)
                train_seconds = time.perf_counter() - t0
                with timed(clock, "evaluate"):
                    val_acc, test_acc = evaluate(model, *splits.val), evaluate(model, *splits.test)
                row = dict(epoch=epoch, train_loss=train_loss, train_acc=train_acc, val_acc=val_acc,
                           test_acc=test_acc, params=params,
                           dendrite_sets=dendrites.dendrite_sets() if use_library else 0,
                           train_seconds=train_seconds, graph_drawn=False)
                with guard.held():  # a signal now waits until this epoch is saved
                    if use_library:
                        t_tracker = time.perf_counter()
                        step = dendrites.add_scores(model, epoch, train_acc, val_acc, test_acc)
                        clock["graph" if step.drew_graph else "tracker"] += time.perf_counter() - t_tracker
                        model, complete, row["best"] = step.model, step.complete, step.new_best
                        row["graph_drawn"] = step.drew_graph
                        if step.restructure:
                            result["restructures"].append(vars(step.restructure))
                            params = dendrites.count_params(model)
                            if not complete:  # the tracker dropped the old optimizer
                                optimizer = dendrites.new_optimizer(model, args.lr)
                    else:
                        complete = stopper.step(epoch, val_acc, model)
                        row["best"] = stopper.best_epoch == epoch
                    row["seconds"] = time.perf_counter() - t0
                    result["history"].append(row)
                    result["elapsed_seconds"] = elapsed_before + time.perf_counter() - t_start
                    with timed(clock, "checkpoint"):
                        state = {"optimizer": optimizer.state_dict(), "rng": torch.get_rng_state(),
                                 "generator": generator.get_state()}
                        if not use_library:
                            state.update(model=model.state_dict(), stopper=stopper.state_dict())
                        save_checkpoint(out, result, state, dendrites.CHECKPOINT_FILES if use_library else ())
                    log_epoch(row)  # printed once the epoch is safely on disk
                    if use_library and step.restructure:
                        log_restructure(result["restructures"][-1])
                if complete:
                    break
        except Interrupted as stop:
            if use_library:
                dendrites.draw_graph()
            result["status"] = "interrupted"
            write_json(out / "results.json", result)
            print(f"\n{stop}: stopped after epoch {len(result['history'])}, saved in {out}/. "
                  f"Continue with: python train_phase2.py --resume --out {args.out}", flush=True)
            raise

        with timed(clock, "graph"):
            if use_library:
                dendrites.draw_graph()
        with timed(clock, "export"):
            if not use_library:
                model.load_state_dict(stopper.best_state)
            clean = dendrites.clean_copy(model) if use_library else model
            clean_difference = export(model, clean, splits.val[0], out)
        if clean_difference > 1e-4:
            print(f"warning: the library's cleaned model (model_clean.pt) differs from the trained "
                  f"model by up to {clean_difference:.3g} in its logits; model.ts is the trained model")

    with timed(clock, "evaluate"):
        test_acc, val_acc = evaluate(model, *splits.test), evaluate(model, *splits.val)
    final = {"test_acc": test_acc, "val_acc": val_acc,
             "best_epoch": max(r["epoch"] for r in result["history"] if r["best"]),
             "epochs": len(result["history"]), "params": params,
             "dendrite_sets": dendrites.dendrite_sets() if use_library else 0,
             "tracker_complete": complete if use_library else None,
             "clean_model_max_logit_difference": clean_difference,
             "wall_seconds": elapsed_before + time.perf_counter() - t_start,
             "timing_seconds": dict(clock),
             "graph": f"{out.name}/{out.name}.png" if use_library else None}
    result.update(status="complete", final=final)
    write_json(out / "results.json", result)
    what = "capacity test (library smoke test, not a result)" if args.capacity_test else "best model"
    print(f"{what}: test_acc={test_acc:.2f} val_acc={val_acc:.2f} (epoch {final['best_epoch']}) "
          f"params={params:,} dendrite_sets={final['dendrite_sets']} epochs={final['epochs']} "
          f"wall={final['wall_seconds']:.1f}s -> {args.out}/results.json")
    return result


def evaluate_saved(out, device):
    """Reload the TorchScript model of a finished run and recompute its test accuracy."""
    run = read_run(out)
    if run is None or run["status"] != "complete" or not (out / "model.ts").exists():
        raise UsageError(f"--evaluate: {out} holds no finished run (results.json and model.ts)")
    splits = load_splits(run["settings"]["dataset"], run["settings"]["data_dir"], run["settings"]["quick"])
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", FutureWarning)
        model = torch.jit.load(str(out / "model.ts"), map_location=device)
    test_acc = evaluate(model, splits.test[0].to(device), splits.test[1].to(device))
    print(f"evaluate: {out}/model.ts test_acc={test_acc:.2f} (the run reported {run['final']['test_acc']:.2f})")
    return {"test_acc": test_acc, "reported_test_acc": run["final"]["test_acc"]}


def cli(argv=None):
    args = parse_args(argv)
    try:
        main(args)
    except (UsageError, data.DataError, dendrites.LibraryError) as e:
        sys.exit(f"error: {e}")
    except Interrupted as stop:
        sys.exit(128 + stop.signum)


if __name__ == "__main__":
    cli()
