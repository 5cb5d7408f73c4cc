"""The examples end to end, as a user runs them (subprocesses, short settings)."""

from __future__ import annotations

import os
import re
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parent.parent
EXAMPLES = ROOT / "examples"


def run(script: str, *args: str, cwd: Path, **env: str) -> subprocess.CompletedProcess:
    environ = {k: v for k, v in os.environ.items() if not k.startswith("GRADWATCH")}
    environ["GRADWATCH_PROGRESS"] = "0"
    environ.update(env)
    return subprocess.run(
        [sys.executable, str(EXAMPLES / script), *args],
        cwd=cwd, env=environ, capture_output=True, text=True, timeout=120,
    )


def final_accuracy(stdout: str) -> float:
    match = re.search(r"final train accuracy ([\d.]+)%", stdout)
    assert match, stdout
    return float(match.group(1)) / 100


def test_train_mlp_trains_and_passes_its_checks(tmp_path):
    proc = run("train_mlp.py", "--steps", "300", "--logdir", str(tmp_path / "runs"), cwd=tmp_path)
    assert proc.returncode == 0, proc.stderr
    assert proc.stdout.count("gradient check PASSED") == 2  # at step 0 and after 150 steps
    assert "-- step 150" in proc.stdout and "FAILED" not in proc.stdout
    assert final_accuracy(proc.stdout) >= 0.90
    assert any((tmp_path / "runs").iterdir())  # the checks were logged


def test_train_mlp_with_dropout_checks_a_dropout_free_pass(tmp_path):
    proc = run("train_mlp.py", "--steps", "200", "--keep-prob", "0.8", "--logdir", str(tmp_path / "runs"), cwd=tmp_path)
    assert proc.returncode == 0, proc.stderr
    assert proc.stdout.count("gradient check PASSED") == 2
    assert "0 refused" in proc.stdout


def test_train_mlp_refuses_a_check_through_dropout(tmp_path):
    proc = run("train_mlp.py", "--steps", "5", "--keep-prob", "0.8", "--dropout-in-check",
               "--logdir", str(tmp_path / "runs"), cwd=tmp_path)
    assert proc.returncode == 2
    assert "refused at step 0" in proc.stderr and "keep_prob=1" in proc.stderr


def test_train_mlp_is_inert_when_the_environment_says_off(tmp_path):
    proc = run("train_mlp.py", "--steps", "50", "--logdir", str(tmp_path / "runs"), cwd=tmp_path, GRADWATCH="0")
    assert proc.returncode == 0, proc.stderr
    assert "gradient checks: 0 scheduled" in proc.stdout
    assert not (tmp_path / "runs").exists()


def test_train_mlp_follows_a_config(tmp_path):
    config = tmp_path / "every.yaml"
    config.write_text("at_init: false\nevery: 40\nseed: 1\n")
    proc = run("train_mlp.py", "--steps", "100", "--config", str(config), cwd=tmp_path)
    assert proc.returncode == 0, proc.stderr
    assert re.findall(r"-- step (\d+)", proc.stdout) == ["0", "40", "80"]


def test_buggy_backprop_fails_and_names_the_wrong_tensor(tmp_path):
    proc = run("buggy_backprop.py", "--steps", "20", "--logdir", str(tmp_path / "runs"), cwd=tmp_path)
    assert proc.returncode == 1, proc.stderr
    assert "gradient check FAILED: 1 of 6 tensors wrong (b2)" in proc.stdout
    assert re.search(r"b2 .* WRONG +b2\[\d+, 0\] +analytic", proc.stdout)


@pytest.mark.parametrize("script", ["train_mlp.py", "buggy_backprop.py"])
def test_examples_document_their_flags(tmp_path, script):
    proc = run(script, "--help", cwd=tmp_path)
    assert proc.returncode == 0 and "--logdir" in proc.stdout and "--steps" in proc.stdout


# --------------------------------------------------------------------------------------------
# the course notebook, executed by a real Jupyter kernel (nbclient)

NOTEBOOK = EXAMPLES / "course_exercise.ipynb"


def test_the_course_notebook_is_committed_without_outputs():
    import nbformat

    nb = nbformat.read(NOTEBOOK, as_version=4)
    code = [c for c in nb.cells if c.cell_type == "code"]
    assert code and all(c.outputs == [] and c.execution_count is None for c in code)


def _kernel_or_skip() -> None:
    """Skip only when no Jupyter kernel can start on this machine."""
    from jupyter_client.manager import start_new_kernel

    try:
        km, kc = start_new_kernel(kernel_name="python3", startup_timeout=60)
    except Exception as exc:  # noqa: BLE001  (whatever stops a kernel from starting)
        pytest.skip(f"no Jupyter kernel can start here: {type(exc).__name__}: {exc}")
    kc.stop_channels()
    km.shutdown_kernel(now=True)


def test_the_course_notebook_runs_end_to_end_and_narrows_the_bugs_down():
    import nbformat
    from nbclient import NotebookClient

    _kernel_or_skip()
    nb = nbformat.read(NOTEBOOK, as_version=4)
    # a failing cell (its asserts: b1 and W2 found, layer 1 and layer 2 blamed, the fix passes) raises here
    NotebookClient(nb, timeout=120, kernel_name="python3", resources={"metadata": {"path": str(EXAMPLES)}}).execute()
    outputs = [o for c in nb.cells if c.cell_type == "code" for o in c.outputs]
    html = [o["data"]["text/html"] for o in outputs if "data" in o and "text/html" in o["data"]]
    assert any("gradient check FAILED" in h and "<table" in h and "WRONG" in h for h in html)
    text = "".join(o.get("text", "") for o in outputs if o.get("output_type") == "stream")
    assert re.search(r"layer 1 \(W1, b1; relu\) +failed +b1", text)
    assert re.search(r"layer 2 \(A1, W2, b2; relu\) +failed +W2", text)
    assert "difference 1.19e-07" in text


def test_layer_check_passes_the_conv_layer_and_locates_the_planted_off_by_one(tmp_path):
    proc = run("layer_check.py", cwd=tmp_path)
    assert proc.returncode == 0, proc.stdout + proc.stderr
    assert "gradient check PASSED: 3 tensors right" in proc.stdout
    assert "gradient check FAILED: 1 of 3 tensors wrong (x)" in proc.stdout
    located = re.search(r"located: x\[\d+, \d+, \d+, (\d+)\]", proc.stdout)
    assert located and int(located.group(1)) in (30, 31)  # the columns the last output column touches
    evaluations = [int(n) for n in re.findall(r"(\d+) loss evaluations", proc.stdout)]
    assert len(evaluations) == 2 and max(evaluations) <= 400
