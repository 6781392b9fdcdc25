"""The errors a command reports as one line, with no traceback: the message says what went
wrong and what to do. Defined apart from the code that raises them, so that catching one
never imports perforatedai, Optuna or torch-pruning."""


class NeuroShrinkError(Exception):
    """A failure the user can act on; its message is one line."""


class UsageError(NeuroShrinkError):
    """Bad input from the user; the message names the valid choices."""


class DataError(NeuroShrinkError):
    """A dataset that cannot be found or read."""


class LibraryError(NeuroShrinkError):
    """perforatedai failed; raised instead of its debugger or its sys.exit(0)."""


def first_line(error):
    """`Type: first line of the message`, for quoting another library's error in one line."""
    return f"{type(error).__name__}: " + (str(error).strip().splitlines() or [""])[0]
