"""The result types of a check and the report a person reads."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any, Dict, Optional, Tuple, Union

import numpy as np


@dataclass(frozen=True)
class ParamCheck:
    """The check of one tensor.

    ``verdict`` is ``"right"``, ``"wrong"`` or ``"inconclusive"`` (``passed`` is true only for right);
    ``difference`` formula (2) over what was checked in this tensor (for a tensor cleared by the joint
    screen, the upper bound the screen proved); ``checked`` how many of its entries the check covered;
    ``worst_index`` the entry with the largest error found, in the tensor's own shape (``None`` when no
    single entry was examined); ``note`` why a verdict is not plain and what to do.
    """

    name: str
    shape: Tuple[int, ...]
    difference: float
    passed: bool
    checked: int
    worst_index: Optional[Tuple[int, ...]]
    threshold: float
    method: str = "coordinates"
    probes: int = 0
    max_abs_error: float = 0.0
    entry_errors: np.ndarray = field(default_factory=lambda: np.zeros(0, dtype=np.float32), repr=False, compare=False)
    worst_analytic: Optional[float] = None
    worst_numeric: Optional[float] = None
    explained_by: Tuple[str, ...] = ()
    localised: bool = True
    note: str = ""
    verdict: str = ""  # derived from ``passed`` when not given
    bound: float = float("nan")  # an upper bound on the relative difference (nan: none was proved)
    step: float = float("nan")  # the per-entry step of the first measurement
    spread: bool = False  # the error is spread over the tensor, not carried by one entry

    def __post_init__(self) -> None:
        if not self.verdict:
            object.__setattr__(self, "verdict", "right" if self.passed else "wrong")

    @property
    def size(self) -> int:
        return int(np.prod(self.shape, dtype=np.int64))


@dataclass(frozen=True)
class CheckResult:
    """The outcome of :func:`gradwatch.check_gradients`.

    >>> import numpy as np
    >>> from gradwatch import check_gradients
    >>> params = {"w": np.array([1.0, 2.0])}
    >>> result = check_gradients(lambda p: float(np.sum(p["w"] ** 2)), params, {"dw": 2 * params["w"]}, seed=0)
    >>> result.verdict, result.passed, result.failed
    ('passed', True, ())
    """

    difference: float
    passed: bool
    threshold: float
    per_param: Dict[str, ParamCheck]
    failed: Tuple[str, ...]
    loss_evaluations: int
    seed: int
    sample: Union[str, int] = "auto"
    epsilon: Optional[float] = None
    not_localised: Tuple[str, ...] = ()
    notes: Tuple[str, ...] = ()
    inconclusive: Tuple[str, ...] = ()

    @property
    def verdict(self) -> str:
        """``"passed"`` (every tensor right), ``"failed"`` (some tensor wrong) or ``"inconclusive"``."""
        return "failed" if self.failed else "inconclusive" if self.inconclusive else "passed"

    def __str__(self) -> str:
        return format_report(self)

    def _repr_html_(self) -> str:
        from .display import to_html  # a notebook shows the table

        return to_html(self)

    def _repr_pretty_(self, p: Any, cycle: bool) -> None:
        from .display import pretty  # IPython shows the report

        pretty(self, p, cycle)


def format_index(name: str, index: Optional[Tuple[int, ...]]) -> str:
    """``W2[3, 1]`` for an entry of ``W2`` (just ``W2`` for a 0-d tensor; "" for no entry)."""
    if index is None:
        return ""
    return f"{name}[{', '.join(str(i) for i in index)}]" if index else name


_VERDICT_WORD = {"right": "right", "wrong": "WRONG", "inconclusive": "INCONCLUSIVE"}


def _headline(result: CheckResult) -> str:
    n = len(result.per_param)
    if result.verdict == "passed":
        return f"gradient check PASSED: {n} tensor{'s' if n != 1 else ''} right"
    if result.verdict == "failed":
        head = f"gradient check FAILED: {len(result.failed)} of {n} tensors wrong ({', '.join(result.failed)})"
        if result.inconclusive:
            head += f"; inconclusive: {', '.join(result.inconclusive)}"
        return head
    return (f"gradient check INCONCLUSIVE: {len(result.inconclusive)} of {n} tensors could not be settled "
            f"({', '.join(result.inconclusive)}); none found wrong")


def format_report(result: CheckResult) -> str:
    """The report a person reads: the verdict, a row per tensor, the worst entries, the notes."""
    sample = f'"{result.sample}"' if isinstance(result.sample, str) else str(result.sample)
    lines = [
        _headline(result),
        f"difference {result.difference:.3e} (threshold {result.threshold:.0e}), sample {sample}, "
        f"{result.loss_evaluations} loss evaluations, seed {result.seed}",
    ]
    rows = [("tensor", "shape", "checked", "difference", "verdict", "worst entry")]
    for name, pc in result.per_param.items():
        worst = format_index(name, pc.worst_index)
        if worst and pc.worst_analytic is not None and pc.worst_numeric is not None:
            worst += f"  analytic {pc.worst_analytic:.6g}, numeric {pc.worst_numeric:.6g}"
        elif pc.spread:
            worst = "spread over the tensor"
        difference = f"{'≤' if pc.method == 'screen' else ''}{pc.difference:.3e}"
        rows.append((name, str(pc.shape), f"{pc.checked}/{pc.size}", difference, _VERDICT_WORD[pc.verdict], worst))
    widths = [max(len(r[i]) for r in rows) for i in range(5)]
    for r in rows:
        lines.append("  " + "  ".join(c.ljust(w) for c, w in zip(r[:5], widths)) + ("  " + r[5] if r[5] else ""))
    notes = [f"{name}: {pc.note}" for name, pc in result.per_param.items() if pc.note]
    notes += list(result.notes)
    if notes:
        lines.append("notes:")
        lines.extend(f"  - {note}" for note in notes)
    return "\n".join(line.rstrip() for line in lines)
