"""The real TensorBoard server reads what TensorBoardLogger wrote: values back over its HTTP API.

Starts ``python -m tensorboard.main`` on 127.0.0.1 (a free port) once per loader: the fast
loader (``--load_fast=true``, the Rust data server, which drops float64 scalars) and the Python
one (``--load_fast=false``). Each server is waited for (60 s at most) and terminated afterwards.
The whole file takes a few seconds.
"""

from __future__ import annotations

import dataclasses
import json
import re
import socket
import subprocess
import sys
import time
import urllib.error
import urllib.parse
import urllib.request

import numpy as np
import pytest

import gradwatch
from gradwatch.tensorboard import histogram_buckets, log10_errors

import models

RUN = "mlp"
WAIT_SECONDS = 60.0


@pytest.fixture(scope="module")
def logged(tmp_path_factory):
    """A logdir with a passing check at step 0, a failing one at step 100, a refusal at step 200 and an
    inconclusive check at step 300 (the passing one with b1 made inconclusive: an in-memory fake)."""
    model = models.mlp([4, 5, 3], seed=0)
    good = gradwatch.check_gradients(model.loss, model.params, model.backward(model.params), seed=0)
    grads = model.backward(model.params)
    grads["dW2"][1, 2] -= 0.05
    bad = gradwatch.check_gradients(model.loss, model.params, grads, seed=0)
    assert good.passed and bad.failed == ("W2",)
    unsure = dataclasses.replace(
        good, passed=False, inconclusive=("b1",),
        per_param={**good.per_param, "b1": dataclasses.replace(good.per_param["b1"], passed=False, verdict="inconclusive")})
    logdir = tmp_path_factory.mktemp("tb")
    from gradwatch.tensorboard import TensorBoardLogger

    with TensorBoardLogger(logdir / RUN) as tb:
        tb.log_check(0, good)
        tb.log_check(100, bad)
        tb.log_refusal(200, "dropout is active")
        tb.log_check(300, unsure)
    return logdir, {0: good, 100: bad, 300: unsure}


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def get(base: str, path: str, **query):
    url = f"{base}{path}" + (f"?{urllib.parse.urlencode(query)}" if query else "")
    with urllib.request.urlopen(url, timeout=10) as response:
        return json.loads(response.read().decode("utf-8"))


@pytest.fixture(scope="module", params=["true", "false"], ids=["fast-loader", "python-loader"])
def server(request, logged):
    logdir, _ = logged
    load_fast = request.param
    if load_fast == "true":
        try:
            import tensorboard_data_server  # noqa: F401 - the fast loader's binary ships in this package
        except ImportError:
            pytest.skip("tensorboard-data-server is not installed: TensorBoard has no fast loader here")
    port = free_port()
    process = subprocess.Popen(
        [sys.executable, "-m", "tensorboard.main", "--logdir", str(logdir), "--host", "127.0.0.1",
         "--port", str(port), f"--load_fast={load_fast}", "--reload_interval", "1"],
        stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, stdin=subprocess.DEVNULL,
    )
    base = f"http://127.0.0.1:{port}"
    try:
        deadline = time.monotonic() + WAIT_SECONDS
        while True:
            if process.poll() is not None:
                detail = process.stderr.read().decode("utf-8", "replace")[-1500:]
                pytest.skip(f"tensorboard could not start (--load_fast={load_fast}): {detail}")
            try:
                points = get(base, "/data/plugin/scalars/scalars", tag="gradcheck/difference", run=RUN)
                if len(points) == 3:
                    break
            except (urllib.error.URLError, ConnectionError, OSError, ValueError):
                pass
            assert time.monotonic() < deadline, f"tensorboard served no gradcheck scalars within {WAIT_SECONDS:.0f} s"
            time.sleep(0.2)
        yield base
    finally:
        process.terminate()
        try:
            process.wait(timeout=10)
        except subprocess.TimeoutExpired:
            process.kill()
            process.wait(timeout=10)
        process.stderr.close()


def test_server_lists_every_scalar_tag(server):
    tags = get(server, "/data/plugin/scalars/tags")[RUN]
    expected = {"gradcheck/difference", "gradcheck/passed", "gradcheck/loss_evaluations", "gradcheck/refused",
                "gradcheck/inconclusive", "gradcheck/margin", "gradcheck/margin_threshold"}
    for name in ("W1", "b1", "W2", "b2"):
        expected |= {f"gradcheck/{kind}/{name}"
                     for kind in ("difference", "margin", "passed", "inconclusive", "max_abs_error")}
    assert set(tags) == expected


