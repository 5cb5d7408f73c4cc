"""TensorBoardLogger: what it writes, read back with TensorBoard's own event reader."""

from __future__ import annotations

import math
import os
import re
import shutil
import subprocess
import sys
import threading
import warnings

import numpy as np
import pytest

from gradwatch.errors import GradWatchError
from gradwatch.tensorboard import TensorBoardLogger, from_markdown, histogram_buckets, log10_errors, margin


ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


def event_files(logdir):
    return sorted(os.path.join(logdir, f) for f in os.listdir(logdir) if "tfevents" in f)


def load(path):
    """Every (step, tag) -> Summary.Value in one file, via TensorBoard's EventFileLoader."""
    from tensorboard.backend.event_processing.event_file_loader import EventFileLoader

    values = {}
    for event in EventFileLoader(path).Load():
        for value in event.summary.value:
            values.setdefault((event.step, value.tag), []).append(value)
    return values


def scalar(value):
    from tensorboard.util import tensor_util

    return float(tensor_util.make_ndarray(value.tensor))


def test_every_check_tag_round_trips_at_its_step(tmp_path, results):
    from tensorboard.util import tensor_util

    good, bad = results
    with TensorBoardLogger(tmp_path) as tb:
        tb.log_check(0, good)
        tb.log_check(250, bad)
    (path,) = event_files(tmp_path)
    values = load(path)
    for step, result in ((0, good), (250, bad)):
        def one(tag):
            (v,) = values[(step, tag)]
            return v

        f32 = lambda x: float(np.float32(x))  # noqa: E731 - written as float32, exactly
        assert scalar(one("gradcheck/difference")) == f32(result.difference)
        assert scalar(one("gradcheck/passed")) == (1.0 if result.passed else 0.0)
        assert scalar(one("gradcheck/loss_evaluations")) == float(result.loss_evaluations)
        for name, pc in result.per_param.items():
            assert scalar(one(f"gradcheck/difference/{name}")) == f32(pc.difference)
            assert scalar(one(f"gradcheck/passed/{name}")) == (1.0 if pc.passed else 0.0)
            assert scalar(one(f"gradcheck/max_abs_error/{name}")) == f32(pc.max_abs_error)
            buckets = tensor_util.make_ndarray(one(f"gradcheck/log10_relative_error/{name}").tensor)
            assert buckets.shape[1] == 3
            np.testing.assert_array_equal(buckets, histogram_buckets(log10_errors(pc.entry_errors)))
            assert buckets[:, 2].sum() == pc.entry_errors.size
        text = tensor_util.make_ndarray(one("gradcheck/report").tensor).item().decode("utf-8")
        assert from_markdown(text) == str(result)
    assert scalar(values[(250, "gradcheck/passed/W1")][0]) == 0.0
    assert scalar(values[(250, "gradcheck/passed/b1")][0]) == 1.0


def test_scalars_are_float32_tensors_of_the_scalars_plugin(tmp_path, results):
    from tensorboard.compat.proto import types_pb2

    with TensorBoardLogger(tmp_path) as tb:
        tb.log_check(3, results[0])
    values = load(event_files(tmp_path)[0])
    scalars = [v for (step, tag), vs in values.items() for v in vs if v.metadata.plugin_data.plugin_name == "scalars"]
    assert {v.tag for v in scalars} >= {"gradcheck/difference", "gradcheck/passed", "gradcheck/difference/W1"}
    assert all(v.tensor.dtype == types_pb2.DT_FLOAT and not v.tensor.tensor_shape.dim for v in scalars)
    plugins = {v.tag: v.metadata.plugin_data.plugin_name for vs in values.values() for v in vs}
    assert plugins["gradcheck/log10_relative_error/W1"] == "histograms"
    assert plugins["gradcheck/report"] == "text"


def test_refusal_is_a_refused_scalar_and_its_reason_as_text(tmp_path):
    from tensorboard.util import tensor_util

    with TensorBoardLogger(tmp_path) as tb:
        tb.log_refusal(7, "dropout is active | keep_prob=0.8")
    values = load(event_files(tmp_path)[0])
    assert scalar(values[(7, "gradcheck/refused")][0]) == 1.0
    text = tensor_util.make_ndarray(values[(7, "gradcheck/refusal")][0].tensor).item().decode("utf-8")
    assert from_markdown(text) == "dropout is active | keep_prob=0.8"
    assert not any(tag == "gradcheck/difference" for _, tag in values)


