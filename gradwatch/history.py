"""Reading back what :class:`~gradwatch.tensorboard.TensorBoardLogger` wrote: the grad-check history.

Pure reading, with TensorBoard's own event reader (no server): :func:`read_history` walks a logdir,
treats every directory holding event files as a *run* (named by its path relative to the logdir,
``"."`` for the logdir itself, as TensorBoard names runs) and returns one :class:`CheckRecord` per
check or refusal.

>>> import tempfile
>>> from gradwatch.tensorboard import TensorBoardLogger
>>> logdir = tempfile.mkdtemp()
>>> with TensorBoardLogger(logdir) as tb:
...     tb.log_refusal(3, "dropout is active")
>>> [(r.run, r.step, r.verdict) for r in read_history(logdir)]
[('.', 3, 'refused')]
"""

from __future__ import annotations

import math
import os
from dataclasses import dataclass, field
from typing import Any, Dict, Iterator, List, Optional, Tuple, Union

from .errors import GradWatchError

PREFIX = "gradcheck/"
_REFUSAL_TAGS = ("gradcheck/refused", "gradcheck/refusal")
#: Tags whose last path part is a tensor name.
_PER_TENSOR = ("difference", "passed", "max_abs_error", "relative_error")


@dataclass(frozen=True)
class CheckRecord:
    """One check (``kind == "check"``) or refused check (``kind == "refusal"``) of one run.

    ``failed`` lists the tensors whose ``gradcheck/passed/<name>`` is 0; ``text`` is the check's
    report or the refusal's reason; ``source`` the event file it was read from.
    """

    run: str
    step: int
    wall_time: float
    kind: str
    source: str
    difference: Optional[float] = None
    passed: Optional[bool] = None
    failed: Tuple[str, ...] = ()
    loss_evaluations: Optional[int] = None
    differences: Dict[str, float] = field(default_factory=dict)
    max_abs_errors: Dict[str, float] = field(default_factory=dict)
    text: str = ""

    @property
    def verdict(self) -> str:
        """``"passed"``, ``"failed"`` or ``"refused"``."""
        if self.kind == "refusal":
            return "refused"
        return "passed" if self.passed else "failed"

    def to_dict(self) -> Dict[str, Any]:
        """Plain JSON-ready data (non-finite numbers become ``None``)."""
        return {
            "run": self.run,
            "step": self.step,
            "wall_time": self.wall_time,
            "kind": self.kind,
            "verdict": self.verdict,
            "difference": _json_number(self.difference),
            "failed": list(self.failed),
            "loss_evaluations": self.loss_evaluations,
            "differences": {k: _json_number(v) for k, v in self.differences.items()},
            "max_abs_errors": {k: _json_number(v) for k, v in self.max_abs_errors.items()},
            "reason": self.text if self.kind == "refusal" else None,
            "report": self.text if self.kind == "check" else None,
            "source": self.source,
        }


def _json_number(value: Optional[float]) -> Optional[float]:
    if value is None or not math.isfinite(value):
        return None
    return value


def is_event_file(name: str) -> bool:
    """TensorBoard's rule: an event file has ``tfevents`` in its name."""
    return "tfevents" in name


def find_runs(logdir: Union[str, "os.PathLike[str]"]) -> Dict[str, List[str]]:
    """Run name -> its event files (sorted by name, i.e. by creation time), for every run under ``logdir``."""
    root = os.fspath(logdir)
    if not os.path.isdir(root):
        raise GradWatchError(f"logdir {root!r} is not a directory")
    runs: Dict[str, List[str]] = {}
    for dirpath, dirnames, filenames in os.walk(root):
        dirnames.sort()
        files = sorted(f for f in filenames if is_event_file(f))
        if files:
            rel = os.path.relpath(dirpath, root)
            run = "." if rel == os.curdir else rel.replace(os.sep, "/")
            runs[run] = [os.path.join(dirpath, f) for f in files]
    return runs


