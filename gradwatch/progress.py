"""A progress bar with an ETA on stderr, for gradient checks that take more than a couple of seconds.

``check_gradients`` reports ``progress(done, planned)`` after every loss evaluation; a
:class:`ProgressBar` is such a callable. It stays silent for the first ``delay`` seconds (most
checks are over by then), then redraws one line at most every ``interval`` seconds. It is off when
the stream is not a terminal, when ``GRADWATCH_PROGRESS=0`` (or off/false/no), or when asked.
"""

from __future__ import annotations

import os
import sys
import time
from typing import Callable, Mapping, Optional, TextIO

#: Values of GRADWATCH_PROGRESS that turn progress bars off.
OFF_VALUES = frozenset({"0", "off", "false", "no"})


def env_allows_progress(environ: Optional[Mapping[str, str]] = None) -> bool:
    """False when ``GRADWATCH_PROGRESS`` is 0/off/false/no, true otherwise (unset included)."""
    env = os.environ if environ is None else environ
    return env.get("GRADWATCH_PROGRESS", "").strip().lower() not in OFF_VALUES


def is_terminal(stream: Optional[TextIO]) -> bool:
    """Whether ``stream`` is an interactive terminal (a stream without ``isatty`` is not)."""
    try:
        return bool(stream is not None and stream.isatty())
    except (AttributeError, ValueError, OSError):
        return False


def wants_progress(setting: Optional[bool], stream: Optional[TextIO], environ: Optional[Mapping[str, str]] = None) -> bool:
    """Decide whether to show a bar: ``False`` or the environment turns it off, ``True`` forces it
    on (also on a stream that is not a terminal), ``None`` shows it on a terminal only."""
    if setting is False or not env_allows_progress(environ):
        return False
    if setting is True:
        return True
    return is_terminal(stream)


def _clock_text(seconds: float) -> str:
    seconds = max(0, int(round(seconds)))
    hours, rest = divmod(seconds, 3600)
    minutes, secs = divmod(rest, 60)
    return f"{hours}:{minutes:02d}:{secs:02d}" if hours else f"{minutes}:{secs:02d}"


class ProgressBar:
    r"""``progress(done, planned)`` drawn as one self-overwriting line on ``stream`` after ``delay`` s.

    >>> import io
    >>> ticks = iter([0.0, 3.0, 3.0])
    >>> out = io.StringIO()
    >>> bar = ProgressBar(stream=out, clock=lambda: next(ticks), label="check")
    >>> bar(100, 400)
    >>> bar.close()
    >>> for line in out.getvalue().split("\r")[1:]:
    ...     print(line.rstrip())
    check [######------------------]  25% 100/400 loss evaluations, ETA 0:09
    check [########################] 100% 100/100 loss evaluations, done in 0:03
    """

    def __init__(
        self,
        *,
        stream: Optional[TextIO] = None,
        delay: float = 2.0,
        interval: float = 0.1,
        label: str = "gradient check",
        width: int = 24,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        self.stream: Optional[TextIO] = sys.stderr if stream is None else stream  # None (pythonw): silent
        self.delay = float(delay)
        self.interval = float(interval)
        self.label = label
        self.width = int(width)
        self.clock = clock
        self.start = clock()
        self.shown = False
        self.done = 0
        self.planned = 0
        self._last_draw = -float("inf")
        self._last_len = 0

    def __call__(self, done: int, planned: int) -> None:
        """Note progress; draw when due. Never raises: a failure turns the bar off, the check goes on."""
        try:
            self._update(done, planned)
        except Exception:  # noqa: BLE001 - progress output must never stop a check (or training)
            self.delay = float("inf")

    def _update(self, done: int, planned: int) -> None:
        self.done, self.planned = done, max(planned, done)
        now = self.clock()
        elapsed = now - self.start
        if elapsed < self.delay or now - self._last_draw < self.interval:
            return
        self._last_draw = now
        remaining = elapsed / done * (self.planned - done) if done else float("nan")
        eta = f"ETA {_clock_text(remaining)}" if remaining == remaining else "ETA ?"
        self._draw(done, self.planned, eta)

    def _draw(self, done: int, planned: int, tail: str) -> None:
        if self.stream is None:
            self.delay = float("inf")
            return
        fraction = done / planned if planned else 1.0
        filled = int(round(fraction * self.width))
        line = (
            f"{self.label} [{'#' * filled}{'-' * (self.width - filled)}] {fraction:4.0%} "
            f"{done}/{planned} loss evaluations, {tail}"
        )
        pad = " " * max(0, self._last_len - len(line))
        try:
            self.stream.write("\r" + line + pad)
            self.stream.flush()
        except Exception:  # noqa: BLE001 - no stream, a closed or broken one: the check goes on silently
            self.delay = float("inf")
            return
        self._last_len = len(line)
        self.shown = True

    def close(self) -> None:
        """Finish the line (with the total time) if the bar was ever drawn. Never raises."""
        if not self.shown:
            return
        try:
            self._draw(self.done, self.done, f"done in {_clock_text(self.clock() - self.start)}")
            if self.stream is not None:
                self.stream.write("\n")
                self.stream.flush()
        except Exception:  # noqa: BLE001 - see _draw
            self.delay = float("inf")
        finally:
            self.shown = False

    def __enter__(self) -> "ProgressBar":
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()


__all__ = ["ProgressBar", "env_allows_progress", "is_terminal", "wants_progress"]
