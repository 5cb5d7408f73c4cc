"""gradwatch.history: the grad-check history read back from event files (no server)."""

from __future__ import annotations

import dataclasses
import json

import numpy as np
import pytest

import gradwatch
from gradwatch.errors import GradWatchError
from gradwatch.history import HistoryWarning, find_runs, latest_by_run, read_events, read_history, run_verdicts, scan
from gradwatch.tensorboard import TensorBoardLogger

import models


@pytest.fixture(scope="module")
def results():
    model = models.mlp([3, 4, 2], seed=1)
    good = gradwatch.check_gradients(model.loss, model.params, model.backward(model.params), seed=0)
    grads = model.backward(model.params)
    grads["db2"] = grads["db2"] * 2.0
    bad = gradwatch.check_gradients(model.loss, model.params, grads, seed=0)
    assert good.passed and bad.failed == ("b2",)
    return good, bad


def test_runs_are_the_directories_holding_event_files(tmp_path, results):
    for sub in ("", "exp/a", "exp/b"):
        with TensorBoardLogger(tmp_path / sub) as tb:
            tb.log_check(0, results[0])
    (tmp_path / "empty").mkdir()
    runs = find_runs(tmp_path)
    assert sorted(runs) == [".", "exp/a", "exp/b"]
    assert all(len(files) == 1 for files in runs.values())


def test_a_check_record_holds_difference_verdict_and_failing_tensors(tmp_path, results):
    good, bad = results
    with TensorBoardLogger(tmp_path) as tb:
        tb.log_check(0, good)
        tb.log_check(100, bad)
    first, second = read_history(tmp_path)
    assert (first.run, first.step, first.kind, first.verdict, first.failed) == (".", 0, "check", "passed", ())
    assert (second.step, second.verdict, second.failed) == (100, "failed", ("b2",))
    assert second.difference == float(np.float32(bad.difference))
    assert second.differences == {n: float(np.float32(pc.difference)) for n, pc in bad.per_param.items()}
    assert second.max_abs_errors["b2"] == float(np.float32(bad.per_param["b2"].max_abs_error))
    assert second.loss_evaluations == bad.loss_evaluations
    assert second.text == str(bad)


def test_a_refusal_is_told_apart_from_a_check(tmp_path, results):
    with TensorBoardLogger(tmp_path) as tb:
        tb.log_check(0, results[0])
        tb.log_refusal(50, "dropout is active (keep_prob=0.8)")
    check, refusal = read_history(tmp_path)
    assert check.kind == "check" and check.verdict == "passed"
    assert refusal.kind == "refusal" and refusal.verdict == "refused" and refusal.step == 50
    assert refusal.text == "dropout is active (keep_prob=0.8)"
    assert refusal.difference is None and refusal.passed is None
    assert latest_by_run([check, refusal])["."] is refusal


def test_the_latest_record_of_a_run_is_the_last_written_even_at_a_lower_step(tmp_path, results):
    with TensorBoardLogger(tmp_path) as tb:  # a first session
        tb.log_check(500, results[1])
    with TensorBoardLogger(tmp_path) as tb:  # the script run again into the same directory
        tb.log_check(0, results[0])
    records = read_history(tmp_path)
    assert [(r.step, r.verdict) for r in records] == [(500, "failed"), (0, "passed")]
    assert latest_by_run(records)["."].verdict == "passed"


def test_tags_that_are_not_gradwatch_checks_are_ignored(tmp_path, results):
    from tensorboard.compat.proto import event_pb2, summary_pb2
    from tensorboard.summary.writer.event_file_writer import EventFileWriter

    writer = EventFileWriter(str(tmp_path))
    writer.add_event(event_pb2.Event(step=3, summary=summary_pb2.Summary(
        value=[summary_pb2.Summary.Value(tag="train/loss", simple_value=0.5)])))
    writer.close()
    assert read_history(tmp_path) == []
    with TensorBoardLogger(tmp_path) as tb:
        tb.log_check(4, results[0])
    assert [r.step for r in read_history(tmp_path)] == [4]


def test_read_events_decodes_scalars_histograms_and_text(tmp_path, results):
    with TensorBoardLogger(tmp_path) as tb:
        tb.log_check(2, results[1])
    (path,) = find_runs(tmp_path)["."]
    values = {tag: value for _, step, tag, value in read_events(path) if step == 2}
    assert values["gradcheck/passed/b2"] == 0.0
    assert values["gradcheck/log10_relative_error/b2"].shape[1] == 3
    assert values["gradcheck/report"] == str(results[1])


def test_to_dict_is_json_ready(tmp_path, results):
    with TensorBoardLogger(tmp_path) as tb:
        tb.log_check(1, results[1])
        tb.log_refusal(2, "dropout")
    data = json.loads(json.dumps([r.to_dict() for r in read_history(tmp_path)], allow_nan=False))
    assert data[0]["verdict"] == "failed" and data[0]["failed"] == ["b2"] and data[0]["reason"] is None
    assert data[1]["verdict"] == "refused" and data[1]["reason"] == "dropout" and data[1]["difference"] is None


def test_a_missing_logdir_is_an_error_naming_it(tmp_path):
    missing = tmp_path / "nope"
    with pytest.raises(GradWatchError, match="nope"):
        read_history(missing)


