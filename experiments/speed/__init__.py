"""python -m experiments.speed: where the demo's time goes, against a plain PyTorch loop
(docs/performance.md). Its files:

    command   the command line and main(): the reference loop, the demo's loops, their breakdown
    costs     the strong recipe's parts and a dendritic model, seconds per epoch
"""

from experiments.speed.command import get_args_parser, main

__all__ = ["get_args_parser", "main"]
