"""Progress for long work: a bar in a terminal, periodic log lines everywhere else.

A progress bar that redraws itself is right for a person at a terminal and wrong for a log file
or a CI job, where it either disappears (``disable=None``) or floods the file with carriage
returns. [`progress`][dfpir.progress.progress] gives the bar when standard error is a terminal and, otherwise, one
plain line every ``every`` seconds (and one at the end), so a long run is never silent.
[`TileProgress`][dfpir.progress.TileProgress] does the same for work that reports itself through a ``progress(done,
total)`` callback, such as the tiles of one image ([`dfpir.inference.runner.Restorer.restore`][dfpir.inference.runner.Restorer.restore]).
"""

from __future__ import annotations

import sys
import time
from typing import IO, Any

from tqdm import tqdm

#: Seconds between two log lines when standard error is not a terminal.
LOG_EVERY = 30.0


class LogLines:
    """The part of ``tqdm``'s interface the commands use, printed as occasional plain lines.

    Parameters
    ----------
    total : int or None
        Units of work in all (``None``: unknown).
    desc : str
        What is being done ("restoring", "train"), the start of every line.
    unit : str
        The unit counted ("image", "tile", "step").
    initial : int
        Units already done (a resumed run).
    every : float
        Seconds between two lines.
    file : text stream
        Where the lines go (standard error by default).
    summary : bool
        Print the closing line even when the work ended before the first periodic one (a command
        that prints its own summary, such as ``restore``, passes ``False``).
    """

    def __init__(self, total: int | None = None, desc: str = "", unit: str = "it", initial: int = 0,
                 every: float = LOG_EVERY, file: IO[str] | None = None, summary: bool = True) -> None:
        self.total, self.desc, self.unit, self.n = total, desc, unit, initial
        self.every, self.file, self.summary = every, file or sys.stderr, summary
        self.postfix = ""
        self.start = self.last = time.monotonic()
        self.start_n = initial
        self.lines, self.printed_n = 0, None
        self.closed = False

    def update(self, n: int = 1) -> None:
        """Count ``n`` more units; print a line if ``every`` seconds have passed since the last."""
        self.n += n
        now = time.monotonic()
        if now - self.last >= self.every:
            self.last = now
            self._line(now)

    def set_postfix(self, **values: Any) -> None:
        """Values shown at the end of the next line (``loss=0.03``)."""
        self.postfix = ", ".join(f"{k}={v}" for k, v in values.items())

    def set_description(self, desc: str) -> None:
        """Change what the lines say is being done."""
        self.desc = desc

    def _line(self, now: float) -> None:
        done = f"{self.n}/{self.total}" if self.total else f"{self.n}"
        elapsed = now - self.start
        rate = (self.n - self.start_n) / elapsed if elapsed > 0 else 0.0
        tail = f", {self.postfix}" if self.postfix else ""
        print(f"{self.desc}: {done} {self.unit}s, {elapsed:.0f} s, {rate:.2f} {self.unit}/s{tail}", file=self.file, flush=True)
        self.lines, self.printed_n = self.lines + 1, self.n

    def close(self) -> None:
        """Print the closing line (once; not when the last line already had the final count, nor
        for short work when ``summary`` is off)."""
        if self.closed:
            return
        self.closed = True
        if (self.summary or self.lines) and self.printed_n != self.n:
            self._line(time.monotonic())

    def __enter__(self) -> "LogLines":
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()


def progress(total: int | None = None, desc: str = "", unit: str = "it", initial: int = 0,
             disable: bool = False, every: float = LOG_EVERY, file: IO[str] | None = None,
             summary: bool = True, leave: bool = True) -> "tqdm | LogLines":
    """A progress bar on a terminal, else [`LogLines`][dfpir.progress.LogLines]; both count with ``update(n)``.

    ``disable`` silences it altogether (the other processes of a distributed run); ``summary``
    is [`LogLines`][dfpir.progress.LogLines]'s, ``leave`` tqdm's (``False``: the bar disappears when closed, for a bar
    under another one).
    """
    stream = file or sys.stderr
    if disable or stream.isatty():
        return tqdm(total=total, desc=desc, unit=unit, initial=initial, disable=disable, file=stream,
                    dynamic_ncols=True, leave=leave)
    return LogLines(total, desc, unit, initial, every, stream, summary)


class TileProgress:
    """A ``progress(done, total)`` callback shown as a [`progress`][dfpir.progress.progress] bar (without a summary line).

    The bar opens at the first call, when the total is known (a whole-image pass never calls it,
    so shows nothing), and closes at the last; use it in a ``with`` block so an error closes it too.

    Parameters
    ----------
    desc : str
        What is being done, e.g. the image's name.
    unit : str
        The unit counted.
    every, file
        As for [`progress`][dfpir.progress.progress].
    """

    def __init__(self, desc: str, unit: str = "tile", every: float = LOG_EVERY, file: IO[str] | None = None) -> None:
        self.desc, self.unit, self.every, self.file = desc, unit, every, file
        self.bar: tqdm | LogLines | None = None

    def __call__(self, done: int, total: int) -> None:
        """Record that ``done`` of ``total`` units are finished."""
        if self.bar is None:
            self.bar = progress(total, self.desc, self.unit, every=self.every, file=self.file, summary=False, leave=False)
        self.bar.update(done - self.bar.n)
        if done >= total:
            self.close()

    def close(self) -> None:
        """Close the bar, if one is open."""
        if self.bar is not None:
            self.bar.close()
            self.bar = None

    def __enter__(self) -> "TileProgress":
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()