def decode(value: Any) -> Any:
    """The Python value of one ``Summary.Value``: a float (scalar), an ndarray (histogram) or a str (text)."""
    from tensorboard.util import tensor_util

    if value.HasField("tensor"):
        array = tensor_util.make_ndarray(value.tensor)
    elif value.HasField("simple_value"):
        return float(value.simple_value)
    else:
        return None
    plugin = value.metadata.plugin_data.plugin_name
    if array.dtype.kind in ("O", "S", "U"):
        item = array.item() if array.ndim == 0 else array.ravel()[0]
        if isinstance(item, bytes):
            if plugin == "custom_scalars":
                return item
            item = item.decode("utf-8", errors="replace")
        if plugin == "text":
            from .tensorboard import from_markdown

            return from_markdown(item)
        return item
    if array.ndim == 0:
        return float(array)
    return array


def read_events(path: Union[str, "os.PathLike[str]"]) -> Iterator[Tuple[float, int, str, Any]]:
    """``(wall_time, step, tag, value)`` for every summary value in one event file, in file order."""
    from tensorboard.backend.event_processing.event_file_loader import EventFileLoader

    path = os.fspath(path)
    try:
        for event in EventFileLoader(path).Load():
            if not event.HasField("summary"):
                continue
            for value in event.summary.value:
                yield event.wall_time, int(event.step), value.tag, decode(value)
    except GradWatchError:
        raise
    except Exception as exc:  # noqa: BLE001 - name the file whatever went wrong inside the reader
        raise GradWatchError(f"cannot read the event file {path!r}: {type(exc).__name__}: {exc}") from exc


def _records_of_file(run: str, path: str) -> List[CheckRecord]:
    groups: Dict[Tuple[int, str], Dict[str, Any]] = {}
    times: Dict[Tuple[int, str], float] = {}
    for wall_time, step, tag, value in read_events(path):
        if not tag.startswith(PREFIX):
            continue
        kind = "refusal" if tag in _REFUSAL_TAGS else "check"
        key = (step, kind)
        groups.setdefault(key, {})[tag] = value
        times[key] = max(times.get(key, wall_time), wall_time)
    records = []
    for (step, kind), tags in groups.items():
        if kind == "refusal":
            records.append(CheckRecord(run=run, step=step, wall_time=times[(step, kind)], kind=kind, source=path,
                                       text=str(tags.get("gradcheck/refusal", ""))))
            continue
        if "gradcheck/difference" not in tags and "gradcheck/passed" not in tags:
            continue  # other gradcheck/ tags without a check: not ours to interpret
        per: Dict[str, Dict[str, Any]] = {kind_: {} for kind_ in _PER_TENSOR}
        for tag, value in tags.items():
            parts = tag.split("/", 2)
            if len(parts) == 3 and parts[1] in per:
                per[parts[1]][parts[2]] = value
        passed_flag = tags.get("gradcheck/passed")
        failed = tuple(name for name, v in per["passed"].items() if v is not None and float(v) < 0.5)
        passed = bool(float(passed_flag) >= 0.5) if passed_flag is not None else not failed
        evaluations = tags.get("gradcheck/loss_evaluations")
        records.append(CheckRecord(
            run=run, step=step, wall_time=times[(step, kind)], kind=kind, source=path,
            difference=_as_float(tags.get("gradcheck/difference")),
            passed=passed,
            failed=failed,
            loss_evaluations=None if evaluations is None else int(round(float(evaluations))),
            differences={k: float(v) for k, v in per["difference"].items()},
            max_abs_errors={k: float(v) for k, v in per["max_abs_error"].items()},
            text=str(tags.get("gradcheck/report", "")),
        ))
    return records


def _as_float(value: Any) -> Optional[float]:
    return None if value is None else float(value)


def read_history(logdir: Union[str, "os.PathLike[str]"]) -> List[CheckRecord]:
    """Every check and refusal logged under ``logdir``, by run, then in the order they happened."""
    records: List[CheckRecord] = []
    for run, files in sorted(find_runs(logdir).items()):
        run_records: List[CheckRecord] = []
        for path in files:
            run_records.extend(_records_of_file(run, path))
        run_records.sort(key=lambda r: (r.wall_time, r.step))
        records.extend(run_records)
    return records


def latest_by_run(records: List[CheckRecord]) -> Dict[str, CheckRecord]:
    """Run name -> its latest record (by wall time, then step)."""
    latest: Dict[str, CheckRecord] = {}
    for record in records:
        best = latest.get(record.run)
        if best is None or (record.wall_time, record.step) >= (best.wall_time, best.step):
            latest[record.run] = record
    return latest

