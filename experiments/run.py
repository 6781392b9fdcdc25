"""One run with every setting of RunConfig on its command line: the demo's, and the controls
the experiments set for the runs they compare (--min-epochs, --restart-at, --lr-trace,
--prune-from, --teacher, --train-images, the library's own settings, ...).

    python -m experiments.run --no-dendrites --min-epochs 72
    python -m experiments.run --graph-every-epoch --out PAI_every_epoch

train_phase2.py offers the demo's settings only; from Python every one is a RunConfig field.
"""

import sys

import train_phase2
from neuroshrink.config import RunConfig, add_options, all_names, config_of
from neuroshrink.errors import NeuroShrinkError
from neuroshrink.flags import Parser
from neuroshrink.run_folder import Interrupted


def get_args_parser():
    p = Parser(prog="python -m experiments.run", description=__doc__.split("\n\n")[0])
    add_options(p, all_names())
    p.add_argument("--out", default="PAI", help="run folder (train_phase2 --out)")
    return p


def main(argv=None):
    args = get_args_parser().parse_args(argv)
    try:
        record = train_phase2.run(RunConfig(**config_of(args)), args.out)
    except NeuroShrinkError as e:
        sys.exit(f"error: {e}")
    except Interrupted as stop:  # saved; train_phase2.py --resume --out continues it
        sys.exit(128 + stop.signum)
    if record["final"].get("export_errors"):
        sys.exit(f"error: the run in {args.out} is saved, but its export failed: "
                 + "; ".join(record["final"]["export_errors"]))


if __name__ == "__main__":
    main()
