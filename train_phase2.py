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
    python train_phase2.py --evaluate            # reload PAI/model.ts, recompute test accuracy
"""

import argparse
import json
import os
import shutil
import sys
import time
from contextlib import chdir
from importlib.metadata import version
from pathlib import Path

import torch
import torch.nn.functional as F

import data
import dendrites
from model import Net, count_parameters, layer_widths

RUN_FORMAT = 1  # version of the run folder's layout; --resume refuses others
DEVICES = ("auto", "cpu", "cuda", "mps")
QUICK = dict(n_train=256, n_eval=128, epochs=12, patience=2, max_dendrites=1)  # --quick


def positive(kind):
    def parse(text):
        try:
            value = kind(text)
        except ValueError:
            raise argparse.ArgumentTypeError(f"{text!r} is not a number") from None
        if not value > 0:
            raise argparse.ArgumentTypeError(f"{text!r} must be > 0")
        return value
    return parse


def get_args_parser():
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0], allow_abbrev=False)
    p.add_argument("--dataset", default="digits", choices=data.DATASETS)
    p.add_argument("--data-dir", default=None,
                   help=f"where datasets are read (and downloaded to); default ./{data.DEFAULT_DATA_DIR}")
    p.add_argument("--width", type=positive(float), default=0.125,
                   help="multiplier on the PyTorch MNIST example's widths (32, 64 channels, 128 hidden)")
    p.add_argument("--epochs", type=positive(int), default=200,
                   help="cap on epochs; the tracker (or early stopping) normally ends the run first")
    p.add_argument("--batch-size", type=positive(int), default=64)
    p.add_argument("--lr", type=positive(float), default=1e-3, help="Adam learning rate")
    p.add_argument("--seed", type=int, default=1)
    p.add_argument("--device", default="auto", choices=DEVICES)
    p.add_argument("--threads", type=positive(int), default=None,
                   help="CPU threads for torch (default: torch's choice)")
    p.add_argument("--out", default="PAI", help="run folder: logs, results.json, the library's files and graph")
    p.add_argument("--patience", type=positive(int), default=5,
                   help="epochs without validation improvement before a dendrite set is added "
                        "(plain runs: before early stopping)")
    p.add_argument("--max-dendrites", type=positive(int), default=3, help="most dendrite sets to add")
    p.add_argument("--min-epochs", type=positive(int), default=1,
                   help="plain runs: train at least this many epochs (to match a dendritic run's budget)")
    mode = p.add_mutually_exclusive_group()
    mode.add_argument("--no-dendrites", action="store_true",
                      help="plain baseline: the same loop without the library, early stopping on validation")
    mode.add_argument("--capacity-test", action="store_true",
                      help="Phase 1 check: the library's own test that adds 3 dendrite sets, one per epoch")
    mode.add_argument("--evaluate", action="store_true",
                      help="load <out>/model.ts and recompute the run's test accuracy")
    p.add_argument("--quick", action="store_true",
                   help="smoke run: {n_train} train / {n_eval} val+test samples, patience {patience}, "
                        "{max_dendrites} dendrite set, at most {epochs} epochs".format(**QUICK))
    return p


def resolve_device(name):
    available = ["cpu"] + [d for d, ok in (("cuda", torch.cuda.is_available()),
                                           ("mps", torch.backends.mps.is_available())) if ok]
    if name == "auto":
        return torch.device(available[-1] if len(available) > 1 else "cpu")
    if name not in available:
        raise UsageError(f"--device {name}: no such device here; choose from auto, {', '.join(available)}")
    return torch.device(name)


class UsageError(Exception):
    """Bad input from the user; the message is one line that names the valid choices."""


# ---------------------------------------------------------------- one epoch

def train_one_epoch(model, optimizer, images, labels, batch_size, generator):
    """One pass over shuffled in-memory batches. Returns (mean loss, accuracy %)."""
    model.train()
    order = torch.randperm(len(labels), generator=generator).to(labels.device)
    total_loss = correct = 0
    for start in range(0, len(labels), batch_size):
        idx = order[start:start + batch_size]
        x, y = images[idx], labels[idx]
        optimizer.zero_grad(set_to_none=True)
        logits = model(x)
        loss = F.cross_entropy(logits, y)
        loss.backward()
        optimizer.step()
        total_loss += loss.item() * len(y)
        correct += (logits.argmax(1) == y).sum().item()
    return total_loss / len(labels), 100.0 * correct / len(labels)


@torch.no_grad()
def evaluate(model, images, labels, batch_size=4096):
    """Accuracy % in eval mode, in large batches."""
    model.eval()
    correct = sum((model(images[i:i + batch_size]).argmax(1) == labels[i:i + batch_size]).sum().item()
                  for i in range(0, len(labels), batch_size))
    return 100.0 * correct / len(labels)


# ---------------------------------------------------------------- the run folder

def write_json(path, obj):
    """Write by temporary name and rename, so a killed run never leaves half a file."""
    tmp = path.with_suffix(path.suffix + ".tmp")
    tmp.write_text(json.dumps(obj, indent=1) + "\n")
    os.replace(tmp, path)


def claim_run_folder(out):
    """Make `out` ready for a new run without losing anything the user still needs."""
    if out.exists() and not out.is_dir():
        raise UsageError(f"--out {out} is a file; give a folder")
    if not (out.parent.is_dir() and os.access(out.parent, os.W_OK)):
        raise UsageError(f"--out {out}: {out.parent} is not a writable folder")
    if out.is_dir() and any(out.iterdir()):
        results = out / "results.json"
        if not results.exists():
            raise UsageError(f"--out {out} holds files that are not a run of this script; "
                             "choose a new or empty folder")
        if json.loads(results.read_text()).get("status") != "complete":
            raise UsageError(f"--out {out} holds an unfinished run; continue it with --resume "
                             "or delete the folder")
        if not os.access(out, os.W_OK):
            raise UsageError(f"--out {out} is not writable")
        print(f"replacing the previous run in {out}/")
        for f in out.iterdir():  # the library would reload a settings file left here
            f.unlink() if f.is_file() else shutil.rmtree(f)
    out.mkdir(exist_ok=True)


def export(model, example, out, clean):
    """Save the final model twice: the library's cleaned module (needs perforatedai to
    load) and a TorchScript trace (loads with torch alone). Returns the trace's path."""
    model.eval()
    torch.save(clean, out / "model_clean.pt")
    traced = torch.jit.trace(clean.eval(), example, check_trace=False)
    path = out / "model.ts"
    traced.save(str(path.with_suffix(".ts.tmp")))
    os.replace(path.with_suffix(".ts.tmp"), path)
    return path


