"""How a :class:`~gradwatch.check.CheckResult` shows itself in a notebook and in IPython.

``to_html(result)`` is the table a notebook shows when a cell ends with a result: the verdict, one
row per tensor with its verdict marked (colour and text), the worst entry with its analytic and
numeric values, and the notes. ``pretty(result, p, cycle)`` gives IPython the text report.
Everything taken from the result (names above all) is escaped.
"""

from __future__ import annotations

import html
import math
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from .result import CheckResult, ParamCheck

#: verdict -> (text, colour) of a tensor's row
_ROW = {"right": ("right", "#1a7f37"), "wrong": ("WRONG", "#cf222e"), "inconclusive": ("inconclusive", "#9a6700")}
#: result verdict -> (heading, colour)
_HEAD = {"passed": ("PASSED", "#1a7f37"), "failed": ("FAILED", "#cf222e"), "inconclusive": ("INCONCLUSIVE", "#9a6700")}

_STYLE = (
    "<style>.gradwatch-result table{border-collapse:collapse;font-size:90%}"
    ".gradwatch-result th,.gradwatch-result td{padding:2px 8px;text-align:left;border-bottom:1px solid #ddd}"
    ".gradwatch-result td.num{text-align:right;font-family:monospace}</style>"
)


def _e(value: Any) -> str:
    return html.escape(str(value), quote=True)


def _num(value: float | None, fmt: str = ".6g") -> str:
    if value is None:
        return ""
    return format(value, fmt) if math.isfinite(value) else str(value)


def _index(name: str, index: tuple[int, ...] | None) -> str:
    if index is None:
        return ""
    return f"{name}[{', '.join(str(i) for i in index)}]" if index else name


def _heading(result: CheckResult) -> str:
    verdict = result.verdict
    text, colour = _HEAD.get(verdict, (verdict.upper(), "#57606a"))
    n = len(result.per_param)
    inconclusive = tuple(getattr(result, "inconclusive", ()))
    if verdict == "failed":
        detail = f"{len(result.failed)} of {n} tensors wrong ({', '.join(result.failed)})"
    elif verdict == "inconclusive":
        detail = f"{len(inconclusive)} of {n} tensors inconclusive ({', '.join(inconclusive)})"
    else:
        detail = f"{n} tensor{'s' if n != 1 else ''} right"
    sample = f'"{result.sample}"' if isinstance(result.sample, str) else str(result.sample)
    return (
        f'<p><strong style="color:{colour}">gradient check {_e(text)}</strong>: {_e(detail)}<br>'
        f"difference {_e(_num(result.difference, '.3e'))} (threshold {_e(format(result.threshold, '.0e'))}), "
        f"sample {_e(sample)}, {_e(result.loss_evaluations)} loss evaluations, seed {_e(result.seed)}</p>"
    )


def _row(name: str, pc: ParamCheck) -> str:
    text, colour = _ROW.get(pc.verdict, (pc.verdict, "#57606a"))
    size = math.prod(pc.shape)
    cells = [
        f"<td>{_e(name)}</td>",
        f'<td style="color:{colour};font-weight:bold" data-verdict="{_e(pc.verdict)}">{_e(text)}</td>',
        f"<td>{_e(pc.shape)}</td>",
        f'<td class="num">{_e(pc.checked)}/{_e(size)}</td>',
        f'<td class="num">{_e(_num(pc.difference, ".3e"))}</td>',
        f"<td>{_e(_index(name, pc.worst_index))}</td>",
        f'<td class="num">{_e(_num(pc.worst_analytic))}</td>',
        f'<td class="num">{_e(_num(pc.worst_numeric))}</td>',
        f"<td>{_e(pc.note)}</td>",
    ]
    return "<tr>" + "".join(cells) + "</tr>"


def to_html(result: CheckResult) -> str:
    """The result as an HTML fragment: heading with the verdict, a table with a row per tensor, notes.

    >>> import numpy as np
    >>> from gradwatch import check_gradients
    >>> p = {"w<1>": np.array([1.0, 2.0])}
    >>> page = to_html(check_gradients(lambda q: float(np.sum(q["w<1>"] ** 2)), p, {"w<1>": 2 * p["w<1>"]}, seed=0))
    >>> "w&lt;1&gt;" in page and "<table" in page
    True
    """
    head = ("tensor", "verdict", "shape", "checked", "difference", "worst entry", "analytic", "numeric", "note")
    rows = "".join(_row(name, pc) for name, pc in result.per_param.items())
    parts = [
        '<div class="gradwatch-result">',
        _STYLE,
        _heading(result),
        "<table><thead><tr>" + "".join(f"<th>{h}</th>" for h in head) + "</tr></thead>",
        f"<tbody>{rows}</tbody></table>",
    ]
    if result.notes:
        parts.append("<p>notes:</p><ul>" + "".join(f"<li>{_e(note)}</li>" for note in result.notes) + "</ul>")
    parts.append("</div>")
    return "".join(parts)


def pretty(result: CheckResult, p: Any, cycle: bool) -> None:
    """IPython's ``_repr_pretty_``: the text report (``str(result)``)."""
    p.text("CheckResult(...)" if cycle else str(result))


__all__ = ["pretty", "to_html"]
