"""The progress bar: silent for short checks, an ETA for long ones, off when not wanted."""

from __future__ import annotations

import io
import sys

import pytest

from gradwatch.progress import ProgressBar, env_allows_progress, wants_progress


class Clock:
    """A clock the test moves by hand."""

    def __init__(self) -> None:
        self.now = 100.0

    def __call__(self) -> float:
        return self.now


class Terminal(io.StringIO):
    def isatty(self) -> bool:
        return True


class Broken(io.StringIO):
    def write(self, text: str) -> int:
        raise OSError("stream gone")


def frames(out: io.StringIO) -> list:
    return [f.rstrip() for f in out.getvalue().split("\r") if f.strip()]


def test_silent_for_a_short_check():
    clock, out = Clock(), io.StringIO()
    bar = ProgressBar(stream=out, clock=clock, delay=2.0)
    for done in range(1, 50):
        clock.now += 0.01
        bar(done, 100)
    bar.close()
    assert out.getvalue() == ""


def test_long_check_shows_progress_and_eta():
    clock, out = Clock(), io.StringIO()
    bar = ProgressBar(stream=out, clock=clock, delay=2.0, label="check")
    clock.now += 3.0
    bar(100, 400)  # 3 s for a quarter: 9 s to go
    assert frames(out) == ["check [######------------------]  25% 100/400 loss evaluations, ETA 0:09"]


def test_eta_follows_a_growing_plan():
    clock, out = Clock(), io.StringIO()
    bar = ProgressBar(stream=out, clock=clock, delay=0.0, interval=0.0)
    clock.now += 10.0
    bar(100, 200)
    clock.now += 10.0
    bar(200, 600)
    assert frames(out)[0].endswith("100/200 loss evaluations, ETA 0:10")
    assert frames(out)[1].endswith("200/600 loss evaluations, ETA 0:40")


def test_redraws_at_most_once_per_interval():
    clock, out = Clock(), io.StringIO()
    bar = ProgressBar(stream=out, clock=clock, delay=0.0, interval=0.5)
    for done in range(1, 101):
        clock.now += 0.01  # 1 s in all
        bar(done, 100)
    assert len(frames(out)) == 2


def test_close_finishes_the_line_with_the_total_time():
    clock, out = Clock(), io.StringIO()
    bar = ProgressBar(stream=out, clock=clock, delay=1.0)
    clock.now += 2.0
    bar(10, 100)
    clock.now += 63.0
    bar.close()
    assert out.getvalue().endswith("\n")
    assert frames(out)[-1].endswith("10/10 loss evaluations, done in 1:05")


def test_a_shorter_line_erases_the_longer_one_before_it():
    clock, out = Clock(), io.StringIO()
    bar = ProgressBar(stream=out, clock=clock, delay=0.0, interval=0.0)
    clock.now += 4000.0
    bar(1, 1000)  # ETA over an hour: a long line
    bar.close()
    first, last = out.getvalue().split("\r")[1:]
    assert len(last.rstrip("\n")) >= len(first)


def test_a_broken_stream_does_not_break_the_check():
    clock = Clock()
    bar = ProgressBar(stream=Broken(), clock=clock, delay=0.0)
    clock.now += 5.0
    bar(1, 2)
    bar(2, 2)
    bar.close()
    assert bar.done == 2 and not bar.shown


# ------------------------------------------------------------------------------------------
# when a bar is wanted


def test_not_on_a_stream_that_is_not_a_terminal():
    assert wants_progress(None, io.StringIO(), environ={}) is False


def test_on_a_terminal_by_default():
    assert wants_progress(None, Terminal(), environ={}) is True


@pytest.mark.parametrize("value", ["0", "off", "False", "no"])
def test_environment_turns_it_off(value):
    assert env_allows_progress({"GRADWATCH_PROGRESS": value}) is False
    assert wants_progress(True, Terminal(), environ={"GRADWATCH_PROGRESS": value}) is False


def test_environment_left_at_one_keeps_it():
    assert wants_progress(None, Terminal(), environ={"GRADWATCH_PROGRESS": "1"}) is True


def test_asked_off():
    assert wants_progress(False, Terminal(), environ={}) is False


def test_asked_on_even_without_a_terminal():
    assert wants_progress(True, io.StringIO(), environ={}) is True


def test_a_closed_stream_is_not_a_terminal():
    stream = io.StringIO()
    stream.close()
    assert wants_progress(None, stream, environ={}) is False


class RaisesOdd:
    """A stream whose write raises something that is neither OSError nor ValueError."""

    def write(self, text):
        raise RuntimeError("the logging framework's stream is in a bad state")

    def flush(self):
        pass


def test_a_stream_raising_any_error_does_not_break_the_check():
    clock = Clock()
    bar = ProgressBar(stream=RaisesOdd(), clock=clock, delay=0.0)
    clock.now += 5.0
    bar(1, 2)
    bar(2, 2)
    bar.close()
    assert bar.done == 2 and not bar.shown


def test_no_stderr_at_all_does_not_break_the_check(monkeypatch):
    monkeypatch.setattr(sys, "stderr", None)  # pythonw, some daemons
    clock = Clock()
    bar = ProgressBar(clock=clock, delay=0.0)
    clock.now += 5.0
    bar(1, 2)
    bar.close()
    assert bar.done == 1 and not bar.shown


def test_a_clock_that_fails_does_not_break_the_check():
    def clock():
        raise OSError("no clock")

    bar = ProgressBar(stream=io.StringIO(), clock=lambda: 0.0, delay=0.0)
    bar.clock = clock
    bar(1, 2)  # swallowed: the bar turns itself off
    assert bar.delay == float("inf")

