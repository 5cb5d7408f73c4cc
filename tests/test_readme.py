"""The README's command lines, run as written after its own set-up, in a fresh copy and a fresh venv.

Marked ``network``: the set-up installs the package and its dependencies from the package index
(about half a minute with a warm pip cache). Skipped only when the index cannot be reached.
"""

from __future__ import annotations

import os
import re
import shutil
import subprocess
import sys
import xml.etree.ElementTree as ET

import pytest

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
README = os.path.join(ROOT, "README.md")
OFFLINE = re.compile(r"NewConnectionError|Temporary failure in name resolution|Network is unreachable|"
                     r"No matching distribution found|Could not find a version", re.IGNORECASE)


def bash_blocks(text: str):
    return re.findall(r"```bash\n(.*?)```", text, flags=re.DOTALL)


def command_lines(block: str):
    return [line.split("  #")[0].strip() for line in block.splitlines() if line.strip() and not line.startswith("#")]


def copy_of_the_project(target: str) -> None:
    """The tracked files as they are in the working tree (what a fresh clone of this commit holds)."""
    files = subprocess.run(["git", "ls-files", "-z"], cwd=ROOT, capture_output=True, check=True).stdout
    for name in filter(None, files.decode().split("\0")):
        source = os.path.join(ROOT, name)
        if os.path.isfile(source):
            os.makedirs(os.path.dirname(os.path.join(target, name)), exist_ok=True)
            shutil.copy2(source, os.path.join(target, name))


def sh(line: str, cwd: str):
    env = {k: v for k, v in os.environ.items() if not k.startswith(("GRADWATCH", "VIRTUAL_ENV", "PYTHON"))}
    env["PATH"] = os.pathsep.join(p for p in env.get("PATH", "").split(os.pathsep)
                                  if not p.startswith(os.path.dirname(sys.executable)))  # not our venv
    return subprocess.run(["bash", "-c", line], cwd=cwd, env=env, capture_output=True, text=True, timeout=900)


@pytest.mark.network
def test_the_readme_commands_work_as_written_after_its_own_set_up(tmp_path):
    if shutil.which("git") is None or shutil.which("python3") is None:
        pytest.skip("needs git and python3 on PATH")
    text = open(README, encoding="utf-8").read()
    blocks = bash_blocks(text)
    setup = command_lines(blocks[0])[0]  # set up and run the main job
    assert setup.startswith("python3 -m venv .venv") and "train_mlp.py" in setup
    (usage,) = [b for b in blocks if "gradwatch report runs/" in b]
    report, report_json, run = command_lines(usage)

    project = str(tmp_path / "gradwatch")
    copy_of_the_project(project)
    done = sh(setup, project)
    if done.returncode != 0 and OFFLINE.search(done.stdout + done.stderr):
        pytest.skip(f"the package index cannot be reached: {done.stderr[-300:]}")
    assert done.returncode == 0, done.stdout[-2000:] + done.stderr[-2000:]
    assert "2 passed, 0 failed" in done.stdout

    done = sh(report, project)
    assert done.returncode == 0, done.stdout + done.stderr
    assert "train_mlp: passed: all 2 checks right" in done.stdout
    done = sh(report_json, project)
    assert done.returncode == 0 and '"exit_status": 0' in done.stdout, done.stdout + done.stderr
    done = sh(run, project)
    assert done.returncode == 0, done.stdout[-2000:] + done.stderr[-2000:]
    assert "passed: all" in done.stdout
    suite = ET.parse(os.path.join(project, "junit.xml")).getroot().find("testsuite")
    assert suite.get("failures") == "0" and suite.get("errors") == "0"
