"""Gradient checks as TensorBoard event files: :class:`TensorBoardLogger`.

Written with the ``tensorboard`` package's own pieces (its ``EventFileWriter``, its protos and its
plugins' metadata helpers); no TensorFlow, no PyTorch. One event per check or refusal, at the
training step it happened, with these tags:

====================================  ==============================================================
``gradcheck/difference``               scalar: the check's relative difference (formula (2))
``gradcheck/passed``                   scalar: 1.0 passed, 0.0 failed or inconclusive
``gradcheck/inconclusive``             scalar: 1.0 when no tensor was wrong but some could not be settled
``gradcheck/margin``                   scalar: the worst tensor's ``gradcheck/margin/<name>``
``gradcheck/margin_threshold``         scalar: 0.0, the threshold line drawn in the margin charts
``gradcheck/loss_evaluations``         scalar: calls of ``loss_fn`` the check made
``gradcheck/seconds``                  scalar: how long the check took (when the caller timed it)
``gradcheck/difference/<name>``        scalar: relative difference of one tensor
``gradcheck/margin/<name>``            scalar: log10(difference / the tensor's threshold): right below
                                       0, wrong above (a non-finite difference is drawn as 1, the
                                       largest formula (2) gives; a right tensor whose gap noise
                                       explained, at 0)
``gradcheck/passed/<name>``            scalar: 1.0 right, 0.0 wrong or inconclusive
``gradcheck/inconclusive/<name>``      scalar: 1.0 when the tensor's verdict is inconclusive
``gradcheck/max_abs_error/<name>``     scalar: largest |analytic - numeric| found in one tensor
``gradcheck/log10_relative_error/<name>``  histogram of log10 of the per-entry relative errors
``gradcheck/report``                   text: ``str(result)``, the report a person reads
``gradcheck/refused``                  scalar 1.0 at a refused check
``gradcheck/refusal``                  text: why the check was refused
====================================  ==============================================================

Scalars are float32 tensors (TensorBoard's fast loader drops float64 scalars). Each event file also
carries, once (with its first check), a custom-scalars layout: one chart of every tensor's margin
(TensorBoard has no log axis, so the margin carries the scale: each tensor against its own threshold,
1e-7 for float64, 1e-4 for float32, 1e-2 for float16 unless overridden, with the threshold drawn as a
line at 0), one chart per tensor, the verdicts and the maximum errors.

Nothing is imported from ``tensorboard`` and no file is opened until the first write, so an
inert watch leaves no empty event file behind.
"""

from __future__ import annotations

import math
import os
import re
import threading
import time
import warnings
from typing import Any, Callable, List, Optional, Union

import numpy as np

from .check import CheckResult
from .errors import GradWatchError

PREFIX = "gradcheck"
#: Relative errors below this are drawn at this value in the log10 histogram (exact zeros included).
HISTOGRAM_FLOOR = 1e-20
#: Buckets of each relative-error histogram (TensorBoard's own default).
HISTOGRAM_BUCKETS = 30
#: Differences below this are drawn at it in the margin charts (an exact 0 has no logarithm).
MARGIN_FLOOR = 1e-30
#: The overview charts of the custom-scalars layout: title -> tag regex.
LAYOUT_CHARTS = (
    ("every tensor: log10(difference / its threshold); above the line at 0 is wrong",
     r"^gradcheck/margin(/.*|_threshold)?$"),
    ("verdict: passed 1/0, inconclusive 1/0, refused 1", r"^gradcheck/(passed|inconclusive|refused)$"),
    ("relative difference per tensor (linear; the margin charts carry each tensor's threshold)",
     r"^gradcheck/difference(/.*)?$"),
    ("max |analytic - numeric| per tensor", r"^gradcheck/max_abs_error/.*$"),
)

PathLike = Union[str, "os.PathLike[str]"]