# ---------------------------------------------------------------- the run

def log_epoch(row):
    print(f"epoch={row['epoch']:<3d} train_loss={row['train_loss']:.4f} train_acc={row['train_acc']:6.2f} "
          f"val_acc={row['val_acc']:6.2f} test_acc={row['test_acc']:6.2f} params={row['params']} "
          f"dendrite_sets={row['dendrite_sets']} seconds={row['seconds']:.2f}", flush=True)


def log_restructure(e):
    print(f">>> MODEL RESTRUCTURED (Phase 2 triggered) epoch {e['epoch']}: {e['kind']}: {e['detail']} | "
          f"params {e['params_before']:,} -> {e['params_after']:,} | val_acc {e['val_acc']:.2f}", flush=True)


def main(args):
    """Train as `args` says; returns the result dict also written to <out>/results.json."""
    t_start = time.perf_counter()
    if args.quick:
        args.epochs = min(args.epochs, QUICK["epochs"])
        args.patience, args.max_dendrites = QUICK["patience"], QUICK["max_dendrites"]
    try:
        layer_widths(args.width)
    except ValueError as e:
        raise UsageError(f"--width: {e}") from None
    device = resolve_device(args.device)
    if args.threads:
        torch.set_num_threads(args.threads)
    out = Path(args.out).resolve()
    if args.evaluate:
        return evaluate_saved(out, device)
    if not args.no_dendrites and not all(c.isalnum() or c in "_-." for c in out.name):
        raise UsageError(f"--out {args.out}: the folder's name may hold only letters, digits, _ - . "
                         "(the library uses it as its save name)")

    splits = data.load(args.dataset, args.data_dir)  # before touching --out: bad data changes nothing
    if args.quick:
        splits = data.subset(splits, QUICK["n_train"], QUICK["n_eval"])
    claim_run_folder(out)

    torch.manual_seed(args.seed)
    generator = torch.Generator().manual_seed(args.seed)
    splits.train, splits.val, splits.test = ((x.to(device), y.to(device))
                                             for x, y in (splits.train, splits.val, splits.test))
    model = Net(splits.in_channels, splits.image_size, splits.num_classes, args.width)
    plain_params = count_parameters(model)
    settings = {**vars(args), "device": str(device), "threads": torch.get_num_threads(),
                "torch": torch.__version__, "data_sizes": splits.sizes(),
                "layer_widths": layer_widths(args.width)}
    result = {"format": RUN_FORMAT, "status": "running", "settings": settings,
              "phase1": {}, "history": [], "restructures": [], "final": {}}
    print(f"data: {args.dataset} {splits.sizes()} on {device}; "
          f"model: widths {layer_widths(args.width)}, {plain_params:,} parameters")

    with chdir(out.parent):  # the library writes to ./<save_name>/
        if args.no_dendrites:
            model = model.to(device)
            optimizer = torch.optim.Adam(model.parameters(), lr=args.lr)
            params = plain_params
            best = {"val_acc": -1.0, "epoch": 0, "state": None}
        else:
            result["settings"]["perforatedai"] = version("perforatedai")
            dendrites.configure(args.patience, args.max_dendrites, args.capacity_test)
            model = dendrites.convert(model, out.name).to(device)
            params = dendrites.count_params(model)
            result["phase1"] = {"dendrite_modules": dendrites.dendrite_modules(), "params": params}
            print(f"Phase 1: dendrite capacity on {', '.join(dendrites.dendrite_modules())}; "
                  f"{params:,} parameters" + (" (capacity test)" if args.capacity_test else ""))
            optimizer = dendrites.new_optimizer(model, args.lr)
            best_epoch = 0

        complete = False
        for epoch in range(1, args.epochs + 1):
            t0 = time.perf_counter()
            train_loss, train_acc = train_one_epoch(model, optimizer, *splits.train, args.batch_size, generator)
            val_acc, test_acc = evaluate(model, *splits.val), evaluate(model, *splits.test)
            row = dict(epoch=epoch, train_loss=train_loss, train_acc=train_acc, val_acc=val_acc,
                       test_acc=test_acc, params=params,
                       dendrite_sets=0 if args.no_dendrites else dendrites.dendrite_sets())
            if args.no_dendrites:
                if val_acc > best["val_acc"]:
                    best = {"val_acc": val_acc, "epoch": epoch,
                            "state": {k: v.clone() for k, v in model.state_dict().items()}}
                complete = epoch - best["epoch"] >= args.patience and epoch >= args.min_epochs
            else:
                model, event, complete, is_new_best = dendrites.add_scores(model, epoch, train_acc, val_acc, test_acc)
                best_epoch = epoch if is_new_best else best_epoch
                if event:
                    result["restructures"].append(event := vars(event))
                    log_restructure(event)
                    params = dendrites.count_params(model)
                    if not complete:
                        optimizer = dendrites.new_optimizer(model, args.lr)
            row["seconds"] = time.perf_counter() - t0
            result["history"].append(row)
            log_epoch(row)
            write_json(out / "results.json", result)
            if complete:
                break

        if args.no_dendrites:
            model.load_state_dict(best["state"])
            best_epoch, clean = best["epoch"], model
        else:
            dendrites.draw_graph()
            clean = dendrites.clean_copy(model)
        trace_path = export(model, splits.test[0][:2], out, clean)

    final = {"test_acc": evaluate(model, *splits.test), "val_acc": evaluate(model, *splits.val),
             "best_epoch": best_epoch, "epochs": len(result["history"]),
             "params": params, "dendrite_sets": 0 if args.no_dendrites else dendrites.dendrite_sets(),
             "tracker_complete": complete, "wall_seconds": time.perf_counter() - t_start,
             "model_torchscript": trace_path.name}
    if not args.no_dendrites:
        final["graph"] = f"{out.name}.png"
    result.update(status="complete", final=final)
    write_json(out / "results.json", result)
    what = "capacity test (not a result)" if args.capacity_test else "best model"
    print(f"{what}: test_acc={final['test_acc']:.2f} (val_acc={final['val_acc']:.2f}, epoch {best_epoch}) "
          f"params={final['params']:,} dendrite_sets={final['dendrite_sets']} epochs={final['epochs']} "
          f"wall={final['wall_seconds']:.1f}s -> {out}/results.json")
    return result


def evaluate_saved(out, device):
    """Reload the TorchScript model of a finished run and recompute its test accuracy."""
    results_path = out / "results.json"
    if not results_path.exists() or not (out / "model.ts").exists():
        raise UsageError(f"--evaluate: {out} holds no finished run (results.json and model.ts)")
    result = json.loads(results_path.read_text())
    s = result["settings"]
    splits = data.load(s["dataset"], s["data_dir"])
    if s["quick"]:
        splits = data.subset(splits, QUICK["n_train"], QUICK["n_eval"])
    model = torch.jit.load(str(out / "model.ts"), map_location=device)
    test_acc = evaluate(model, splits.test[0].to(device), splits.test[1].to(device))
    print(f"evaluate: {out}/model.ts test_acc={test_acc:.2f} "
          f"(the run reported {result['final']['test_acc']:.2f})")
    return {"test_acc": test_acc, "reported_test_acc": result["final"]["test_acc"]}


def cli(argv=None):
    args = get_args_parser().parse_args(argv)
    try:
        main(args)
    except (UsageError, data.DataError, dendrites.LibraryError) as e:
        sys.exit(f"error: {e}")


if __name__ == "__main__":
    cli()
