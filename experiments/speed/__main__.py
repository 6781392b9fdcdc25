from experiments.speed import cli, get_args_parser, main

cli(main, get_args_parser)
