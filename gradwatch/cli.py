"""The ``gradwatch`` command: ``report`` a logdir's grad-check history, ``run`` a scheduled debug run.

This is the only module that prints or exits. ``main(argv)`` returns the exit status::

    gradwatch report LOGDIR [--json]
    gradwatch run --config FILE [--logdir DIR] [--junit FILE] -- COMMAND ...

Exit status of ``report``: 0 when every run's latest check passed, 1 when one failed, 2 when a
run's latest event is a refused check or no check was found (a failure outranks a refusal).

Exit status of ``run``, first match wins: 1 when a check failed; 2 when a check was refused; the
command's own status when it failed and no check explains it (a signal N gives 128 + N); 2 when no
check ran; 0 when every check passed.
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import subprocess
import sys
import tempfile
import time
from typing import List, Optional, Sequence, TextIO, Tuple
from xml.etree import ElementTree as ET

from . import __version__
from .errors import GradWatchError
from .history import CheckRecord, latest_by_run, read_history

PROG = "gradwatch"


# --------------------------------------------------------------------------------------------
# formatting


def _fmt_difference(value: Optional[float]) -> str:
    return "-" if value is None else f"{value:.3e}"


def _first_line(text: str, width: int = 100) -> str:
    line = next((part.strip() for part in text.splitlines() if part.strip()), "")
    return line if len(line) <= width else line[: width - 3] + "..."


def format_table(records: Sequence[CheckRecord]) -> str:
    """One row per run and check step: difference, verdict, failing tensors (or why it was refused)."""
    rows: List[Tuple[str, ...]] = [("run", "step", "verdict", "difference", "failing tensors / reason")]
    for r in records:
        if r.kind == "refusal":
            detail = _first_line(r.text)
        else:
            detail = ", ".join(r.failed)
        verdict = {"passed": "passed", "failed": "FAILED", "refused": "refused"}[r.verdict]
        rows.append((r.run, str(r.step), verdict, _fmt_difference(r.difference), detail))
    widths = [max(len(row[i]) for row in rows) for i in range(4)]
    lines = []
    for row in rows:
        cells = [row[0].ljust(widths[0]), row[1].rjust(widths[1]), row[2].ljust(widths[2]), row[3].ljust(widths[3])]
        lines.append(("  ".join(cells) + "  " + row[4]).rstrip())
    return "\n".join(lines)


def report_status(records: Sequence[CheckRecord]) -> Tuple[int, List[str]]:
    """The exit status of ``report`` and one line per run saying what its latest event was."""
    latest = latest_by_run(list(records))
    if not latest:
        return 2, ["no gradient check found"]
    lines = []
    for run in sorted(latest):
        r = latest[run]
        if r.kind == "refusal":
            lines.append(f"{run}: latest event (step {r.step}) is a REFUSED check: {_first_line(r.text)}")
        elif r.passed:
            lines.append(f"{run}: latest check (step {r.step}) passed")
        else:
            lines.append(f"{run}: latest check (step {r.step}) FAILED: {', '.join(r.failed) or 'see the report'}")
    verdicts = {r.verdict for r in latest.values()}
    status = 1 if "failed" in verdicts else 2 if "refused" in verdicts else 0
    return status, lines


# --------------------------------------------------------------------------------------------
# report


def _cmd_report(args: argparse.Namespace, out: TextIO, err: TextIO) -> int:
    try:
        records = read_history(args.logdir)
    except GradWatchError as exc:
        print(f"{PROG} report: {exc}", file=err)
        return 2
    status, lines = report_status(records)
    if args.json:
        latest = latest_by_run(records)
        payload = {
            "logdir": os.path.abspath(args.logdir),
            "exit_status": status,
            "runs": {run: {"latest_step": r.step, "verdict": r.verdict} for run, r in sorted(latest.items())},
            "checks": [r.to_dict() for r in records],
        }
        print(json.dumps(payload, indent=2, allow_nan=False), file=out)
        return status
    if records:
        print(format_table(records), file=out)
        print(file=out)
    else:
        print(f"no gradient check found under {args.logdir}", file=out)
    for line in lines if records else []:
        print(line, file=out)
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


def run_status(records: Sequence[CheckRecord], returncode: int) -> Tuple[int, str]:
    """The exit status of ``run`` and the sentence that explains it."""
    failed = [r for r in records if r.kind == "check" and not r.passed]
    refused = [r for r in records if r.kind == "refusal"]
    checks = [r for r in records if r.kind == "check"]
    if failed:
        first = failed[0]
        return 1, f"FAILED: the check at step {first.step} found wrong gradients ({', '.join(first.failed)})"
    if refused:
        return 2, f"REFUSED: the check at step {refused[0].step} was refused: {_first_line(refused[0].text)}"
    if returncode != 0:
        status = 128 - returncode if returncode < 0 else returncode
        how = f"was killed by signal {-returncode}" if returncode < 0 else f"exited with status {returncode}"
        return status, f"the command {how} and no check explains it; passing its status on"
    if not checks:
        return 2, "no gradient check ran (did the script build a gradwatch.GradWatch and call on_step?)"
    return 0, f"passed: all {len(checks)} check{'s' if len(checks) != 1 else ''} right"


def write_junit(path: str, records: Sequence[CheckRecord], *, command: Sequence[str], returncode: int,
                config: str, logdir: str, seconds: float) -> None:
    """A JUnit XML file: one test case per check (failures as <failure>, refusals as <error>)."""
    suite = ET.Element("testsuite", name="gradwatch", timestamp=time.strftime("%Y-%m-%dT%H:%M:%S"),
                       time=f"{seconds:.3f}")
    props = ET.SubElement(suite, "properties")
    for name, value in (("command", " ".join(command)), ("config", config), ("logdir", logdir)):
        ET.SubElement(props, "property", name=name, value=value)
    counts = {"tests": 0, "failures": 0, "errors": 0, "skipped": 0}
    for r in records:
        case = ET.SubElement(suite, "testcase", classname="gradwatch" if r.run == "." else f"gradwatch.{r.run}",
                             name=f"gradient check at step {r.step}", time="0")
        counts["tests"] += 1
        if r.kind == "refusal":
            node = ET.SubElement(case, "error", type="DropoutActiveError", message=_first_line(r.text, 300))
            node.text = r.text
            counts["errors"] += 1
        elif not r.passed:
            node = ET.SubElement(case, "failure", type="GradientCheckFailed",
                                 message=f"wrong gradients: {', '.join(r.failed)} (difference {_fmt_difference(r.difference)})")
            node.text = r.text
            counts["failures"] += 1
        else:
            ET.SubElement(case, "system-out").text = r.text
    if not any(r.kind == "check" for r in records) and not any(r.kind == "refusal" for r in records):
        case = ET.SubElement(suite, "testcase", classname="gradwatch", name="gradient checks", time="0")
        ET.SubElement(case, "error", type="NoCheck", message="no gradient check ran")
        counts["tests"] += 1
        counts["errors"] += 1
    case = ET.SubElement(suite, "testcase", classname="gradwatch", name="command", time=f"{seconds:.3f}")
    counts["tests"] += 1
    if returncode != 0:
        ET.SubElement(case, "error", type="CommandFailed", message=f"{' '.join(command)} exited with status {returncode}")
        counts["errors"] += 1
    for key, value in counts.items():
        suite.set(key, str(value))
    root = ET.Element("testsuites")
    root.append(suite)
    for key, value in counts.items():
        if key != "skipped":
            root.set(key, str(value))
    ET.indent(root)
    directory = os.path.dirname(os.path.abspath(path))
    os.makedirs(directory, exist_ok=True)
    ET.ElementTree(root).write(path, encoding="utf-8", xml_declaration=True)


def _cmd_run(args: argparse.Namespace, command: List[str], out: TextIO, err: TextIO) -> int:
    from .config import load_config  # only `run` needs it
    from .errors import ConfigError

    if not command:
        print(f"{PROG} run: no command given; put it after --, e.g. "
              f"{PROG} run --config configs/debug.yaml -- python train.py", file=err)
        return 2
    try:
        config = load_config(args.config)
    except ConfigError as exc:
        print(f"{PROG} run: {exc}", file=err)
        return 2
    config_path = os.path.abspath(args.config)
    base = args.logdir if args.logdir is not None else config.logdir
    temporary = base is None
    try:
        logdir = tempfile.mkdtemp(prefix="gradwatch-run-") if temporary else _fresh_dir(os.path.abspath(base))
    except (OSError, GradWatchError) as exc:
        print(f"{PROG} run: cannot make a log directory under {base!r}: {exc}", file=err)
        return 2
    env = dict(os.environ, GRADWATCH="1", GRADWATCH_CONFIG=config_path, GRADWATCH_LOGDIR=logdir)
    print(f"{PROG} run: checks on (config {config_path}), logging to {logdir}", file=err)
    print(f"{PROG} run: $ {subprocess.list2cmdline(command)}", file=err)
    out.flush()
    err.flush()
    start = time.monotonic()
    try:
        process = subprocess.Popen(command, env=env)
    except OSError as exc:
        print(f"{PROG} run: cannot start {command[0]!r}: {exc.strerror or exc}", file=err)
        returncode = 127 if isinstance(exc, FileNotFoundError) else 126
    else:
        try:
            returncode = process.wait()
        except KeyboardInterrupt:
            # the command got the same Ctrl-C: let it finish, then report what it logged
            returncode = process.wait()
    seconds = time.monotonic() - start
    try:
        records = read_history(logdir)
    except GradWatchError as exc:
        print(f"{PROG} run: {exc}", file=err)
        records = []
    status, sentence = run_status(records, returncode)
    print(file=out)
    if records:
        print(format_table(records), file=out)
    print(f"{PROG} run: {sentence}", file=out)
    if args.junit:
        try:
            write_junit(args.junit, records, command=command, returncode=returncode, config=config_path,
                        logdir=logdir, seconds=seconds)
        except OSError as exc:
            print(f"{PROG} run: cannot write the JUnit report {args.junit!r}: {exc.strerror or exc}", file=err)
            status = status or 2
    if temporary:
        shutil.rmtree(logdir, ignore_errors=True)
    else:
        print(f"{PROG} run: event files in {logdir} (tensorboard --logdir {logdir})", file=out)
    return status


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
        description="One row per run and check step, read from the event files under LOGDIR. Exit status: "
                    "0 every run's latest check passed, 1 one failed, 2 a latest event is a refusal or no check found.")
    report.add_argument("logdir", metavar="LOGDIR")
    report.add_argument("--json", action="store_true", help="print JSON for machines")
    run = sub.add_parser(
        "run", help="run a training script with the checks switched on, then report",
        usage=f"{PROG} run --config FILE [--logdir DIR] [--junit FILE] -- COMMAND ...",
        description="Runs COMMAND with GRADWATCH=1, GRADWATCH_CONFIG and GRADWATCH_LOGDIR set, so every "
                    "gradwatch.GradWatch it builds checks as the config says, then reports. Exit status: 1 a check "
                    "failed, 2 a check was refused, COMMAND's own status if it failed otherwise, 2 no check ran, "
                    "0 every check passed.")
    run.add_argument("--config", required=True, metavar="FILE", help="YAML config applied to every GradWatch")
    run.add_argument("--logdir", metavar="DIR",
                     help="keep the event files in a new subdirectory of DIR (default: the config's logdir; "
                          "without either, a temporary directory removed afterwards)")
    run.add_argument("--junit", metavar="FILE", help="also write a JUnit XML report, one test case per check")
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
    if args.command == "report":
        return _cmd_report(args, sys.stdout, sys.stderr)
    return _cmd_run(args, command, sys.stdout, sys.stderr)


if __name__ == "__main__":  # pragma: no cover
    sys.exit(main())