def test_a_garbled_event_file_is_named_in_a_warning_and_spoils_no_other_run(tmp_path, results):
    (tmp_path / "garbled").mkdir()
    (tmp_path / "garbled" / "events.out.tfevents.123.host").write_bytes(bytes(range(64)) * 2)
    with TensorBoardLogger(tmp_path / "good") as tb:
        tb.log_check(0, results[0])
    with pytest.warns(HistoryWarning, match="garbled"):
        records = read_history(tmp_path)
    assert [(r.run, r.verdict) for r in records] == [("good", "passed")]


def only_file(logdir):
    (run,) = find_runs(logdir).values()
    (path,) = run
    return path


def test_two_checks_at_the_same_step_are_two_records(tmp_path, results):
    good, bad = results
    with TensorBoardLogger(tmp_path) as tb:  # an epoch loop whose step counter restarts
        tb.log_check(0, bad)
        tb.log_check(0, good)
    assert [(r.step, r.verdict) for r in read_history(tmp_path)] == [(0, "failed"), (0, "passed")]


def test_a_file_cut_short_is_damage_named_with_what_was_read_before_it(tmp_path, results):
    good, bad = results
    with TensorBoardLogger(tmp_path) as tb:
        tb.log_check(0, good)
        tb.log_check(5, bad)
    path = only_file(tmp_path)
    data = open(path, "rb").read()
    with open(path, "wb") as handle:
        handle.write(data[:-7])  # a run killed mid-write
    history = scan(tmp_path)
    assert [(r.step, r.verdict) for r in history.records] == [(0, "passed")]
    (damage,) = history.damaged
    assert damage.path == path and "cut short" in str(damage)


def test_a_flipped_byte_is_damage_not_a_silent_end(tmp_path, results):
    good, bad = results
    with TensorBoardLogger(tmp_path) as tb:
        tb.log_check(0, good)
        tb.log_check(5, bad)
    path = only_file(tmp_path)
    data = bytearray(open(path, "rb").read())
    data[-40] ^= 0x01
    open(path, "wb").write(bytes(data))
    history = scan(tmp_path)
    assert [r.step for r in history.records] == [0]
    (damage,) = history.damaged
    assert "checksum" in damage.reason


def test_read_events_raises_naming_a_damaged_file(tmp_path, results):
    with TensorBoardLogger(tmp_path) as tb:
        tb.log_check(0, results[0])
    path = only_file(tmp_path)
    open(path, "ab").write(b"\x05\x00")
    with pytest.raises(GradWatchError, match="damaged"):
        list(read_events(path))


def inconclusive_result(good):
    """An in-memory fake: the passing check with b1 left inconclusive."""
    per = dict(good.per_param)
    per["b1"] = dataclasses.replace(per["b1"], passed=False, verdict="inconclusive")
    return dataclasses.replace(good, passed=False, per_param=per, inconclusive=("b1",))


def test_an_inconclusive_check_reads_back_as_inconclusive_naming_the_tensor(tmp_path, results):
    unsure = inconclusive_result(results[0])
    assert unsure.verdict == "inconclusive"
    with TensorBoardLogger(tmp_path) as tb:
        tb.log_check(3, unsure)
    (record,) = read_history(tmp_path)
    assert (record.verdict, record.inconclusive, record.failed) == ("inconclusive", ("b1",), ())


def test_a_check_with_wrong_and_inconclusive_tensors_is_failed(tmp_path, results):
    bad = results[1]
    per = dict(bad.per_param)
    per["W1"] = dataclasses.replace(per["W1"], passed=False, verdict="inconclusive")
    mixed = dataclasses.replace(bad, per_param=per, inconclusive=("W1",))
    with TensorBoardLogger(tmp_path) as tb:
        tb.log_check(3, mixed)
    (record,) = read_history(tmp_path)
    assert (record.verdict, record.failed, record.inconclusive) == ("failed", ("b2",), ("W1",))


def test_the_seconds_a_check_took_are_read_back(tmp_path, results):
    with TensorBoardLogger(tmp_path) as tb:
        tb.log_check(3, results[0], seconds=1.25)
        tb.log_check(4, results[0])
    assert [r.seconds for r in read_history(tmp_path)] == [1.25, None]


def test_a_run_fails_when_any_of_its_checks_failed(tmp_path, results):
    good, bad = results
    with TensorBoardLogger(tmp_path / "a") as tb:
        tb.log_check(0, bad)
        tb.log_check(10, good)
    with TensorBoardLogger(tmp_path / "b") as tb:
        tb.log_check(0, good)
        tb.log_refusal(10, "dropout")
    with TensorBoardLogger(tmp_path / "c") as tb:
        tb.log_check(0, good)
    assert run_verdicts(read_history(tmp_path)) == {"a": "failed", "b": "refused", "c": "passed"}


@pytest.mark.parametrize("odd", ["text", "histogram"])
def test_a_value_of_another_kind_where_a_number_belongs_is_damage_named(tmp_path, results, odd):
    from gradwatch.tensorboard import histogram_value, scalar_value, text_value

    good, _ = results
    with TensorBoardLogger(tmp_path) as tb:
        tb.log_check(0, good)
        passed = text_value("gradcheck/passed", "yes") if odd == "text" else histogram_value(
            "gradcheck/passed", np.array([0.0, 1.0, 1.0]))
        tb._write(3, lambda: [scalar_value("gradcheck/difference", 0.5), passed])
    history = scan(tmp_path)
    assert [(r.step, r.verdict) for r in history.records] == [(0, "passed")]
    (damage,) = history.damaged
    assert damage.path == only_file(tmp_path) and "step 3" in damage.reason
