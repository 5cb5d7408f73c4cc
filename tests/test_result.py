"""The result types and the report a person reads."""

import numpy as np

from gradwatch.result import CheckResult, ParamCheck, format_index


def pc(name, verdict, **kw):
    return ParamCheck(name, kw.pop("shape", (2, 3)), kw.pop("difference", 1e-9), verdict == "right", 6, None, 1e-7,
                      verdict=verdict, **kw)


def result(*checks, notes=()):
    per = {c.name: c for c in checks}
    failed = tuple(c.name for c in checks if c.verdict == "wrong")
    inconclusive = tuple(c.name for c in checks if c.verdict == "inconclusive")
    return CheckResult(1e-9, not failed and not inconclusive, 1e-7, per, failed, 17, 3, notes=notes,
                       inconclusive=inconclusive)


def test_the_verdict_is_derived_from_passed_when_not_given():
    assert ParamCheck("w", (2,), 0.0, True, 2, None, 1e-7).verdict == "right"
    assert ParamCheck("w", (2,), 0.5, False, 2, None, 1e-7).verdict == "wrong"
    assert ParamCheck("w", (4, 5), 0.0, True, 20, None, 1e-7).size == 20


def test_an_entry_is_named_in_its_tensors_shape():
    assert format_index("W2", (3, 1)) == "W2[3, 1]"
    assert format_index("s", ()) == "s" and format_index("s", None) == ""


def test_the_verdict_of_a_check_is_failed_then_inconclusive_then_passed():
    assert result(pc("a", "right"), pc("b", "wrong"), pc("c", "inconclusive")).verdict == "failed"
    assert result(pc("a", "right"), pc("c", "inconclusive")).verdict == "inconclusive"
    assert result(pc("a", "right")).verdict == "passed"


def test_the_headline_counts_tensors():
    assert str(result(pc("a", "right"))).startswith("gradient check PASSED: 1 tensor right\n")
    assert str(result(pc("a", "right"), pc("b", "right"))).startswith("gradient check PASSED: 2 tensors right\n")
    head = str(result(pc("a", "wrong"), pc("b", "inconclusive"), pc("c", "right"))).splitlines()[0]
    assert head == "gradient check FAILED: 1 of 3 tensors wrong (a); inconclusive: b"
    head = str(result(pc("a", "inconclusive"), pc("b", "right"))).splitlines()[0]
    assert head == "gradient check INCONCLUSIVE: 1 of 2 tensors could not be settled (a); none found wrong"


def test_a_row_shows_the_worst_entry_with_both_numbers_or_that_the_error_is_spread():
    worst = ParamCheck("W", (2, 3), 0.3, False, 6, (1, 2), 1e-7, worst_analytic=2.5, worst_numeric=0.5)
    spread = ParamCheck("V", (4,), 0.3, False, 4, None, 1e-7, spread=True)
    text = str(result(worst, spread))
    assert "W[1, 2]  analytic 2.5, numeric 0.5" in text and "spread over the tensor" in text
    assert "WRONG" in text and "6/6" in text and "0/4" not in text and "4/4" in text


def test_a_screened_tensor_shows_its_difference_as_a_bound():
    screened = pc("w", "right", method="screen", difference=2e-9)
    assert "≤2.000e-09" in str(result(screened))
    assert "≤" not in str(result(pc("w", "right", difference=2e-9)))


def test_notes_of_tensors_and_of_the_check_are_listed():
    text = str(result(pc("a", "inconclusive", note="do this"), notes=("budget spent",)))
    assert text.splitlines()[-3:] == ["notes:", "  - a: do this", "  - budget spent"]
    assert "notes:" not in str(result(pc("a", "right")))


def test_the_report_line_names_the_sample_the_evaluations_and_the_seed():
    line = str(result(pc("a", "right"))).splitlines()[1]
    assert line == 'difference 1.000e-09 (threshold 1e-07), sample "auto", 17 loss evaluations, seed 3'
    r = CheckResult(0.0, True, 1e-7, {}, (), 5, 1, sample=4)
    assert "sample 4," in str(r)


def test_entry_errors_are_kept_out_of_equality():
    a = ParamCheck("w", (2,), 0.0, True, 2, None, 1e-7, entry_errors=np.zeros(2, dtype=np.float32))
    b = ParamCheck("w", (2,), 0.0, True, 2, None, 1e-7, entry_errors=np.ones(2, dtype=np.float32))
    assert a == b