def test_custom_scalars_layout_is_written_once_per_file_and_charts_every_difference(tmp_path, results):
    from tensorboard.plugins.custom_scalar import layout_pb2, metadata
    from tensorboard.util import tensor_util

    with TensorBoardLogger(tmp_path) as tb:
        tb.log_check(0, results[0])
        tb.log_check(10, results[1])
        tb.log_refusal(20, "dropout")
    values = load(event_files(tmp_path)[0])
    layouts = [v for (_, tag), vs in values.items() if tag == metadata.CONFIG_SUMMARY_TAG for v in vs]
    assert len(layouts) == 1
    assert layouts[0].metadata.plugin_data.plugin_name == metadata.PLUGIN_NAME
    layout = layout_pb2.Layout.FromString(tensor_util.make_ndarray(layouts[0].tensor).item())
    regexes = [tag for cat in layout.category for chart in cat.chart for tag in chart.multiline.tag]
    difference_tags = {tag for _, tag in values if tag.startswith("gradcheck/difference")}
    assert len(difference_tags) == 5
    chart = next(r for r in regexes if re.fullmatch(r, "gradcheck/difference/W1"))
    assert all(re.fullmatch(chart, tag) for tag in difference_tags)
    assert not re.fullmatch(chart, "gradcheck/passed/W1")


def test_directory_is_created_at_construction_but_no_event_file_until_a_write(tmp_path, results):
    logdir = tmp_path / "a" / "b"
    tb = TensorBoardLogger(logdir)
    assert logdir.is_dir() and event_files(logdir) == []
    tb.flush()
    tb.close()
    assert event_files(logdir) == []
    tb.log_check(0, results[0])
    assert len(event_files(logdir)) == 1
    tb.close()


def test_tensorboard_is_imported_at_the_first_write_not_before(tmp_path):
    code = (
        "import sys; from gradwatch.tensorboard import TensorBoardLogger; "
        f"tb = TensorBoardLogger({str(tmp_path)!r}); print('tensorboard' in sys.modules); "
        "tb.log_refusal(0, 'x'); print('tensorboard' in sys.modules)"
    )
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, cwd=ROOT, timeout=60)
    assert out.returncode == 0, out.stderr
    assert out.stdout.split() == ["False", "True"]


def test_each_check_is_on_disk_before_close(tmp_path, results):
    from gradwatch.history import read_history

    tb = TensorBoardLogger(tmp_path)
    tb.log_check(5, results[1])
    records = read_history(tmp_path)  # read while the writer is still open
    assert [(r.step, r.verdict, r.failed) for r in records] == [(5, "failed", ("W1",))]
    tb.close()


def test_logdir_that_cannot_be_created_fails_at_construction_naming_it(tmp_path):
    blocker = tmp_path / "file"
    blocker.write_text("not a directory")
    with pytest.raises(GradWatchError, match=re.escape(str(blocker / "logs"))):
        TensorBoardLogger(blocker / "logs")


def test_directory_removed_mid_run_warns_once_and_checks_go_on(tmp_path, results, monkeypatch):
    from tensorboard.summary.writer.event_file_writer import _AsyncWriterThread

    thread_errors = []
    monkeypatch.setattr(threading, "excepthook", thread_errors.append)
    logdir = tmp_path / "logs"
    tb = TensorBoardLogger(logdir)
    tb.log_check(0, results[0])
    shutil.rmtree(logdir)
    with pytest.warns(RuntimeWarning, match="could not write TensorBoard events") as caught:
        tb.log_check(1, results[0])
    for thread in threading.enumerate():
        if isinstance(thread, _AsyncWriterThread):
            thread.join(timeout=5)
    assert len(caught) == 1 and str(logdir) in str(caught[0].message)
    assert caught[0].filename == __file__  # stacklevel points at the caller of log_check
    assert tb.broken
    with warnings.catch_warnings():
        warnings.simplefilter("error")  # a second warning would raise here
        tb.log_check(2, results[1])
        tb.log_refusal(3, "dropout")
        tb.flush()
        tb.close()
    assert not logdir.exists()  # dropped, not re-created
    assert thread_errors == []  # the writer's thread left the error to us: no traceback of its own


