"""How command-line tools report user errors: one line, no traceback, a non-zero exit code."""

from __future__ import annotations

import sys
from functools import wraps
from typing import Callable

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
