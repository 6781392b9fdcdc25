"""python -m experiments.speed: where the demo's time goes, against a plain PyTorch loop
(docs/performance.md). Its files:

    command          the command line and main(): the demo's loops against the reference loop, their breakdown
    costs            the strong recipe's parts and a dendritic model, seconds per epoch
    time_to_target   --time-to-target: minutes to accuracy by recipe, the step against the CPU's limit;
                     the reference loop (textbook_pass), records and their report
"""

from experiments.speed.command import get_args_parser, main

__all__ = ["get_args_parser", "main"]
