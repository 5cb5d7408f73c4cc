"""The ``gradwatch`` command: ``report`` a logdir's grad-check history, ``run`` a scheduled debug run.

This is the only module that prints or exits. ``main(argv)`` returns the exit status::

    gradwatch report LOGDIR [--json]
    gradwatch run --config FILE [--logdir DIR] [--junit FILE] [--grace SECONDS] -- COMMAND ...

Every check logged is one row, whatever its step; a run fails when any of its checks failed.

Exit status of ``report``: 1 when a check failed; 2 when none failed but a check was refused or
inconclusive, no check was found, or an event file is damaged (it is named); 0 when every check of
every run passed.

Exit status of ``run``, first match wins: 128 + N when ``gradwatch run`` itself got signal N (it is
passed on to the command's process group, and the report is still written); 1 when a check failed;
2 when a check was refused or inconclusive or an event file is damaged; the command's own status
when it failed and no check explains it (a signal N gives 128 + N); 2 when no check ran; 0 when
every check passed.
"""

from __future__ import annotations

import argparse
import json
import os
import re
import shutil
import signal
import subprocess
import sys
import tempfile
import time
from typing import Any, Dict, List, Optional, Sequence, TextIO, Tuple

from . import __version__
from .errors import GradWatchError
from .history import CheckRecord, Damage, History, latest_by_run, run_verdicts, scan
from .junit import first_line, fmt_difference, write_junit, xml_safe  # noqa: F401  (xml_safe: part of the CLI's API)

PROG = "gradwatch"


# --------------------------------------------------------------------------------------------
# formatting


_VERDICT_SHOWN = {"passed": "passed", "failed": "FAILED", "refused": "refused", "inconclusive": "INCONCLUSIVE"}


def _detail(r: CheckRecord) -> str:
    if r.kind == "refusal":
        return first_line(r.text)
    parts = []
    if r.failed:
        parts.append(", ".join(r.failed))
    if r.inconclusive:
        parts.append("inconclusive: " + ", ".join(r.inconclusive))
    return "; ".join(parts)


def format_table(records: Sequence[CheckRecord]) -> str:
    """One row per check: run, step, verdict, difference, failing tensors (or why it was refused)."""
    rows: List[Tuple[str, ...]] = [("run", "step", "verdict", "difference", "failing tensors / reason")]
    for r in records:
        rows.append((r.run, str(r.step), _VERDICT_SHOWN[r.verdict], fmt_difference(r.difference), _detail(r)))
    widths = [max(len(row[i]) for row in rows) for i in range(4)]
    lines = []
    for row in rows:
        cells = [row[0].ljust(widths[0]), row[1].rjust(widths[1]), row[2].ljust(widths[2]), row[3].ljust(widths[3])]
        lines.append(("  ".join(cells) + "  " + row[4]).rstrip())
    return "\n".join(lines)


def _steps(records: Sequence[CheckRecord], verdict: str) -> str:
    steps = [str(r.step) for r in records if r.verdict == verdict]
    shown = ", ".join(steps[:10]) + (f" and {len(steps) - 10} more" if len(steps) > 10 else "")
    return f"{len(steps)} {verdict} (step{'s' if len(steps) != 1 else ''} {shown})"


def report_status(records: Sequence[CheckRecord], damaged: Sequence[Damage] = ()) -> Tuple[int, List[str]]:
    """The exit status of ``report`` and one line per run (and per damaged file) saying why.

    A run fails when any of its checks failed; 1 then, else 2 for a refusal, an inconclusive check,
    a damaged event file or no check at all, else 0.
    """
    lines = [f"DAMAGED: {damage}" for damage in damaged]
    verdicts = run_verdicts(list(records))
    if not verdicts:
        return 2, lines + ["no gradient check found"]
    for run in sorted(verdicts):
        mine = [r for r in records if r.run == run]
        if verdicts[run] == "passed":
            lines.append(f"{run}: passed: all {len(mine)} check{'s' if len(mine) != 1 else ''} right")
            continue
        counts = [_steps(mine, v) for v in ("failed", "inconclusive", "refused") if any(r.verdict == v for r in mine)]
        lines.append(f"{run}: {verdicts[run].upper()}: {len(mine)} checks, " + "; ".join(counts))
    found = set(verdicts.values())
    status = 1 if "failed" in found else 2 if (found - {"passed"}) or damaged else 0
    return status, lines


# --------------------------------------------------------------------------------------------
# report


