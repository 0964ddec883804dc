"""How command-line tools report user errors: one line, no traceback, a non-zero exit code."""

from __future__ import annotations

import argparse
import math
import os
import sys
from functools import wraps
from typing import Callable, NoReturn

USAGE_ERROR = 2


class UserError(ValueError):
    """An error caused by the user's input; the message says what is wrong and what to do.

    The command-line wrapper [`cli_main`][dfpir.errors.cli_main] prints exactly these as one line. It subclasses
    ``ValueError`` so that library callers who catch ``ValueError`` keep working.
    """


class UserTypeError(UserError, TypeError):
    """A user error about the type of a value (a tensor of the wrong dtype, a non-tensor)."""


#: Set this environment variable to 1 to see the traceback behind a one-line error.
DEBUG_VARIABLE = "DFPIR_DEBUG"


def debugging() -> bool:
    """Whether ``DFPIR_DEBUG`` asks for tracebacks instead of one-line errors."""
    return os.environ.get(DEBUG_VARIABLE, "") not in ("", "0")


def cli_main(func: Callable[[list[str] | None], int]) -> Callable[[list[str] | None], int]:
    """Wrap a ``main(argv) -> exit code`` so user errors print ``error: ...`` and exit 2.

    Only [`UserError`][dfpir.errors.UserError] is caught: anything else is a bug and keeps its traceback. With
    ``DFPIR_DEBUG=1`` user errors keep theirs too.
    """

    @wraps(func)
    def wrapper(argv: list[str] | None = None) -> int:
        try:
            return func(argv)
        except UserError as exc:
            if debugging():
                raise
            print(f"error: {exc}", file=sys.stderr)
            return USAGE_ERROR
        except KeyboardInterrupt:
            print("interrupted", file=sys.stderr)
            return 130

    return wrapper


def check_at_least(name: str, value: float, low: float, note: str = "") -> None:
    """Refuse ``value`` below ``low``, NaN or infinite with a one-line [`UserError`][dfpir.errors.UserError] naming the
    option or config key ``name`` (``note``: what ``low`` means, e.g. ``"0: torch's default"``)."""
    if not (math.isfinite(value) and value >= low):
        raise UserError(f"{name} must be >= {low}{f' ({note})' if note else ''}, got {value}")


class CommandParser(argparse.ArgumentParser):
    """``argparse`` with the project's one-line errors: a bad option prints ``error: ...`` and where
    to look, instead of the usage block followed by the message (``--help`` still shows it all)."""

    def error(self, message: str) -> NoReturn:
        """Print one line naming the command and its ``--help``, and exit with status 2."""
        self.exit(USAGE_ERROR, f"error: {self.prog}: {message} (see {self.prog} --help)\n")
