"""What a run reports and keeps as it goes: the time per part (Clock), one line per epoch and
per restructure with the epoch saved for --resume (Journal), the settings and final metrics
its results.json records, and what --resume restores besides the library's own files."""

import time
from collections import defaultdict
from importlib.metadata import version

import torch

from model import count_parameters

from . import machine, wandb_log


class Clock(defaultdict):
    """Seconds spent per part of the run: `clock.lap(part)` books the time since the last lap."""

    def __init__(self):
        super().__init__(float)
        self.last = time.perf_counter()

    def lap(self, part):
        now = time.perf_counter()
        seconds, self.last = now - self.last, now
        self[part] += seconds
        return seconds


class Journal:
    """Everything a run reports as it goes: one grep-able line per epoch and one per
    restructure, the epoch saved in the run folder (with a snapshot for --resume), and
    optionally W&B."""

    def __init__(self, folder, clock, use_wandb):
        self.folder, self.clock = folder, clock
        self.wandb = wandb_log.start(folder.result, folder.path) if use_wandb else None  # optional W&B logging
        if use_wandb:
            clock.lap("wandb")
        self.epoch_started = clock.last

    def new_row(self, epoch, optimizer, tracker, model):
        """The epoch's record, begun before it trains: the optimizer's settings and the model size."""
        group = optimizer.param_groups[0]
        return dict(epoch=epoch, lr=group["lr"], weight_decay=group.get("weight_decay", 0.0),
                    params=tracker.count_params(model),
                    dendrite_sets=tracker.dendrite_sets())

    def epoch(self, row, step, state, tracker):
        self.clock.lap("graph" if step.drew_graph else "tracker")
        row.update(best=step.new_best, graph_drawn=step.drew_graph, seconds=time.perf_counter() - self.epoch_started)
        restructure = step.restructure
        self.folder.save_epoch(row, restructure and vars(restructure), state, tracker.files)
        self.clock.lap("checkpoint")
        self.epoch_started = self.clock.last
        test = f"test_acc={row['test_acc']:.2f} " if row["test_acc"] is not None else ""  # plain runs: at the end
        print(f"epoch={row['epoch']:<3d} train_loss={row['train_loss']:.4f} train_acc={row['train_acc']:.2f} "
              f"val_acc={row['val_acc']:.2f} {test}params={row['params']} dendrite_sets={row['dendrite_sets']} "
              f"seconds={row['seconds']:.2f}", flush=True)
        if restructure:  # printed once the epoch is safely on disk
            e = restructure
            print(f">>> MODEL RESTRUCTURED (Phase 2 triggered) epoch {e.epoch}: {e.kind}: {e.detail} | "
                  f"params {e.params_before:,} -> {e.params_after:,} | val_acc {e.val_acc:.2f}", flush=True)
        if self.wandb:
            self.wandb.epoch(row, restructure)

    def finish(self, final, capacity_test):
        self.folder.finish(final)
        what = "capacity test (library smoke test, not a result)" if capacity_test else "best model"
        print(f"{what}: test_acc={final['test_acc']:.2f} val_acc={final['val_acc']:.2f} (epoch {final['best_epoch']}) "
              f"params={final['params']:,} dendrite_sets={final['dendrite_sets']} epochs={final['epochs']} "
              f"wall={final['wall_seconds']:.1f}s -> {self.folder.given}/results.json")
        report_deployment(final)
        if self.wandb:
            graph = final["graph"] and self.folder.path.parent / final["graph"]
            self.wandb.finish(final, graph)


def report_phase1(folder, tracker, model, config):
    modules = tracker.dendrite_modules()
    if modules:  # a plain run has none
        params = tracker.count_params(model)
        where = "" if config.placement == "all" else f" (placement {config.placement}: the other layers tracked, no dendrites)"
        print(f"Phase 1: dendrite capacity on {', '.join(modules)}{where}; {params:,} parameters"
              + (" (the library's capacity test)" if config.capacity_test else ""))
        folder.result["phase1"] = {"dendrite_modules": modules, "placement": config.placement, "params": params}


def report_deployment(final):
    """A line per exported ONNX model (the last names its one-thread latency), one per failure."""
    for name, key in (("model.onnx", "onnx"), ("model.int8.onnx", "int8")):
        if key in final:
            m = final[key]
            ts = (f" (TorchScript: {m['torchscript_ms']['1']:.3f} / {m['torchscript_ms']['256']:.2f} ms)"
                  if "torchscript_ms" in m else "")
            timed = (f"; ONNX Runtime, 1 thread: {m['ort_ms']['1']:.3f} ms at batch 1, {m['ort_ms']['256']:.2f} ms "
                     f"at batch 256{ts}") if "ort_ms" in m else " (not timed: --no-timing)"
            print(f"{name}: {m['bytes']:,} bytes, test_acc={m['test_acc']:.2f}{timed}")
            if not m.get("within_tolerance", True):
                print(f"warning: {name} differs from the trained model by up to {m['max_logit_difference']:.3g} "
                      "in its logits, beyond float rounding")
    for error in final.get("export_errors", []):
        print(f"export failed: {error}")


def run_settings(config, device, splits, model, width):
    """What results.json records as the run's settings: its config, and what the machine, the
    data and the model made of it."""
    return {**config.as_settings(), "width": width, "device": str(device), "cpu": machine.cpu_name(), "date": machine.today(),
            "threads": torch.get_num_threads(), "torch": torch.__version__,
            "perforatedai": None if config.no_dendrites else version("perforatedai"),
            "data_sizes": splits.sizes(), "classes": splits.classes, "normalisation": splits.normalisation,
            "layer_widths": getattr(model, "widths", None),
            "plain_params": count_parameters(model)}


def describe(config, device, splits, model, folder):
    widths = getattr(model, "widths", None)
    return (f"data: {config.dataset} {splits.sizes()}, {splits.megabytes():,.1f} MB, on {device}, "
            f"{torch.get_num_threads()} thread(s); "
            f"model: {config.model_name()}, " + (f"widths {widths}, " if widths else "")
            + f"{count_parameters(model):,} parameters"
            + (f"; resuming after epoch {folder.epochs_done}" if folder.resuming else ""))


def checkpoint_state(tracker, model, optimizer, generator, amp):
    """What --resume needs besides the library's own files."""
    return {"optimizer": optimizer.state_dict(), "rng": torch.get_rng_state(),
            "scheduler": tracker.scheduler.state_dict() if tracker.scheduler else None,
            "generator": generator.get_state(), **tracker.state_dict(model), **amp.state_dict()}


def restore(state, optimizer, scheduler, generator, amp):
    optimizer.load_state_dict(state["optimizer"])
    if scheduler:
        scheduler.load_state_dict(state["scheduler"])
    amp.load_state_dict(state)
    torch.set_rng_state(state["rng"])
    generator.set_state(state["generator"])


def summary(folder, final, model, tracker, last_step, library, clock):
    """The final metrics results.json records; `final` holds the final model's accuracies and
    what its export measured."""
    history, complete = folder.result["history"], bool(last_step and last_step.complete)
    return {**final, "best_epoch": max(r["epoch"] for r in history if r["best"]),
            "epochs": len(history), "params": tracker.count_params(model),
            "dendrite_sets": tracker.dendrite_sets(), "tracker_complete": complete if library else None,
            "wall_seconds": folder.elapsed(), "timing_seconds": dict(clock),
            "graph": f"{folder.name}/{folder.name}.png" if library else None}