def test_step_must_be_an_int(tmp_path, results):
    tb = TensorBoardLogger(tmp_path)
    with pytest.raises(TypeError, match="step must be an int; got 1.5"):
        tb.log_check(1.5, results[0])
    with pytest.raises(TypeError, match="result must be a CheckResult"):
        tb.log_check(1, {"difference": 0.0})
    assert event_files(tmp_path) == []


def test_a_write_after_close_opens_a_new_file_with_its_own_layout(tmp_path, results):
    tb = TensorBoardLogger(tmp_path)
    tb.log_check(0, results[0])
    tb.close()
    tb.log_check(1, results[0])
    tb.close()
    files = event_files(tmp_path)
    assert len(files) == 2
    for path in files:
        assert sum(tag == "custom_scalars__config__" for _, tag in load(path)) == 1


def test_histogram_buckets_cover_every_value_once():
    data = np.array([-11.0, -10.5, -10.5, -3.0, -1.0])
    buckets = histogram_buckets(data, bucket_count=4)
    assert buckets.shape == (4, 3)
    assert buckets[0, 0] == -11.0 and buckets[-1, 1] == -1.0
    np.testing.assert_array_equal(buckets[:, 2], [3, 0, 0, 2])  # width 2.5: -3.0 falls in [-3.5, -1]
    single = histogram_buckets(np.array([-2.0, -2.0]))
    np.testing.assert_array_equal(single, [[-2.5, -1.5, 2.0]])
    assert log10_errors(np.array([0.0, 1e-3]))[0] == -20.0


def test_margin_puts_right_below_zero_and_wrong_above_against_each_threshold():
    assert margin(1e-10, 1e-7) == pytest.approx(-3.0)
    assert margin(3e-4, 1e-4) > 0 > margin(3e-5, 1e-4)  # float32's threshold, not float64's
    assert margin(float("nan"), 1e-7) == pytest.approx(7.0)  # drawn as the largest formula (2) gives
    assert margin(0.0, 1e-7) == pytest.approx(-23.0)


def test_each_tensor_gets_a_margin_chart_titled_with_its_threshold(tmp_path, results):
    from tensorboard.plugins.custom_scalar import layout_pb2, metadata
    from tensorboard.util import tensor_util

    with TensorBoardLogger(tmp_path) as tb:
        tb.log_refusal(0, "dropout")  # no tensor known yet: the layout waits for the first check
        tb.log_check(10, results[1])
    values = load(event_files(tmp_path)[0])
    (layout_value_,) = [v for (_, tag), vs in values.items() if tag == metadata.CONFIG_SUMMARY_TAG for v in vs]
    layout = layout_pb2.Layout.FromString(tensor_util.make_ndarray(layout_value_.tensor).item())
    charts = {c.title: list(c.multiline.tag) for cat in layout.category for c in cat.chart}
    tags = {tag for _, tag in values}
    for name in results[1].per_param:
        (title,) = [t for t in charts if t.startswith(f"{name}: ")]
        assert "1e-07" in title
        assert {t for t in tags if re.search(charts[title][0], t)} == {f"gradcheck/margin/{name}",
                                                                      "gradcheck/margin_threshold"}


def test_an_inconclusive_check_is_flagged(tmp_path, results):
    import dataclasses

    good = results[0]
    per = {**good.per_param, "b1": dataclasses.replace(good.per_param["b1"], passed=False, verdict="inconclusive")}
    unsure = dataclasses.replace(good, passed=False, per_param=per, inconclusive=("b1",))
    with TensorBoardLogger(tmp_path) as tb:
        tb.log_check(0, good)
        tb.log_check(1, unsure)
    values = load(event_files(tmp_path)[0])
    assert [scalar(values[(s, "gradcheck/inconclusive")][0]) for s in (0, 1)] == [0.0, 1.0]
    assert scalar(values[(1, "gradcheck/inconclusive/b1")][0]) == 1.0
    assert scalar(values[(1, "gradcheck/inconclusive/W1")][0]) == 0.0


def test_a_right_tensor_whose_gap_noise_explained_is_drawn_on_the_line_not_above_it():
    assert margin(2.6e-4, 1e-7, "right") == 0.0
    assert margin(2.6e-4, 1e-7, "wrong") == pytest.approx(math.log10(2600))
    assert margin(1e-10, 1e-7, "right") == pytest.approx(-3.0)