class TensorBoardLogger:
    """Writes gradient checks and refusals to a TensorBoard event file under ``logdir``.

    The directory is created at construction (a :class:`GradWatchError` naming it when it cannot
    be); ``tensorboard`` is imported and the event file opened at the first write, and flushed
    after each one. A write error (disk full, directory removed) warns once and never raises:
    from then on this logger drops what it is given, and the checks go on.

    >>> import tempfile, numpy as np, gradwatch
    >>> from gradwatch.tensorboard import TensorBoardLogger
    >>> params = {"w": np.array([1.0, 2.0])}
    >>> result = gradwatch.check_gradients(lambda p: float(np.sum(p["w"] ** 2)), params, {"dw": 2 * params["w"]}, seed=0)
    >>> with TensorBoardLogger(tempfile.mkdtemp()) as tb:
    ...     tb.log_check(0, result)
    ...     tb.log_refusal(10, "dropout is active")
    """

    def __init__(self, logdir: PathLike) -> None:
        if not isinstance(logdir, (str, os.PathLike)):
            raise TypeError(f"logdir must be a str or os.PathLike; got {type(logdir).__name__}")
        path = os.fspath(logdir)
        if not path:
            raise GradWatchError("logdir must name a directory; got an empty string")
        try:
            os.makedirs(path, exist_ok=True)
        except OSError as exc:
            reason = exc.strerror or str(exc)
            raise GradWatchError(f"cannot create the TensorBoard logdir {path!r}: {reason}") from exc
        self._logdir = path
        self._writer: Any = None
        self._layout_written = False
        self._broken = False
        self._lock = threading.Lock()

    @property
    def logdir(self) -> str:
        """The directory the event files go to."""
        return self._logdir

    @property
    def broken(self) -> bool:
        """True once a write failed: the logger warned and now drops what it is given."""
        return self._broken

    # ----------------------------------------------------------------------------------------
    # public writes

    def log_check(self, step: int, result: CheckResult, seconds: Optional[float] = None) -> None:
        """Write one check at training step ``step`` (scalars, histograms, the text report).

        ``seconds``, when given, is how long the check took (``gradcheck/seconds``). The first check
        written to an event file also writes the custom-scalars layout, with a chart per tensor.
        """
        step = _validate_step(step)
        if not isinstance(result, CheckResult):
            raise TypeError(f"result must be a CheckResult; got {type(result).__name__}")
        if seconds is not None and not isinstance(seconds, (int, float, np.integer, np.floating)):
            raise TypeError(f"seconds must be None or a number; got {type(seconds).__name__}")
        self._write(step, lambda: check_values(result, seconds), layout=lambda: layout_value(result))

    def log_refusal(self, step: int, reason: str) -> None:
        """Write a refused check at ``step``: ``gradcheck/refused`` = 1.0 and the reason as text."""
        step = _validate_step(step)
        if not isinstance(reason, str):
            raise TypeError(f"reason must be a str; got {type(reason).__name__}")
        self._write(step, lambda: refusal_values(reason))

    def flush(self) -> None:
        """Push what was written to disk (every write already does)."""
        with self._lock:
            if self._writer is None or self._broken:
                return
            try:
                self._writer.flush()
            except Exception as exc:  # noqa: BLE001 - a logging failure must never break training
                self._fail(exc, stacklevel=3)

    def close(self) -> None:
        """Flush and close the event file. A later write opens a new event file."""
        with self._lock:
            writer, self._writer = self._writer, None
            if writer is None or self._broken:
                return
            try:
                writer.close()
            except Exception as exc:  # noqa: BLE001
                self._fail(exc, stacklevel=3)

    def __enter__(self) -> "TensorBoardLogger":
        return self

    def __exit__(self, *exc_info: Any) -> None:
        self.close()

    def __repr__(self) -> str:
        state = "broken" if self._broken else ("open" if self._writer is not None else "not opened")
        return f"TensorBoardLogger({self._logdir!r}, {state})"

    # ----------------------------------------------------------------------------------------
    # internals

    def _write(self, step: int, make_values: Callable[[], List[Any]],
               layout: Optional[Callable[[], Any]] = None) -> None:
        with self._lock:
            if self._broken:
                return
            try:
                from tensorboard.compat.proto import event_pb2, summary_pb2

                if self._writer is None:
                    self._writer = _open_writer(self._logdir)
                    self._layout_written = False
                if layout is not None and not self._layout_written:
                    self._writer.add_event(event_pb2.Event(
                        wall_time=time.time(), step=step, summary=summary_pb2.Summary(value=[layout()])))
                    self._layout_written = True
                event = event_pb2.Event(
                    wall_time=time.time(), step=step, summary=summary_pb2.Summary(value=make_values())
                )
                self._writer.add_event(event)
                self._writer.flush()
            except Exception as exc:  # noqa: BLE001 - a logging failure must never break training
                self._fail(exc, stacklevel=4)

    def _fail(self, exc: BaseException, stacklevel: int) -> None:
        """Warn once, let go of the writer and drop every later write."""
        self._broken = True
        writer, self._writer = self._writer, None
        if writer is not None:
            try:
                writer.close()
            except Exception:  # noqa: BLE001 - it is broken already; closing is best effort
                pass
        warnings.warn(
            f"gradwatch could not write TensorBoard events to {self._logdir!r} "
            f"({type(exc).__name__}: {exc}); the gradient checks go on, but this logger writes "
            "nothing more",
            RuntimeWarning,
            stacklevel=stacklevel,  # points at the caller of log_check / log_refusal / flush / close
        )


def _validate_step(step: Any) -> int:
    if isinstance(step, bool) or not isinstance(step, (int, np.integer)):
        raise TypeError(f"step must be an int; got {step!r}")
    return int(step)


