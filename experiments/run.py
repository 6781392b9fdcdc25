"""One run with every setting of RunConfig on its command line: the demo's, and the controls
the experiments set for the runs they compare (--min-epochs, --restart-at, --lr-trace,
--prune-from, --teacher, --train-images, the library's own settings, ...).

    python -m experiments.run --no-dendrites --min-epochs 72
    python -m experiments.run --graph-every-epoch --out PAI_every_epoch

train_phase2.py offers the demo's settings only; from Python every one is a RunConfig field.
"""

import train_phase2
from neuroshrink.options import all_names


def get_args_parser():
    return train_phase2.get_args_parser(all_names(), prog="python -m experiments.run")


def main(argv=None):
    train_phase2.cli(argv, get_args_parser())


if __name__ == "__main__":
    main()
