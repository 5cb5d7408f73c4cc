"""The gradwatch command: `report` on event files, `run` end to end on small training scripts."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
import xml.etree.ElementTree as ET

import pytest

import gradwatch
from gradwatch.cli import main
from gradwatch.tensorboard import TensorBoardLogger


ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
TINY = os.path.join(ROOT, "tests", "scripts", "tiny_train.py")
EXAMPLES = os.path.join(ROOT, "examples")


@pytest.fixture(autouse=True)
def clean_env(monkeypatch):
    for name in ("GRADWATCH", "GRADWATCH_CONFIG", "GRADWATCH_LOGDIR"):
        monkeypatch.delenv(name, raising=False)
    monkeypatch.setenv("GRADWATCH_PROGRESS", "0")


def write_run(logdir, events):
    with TensorBoardLogger(logdir) as tb:
        for step, what in events:
            if isinstance(what, str):
                tb.log_refusal(step, what)
            else:
                tb.log_check(step, what)


# --------------------------------------------------------------------------------------------
# report


def test_report_exits_0_when_every_check_of_every_run_passed(tmp_path, results, capsys):
    good, _ = results
    write_run(tmp_path / "a", [(0, good), (100, good)])
    write_run(tmp_path / "b", [(0, good)])
    assert main(["report", str(tmp_path)]) == 0
    out = capsys.readouterr().out
    rows = [line.split() for line in out.splitlines()[1:4]]
    assert [row[:3] for row in rows] == [["a", "0", "passed"], ["a", "100", "passed"], ["b", "0", "passed"]]


def test_report_exits_1_when_an_early_check_failed_though_the_latest_passed(tmp_path, results, capsys):
    good, bad = results
    write_run(tmp_path / "a", [(0, bad), (100, good)])  # a bug that shows at one point of training only
    assert main(["report", str(tmp_path)]) == 1
    out = capsys.readouterr().out
    assert "a: FAILED: 2 checks, 1 failed (step 0)" in out


def test_report_and_run_agree_on_checks_at_a_restarted_step(tmp_path, results, capsys):
    good, bad = results
    write_run(tmp_path / "a", [(0, bad), (0, good)])  # epoch 0 wrong, epoch 1 right, same step numbers
    assert main(["report", str(tmp_path)]) == 1
    rows = [line.split()[:3] for line in capsys.readouterr().out.splitlines()[1:3]]
    assert rows == [["a", "0", "FAILED"], ["a", "0", "passed"]]


def test_report_exits_2_when_a_runs_latest_event_is_a_refusal(tmp_path, results, capsys):
    write_run(tmp_path / "a", [(0, results[0]), (500, "dropout is active")])
    assert main(["report", str(tmp_path)]) == 2
    out = capsys.readouterr().out
    assert "refused" in out and "dropout is active" in out


def test_report_a_failure_outranks_a_refusal(tmp_path, results):
    write_run(tmp_path / "a", [(0, "dropout is active")])
    write_run(tmp_path / "b", [(0, results[1])])
    assert main(["report", str(tmp_path)]) == 1


def test_report_exits_2_when_no_check_is_found(tmp_path, capsys):
    assert main(["report", str(tmp_path)]) == 2
    assert "no gradient check found" in capsys.readouterr().out
    assert main(["report", str(tmp_path / "missing")]) == 2
    assert "missing" in capsys.readouterr().err


def test_report_json_lists_every_check_and_each_runs_latest(tmp_path, results, capsys):
    write_run(tmp_path / "a", [(0, results[0]), (10, results[1])])
    write_run(tmp_path / "b", [(0, "dropout is active")])
    assert main(["report", str(tmp_path), "--json"]) == 1
    data = json.loads(capsys.readouterr().out)
    assert data["exit_status"] == 1
    assert data["runs"] == {"a": {"latest_step": 10, "verdict": "failed", "checks": 2},
                            "b": {"latest_step": 0, "verdict": "refused", "checks": 1}}
    assert [(c["run"], c["step"], c["verdict"], c["failed"]) for c in data["checks"]] == [
        ("a", 0, "passed", []), ("a", 10, "failed", ["W1"]), ("b", 0, "refused", [])]
    assert data["checks"][1]["differences"]["W1"] == pytest.approx(results[1].per_param["W1"].difference, rel=1e-6)


def test_python_dash_m_gradwatch_runs_the_command(tmp_path, results):
    write_run(tmp_path, [(3, results[1])])
    done = subprocess.run([sys.executable, "-m", "gradwatch", "report", str(tmp_path)],
                          capture_output=True, text=True, timeout=60)
    assert done.returncode == 1, done.stderr
    assert "FAILED" in done.stdout and "W1" in done.stdout


def test_usage_errors_return_2_instead_of_exiting(capsys):
    assert main([]) == 2
    assert main(["report"]) == 2
    assert main(["--version"]) == 0
    assert gradwatch.__version__ in capsys.readouterr().out


# --------------------------------------------------------------------------------------------
# run


@pytest.fixture
def config(tmp_path):
    path = tmp_path / "debug.yaml"
    path.write_text("at_init: true\nafter_steps: [4]\nseed: 0\nprogress: false\n")
    return path


def run(config, logdir, *script_args, junit=None):
    argv = ["run", "--config", str(config), "--logdir", str(logdir)]
    if junit:
        argv += ["--junit", str(junit)]
    return main(argv + ["--", sys.executable, TINY, *script_args])


def test_run_exits_0_when_every_check_passed_and_keeps_the_events_in_a_fresh_subdirectory(tmp_path, config, capfd):
    from gradwatch.history import read_history

    logdir = tmp_path / "logs"
    assert run(config, logdir) == 0
    out = capfd.readouterr().out
    assert "tiny_train: trained 6 steps" in out  # the script's own output streams through
    assert "passed: all 2 checks right" in out
    (fresh,) = os.listdir(logdir)
    assert [(r.step, r.verdict) for r in read_history(logdir / fresh)] == [(0, "passed"), (4, "passed")]
    assert run(config, logdir) == 0
    assert len(os.listdir(logdir)) == 2  # every run gets its own directory


def test_run_exits_1_when_a_check_failed_though_the_script_exits_0(tmp_path, config, capfd):
    assert run(config, tmp_path / "logs", "--bug") == 1
    out = capfd.readouterr().out
    assert "FAILED: the check at step 0 found wrong gradients (W1)" in out


def test_run_exits_2_when_dropout_made_the_check_refuse_and_the_script_die(tmp_path, config, capfd):
    assert run(config, tmp_path / "logs", "--dropout") == 2
    captured = capfd.readouterr()
    assert "DropoutActiveError" in captured.err  # the script itself died of it
    assert "REFUSED" in captured.out


def test_run_passes_on_the_scripts_own_failure_when_no_check_explains_it(tmp_path, config, capfd):
    assert run(config, tmp_path / "logs", "--exit", "3") == 3
    assert "exited with status 3 and no check explains it" in capfd.readouterr().out


def test_run_reports_a_command_killed_by_a_signal_as_128_plus_the_signal(tmp_path, config, capfd):
    code = "import os, signal; os.kill(os.getpid(), signal.SIGTERM)"
    status = main(["run", "--config", str(config), "--logdir", str(tmp_path), "--", sys.executable, "-c", code])
    assert status == 128 + 15
    assert "killed by signal 15" in capfd.readouterr().out


def test_run_exits_2_when_no_check_ran(tmp_path, config, capfd):
    assert run(config, tmp_path / "logs", "--no-watch") == 2
    assert "no gradient check ran" in capfd.readouterr().out


def test_run_sets_the_environment_every_gradwatch_reads(tmp_path, config):
    seen = tmp_path / "env.json"
    code = (f"import os, json; json.dump({{k: os.environ.get(k) for k in "
            f"('GRADWATCH', 'GRADWATCH_CONFIG', 'GRADWATCH_LOGDIR')}}, open({str(seen)!r}, 'w'))")
    status = main(["run", "--config", str(config), "--logdir", str(tmp_path / "logs"), "--",
                   sys.executable, "-c", code])
    assert status == 2  # nothing was checked
    env = json.loads(seen.read_text())
    assert env["GRADWATCH"] == "1"
    assert env["GRADWATCH_CONFIG"] == str(config.resolve())
    assert os.path.dirname(env["GRADWATCH_LOGDIR"]) == str((tmp_path / "logs").resolve())


def test_run_uses_the_configs_logdir_or_else_a_temporary_one_it_removes(tmp_path, monkeypatch, capfd):
    monkeypatch.chdir(tmp_path)
    with_logdir = tmp_path / "with.yaml"
    with_logdir.write_text("after_steps: [2]\nlogdir: from_config\n")
    assert main(["run", "--config", str(with_logdir), "--", sys.executable, TINY]) == 0
    assert len(os.listdir(tmp_path / "from_config")) == 1
    without = tmp_path / "without.yaml"
    without.write_text("after_steps: [2]\n")
    assert main(["run", "--config", str(without), "--", sys.executable, TINY]) == 0
    err = capfd.readouterr().err
    temporary = err.split("logging to ")[-1].split()[0]
    assert "gradwatch-run-" in temporary and not os.path.exists(temporary)


def test_run_refuses_a_bad_config_before_running_anything(tmp_path, capsys):
    bad = tmp_path / "bad.yaml"
    bad.write_text("sampel: 10\n")
    marker = tmp_path / "ran"
    status = main(["run", "--config", str(bad), "--", sys.executable, "-c", f"open({str(marker)!r}, 'w')"])
    assert status == 2
    err = capsys.readouterr().err
    assert "bad.yaml" in err and "sampel" in err
    assert not marker.exists()


def test_run_without_a_command_or_with_a_missing_one(tmp_path, config, capsys):
    assert main(["run", "--config", str(config), "--"]) == 2
    assert "no command given" in capsys.readouterr().err
    assert main(["run", "--config", str(config), "--logdir", str(tmp_path), "--", "no-such-program-xyz"]) == 127
    assert "no-such-program-xyz" in capsys.readouterr().err


def test_run_writes_junit_with_a_failure_per_failed_check(tmp_path, config):
    junit = tmp_path / "out" / "junit.xml"
    assert run(config, tmp_path / "logs", "--bug", junit=junit) == 1
    suite = ET.parse(junit).getroot().find("testsuite")
    assert (suite.get("tests"), suite.get("failures"), suite.get("errors")) == ("3", "2", "0")
    cases = suite.findall("testcase")
    assert [c.get("name") for c in cases] == ["gradient check at step 0", "gradient check at step 4", "command"]
    failure = cases[0].find("failure")
    assert "W1" in failure.get("message") and "gradient check FAILED" in failure.text


def test_run_writes_junit_with_an_error_for_a_refused_check(tmp_path, config):
    junit = tmp_path / "junit.xml"
    assert run(config, tmp_path / "logs", "--dropout", junit=junit) == 2
    suite = ET.parse(junit).getroot().find("testsuite")
    refused = suite.find("testcase/error[@type='DropoutActiveError']")
    assert refused is not None and "randomness" in refused.get("message")
    assert suite.find("testcase[@name='command']/error").get("type") == "CommandFailed"


# --------------------------------------------------------------------------------------------
# the examples (written alongside; skipped until they exist)


def example(name):
    path = os.path.join(EXAMPLES, name)
    if not os.path.isfile(path):
        pytest.skip(f"examples/{name} is not there yet")
    return path


@pytest.fixture
def example_config(tmp_path):
    path = tmp_path / "examples.yaml"
    path.write_text("at_init: true\nafter_steps: [10]\nseed: 0\nprogress: false\n")
    return path


def test_run_on_the_correct_example_exits_0(tmp_path, example_config, capfd):
    script = example("train_mlp.py")
    argv = ["run", "--config", str(example_config), "--logdir", str(tmp_path), "--",
            sys.executable, script, "--steps", "20", "--hidden", "8"]
    assert main(argv) == 0, capfd.readouterr()
    assert "passed: all 2 checks right" in capfd.readouterr().out


def test_run_on_the_buggy_example_exits_1(tmp_path, example_config, capfd):
    script = example("buggy_backprop.py")
    argv = ["run", "--config", str(example_config), "--logdir", str(tmp_path), "--",
            sys.executable, script, "--steps", "20"]
    assert main(argv) == 1, capfd.readouterr()
    assert "FAILED" in capfd.readouterr().out


def test_run_on_the_example_with_dropout_in_the_check_exits_2(tmp_path, example_config, capfd):
    script = example("train_mlp.py")
    argv = ["run", "--config", str(example_config), "--logdir", str(tmp_path), "--",
            sys.executable, script, "--steps", "20", "--hidden", "8", "--keep-prob", "0.8", "--dropout-in-check"]
    assert main(argv) == 2, capfd.readouterr()
    assert "REFUSED" in capfd.readouterr().out


def test_report_on_the_examples_logdir_matches_run(tmp_path, example_config, capfd):
    script = example("buggy_backprop.py")
    main(["run", "--config", str(example_config), "--logdir", str(tmp_path), "--", sys.executable, script,
          "--steps", "20"])
    capfd.readouterr()
    assert main(["report", str(tmp_path)]) == 1


# --------------------------------------------------------------------------------------------
# every check counts: restarted steps, inconclusive checks, damaged files


def inconclusive_result(good):
    """An in-memory fake: the passing check with b1 left inconclusive."""
    import dataclasses

    per = {**good.per_param, "b1": dataclasses.replace(good.per_param["b1"], passed=False, verdict="inconclusive")}
    return dataclasses.replace(good, passed=False, per_param=per, inconclusive=("b1",))


def test_run_exits_1_when_the_first_epoch_failed_and_the_step_counter_restarted(tmp_path, config, capfd):
    junit = tmp_path / "junit.xml"
    assert run(config, tmp_path / "logs", "--epochs", "2", "--bug-epochs", "1", junit=junit) == 1
    out = capfd.readouterr().out
    assert "2 of 3 checks failed" in out
    cases = ET.parse(junit).getroot().find("testsuite").findall("testcase")
    assert [(c.get("name"), c.find("failure") is not None) for c in cases[:3]] == [
        ("gradient check at step 0", True), ("gradient check at step 4", True),
        ("gradient check at step 4 (#2 at this step)", False)]


def test_report_exits_2_on_an_inconclusive_check_and_names_the_tensor(tmp_path, results, capsys):
    write_run(tmp_path / "a", [(0, results[0]), (5, inconclusive_result(results[0]))])
    assert main(["report", str(tmp_path)]) == 2
    out = capsys.readouterr().out
    assert "INCONCLUSIVE" in out and "inconclusive: b1" in out


def test_report_a_failure_outranks_an_inconclusive_check(tmp_path, results):
    write_run(tmp_path / "a", [(0, inconclusive_result(results[0]))])
    write_run(tmp_path / "b", [(0, results[1])])
    assert main(["report", str(tmp_path)]) == 1


def test_run_status_is_2_for_an_inconclusive_check(tmp_path, results):
    from gradwatch.cli import run_status
    from gradwatch.history import read_history

    write_run(tmp_path, [(0, results[0]), (5, inconclusive_result(results[0]))])
    status, sentence = run_status(read_history(tmp_path), 0)
    assert status == 2 and "INCONCLUSIVE" in sentence and "b1" in sentence


def test_junit_reports_an_inconclusive_check_as_an_error(tmp_path, results):
    from gradwatch.cli import write_junit
    from gradwatch.history import read_history

    write_run(tmp_path / "logs", [(5, inconclusive_result(results[0]))])
    path = tmp_path / "junit.xml"
    write_junit(str(path), read_history(tmp_path / "logs"), command=["python"], returncode=0, config="c",
                logdir="l", seconds=1.0)
    error = ET.parse(path).getroot().find("testsuite/testcase/error")
    assert error.get("type") == "GradientCheckInconclusive" and "b1" in error.get("message")


def cut_last_bytes(logdir, n):
    (name,) = [f for f in os.listdir(logdir) if "tfevents" in f]
    path = os.path.join(logdir, name)
    data = open(path, "rb").read()
    open(path, "wb").write(data[:-n])
    return path


def test_report_on_a_file_cut_short_exits_2_and_names_it(tmp_path, results, capsys):
    write_run(tmp_path, [(0, results[0]), (10, results[1])])
    path = cut_last_bytes(tmp_path, 7)  # the failed check is the one lost
    assert main(["report", str(tmp_path)]) == 2
    captured = capsys.readouterr()
    assert path in captured.err and "damaged" in captured.err
    assert "DAMAGED" in captured.out


def test_report_a_failure_read_before_the_damage_still_exits_1(tmp_path, results):
    write_run(tmp_path, [(0, results[1]), (10, results[0])])
    cut_last_bytes(tmp_path, 7)
    assert main(["report", str(tmp_path)]) == 1


def test_report_json_names_the_damaged_file(tmp_path, results, capsys):
    write_run(tmp_path, [(0, results[0]), (10, results[0])])
    path = cut_last_bytes(tmp_path, 7)
    assert main(["report", str(tmp_path), "--json"]) == 2
    data = json.loads(capsys.readouterr().out)
    assert [d["path"] for d in data["damaged"]] == [path]


# --------------------------------------------------------------------------------------------
# JUnit that always parses


def test_junit_parses_whatever_control_characters_the_names_and_reports_hold(tmp_path, results):
    from gradwatch.cli import write_junit
    from gradwatch.history import read_history

    good = results[0]
    weird = dict(good.per_param)
    weird["W\x1b[31m\x00\x07"] = weird.pop("W1")
    import dataclasses

    write_run(tmp_path / "logs\x01", [(0, dataclasses.replace(good, per_param=weird))])
    path = tmp_path / "junit.xml"
    write_junit(str(path), read_history(tmp_path), command=["python", "a\x02b"], returncode=0, config="c",
                logdir="l", seconds=1.0)
    suite = ET.parse(path).getroot().find("testsuite")  # parses
    assert "W\\x1b[31m\\x00\\x07" in suite.find("testcase/system-out").text
    assert suite.find("testcase").get("classname") == "gradwatch.logs\\x01"


def test_junit_gives_each_check_its_duration(tmp_path, results):
    from gradwatch.cli import write_junit
    from gradwatch.history import read_history

    with TensorBoardLogger(tmp_path / "logs") as tb:
        tb.log_check(0, results[0], seconds=2.5)
    path = tmp_path / "junit.xml"
    write_junit(str(path), read_history(tmp_path / "logs"), command=["x"], returncode=0, config="c", logdir="l",
                seconds=9.0)
    assert ET.parse(path).getroot().find("testsuite/testcase").get("time") == "2.500"


def test_run_refuses_an_empty_junit_path_before_running_anything(tmp_path, config, capsys):
    argv = ["run", "--config", str(config), "--logdir", str(tmp_path / "logs"), "--junit", "", "--",
            sys.executable, TINY]
    assert main(argv) == 2
    assert "--junit needs a file name; got ''" in capsys.readouterr().err
    assert not (tmp_path / "logs").exists()


# --------------------------------------------------------------------------------------------
# a closed stdout, and signals


def test_report_into_a_closed_pipe_is_quiet_and_keeps_its_status(tmp_path, results):
    write_run(tmp_path, [(step, results[1]) for step in range(3)])
    read_end, write_end = os.pipe()
    os.close(read_end)  # `| head` that has already gone: every write meets a closed pipe
    try:
        done = subprocess.run([sys.executable, "-m", "gradwatch", "report", str(tmp_path)],
                              stdout=write_end, stderr=subprocess.PIPE, text=True, timeout=60)
    finally:
        os.close(write_end)
    assert done.returncode == 1, done.stderr  # the report's own status, not a crash
    assert done.stderr == ""


def start_run(tmp_path, config, *script_args, grace=None):
    ready = tmp_path / "ready"
    argv = [sys.executable, "-m", "gradwatch", "run", "--config", str(config), "--logdir", str(tmp_path / "logs"),
            "--junit", str(tmp_path / "junit.xml")]
    if grace is not None:
        argv += ["--grace", str(grace)]
    argv += ["--", sys.executable, TINY, "--wait-for-signal", str(ready), *script_args]
    process = subprocess.Popen(argv, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    for _ in range(600):  # the script says when its handlers are in place
        if ready.exists() and ready.read_text():
            break
        assert process.poll() is None, process.communicate()
        time.sleep(0.05)
    return process, ready


@pytest.mark.parametrize("signum", [signal.SIGTERM, signal.SIGINT], ids=["SIGTERM", "SIGINT"])
def test_run_passes_a_signal_on_to_the_script_and_still_writes_its_report(tmp_path, config, signum):
    process, ready = start_run(tmp_path, config)
    process.send_signal(signum)
    out, err = process.communicate(timeout=60)
    assert process.returncode == 128 + signum, err
    assert (tmp_path / "ready.got").read_text().split() == [str(int(signum))]
    assert "INTERRUPTED by signal" in out
    suite = ET.parse(tmp_path / "junit.xml").getroot().find("testsuite")
    assert suite.find("testcase[@name='command']/error").get("type") == "Interrupted"


def test_run_kills_a_script_that_ignores_the_signal_after_the_grace_period(tmp_path, config):
    process, ready = start_run(tmp_path, config, "--ignore-signals", grace=0.5)
    script_pid = int(ready.read_text())
    process.send_signal(signal.SIGTERM)
    out, err = process.communicate(timeout=60)
    assert process.returncode == 128 + signal.SIGTERM, err
    with pytest.raises(ProcessLookupError):
        os.kill(script_pid, 0)
    assert (tmp_path / "junit.xml").exists()


def test_run_hints_at_the_interpreter_when_the_script_cannot_import_gradwatch(tmp_path, config, capfd):
    script = tmp_path / "needs_gradwatch.py"
    script.write_text("raise ModuleNotFoundError(\"No module named 'gradwatch'\")\n")
    fake_python = tmp_path / "bin" / "python3"
    fake_python.parent.mkdir()
    fake_python.symlink_to(sys.executable)
    code = main(["run", "--config", str(config), "--logdir", str(tmp_path / "logs"), "--", str(fake_python), str(script)])
    assert code == 1
    assert "not the Python gradwatch is installed in" in capfd.readouterr().err


def test_run_refuses_a_config_that_is_not_utf8_with_status_2(tmp_path, capsys):
    path = tmp_path / "latin1.yaml"
    path.write_bytes("logdir: d\xe9bogage\n".encode("latin-1"))
    assert main(["run", "--config", str(path), "--", sys.executable, TINY]) == 2
    assert "latin1.yaml: not UTF-8 text" in capsys.readouterr().err
