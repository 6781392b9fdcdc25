from experiments.common.runner import exit_status
from experiments.speed import get_args_parser, main

with exit_status():
    main(get_args_parser().parse_args())
