#!/usr/bin/env python3
"""Screenshot TensorBoard showing gradwatch's charts, for the README (writes docs/tensorboard.png).

    python scripts/screenshot_tensorboard.py                   # a demo logdir, the custom-scalars page
    python scripts/screenshot_tensorboard.py --logdir runs/    # your own logdir
    python scripts/screenshot_tensorboard.py --dashboard scalars --out /tmp/scalars.png

The demo trains two small tanh networks with plain NumPy, checking their gradients every 40
steps: one with a subtle bug (``db1`` 0.05% too large: a difference of about 2.5e-4, wrong by the
float64 threshold 1e-7, yet invisible on a linear axis next to a gross bug), one with a gross one
(the tanh derivative written ``1 - z**2``: nearly right while the weights are tiny, far off once
they grow), and logs the checks with gradwatch's TensorBoardLogger. The
script then starts the real ``tensorboard`` on 127.0.0.1 (a free port), waits until it serves
gradwatch's tags, and takes the screenshot with headless Chromium (Debian's ``chromium``; set
``--browser`` or ``$CHROMIUM`` for another binary). Exit status 0, or 2 with the reason.
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import socket
import subprocess
import sys
import tempfile
import time
import urllib.error
import urllib.request
from typing import Dict, List, Optional, Sequence

import numpy as np

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
if ROOT not in sys.path:  # run from a checkout without installing
    sys.path.insert(0, ROOT)

from gradwatch import check_gradients  # noqa: E402
from gradwatch.tensorboard import TensorBoardLogger  # noqa: E402

BROWSERS = ("chromium", "chromium-browser", "google-chrome", "google-chrome-stable", "chrome", "headless_shell")
#: Flags that let Chromium run headless as root in a container with no network but 127.0.0.1.
CHROMIUM_FLAGS = (
    "--headless", "--no-sandbox", "--disable-gpu", "--disable-quic", "--no-first-run",
    "--disable-background-networking", "--disable-component-update", "--disable-sync",
    "--hide-scrollbars", "--disable-dev-shm-usage",
)


def find_browser(explicit: Optional[str] = None) -> Optional[str]:
    """The Chromium binary to use: ``explicit``, ``$CHROMIUM``, or the first of BROWSERS on PATH."""
    for candidate in (explicit, os.environ.get("CHROMIUM")):
        if candidate:
            return shutil.which(candidate) or (candidate if os.path.isfile(candidate) else None)
    for name in BROWSERS:
        path = shutil.which(name)
        if path:
            return path
    return None


# --------------------------------------------------------------------------------------------
# the demo: two small tanh networks, one with a subtle bug, one with the classic tanh-derivative bug


def _spirals(n: int, classes: int, rng: np.random.Generator):
    xs, ys = [], []
    for c in range(classes):
        r = np.linspace(0.05, 1.0, n)
        t = np.linspace(c * 4.0, (c + 1) * 4.0, n) + rng.normal(0, 0.2, n)
        xs.append(np.stack([r * np.sin(t), r * np.cos(t)]))
        ys.append(np.full(n, c))
    return np.concatenate(xs, axis=1), np.concatenate(ys)


def _forward(p: Dict[str, np.ndarray], x: np.ndarray, y: np.ndarray):
    z1 = p["W1"] @ x + p["b1"]
    a1 = np.tanh(z1)
    z2 = p["W2"] @ a1 + p["b2"]
    z2 = z2 - z2.max(axis=0, keepdims=True)
    probs = np.exp(z2) / np.exp(z2).sum(axis=0, keepdims=True)
    loss = -np.log(probs[y, np.arange(x.shape[1])]).mean()
    return float(loss), (z1, a1, probs)


def _backward(p: Dict[str, np.ndarray], x: np.ndarray, y: np.ndarray, buggy: bool,
              db1_scale: float = 1.0) -> Dict[str, np.ndarray]:
    _, (z1, a1, probs) = _forward(p, x, y)
    m = x.shape[1]
    dz2 = probs.copy()
    dz2[y, np.arange(m)] -= 1
    dz2 /= m
    da1 = p["W2"].T @ dz2
    dz1 = da1 * ((1 - z1 ** 2) if buggy else (1 - a1 ** 2))  # the bug: tanh' written from z
    return {"dW1": dz1 @ x.T, "db1": db1_scale * dz1.sum(axis=1, keepdims=True),
            "dW2": dz2 @ a1.T, "db2": dz2.sum(axis=1, keepdims=True)}


def make_demo_logdir(logdir: str, steps: int = 400, every: int = 40) -> List[str]:
    """Train the two demo networks, logging a gradient check every ``every`` steps; return the run names."""
    rng = np.random.default_rng(0)
    x, y = _spirals(60, 3, rng)
    runs = []
    for name, buggy, db1_scale in (("subtle_bug_db1_x1.0005", False, 1.0005), ("gross_bug_tanh_derivative", True, 1.0)):
        init = np.random.default_rng(1)
        p = {"W1": init.normal(0, 0.01, (16, 2)), "b1": np.zeros((16, 1)),
             "W2": init.normal(0, 0.01, (3, 16)), "b2": np.zeros((3, 1))}
        with TensorBoardLogger(os.path.join(logdir, name)) as tb:
            for step in range(steps + 1):
                grads = _backward(p, x, y, buggy, db1_scale)
                if step % every == 0:
                    result = check_gradients(lambda q: _forward(q, x, y)[0], p, grads, seed=step)
                    tb.log_check(step, result)
                for k in p:
                    p[k] -= 1.0 * _backward(p, x, y, False)[f"d{k}"]  # train with the right gradient
        runs.append(name)
    return runs


# --------------------------------------------------------------------------------------------
# the server and the browser


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def start_tensorboard(logdir: str, port: int, load_fast: str = "auto") -> subprocess.Popen:
    """The real TensorBoard server on 127.0.0.1:port (stop it with ``stop``)."""
    return subprocess.Popen(
        [sys.executable, "-m", "tensorboard.main", "--logdir", logdir, "--host", "127.0.0.1",
         "--port", str(port), f"--load_fast={load_fast}", "--reload_interval", "1"],
        stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, stdin=subprocess.DEVNULL,
    )


def stop(process: subprocess.Popen) -> None:
    if process.poll() is None:
        process.terminate()
        try:
            process.wait(timeout=10)
        except subprocess.TimeoutExpired:
            process.kill()
            process.wait(timeout=10)
    if process.stderr is not None:
        process.stderr.close()


def get_json(url: str, timeout: float = 5.0):
    with urllib.request.urlopen(url, timeout=timeout) as response:  # 127.0.0.1 only
        return json.loads(response.read().decode("utf-8"))


def wait_for_tags(base_url: str, runs: Sequence[str], tag: str, process: subprocess.Popen,
                  timeout: float = 60.0) -> Dict:
    """Poll /data/plugin/scalars/tags until every run serves ``tag``; the tag listing."""
    deadline = time.monotonic() + timeout
    last_error = "no answer yet"
    while time.monotonic() < deadline:
        if process.poll() is not None:
            detail = process.stderr.read().decode("utf-8", "replace")[-2000:] if process.stderr else ""
            raise RuntimeError(f"tensorboard exited with status {process.returncode}: {detail}")
        try:
            tags = get_json(f"{base_url}/data/plugin/scalars/tags")
            if all(tag in tags.get(run, {}) for run in runs):
                return tags
            last_error = f"tags so far: { {r: sorted(t)[:3] for r, t in tags.items()} }"
        except (urllib.error.URLError, ConnectionError, OSError, ValueError) as exc:
            last_error = str(exc)
        time.sleep(0.25)
    raise TimeoutError(f"tensorboard did not serve {tag!r} for {list(runs)} within {timeout:.0f} s ({last_error})")


def screenshot(browser: str, url: str, out: str, width: int = 1400, height: int = 1000,
               budget_ms: int = 15000, timeout: float = 90.0) -> None:
    """A PNG of ``url`` taken by headless Chromium after ``budget_ms`` of virtual time."""
    profile = tempfile.mkdtemp(prefix="gradwatch-chromium-")
    try:
        target = os.path.abspath(out)
        os.makedirs(os.path.dirname(target), exist_ok=True)
        if os.path.exists(target):
            os.remove(target)
        cmd = [browser, *CHROMIUM_FLAGS, f"--user-data-dir={profile}", f"--window-size={width},{height}",
               f"--virtual-time-budget={budget_ms}", f"--screenshot={target}", url]
        done = subprocess.run(cmd, stdout=subprocess.PIPE, stderr=subprocess.PIPE, stdin=subprocess.DEVNULL,
                              timeout=timeout)
        if not os.path.isfile(target) or os.path.getsize(target) == 0:
            tail = done.stderr.decode("utf-8", "replace")[-2000:]
            raise RuntimeError(f"{browser} wrote no screenshot (exit status {done.returncode}): {tail}")
    finally:
        shutil.rmtree(profile, ignore_errors=True)


def main(argv: Optional[Sequence[str]] = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--logdir", help="an existing logdir to show (default: a fresh demo logdir)")
    parser.add_argument("--out", default=os.path.join(ROOT, "docs", "tensorboard.png"), help="the PNG to write")
    parser.add_argument("--dashboard", default="custom_scalars",
                        help="TensorBoard page: custom_scalars (default), scalars, histograms, text, timeseries")
    parser.add_argument("--browser", help="the Chromium binary (default: $CHROMIUM or chromium on PATH)")
    parser.add_argument("--width", type=int, default=1400)
    parser.add_argument("--height", type=int, default=1000)
    parser.add_argument("--load-fast", default="auto", choices=("auto", "true", "false"),
                        help="TensorBoard's --load_fast (default auto)")
    args = parser.parse_args(argv)

    browser = find_browser(args.browser)
    if browser is None:
        print("screenshot_tensorboard: no Chromium found (install Debian's `chromium`, or pass --browser)",
              file=sys.stderr)
        return 2
    demo = None
    if args.logdir:
        logdir = os.path.abspath(args.logdir)
        from gradwatch.history import find_runs

        runs = sorted(find_runs(logdir))
    else:
        demo = tempfile.mkdtemp(prefix="gradwatch-demo-")
        logdir = demo
        runs = make_demo_logdir(logdir)
    port = free_port()
    server = start_tensorboard(logdir, port, args.load_fast)
    base = f"http://127.0.0.1:{port}"
    try:
        wait_for_tags(base, runs, "gradcheck/difference", server)
        screenshot(browser, f"{base}/#{args.dashboard}&_smoothingWeight=0", args.out, args.width, args.height)
    except (RuntimeError, TimeoutError, subprocess.TimeoutExpired) as exc:
        print(f"screenshot_tensorboard: {exc}", file=sys.stderr)
        return 2
    finally:
        stop(server)
        if demo is not None:
            shutil.rmtree(demo, ignore_errors=True)
    print(f"wrote {args.out}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