def _cmd_report(args: argparse.Namespace, out: "_Output", err: "_Output") -> int:
    try:
        history = scan(args.logdir)
    except GradWatchError as exc:
        err.say(f"{PROG} report: {exc}")
        return 2
    records = history.records
    status, lines = report_status(records, history.damaged)
    for damage in history.damaged:
        err.say(f"{PROG} report: warning: {damage}")
    if args.json:
        latest = latest_by_run(records)
        verdicts = run_verdicts(records)
        payload = {
            "logdir": os.path.abspath(args.logdir),
            "exit_status": status,
            "runs": {run: {"latest_step": r.step, "verdict": verdicts[run],
                           "checks": sum(1 for c in records if c.run == run)} for run, r in sorted(latest.items())},
            "damaged": [{"path": d.path, "offset": d.offset, "reason": d.reason} for d in history.damaged],
            "checks": [r.to_dict() for r in records],
        }
        out.say(json.dumps(payload, indent=2, allow_nan=False))
        return status
    if records:
        out.say(format_table(records))
        out.say()
    else:
        out.say(f"no gradient check found under {args.logdir}")
    for line in lines:
        out.say(line)
    return status


# --------------------------------------------------------------------------------------------
# run


def _fresh_dir(base: str) -> str:
    """A new, empty directory under ``base``, named by the local time (a suffix if taken)."""
    os.makedirs(base, exist_ok=True)
    stamp = time.strftime("%Y%m%d-%H%M%S")
    for n in range(1000):
        path = os.path.join(base, stamp if n == 0 else f"{stamp}-{n}")
        try:
            os.mkdir(path)
            return path
        except FileExistsError:
            continue
    raise GradWatchError(f"cannot make a fresh run directory under {base!r}")


def run_status(records: Sequence[CheckRecord], returncode: int, damaged: Sequence[Damage] = (),
               signalled: Optional[int] = None) -> Tuple[int, str]:
    """The exit status of ``run`` and the sentence that explains it."""
    checks = [r for r in records if r.kind == "check"]
    failed = [r for r in checks if r.verdict == "failed"]
    unsure = [r for r in checks if r.verdict == "inconclusive"]
    refused = [r for r in records if r.kind == "refusal"]
    if signalled is not None:
        return 128 + signalled, (f"INTERRUPTED by signal {signalled} (passed on to the command), after "
                                 f"{len(checks)} check{'s' if len(checks) != 1 else ''}, {len(failed)} failed")
    if failed:
        first = failed[0]
        more = f"; {len(failed)} of {len(checks)} checks failed" if len(failed) > 1 else ""
        return 1, f"FAILED: the check at step {first.step} found wrong gradients ({', '.join(first.failed)}){more}"
    if refused:
        return 2, f"REFUSED: the check at step {refused[0].step} was refused: {first_line(refused[0].text)}"
    if unsure:
        return 2, (f"INCONCLUSIVE: the check at step {unsure[0].step} could not settle "
                   f"{', '.join(unsure[0].inconclusive) or 'every tensor'}; see its report")
    if damaged:
        return 2, f"DAMAGED: {damaged[0]}"
    if returncode != 0:
        status = 128 - returncode if returncode < 0 else returncode
        how = f"was killed by signal {-returncode}" if returncode < 0 else f"exited with status {returncode}"
        return status, f"the command {how} and no check explains it; passing its status on"
    if not checks:
        return 2, "no gradient check ran (did the script build a gradwatch.GradWatch and call on_step?)"
    return 0, f"passed: all {len(checks)} check{'s' if len(checks) != 1 else ''} right"


#: Signals ``run`` passes on to the command's process group.
FORWARDED = (signal.SIGINT, signal.SIGTERM)
#: Seconds the command gets to finish after a forwarded signal before its process group is killed.
GRACE_SECONDS = 10.0


class _Forwarder:
    """Passes SIGINT and SIGTERM on to a process group, then kills it when it outstays the grace period."""

    def __init__(self, process: "subprocess.Popen[bytes]", grace: float) -> None:
        self.process = process
        self.grace = grace
        self.received: Optional[int] = None
        self.deadline: Optional[float] = None
        self.previous: Dict[int, Any] = {}

    def __enter__(self) -> "_Forwarder":
        try:
            for signum in FORWARDED:
                self.previous[signum] = signal.signal(signum, self._handle)
        except ValueError:  # not the main thread: no handlers, the command is on its own
            self.__exit__()
        return self

    def __exit__(self, *exc: object) -> None:
        for signum, handler in self.previous.items():
            signal.signal(signum, handler)
        self.previous.clear()

    def _handle(self, signum: int, frame: Any) -> None:
        if self.received is None:
            self.received = signum
            self.deadline = time.monotonic() + self.grace
        self._signal_group(signum)

    def _signal_group(self, signum: int) -> None:
        try:
            os.killpg(self.process.pid, signum)
        except OSError:  # the group is gone already
            pass

    def wait(self) -> int:
        while True:
            try:
                return self.process.wait(timeout=0.2)
            except subprocess.TimeoutExpired:
                if self.deadline is not None and time.monotonic() >= self.deadline:
                    self._signal_group(signal.SIGKILL)
                    return self.process.wait()


