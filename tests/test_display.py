"""gradwatch.display: the notebook table (parsed with an HTML parser) and IPython's report."""

from __future__ import annotations

from html.parser import HTMLParser

import numpy as np
import pytest

from gradwatch import CheckResult, ParamCheck, check_gradients
from gradwatch.display import pretty, to_html


class Table(HTMLParser):
    """Collects the text of every cell, per row, the verdict attributes, and checks tags balance."""

    VOID = frozenset({"br"})

    def __init__(self):
        super().__init__()
        self.rows, self.verdicts, self.stack, self.text = [], [], [], []
        self.cell = None

    def handle_starttag(self, tag, attrs):
        if tag not in self.VOID:
            self.stack.append(tag)
        if tag == "tr":
            self.rows.append([])
        if tag in ("td", "th"):
            self.cell = ""
        attrs = dict(attrs)
        if "data-verdict" in attrs:
            self.verdicts.append((attrs["data-verdict"], attrs.get("style", "")))

    def handle_endtag(self, tag):
        assert self.stack and self.stack[-1] == tag, f"</{tag}> closes {self.stack[-1:]}"
        self.stack.pop()
        if tag in ("td", "th"):
            self.rows[-1].append(self.cell)
            self.cell = None

    def handle_data(self, data):
        self.text.append(data)
        if self.cell is not None:
            self.cell += data


def parse(page: str) -> Table:
    table = Table()
    table.feed(page)
    table.close()
    assert table.stack == [], table.stack
    return table


def test_a_passing_result_shows_the_verdict_and_a_row_per_tensor(results):
    good, _ = results
    table = parse(good._repr_html_())
    assert "gradient check PASSED" in "".join(table.text)
    header, *rows = table.rows
    assert header[:5] == ["tensor", "verdict", "shape", "checked", "difference"]
    assert [r[0] for r in rows] == list(good.per_param)
    assert {r[1] for r in rows} == {"right"}


def test_a_failing_result_marks_the_wrong_tensor_and_shows_its_worst_entry(results):
    _, bad = results
    table = parse(to_html(bad))
    assert "gradient check FAILED" in "".join(table.text) and "1 of 4 tensors wrong (W1)" in "".join(table.text)
    rows = {r[0]: r for r in table.rows[1:]}
    pc = bad.per_param["W1"]
    assert rows["W1"][1] == "WRONG"
    assert rows["W1"][5] == "W1[" + ", ".join(map(str, pc.worst_index)) + "]"
    assert float(rows["W1"][6]) == pytest.approx(pc.worst_analytic, rel=1e-5)
    assert float(rows["W1"][7]) == pytest.approx(pc.worst_numeric, rel=1e-5)
    colours = dict(table.verdicts)
    assert colours["wrong"] != colours["right"] and "color" in colours["wrong"]


def test_an_inconclusive_tensor_is_marked_inconclusive_with_its_note():
    pcs = {
        "W": ParamCheck("W", (2,), 0.0, True, 2, (0,), 1e-7, worst_analytic=1.0, worst_numeric=1.0),
        "b": ParamCheck("b", (3,), 2e-7, False, 3, None, 1e-7, verdict="inconclusive", note="noise too large"),
    }
    result = CheckResult(1e-7, False, 1e-7, pcs, (), 20, 0, inconclusive=("b",), notes=("raise epsilon",))
    table = parse(to_html(result))
    text = "".join(table.text)
    assert "gradient check INCONCLUSIVE" in text and "1 of 2 tensors inconclusive (b)" in text
    rows = {r[0]: r for r in table.rows[1:]}
    assert rows["b"][1] == "inconclusive" and rows["b"][8] == "noise too large"
    assert rows["b"][5] == "" and rows["W"][1] == "right"
    assert "raise epsilon" in text


def test_names_and_notes_are_escaped():
    name = '<script>alert("x")</script>'
    p = {name: np.array([1.0, -2.0])}
    result = check_gradients(lambda q: float(np.sum(q[name] ** 2)), p, {name: 3 * p[name]}, seed=0)
    page = to_html(result)
    assert "<script>" not in page
    table = parse(page)
    assert table.rows[1][0] == name  # the parser unescapes it back: shown as text, never run


def test_ipython_pretty_prints_the_report(results):
    _, bad = results
    from IPython.lib.pretty import pretty as ipython_pretty

    assert ipython_pretty(bad) == str(bad)


def test_pretty_in_a_cycle_prints_a_placeholder(results):
    class Printer:
        def __init__(self):
            self.out = []

        def text(self, s):
            self.out.append(s)

    printer = Printer()
    pretty(results[0], printer, cycle=True)
    assert printer.out == ["CheckResult(...)"]
