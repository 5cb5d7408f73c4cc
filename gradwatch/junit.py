"""The JUnit XML file of a scheduled debug run: one test case per check, with its duration."""

from __future__ import annotations

import os
import re
import time
from typing import Dict, Optional, Sequence, Tuple
from xml.etree import ElementTree as ET

from .history import CheckRecord, Damage


def fmt_difference(value: Optional[float]) -> str:
    return "-" if value is None else f"{value:.3e}"


def first_line(text: str, width: int = 100) -> str:
    line = next((part.strip() for part in text.splitlines() if part.strip()), "")
    return line if len(line) <= width else line[: width - 3] + "..."



#: Characters XML 1.0 cannot hold (a tensor name or a report may carry them): written as \xNN.
_NOT_XML = re.compile("[\x00-\x08\x0b\x0c\x0e-\x1f\ud800-\udfff\ufffe\uffff]")


def xml_safe(text: str) -> str:
    """``text`` with every character XML 1.0 cannot hold replaced by its ``\\xNN`` escape."""
    return _NOT_XML.sub(lambda m: f"\\x{ord(m.group()):02x}" if ord(m.group()) < 256 else f"\\u{ord(m.group()):04x}", text)


def _case_name(r: CheckRecord, seen: Dict[Tuple[str, int], int]) -> str:
    key = (r.run, r.step)
    seen[key] = seen.get(key, 0) + 1
    name = f"gradient check at step {r.step}"
    return name if seen[key] == 1 else f"{name} (#{seen[key]} at this step)"


def _junit_case(suite: ET.Element, r: CheckRecord, name: str, counts: Dict[str, int]) -> None:
    case = ET.SubElement(suite, "testcase", classname=xml_safe("gradwatch" if r.run == "." else f"gradwatch.{r.run}"),
                         name=name, time="0" if r.seconds is None else f"{r.seconds:.3f}")
    counts["tests"] += 1
    text = xml_safe(r.text)
    if r.verdict == "refused":
        node = ET.SubElement(case, "error", type="DropoutActiveError", message=xml_safe(first_line(r.text, 300)))
        counts["errors"] += 1
    elif r.verdict == "failed":
        node = ET.SubElement(case, "failure", type="GradientCheckFailed", message=xml_safe(
            f"wrong gradients: {', '.join(r.failed)} (difference {fmt_difference(r.difference)})"))
        counts["failures"] += 1
    elif r.verdict == "inconclusive":
        node = ET.SubElement(case, "error", type="GradientCheckInconclusive", message=xml_safe(
            f"inconclusive: {', '.join(r.inconclusive)} (difference {fmt_difference(r.difference)})"))
        counts["errors"] += 1
    else:
        node = ET.SubElement(case, "system-out")
    node.text = text


def write_junit(path: str, records: Sequence[CheckRecord], *, command: Sequence[str], returncode: int,
                config: str, logdir: str, seconds: float, damaged: Sequence[Damage] = (),
                signalled: Optional[int] = None) -> None:
    """A JUnit XML file: one test case per check (failures as <failure>; refused and inconclusive
    checks, damaged event files and a failed command as <error>), each with the check's duration."""
    suite = ET.Element("testsuite", name="gradwatch", timestamp=time.strftime("%Y-%m-%dT%H:%M:%S"),
                       time=f"{seconds:.3f}")
    props = ET.SubElement(suite, "properties")
    for name, value in (("command", " ".join(command)), ("config", config), ("logdir", logdir)):
        ET.SubElement(props, "property", name=name, value=xml_safe(value))
    counts = {"tests": 0, "failures": 0, "errors": 0, "skipped": 0}
    seen: Dict[Tuple[str, int], int] = {}
    for r in records:
        _junit_case(suite, r, xml_safe(_case_name(r, seen)), counts)
    for damage in damaged:
        case = ET.SubElement(suite, "testcase", classname="gradwatch", name=xml_safe(f"event file {damage.path}"), time="0")
        ET.SubElement(case, "error", type="DamagedEventFile", message=xml_safe(str(damage)))
        counts["tests"] += 1
        counts["errors"] += 1
    if not records:
        case = ET.SubElement(suite, "testcase", classname="gradwatch", name="gradient checks", time="0")
        ET.SubElement(case, "error", type="NoCheck", message="no gradient check ran")
        counts["tests"] += 1
        counts["errors"] += 1
    case = ET.SubElement(suite, "testcase", classname="gradwatch", name="command", time=f"{seconds:.3f}")
    counts["tests"] += 1
    if signalled is not None:
        ET.SubElement(case, "error", type="Interrupted", message=xml_safe(
            f"gradwatch run got signal {signalled} and passed it on; {' '.join(command)} ended with status {returncode}"))
        counts["errors"] += 1
    elif returncode != 0:
        ET.SubElement(case, "error", type="CommandFailed",
                      message=xml_safe(f"{' '.join(command)} exited with status {returncode}"))
        counts["errors"] += 1
    for key, count in counts.items():
        suite.set(key, str(count))
    root = ET.Element("testsuites")
    root.append(suite)
    for key, count in counts.items():
        if key != "skipped":
            root.set(key, str(count))
    ET.indent(root)
    directory = os.path.dirname(os.path.abspath(path))
    os.makedirs(directory, exist_ok=True)
    ET.ElementTree(root).write(path, encoding="utf-8", xml_declaration=True)
