"""Optional logging to Weights & Biases (`--wandb`): every epoch's numbers, every restructure
and the library's PAI.png.

With WANDB_API_KEY set (or WANDB_MODE=online) it logs online; otherwise, or when W&B cannot
be reached, it logs offline into <out>/wandb/ for a later `wandb sync`. W&B never stops a
run: an error inside it is reported once and logging stops, training goes on.
"""

import os
import sys


def start(result, out):
    """A W&B run for the training run whose record is `result`; a resumed run continues the
    W&B run it started (its id is kept in the record)."""
    import wandb  # optional: imported only for --wandb

    run_id = result.get("wandb_id")
    online = os.environ.get("WANDB_MODE", "online" if os.environ.get("WANDB_API_KEY") else "offline")
    kwargs = dict(project=os.environ.get("WANDB_PROJECT", "perforated-neuroshrink"), dir=str(out),
                  config=result["settings"], id=run_id, resume="allow" if run_id else None,
                  settings=wandb.Settings(init_timeout=30, silent=True, console="off"))
    try:
        run = wandb.init(mode=online, **kwargs)
    except Exception as e:  # no network, bad key...: keep the run, log offline
        print(f"wandb: {online} logging failed ({e}); logging offline to {out}/wandb", file=sys.stderr)
        run = wandb.init(mode="offline", **kwargs)
    result["wandb_id"] = run.id
    return WandbLog(wandb, run)


class WandbLog:
    def __init__(self, wandb, run):
        self.wandb, self.run = wandb, run

    def _safely(self, send):
        if self.run is None:
            return
        try:
            send()
        except Exception as e:
            print(f"wandb: logging stopped ({type(e).__name__}: {e}); training goes on", file=sys.stderr)
            self.run = None

    def epoch(self, row, restructure):
        numbers = {k: v for k, v in row.items() if isinstance(v, (int, float))}
        if restructure:
            numbers |= {"restructure/" + k: v for k, v in vars(restructure).items()}
        self._safely(lambda: self.run.log(numbers, step=row["epoch"]))

    def finish(self, final, graph):
        def send():
            self.run.summary.update({k: v for k, v in final.items() if isinstance(v, (int, float, str))})
            if graph is not None and graph.exists():
                self.run.log({"PAI.png": self.wandb.Image(str(graph))})
            self.run.finish()
            # finish() can return before W&B's service has written the run's records to disk
            # (seen offline, under load); teardown waits for the service to end.
            self.wandb.teardown()
        self._safely(send)
