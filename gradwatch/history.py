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
import struct
import warnings
from dataclasses import dataclass, field
from typing import Any, Dict, Iterator, List, Optional, Set, Tuple, Union

from .errors import GradWatchError

PREFIX = "gradcheck/"
_REFUSAL_TAGS = ("gradcheck/refused", "gradcheck/refusal")
#: Tags whose last path part is a tensor name.
_PER_TENSOR = ("difference", "passed", "inconclusive", "max_abs_error")
#: The record framing of an event file (TFRecord): length, its checksum, data, its checksum.
_HEADER = 12
_FOOTER = 4


@dataclass(frozen=True)
class CheckRecord:
    """One check (``kind == "check"``) or refused check (``kind == "refusal"``) of one run.

    Every event the logger wrote is one record, whatever its step: two checks at the same step
    (an epoch loop that restarts its step counter) are two records. ``failed`` lists the tensors
    found wrong, ``inconclusive`` those the check could not settle; ``text`` is the check's report
    or the refusal's reason; ``seconds`` how long the check took (``None`` when not logged);
    ``source`` the event file it was read from.
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
    inconclusive: Tuple[str, ...] = ()
    seconds: Optional[float] = None

    @property
    def verdict(self) -> str:
        """``"passed"``, ``"failed"``, ``"inconclusive"`` (none wrong, some unsettled) or ``"refused"``."""
        if self.kind == "refusal":
            return "refused"
        if self.passed:
            return "passed"
        if self.inconclusive and not self.failed:
            return "inconclusive"
        return "failed"

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
            "inconclusive": list(self.inconclusive),
            "loss_evaluations": self.loss_evaluations,
            "seconds": _json_number(self.seconds),
            "differences": {k: _json_number(v) for k, v in self.differences.items()},
            "max_abs_errors": {k: _json_number(v) for k, v in self.max_abs_errors.items()},
            "reason": self.text if self.kind == "refusal" else None,
            "report": self.text if self.kind == "check" else None,
            "source": self.source,
        }


@dataclass(frozen=True)
class Damage:
    """An event file that could not be read to its end: what was before ``offset`` was read."""

    path: str
    offset: int
    reason: str

    def __str__(self) -> str:
        return (f"event file {self.path!r} is damaged at byte {self.offset} ({self.reason}); "
                "what was logged after that point is lost")


@dataclass(frozen=True)
class History:
    """What :func:`scan` found under a logdir: the records, and the event files it could not read whole."""

    records: List[CheckRecord]
    damaged: List[Damage]


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


def read_frames(data: bytes, path: str = "") -> Tuple[List[bytes], Optional[Damage]]:
    """The payloads of the records in an event file's bytes, and the damage that ended reading, if any.

    Each record is ``length (8 bytes), crc(length), data, crc(data)``; a record cut short (a run
    killed mid-write) or a checksum that does not match (a flipped byte) ends the reading there.
    """
    from tensorboard.compat.tensorflow_stub.pywrap_tensorflow import masked_crc32c

    frames: List[bytes] = []
    pos, size = 0, len(data)
    while pos < size:
        if size - pos < _HEADER:
            return frames, Damage(path, pos, f"a record header cut short: {size - pos} of {_HEADER} bytes")
        header = data[pos:pos + 8]
        (length,) = struct.unpack("<Q", header)
        (header_crc,) = struct.unpack("<I", data[pos + 8:pos + _HEADER])
        if masked_crc32c(header) != header_crc:
            return frames, Damage(path, pos, "the checksum of a record length does not match")
        end = pos + _HEADER + length + _FOOTER
        if end > size:
            return frames, Damage(path, pos, f"a record cut short: {size - pos} of {end - pos} bytes")
        payload = data[pos + _HEADER:end - _FOOTER]
        (payload_crc,) = struct.unpack("<I", data[end - _FOOTER:end])
        if masked_crc32c(payload) != payload_crc:
            return frames, Damage(path, pos, "the checksum of a record does not match its data")
        frames.append(payload)
        pos = end
    return frames, None


def read_file(path: Union[str, "os.PathLike[str]"]) -> Tuple[List[Any], Optional[Damage]]:
    """Every ``Event`` of one event file, in file order, and the damage that ended reading, if any."""
    from tensorboard.compat.proto import event_pb2

    name = os.fspath(path)
    try:
        with open(name, "rb") as handle:
            data = handle.read()
    except OSError as exc:
        return [], Damage(name, 0, f"cannot be read: {exc.strerror or exc}")
    frames, damage = read_frames(data, name)
    events = []
    offset = 0
    for frame in frames:
        try:
            events.append(event_pb2.Event.FromString(frame))
        except Exception as exc:  # noqa: BLE001 - a payload that is no event is damage, named below
            return events, Damage(name, offset, f"a record that is not an event ({type(exc).__name__})")
        offset += _HEADER + len(frame) + _FOOTER
    return events, damage


def read_events(path: Union[str, "os.PathLike[str]"]) -> Iterator[Tuple[float, int, str, Any]]:
    """``(wall_time, step, tag, value)`` for every summary value in one event file, in file order.

    A damaged file raises :class:`GradWatchError` naming it, after the values read before the damage.
    """
    events, damage = read_file(path)
    for event in events:
        if not event.HasField("summary"):
            continue
        for value in event.summary.value:
            yield event.wall_time, int(event.step), value.tag, decode(value)
    if damage is not None:
        raise GradWatchError(str(damage))


def _split_tags(tags: Dict[str, Any]) -> Dict[str, Dict[str, Any]]:
    per: Dict[str, Dict[str, Any]] = {kind: {} for kind in _PER_TENSOR}
    for tag, value in tags.items():
        parts = tag.split("/", 2)
        if len(parts) == 3 and parts[1] in per:
            per[parts[1]][parts[2]] = value
    return per


def _flag(value: Any) -> bool:
    return value is not None and float(value) >= 0.5


def _record(run: str, path: str, wall_time: float, step: int, tags: Dict[str, Any]) -> Optional[CheckRecord]:
    """The record one event holds, or ``None`` when it holds no check nor refusal of ours."""
    if any(tag in tags for tag in _REFUSAL_TAGS):
        return CheckRecord(run=run, step=step, wall_time=wall_time, kind="refusal", source=path,
                           text=str(tags.get("gradcheck/refusal", "")))
    if "gradcheck/difference" not in tags and "gradcheck/passed" not in tags:
        return None  # other gradcheck/ tags without a check: not ours to interpret
    per = _split_tags(tags)
    inconclusive = tuple(name for name, v in per["inconclusive"].items() if _flag(v))
    failed = tuple(name for name, v in per["passed"].items()
                   if v is not None and not _flag(v) and name not in inconclusive)
    passed_flag = tags.get("gradcheck/passed")
    passed = _flag(passed_flag) if passed_flag is not None else not failed and not inconclusive
    evaluations = tags.get("gradcheck/loss_evaluations")
    return CheckRecord(
        run=run, step=step, wall_time=wall_time, kind="check", source=path,
        difference=_as_float(tags.get("gradcheck/difference")),
        passed=passed,
        failed=failed,
        inconclusive=inconclusive,
        loss_evaluations=None if evaluations is None else int(round(float(evaluations))),
        seconds=_as_float(tags.get("gradcheck/seconds")),
        differences={k: float(v) for k, v in per["difference"].items()},
        max_abs_errors={k: float(v) for k, v in per["max_abs_error"].items()},
        text=str(tags.get("gradcheck/report", "")),
    )


def _records_of_file(run: str, path: str) -> Tuple[List[CheckRecord], Optional[Damage]]:
    """One record per event that holds a check or a refusal (the logger writes one event per check)."""
    events, damage = read_file(path)
    records = []
    for event in events:
        if not event.HasField("summary"):
            continue
        tags = {v.tag: v for v in event.summary.value if v.tag.startswith(PREFIX)}
        if not tags:
            continue
        try:
            decoded = {tag: decode(value) for tag, value in tags.items()}
            record = _record(run, path, float(event.wall_time), int(event.step), decoded)
        except Exception as exc:  # noqa: BLE001 - a value we cannot decode (or of another kind: text where a
            # number belongs): name the file, keep the rest
            damage = damage or Damage(path, 0, f"an undecodable value at step {event.step} ({type(exc).__name__})")
            continue
        if record is not None:
            records.append(record)
    return records, damage


def _as_float(value: Any) -> Optional[float]:
    return None if value is None else float(value)


def scan(logdir: Union[str, "os.PathLike[str]"]) -> History:
    """Every check and refusal logged under ``logdir`` (by run, then in the order written), and the damaged files."""
    records: List[CheckRecord] = []
    damaged: List[Damage] = []
    for run, files in sorted(find_runs(logdir).items()):
        run_records: List[CheckRecord] = []
        for path in files:
            found, damage = _records_of_file(run, path)
            run_records.extend(found)
            if damage is not None:
                damaged.append(damage)
        run_records.sort(key=lambda r: r.wall_time)  # stable: file order breaks ties
        records.extend(run_records)
    return History(records, damaged)


def read_history(logdir: Union[str, "os.PathLike[str]"]) -> List[CheckRecord]:
    """Every check and refusal logged under ``logdir``, by run, then in the order they happened.

    A damaged event file is read up to the damage and named in a :class:`HistoryWarning`.
    """
    history = scan(logdir)
    for damage in history.damaged:
        warnings.warn(str(damage), HistoryWarning, stacklevel=2)
    return history.records


class HistoryWarning(UserWarning):
    """An event file could not be read to its end."""


def latest_by_run(records: List[CheckRecord]) -> Dict[str, CheckRecord]:
    """Run name -> its latest record (the last one written)."""
    latest: Dict[str, CheckRecord] = {}
    for record in records:
        best = latest.get(record.run)
        if best is None or record.wall_time >= best.wall_time:
            latest[record.run] = record
    return latest


#: How a run's verdicts combine: the first of these that any of its records has.
VERDICT_ORDER = ("failed", "inconclusive", "refused", "passed")


def run_verdicts(records: List[CheckRecord]) -> Dict[str, str]:
    """Run name -> ``"failed"`` when any of its checks failed, else inconclusive, refused or passed."""
    found: Dict[str, Set[str]] = {}
    for record in records:
        found.setdefault(record.run, set()).add(record.verdict)
    return {run: next(v for v in VERDICT_ORDER if v in verdicts) for run, verdicts in found.items()}
