from experiments.speed.command import cli, get_args_parser, main

cli(main, get_args_parser)