def test_server_returns_the_logged_scalars_as_float32(server, logged):
    _, checks = logged
    for tag, value_of in (
        ("gradcheck/difference", lambda r: r.difference),
        ("gradcheck/passed", lambda r: 1.0 if r.passed else 0.0),
        ("gradcheck/difference/W2", lambda r: r.per_param["W2"].difference),
        ("gradcheck/passed/W2", lambda r: 1.0 if r.per_param["W2"].passed else 0.0),
        ("gradcheck/max_abs_error/b1", lambda r: r.per_param["b1"].max_abs_error),
    ):
        points = get(server, "/data/plugin/scalars/scalars", tag=tag, run=RUN)
        assert {step: value for _, step, value in points} == {
            step: float(np.float32(value_of(result))) for step, result in checks.items()}, tag
    refused = get(server, "/data/plugin/scalars/scalars", tag="gradcheck/refused", run=RUN)
    assert [(step, value) for _, step, value in refused] == [(200, 1.0)]


def test_server_returns_the_relative_error_histograms(server, logged):
    _, checks = logged
    points = get(server, "/data/plugin/histograms/histograms", tag="gradcheck/log10_relative_error/W2", run=RUN)
    assert [step for _, step, _ in points] == [0, 100, 300]
    for _, step, buckets in points:
        expected = histogram_buckets(log10_errors(checks[step].per_param["W2"].entry_errors))
        np.testing.assert_allclose(np.array(buckets), expected, rtol=1e-12)


def test_server_renders_the_report_and_the_refusal_as_text(server, logged):
    tags = get(server, "/data/plugin/text/tags")[RUN]
    assert set(tags) == {"gradcheck/report", "gradcheck/refusal"}
    reports = get(server, "/data/plugin/text/text", tag="gradcheck/report", run=RUN)
    assert [r["step"] for r in reports] == [0, 100, 300]
    assert "gradient check FAILED: 1 of 4 tensors wrong (W2)" in reports[1]["text"]
    assert "<pre>" in reports[1]["text"] or "<code>" in reports[1]["text"]  # columns stay aligned
    refusal = get(server, "/data/plugin/text/text", tag="gradcheck/refusal", run=RUN)
    assert refusal[0]["step"] == 200 and "dropout is active" in refusal[0]["text"]


def test_server_serves_the_custom_scalars_layout(server):
    layout = get(server, "/data/plugin/custom_scalars/layout")
    regexes = [tag for cat in layout["category"] for chart in cat["chart"] for tag in chart["multiline"]["tag"]]
    tags = get(server, "/data/plugin/scalars/tags")[RUN]
    difference_tags = {t for t in tags if t.startswith("gradcheck/difference")}
    assert any(all(re.fullmatch(r, t) for t in difference_tags) for r in regexes)


def test_server_draws_each_tensors_margin_on_the_side_of_zero_its_verdict_says(server, logged):
    _, checks = logged
    for name in ("W1", "b1", "W2", "b2"):
        points = get(server, "/data/plugin/scalars/scalars", tag=f"gradcheck/margin/{name}", run=RUN)
        for _, step, value in points:
            assert (value > 0) == (name in checks[step].failed), (name, step, value)
    line = get(server, "/data/plugin/scalars/scalars", tag="gradcheck/margin_threshold", run=RUN)
    assert [value for _, _, value in line] == [0.0, 0.0, 0.0]


def test_server_layout_has_a_margin_chart_per_tensor_with_its_threshold_line(server):
    layout = get(server, "/data/plugin/custom_scalars/layout")
    charts = {chart["title"]: chart["multiline"]["tag"] for cat in layout["category"] for chart in cat["chart"]}
    tags = get(server, "/data/plugin/scalars/tags")[RUN]
    for name in ("W1", "b1", "W2", "b2"):
        (title,) = [t for t in charts if t.startswith(f"{name}: ")]
        assert "1e-07" in title  # the float64 threshold this run was checked against
        (regex,) = charts[title]
        assert {t for t in tags if re.search(regex, t)} == {f"gradcheck/margin/{name}", "gradcheck/margin_threshold"}


def test_server_shows_the_inconclusive_check(server):
    points = get(server, "/data/plugin/scalars/scalars", tag="gradcheck/inconclusive", run=RUN)
    assert [(step, value) for _, step, value in points] == [(0, 0.0), (100, 0.0), (300, 1.0)]
    per_tensor = get(server, "/data/plugin/scalars/scalars", tag="gradcheck/inconclusive/b1", run=RUN)
    assert [(step, value) for _, step, value in per_tensor] == [(0, 0.0), (100, 0.0), (300, 1.0)]
