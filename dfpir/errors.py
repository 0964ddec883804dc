"""How command-line tools report user errors: one line, no traceback, a non-zero exit code."""

from __future__ import annotations

import argparse
import math
import sys
from functools import wraps
from pathlib import Path
from typing import Callable, NoReturn

USAGE_ERROR = 2


class UserError(Exception):
    """An error caused by the user's input; the message says what is wrong and what to do."""


def cli_main(func: Callable[[list[str] | None], int]) -> Callable[[list[str] | None], int]:
    """Wrap a ``main(argv) -> exit code`` so user errors print ``error: ...`` and exit 2."""

    @wraps(func)
    def wrapper(argv: list[str] | None = None) -> int:
        try:
            return func(argv)
        except (UserError, ValueError, OSError) as exc:
            print(f"error: {exc}", file=sys.stderr)
            return USAGE_ERROR
        except KeyboardInterrupt:
            print("interrupted", file=sys.stderr)
            return 130

    return wrapper


def check_at_least(name: str, value: float, low: float, note: str = "") -> None:
    """Refuse ``value`` below ``low``, NaN or infinite with a one-line :class:`UserError` naming the
    option or config key ``name`` (``note``: what ``low`` means, e.g. ``"0: torch's default"``)."""
    if not (math.isfinite(value) and value >= low):
        raise UserError(f"{name} must be >= {low}{f' ({note})' if note else ''}, got {value}")


def check_output_folder(folder: Path) -> None:
    """Make sure files can be written in ``folder`` (created if missing), else a one-line :class:`UserError`.

    Commands call it before long work, so that a bad output path fails in a second, not after.
    The folders it had to create for the test are removed again (the writers create them), so a
    run that fails later leaves no empty folder behind.
    """
    folder = Path(folder)
    if folder.exists() and not folder.is_dir():
        raise UserError(f"cannot write to output folder {folder}: it is a file")
    created = [p for p in (folder, *folder.parents) if not p.exists()]  # deepest first
    try:
        folder.mkdir(parents=True, exist_ok=True)
        probe = folder / ".write_test"
        probe.write_text("")
        probe.unlink()
    except OSError as exc:
        raise UserError(f"cannot write to output folder {folder}: {exc.strerror or exc}") from None
    finally:
        for p in created:
            try:
                p.rmdir()
            except OSError:  # not empty, or never made: it and its parents stay
                break


class CommandParser(argparse.ArgumentParser):
    """``argparse`` with the project's one-line errors: a bad option prints ``error: ...`` and where
    to look, instead of the usage block followed by the message (``--help`` still shows it all)."""

    def error(self, message: str) -> NoReturn:
        """Print one line naming the command and its ``--help``, and exit with status 2."""
        self.exit(USAGE_ERROR, f"error: {self.prog}: {message} (see {self.prog} --help)\n")
