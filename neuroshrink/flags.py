"""Command-line parsing shared by the demo and the experiments: number types that refuse what
makes no sense, and a parser whose errors are one line."""

import argparse
import math


def number(kind, low=0, low_allowed=False, below=math.inf):
    """An argparse type: a finite `kind` above `low` (or equal, if `low_allowed`) and below `below`."""
    def parse(text):
        try:
            value = kind(text)
        except ValueError:
            raise argparse.ArgumentTypeError(f"{text!r} is not a number") from None
        if not (math.isfinite(value) and (value > low or (low_allowed and value == low))):
            raise argparse.ArgumentTypeError(f"{text!r} must be a finite number {'>=' if low_allowed else '>'} {low}")
        if value >= below:
            raise argparse.ArgumentTypeError(f"{text!r} must be below {below:g}")
        return value
    return parse


def positive(kind):
    return number(kind)


def checked(check):
    """An argparse type that keeps the word as given once check(word) accepts it; check raises a
    one-line error (a UsageError) otherwise."""
    def parse(text):
        try:
            check(text)
        except Exception as e:
            raise argparse.ArgumentTypeError(str(e).partition(": ")[2] or str(e)) from None
        return text
    return parse


non_negative = number(float, low_allowed=True)
probability = number(float, low_allowed=True, below=1)


class Parser(argparse.ArgumentParser):
    """argparse, but a bad flag is one line naming the problem, not the usage block."""

    def __init__(self, *args, **kwargs):
        super().__init__(*args, allow_abbrev=False, **kwargs)

    def error(self, message):
        self.exit(2, f"error: {message} (see --help)\n")