def _start(command: List[str], env: Dict[str, str], err: "_Output", grace: float) -> Tuple[int, Optional[int]]:
    """Run ``command`` in its own process group; its status and the signal ``run`` got, if any."""
    try:
        process = subprocess.Popen(command, env=env, start_new_session=True)
    except OSError as exc:
        err.say(f"{PROG} run: cannot start {command[0]!r}: {exc.strerror or exc}")
        return (127 if isinstance(exc, FileNotFoundError) else 126), None
    with _Forwarder(process, grace) as forwarder:
        returncode = forwarder.wait()
    return returncode, forwarder.received


def _interpreter_hint(command: Sequence[str]) -> Optional[str]:
    """When COMMAND runs a Python other than gradwatch's own, say so (it may lack gradwatch)."""
    if not re.fullmatch(r"python[0-9.]*", os.path.basename(command[0])):
        return None
    found = shutil.which(command[0])
    ours = os.path.realpath(sys.executable)
    same_dir = found is not None and os.path.dirname(os.path.abspath(found)) == os.path.dirname(sys.executable)
    if found is not None and os.path.realpath(found) == ours and same_dir:
        return None
    return (f"hint: {command[0]!r} is {found or 'not found'}, not the Python gradwatch is installed in "
            f"({sys.executable}); if the script could not import gradwatch, run it with that one, "
            "or activate its virtual environment first")


def _cmd_run(args: argparse.Namespace, command: List[str], out: "_Output", err: "_Output") -> int:
    from .config import load_config  # only `run` needs it
    from .errors import ConfigError

    if not command:
        err.say(f"{PROG} run: no command given; put it after --, e.g. "
                f"{PROG} run --config configs/debug.yaml -- python train.py")
        return 2
    if not (args.grace >= 0 and args.grace < float("inf")):
        err.say(f"{PROG} run: --grace must be a number of seconds >= 0; got {args.grace!r}")
        return 2
    if args.junit is not None and not args.junit.strip():
        err.say(f"{PROG} run: --junit needs a file name; got {args.junit!r}")
        return 2
    try:
        config = load_config(args.config)
    except ConfigError as exc:
        err.say(f"{PROG} run: {exc}")
        return 2
    config_path = os.path.abspath(args.config)
    base = args.logdir if args.logdir is not None else config.logdir
    temporary = base is None
    try:
        logdir = tempfile.mkdtemp(prefix="gradwatch-run-") if temporary else _fresh_dir(os.path.abspath(str(base)))
    except (OSError, GradWatchError) as exc:
        err.say(f"{PROG} run: cannot make a log directory under {base!r}: {exc}")
        return 2
    env = dict(os.environ, GRADWATCH="1", GRADWATCH_CONFIG=config_path, GRADWATCH_LOGDIR=logdir)
    err.say(f"{PROG} run: checks on (config {config_path}), logging to {logdir}")
    err.say(f"{PROG} run: $ {subprocess.list2cmdline(command)}")
    out.flush()
    start = time.monotonic()
    returncode, signalled = _start(command, env, err, args.grace)
    seconds = time.monotonic() - start
    try:
        history = scan(logdir)
    except GradWatchError as exc:
        err.say(f"{PROG} run: {exc}")
        history = History([], [])
    for damage in history.damaged:
        err.say(f"{PROG} run: warning: {damage}")
    records = history.records
    status, sentence = run_status(records, returncode, history.damaged, signalled)
    out.say()
    if records:
        out.say(format_table(records))
    out.say(f"{PROG} run: {sentence}")
    hint = _interpreter_hint(command) if not records and returncode != 0 else None
    if hint:
        err.say(f"{PROG} run: {hint}")
    if args.junit is not None:
        try:
            write_junit(args.junit, records, command=command, returncode=returncode, config=config_path,
                        logdir=logdir, seconds=seconds, damaged=history.damaged, signalled=signalled)
        except OSError as exc:
            err.say(f"{PROG} run: cannot write the JUnit report {args.junit!r}: {exc.strerror or exc}")
            status = status or 2
    if temporary:
        shutil.rmtree(logdir, ignore_errors=True)
    else:
        out.say(f"{PROG} run: event files in {logdir} (tensorboard --logdir {logdir})")
    return status