def _open_writer(logdir: str) -> Any:
    """An ``EventFileWriter`` on a new file in ``logdir``."""
    from tensorboard.summary.writer.event_file_writer import EventFileWriter

    writer = EventFileWriter(logdir, filename_suffix=".gradwatch")
    # The writer's background thread stores a write error and re-raises it in our thread at the
    # next add_event/flush, where it becomes our one warning. Without this, the thread would also
    # print its own traceback to stderr.
    worker = getattr(getattr(writer, "_async_writer", None), "_worker", None)
    if isinstance(worker, threading.Thread) and hasattr(worker, "_invoke_excepthook"):
        worker._invoke_excepthook = lambda thread: None
    return writer


# --------------------------------------------------------------------------------------------
# Summary values (pure: they build protos, they write nothing)


def _float(value: Optional[float]) -> float:
    return float("nan") if value is None else float(value)


def scalar_value(tag: str, value: float, description: str = "") -> Any:
    """A ``Summary.Value`` holding ``value`` as a float32 scalar tensor for the scalars plugin."""
    from tensorboard.compat.proto import summary_pb2, tensor_pb2, tensor_shape_pb2, types_pb2
    from tensorboard.plugins.scalar import metadata

    tensor = tensor_pb2.TensorProto(
        dtype=types_pb2.DT_FLOAT, tensor_shape=tensor_shape_pb2.TensorShapeProto(), float_val=[_float(value)]
    )
    return summary_pb2.Summary.Value(
        tag=tag, metadata=metadata.create_summary_metadata(display_name="", description=description), tensor=tensor
    )


def text_value(tag: str, text: str, description: str = "") -> Any:
    """A ``Summary.Value`` for the text plugin. The text is shown as a preformatted block."""
    from tensorboard.compat.proto import summary_pb2, tensor_pb2, tensor_shape_pb2, types_pb2
    from tensorboard.plugins.text import metadata

    tensor = tensor_pb2.TensorProto(
        dtype=types_pb2.DT_STRING,
        tensor_shape=tensor_shape_pb2.TensorShapeProto(),
        string_val=[to_markdown(text).encode("utf-8")],
    )
    return summary_pb2.Summary.Value(
        tag=tag, metadata=metadata.create_summary_metadata(display_name="", description=description), tensor=tensor
    )


def histogram_buckets(data: np.ndarray, bucket_count: int = HISTOGRAM_BUCKETS) -> np.ndarray:
    """``[left, right, count]`` rows, the histogram plugin's format, over ``bucket_count`` equal buckets."""
    data = np.asarray(data, dtype=np.float64).ravel()
    data = data[np.isfinite(data)]
    if data.size == 0:
        return np.zeros((0, 3))
    lo, hi = float(data.min()), float(data.max())
    if lo == hi:
        return np.array([[lo - 0.5, hi + 0.5, float(data.size)]])
    width = (hi - lo) / bucket_count
    index = np.minimum(np.floor((data - lo) / width).astype(np.int64), bucket_count - 1)
    counts = np.bincount(index, minlength=bucket_count).astype(np.float64)
    edges = np.linspace(lo, hi, bucket_count + 1)
    return np.stack([edges[:-1], edges[1:], counts], axis=1)


def log10_errors(entry_errors: np.ndarray) -> np.ndarray:
    """log10 of per-entry relative errors, exact zeros drawn at ``log10(HISTOGRAM_FLOOR)``."""
    errors = np.asarray(entry_errors, dtype=np.float64).ravel()
    return np.log10(np.maximum(np.abs(errors), HISTOGRAM_FLOOR))


def histogram_value(tag: str, data: np.ndarray, description: str = "") -> Any:
    """A ``Summary.Value`` for the histogram plugin: a k x 3 float64 tensor of buckets."""
    from tensorboard.compat.proto import summary_pb2
    from tensorboard.plugins.histogram import metadata
    from tensorboard.util import tensor_util

    buckets = histogram_buckets(data)
    return summary_pb2.Summary.Value(
        tag=tag,
        metadata=metadata.create_summary_metadata(display_name="", description=description),
        tensor=tensor_util.make_tensor_proto(buckets, dtype=np.float64),
    )


def margin(difference: float, threshold: float, verdict: str = "") -> float:
    """log10(difference / threshold): below 0 right, above 0 wrong; a non-finite difference counts as 1.

    A tensor judged right although its difference reached the threshold (noise explained the gap:
    the report says how) is drawn on the line, never on the wrong side of it.
    """
    if not math.isfinite(difference):
        difference = 1.0
    value = math.log10(max(difference, MARGIN_FLOOR) / threshold)
    return min(value, 0.0) if verdict == "right" else value


def tensor_chart_title(name: str, threshold: float) -> str:
    return f"{name}: log10(difference / {threshold:.0e}); above the line at 0 is wrong"


