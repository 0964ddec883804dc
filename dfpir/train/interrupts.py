"""Ctrl-C at step boundaries: a run interrupted anywhere resumes to the same result.

An update interrupted half-way (some parameters stepped, the schedule or the step count not yet)
would be saved as it stands, and the resumed run would apply that step a second time. Inside
[`StepBoundary.hold`][dfpir.train.interrupts.StepBoundary.hold], Ctrl-C waits until the block is done; a second Ctrl-C stops at once,
and ``StepBoundary.torn`` then says the state must not be saved.
"""

from __future__ import annotations

import signal
import threading
from contextlib import contextmanager
from typing import Iterator


class StepBoundary:
    """Defers Ctrl-C (SIGINT) to the end of the blocks it holds."""

    def __init__(self) -> None:
        self.torn = False

    @contextmanager
    def hold(self) -> Iterator[None]:
        """Run the block whole: Ctrl-C during it raises ``KeyboardInterrupt`` when it ends."""
        # Only Python's own handler is replaced, and only in the main thread (where signals land):
        # a program that handles SIGINT itself keeps its handler.
        if threading.current_thread() is not threading.main_thread() or signal.getsignal(signal.SIGINT) is not signal.default_int_handler:
            yield
            return
        pending: list[int] = []

        def note(signum: int, frame: object) -> None:
            if pending:  # asked twice: stop now, leaving a half-done block
                self.torn = True
                raise KeyboardInterrupt
            pending.append(signum)

        signal.signal(signal.SIGINT, note)
        try:
            yield
        finally:
            signal.signal(signal.SIGINT, signal.default_int_handler)
        if pending:
            raise KeyboardInterrupt