class _Output:
    """A stream the command prints to; once the reader has gone (``| head``), it goes quiet."""

    def __init__(self, stream: Optional[TextIO]) -> None:
        self.stream = stream
        self.broken = stream is None

    def say(self, text: str = "") -> None:
        if self.broken or self.stream is None:
            return
        try:
            self.stream.write(text + "\n")
            self.stream.flush()
        except (BrokenPipeError, ValueError, OSError):
            self._go_quiet()

    def flush(self) -> None:
        if not self.broken and self.stream is not None:
            try:
                self.stream.flush()
            except (BrokenPipeError, ValueError, OSError):
                self._go_quiet()

    def _go_quiet(self) -> None:
        """Stop writing, and point the stream's descriptor at /dev/null so the exit flush is silent too."""
        self.broken = True
        try:
            fd = self.stream.fileno() if self.stream is not None else -1
        except (AttributeError, ValueError, OSError):
            return
        if fd >= 0:
            null = os.open(os.devnull, os.O_WRONLY)
            try:
                os.dup2(null, fd)
            finally:
                os.close(null)


# --------------------------------------------------------------------------------------------
# entry point


def _parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog=PROG, description="Gradient checks for hand-written NumPy backprop: reports and scheduled debug runs.")
    parser.add_argument("--version", action="version", version=f"{PROG} {__version__}")
    sub = parser.add_subparsers(dest="command", metavar="{report,run}")
    sub.required = True
    report = sub.add_parser(
        "report", help="the grad-check history logged under LOGDIR",
        description="One row per check, read from the event files under LOGDIR; a run fails when any of its "
                    "checks failed. Exit status: 0 every check passed, 1 a check failed, 2 none failed but a check "
                    "was refused or inconclusive, no check was found, or an event file is damaged.")
    report.add_argument("logdir", metavar="LOGDIR")
    report.add_argument("--json", action="store_true", help="print JSON for machines")
    run = sub.add_parser(
        "run", help="run a training script with the checks switched on, then report",
        usage=f"{PROG} run --config FILE [--logdir DIR] [--junit FILE] [--grace SECONDS] -- COMMAND ...",
        description="Runs COMMAND with GRADWATCH=1, GRADWATCH_CONFIG and GRADWATCH_LOGDIR set, so every "
                    "gradwatch.GradWatch it builds checks as the config says, then reports. SIGINT and SIGTERM are "
                    "passed on to COMMAND's process group (killed after a grace period); the report is still "
                    "written. Exit status: 128+N after signal N, 1 a check failed, 2 a check was refused or "
                    "inconclusive, COMMAND's own status if it failed otherwise, 2 no check ran, 0 every check passed.")
    run.add_argument("--config", required=True, metavar="FILE", help="YAML config applied to every GradWatch")
    run.add_argument("--logdir", metavar="DIR",
                     help="keep the event files in a new subdirectory of DIR (default: the config's logdir; "
                          "without either, a temporary directory removed afterwards)")
    run.add_argument("--junit", metavar="FILE", help="also write a JUnit XML report, one test case per check")
    run.add_argument("--grace", metavar="SECONDS", type=float, default=GRACE_SECONDS,
                     help="after passing on SIGINT/SIGTERM, wait this long before killing COMMAND's process group "
                          f"(default {GRACE_SECONDS:g})")
    return parser


def main(argv: Optional[Sequence[str]] = None) -> int:
    """Run the ``gradwatch`` command with ``argv`` (default ``sys.argv[1:]``); return its exit status."""
    argv = list(sys.argv[1:] if argv is None else argv)
    command: List[str] = []
    if "--" in argv and "run" in argv[: argv.index("--")]:
        cut = argv.index("--")
        argv, command = argv[:cut], argv[cut + 1:]
    parser = _parser()
    try:
        args = parser.parse_args(argv)
    except SystemExit as exc:  # --help, --version, or a usage error (argparse printed it)
        return exc.code if isinstance(exc.code, int) else 2
    out, err = _Output(sys.stdout), _Output(sys.stderr)
    if args.command == "report":
        return _cmd_report(args, out, err)
    return _cmd_run(args, command, out, err)


if __name__ == "__main__":  # pragma: no cover
    sys.exit(main())