def layout_value(result: Optional[CheckResult] = None) -> Any:
    """The custom-scalars layout: the overview charts, and one margin chart per tensor of ``result``."""
    from tensorboard.compat.proto import summary_pb2, tensor_pb2, tensor_shape_pb2, types_pb2
    from tensorboard.plugins.custom_scalar import layout_pb2, metadata

    def chart(title: str, regex: str) -> Any:
        return layout_pb2.Chart(title=title, multiline=layout_pb2.MultilineChartContent(tag=[regex]))

    categories = [layout_pb2.Category(title="gradwatch", chart=[chart(t, r) for t, r in LAYOUT_CHARTS])]
    if result is not None and result.per_param:
        categories.append(layout_pb2.Category(title="gradwatch: one chart per tensor", chart=[
            chart(tensor_chart_title(name, pc.threshold),
                  rf"^{PREFIX}/margin(/{re.escape(name)}|_threshold)$")
            for name, pc in result.per_param.items()
        ]))
    layout = layout_pb2.Layout(category=categories)
    tensor = tensor_pb2.TensorProto(
        dtype=types_pb2.DT_STRING,
        tensor_shape=tensor_shape_pb2.TensorShapeProto(),
        string_val=[layout.SerializeToString()],
    )
    return summary_pb2.Summary.Value(
        tag=metadata.CONFIG_SUMMARY_TAG, metadata=metadata.create_summary_metadata(), tensor=tensor
    )


def to_markdown(text: str) -> str:
    """``text`` as a Markdown code block (four spaces before each line), so its columns stay aligned."""
    return "\n".join("    " + line for line in text.split("\n"))


def from_markdown(text: str) -> str:
    """The inverse of :func:`to_markdown`."""
    return "\n".join(line[4:] if line.startswith("    ") else line for line in text.split("\n"))


def check_values(result: CheckResult, seconds: Optional[float] = None) -> List[Any]:
    """Every ``Summary.Value`` of one check."""
    margins = {name: margin(pc.difference, pc.threshold, pc.verdict) for name, pc in result.per_param.items()}
    inconclusive = result.verdict == "inconclusive"
    values = [
        scalar_value(f"{PREFIX}/difference", result.difference,
                     f"relative difference over what was checked; threshold {result.threshold:.0e}"),
        scalar_value(f"{PREFIX}/passed", 1.0 if result.passed else 0.0, "1 passed, 0 failed or inconclusive"),
        scalar_value(f"{PREFIX}/inconclusive", 1.0 if inconclusive else 0.0,
                     "1 when no tensor was wrong but some could not be settled"),
        scalar_value(f"{PREFIX}/margin", max(margins.values(), default=math.nan),
                     "the worst tensor's log10(difference / threshold): above 0 is wrong"),
        scalar_value(f"{PREFIX}/margin_threshold", 0.0, "the threshold line of the margin charts"),
        scalar_value(f"{PREFIX}/loss_evaluations", float(result.loss_evaluations), "calls of loss_fn"),
    ]
    if seconds is not None:
        values.append(scalar_value(f"{PREFIX}/seconds", float(seconds), "how long the check took"))
    for name, pc in result.per_param.items():
        values.append(scalar_value(f"{PREFIX}/difference/{name}", pc.difference, f"relative difference of {name}"))
        values.append(scalar_value(
            f"{PREFIX}/margin/{name}", margins[name],
            f"log10(difference / {pc.threshold:.0e}) of {name}: below 0 right, above 0 wrong"))
        values.append(scalar_value(f"{PREFIX}/passed/{name}", 1.0 if pc.passed else 0.0,
                                   f"verdict on {name}: 1 right, 0 wrong or inconclusive"))
        values.append(scalar_value(f"{PREFIX}/inconclusive/{name}", 1.0 if pc.verdict == "inconclusive" else 0.0,
                                   f"1 when the check could not settle {name}"))
        values.append(scalar_value(f"{PREFIX}/max_abs_error/{name}", pc.max_abs_error,
                                   f"largest |analytic - numeric| found in {name}"))
        errors = np.asarray(pc.entry_errors, dtype=np.float64).ravel()
        if errors.size:
            values.append(histogram_value(
                f"{PREFIX}/log10_relative_error/{name}", log10_errors(errors),
                f"log10 of the relative errors |a - n| / (|a| + |n|) checked in {name} "
                f"(its threshold {pc.threshold:.0e} is {math.log10(pc.threshold):.1f} on this axis)",
            ))
    values.append(text_value(f"{PREFIX}/report", str(result), "the check's report"))
    return values


def refusal_values(reason: str) -> List[Any]:
    """Every ``Summary.Value`` of one refused check."""
    return [
        scalar_value(f"{PREFIX}/refused", 1.0, "1 at a refused check (dropout or randomness active)"),
        text_value(f"{PREFIX}/refusal", reason, "why the check was refused"),
    ]
