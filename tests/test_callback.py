"""GradWatch in a training loop: the schedule, inertness, the environment, dropout, failures, logging.

The TensorBoard logger is replaced by an in-memory fake (``FakeLogger``), injected with
``logger=`` or through the ``make_logger`` factory; the real writer is tested in its own file.
"""

from __future__ import annotations

import re
import warnings
from typing import Any, Dict, List

import numpy as np
import pytest

import gradwatch.callback as callback
from gradwatch import CheckResult, ConfigError, DropoutActiveError, GradWatch, GradWatchError, check_gradients
from gradwatch.callback import GradientCheckError, GradWatchWarning, Refusal

ENV = ("GRADWATCH", "GRADWATCH_CONFIG", "GRADWATCH_LOGDIR", "GRADWATCH_PROGRESS")


@pytest.fixture(autouse=True)
def clean_environment(monkeypatch):
    for name in ENV:
        monkeypatch.delenv(name, raising=False)


class FakeLogger:
    """Records what the watch logs."""

    def __init__(self, logdir: Any = None) -> None:
        self.logdir = logdir
        self.calls: List[tuple] = []
        self.closed = False

    def log_check(self, step: int, result: CheckResult, seconds: Any = None) -> None:
        self.calls.append(("check", step, result))
        self.seconds = seconds

    def log_refusal(self, step: int, reason: str) -> None:
        self.calls.append(("refusal", step, reason))

    def flush(self) -> None:
        pass

    def close(self) -> None:
        self.closed = True


class BrokenLogger(FakeLogger):
    def log_check(self, step: int, result: CheckResult, seconds: Any = None) -> None:
        raise OSError("disk full")


@pytest.fixture
def factory(monkeypatch):
    """Replace the TensorBoard logger factory; returns the list of loggers it built."""
    built: List[FakeLogger] = []

    def make(logdir):
        built.append(FakeLogger(logdir))
        return built[-1]

    monkeypatch.setattr(callback, "make_logger", make)
    return built


class Regression:
    """y = W x + b with a mean-squared-error loss; ``bug`` scales db (a planted backprop error)."""

    def __init__(self, seed: int = 0, bug: float = 1.0) -> None:
        rng = np.random.default_rng(seed)
        self.x = rng.standard_normal((3, 8))
        self.y = rng.standard_normal((2, 8))
        self.params = {"W": rng.standard_normal((2, 3)), "b": rng.standard_normal((2, 1))}
        self.bug = bug
        self.loss_calls = 0

    def loss(self, p: Dict[str, np.ndarray]) -> float:
        self.loss_calls += 1
        r = p["W"] @ self.x + p["b"] - self.y
        return float(np.mean(r**2))

    def grads(self, p: Dict[str, np.ndarray]) -> Dict[str, np.ndarray]:
        r = 2 * (p["W"] @ self.x + p["b"] - self.y) / self.y.size
        return {"dW": r @ self.x.T, "db": self.bug * r.sum(axis=1, keepdims=True)}


def run(watch: GradWatch, model: Regression, steps: range) -> List[int]:
    """Steps at which on_step returned a result."""
    checked = []
    for step in steps:
        if watch.on_step(step, model.params, model.grads(model.params)) is not None:
            checked.append(step)
    return checked


# ------------------------------------------------------------------------------------------
# the schedule


def test_checks_at_init_after_steps_and_every():
    model = Regression()
    watch = GradWatch(model.loss, after_steps=[7, 12], every=10, seed=0)
    assert run(watch, model, range(1, 31)) == [1, 7, 10, 12, 20, 30]


def test_at_init_means_the_first_call_whatever_its_step():
    model = Regression()
    watch = GradWatch(model.loss, seed=0)
    assert run(watch, model, range(100, 110)) == [100]


def test_without_at_init_the_first_call_is_not_checked():
    model = Regression()
    watch = GradWatch(model.loss, at_init=False, after_steps=3, seed=0)
    assert run(watch, model, range(0, 10)) == [3]


def test_an_int_after_steps_is_one_step():
    model = Regression()
    watch = GradWatch(model.loss, at_init=False, after_steps=4, seed=0)
    assert run(watch, model, range(0, 20)) == [4]


def test_every_checks_multiples_including_zero():
    model = Regression()
    watch = GradWatch(model.loss, at_init=False, every=5, seed=0)
    assert run(watch, model, range(0, 16)) == [0, 5, 10, 15]


def test_due_agrees_with_on_step():
    model = Regression()
    watch = GradWatch(model.loss, after_steps=[3], every=4, seed=0)
    for step in range(0, 12):
        due = watch.due(step)
        result = watch.on_step(step, model.params, model.grads(model.params))
        assert due == (result is not None), step


def test_between_checks_the_loss_is_never_called():
    model = Regression()
    watch = GradWatch(model.loss, at_init=False, after_steps=50, seed=0)
    run(watch, model, range(0, 50))
    assert model.loss_calls == 0
    run(watch, model, range(50, 51))
    assert model.loss_calls > 0


def test_history_records_each_check():
    model = Regression()
    watch = GradWatch(model.loss, after_steps=2, seed=0)
    run(watch, model, range(0, 4))
    assert [step for step, _ in watch.history] == [0, 2]
    assert all(isinstance(r, CheckResult) and r.passed for _, r in watch.history)


# ------------------------------------------------------------------------------------------
# off: enabled=False and the environment


def test_disabled_watch_is_inert(factory):
    model = Regression()
    watch = GradWatch(model.loss, every=1, logdir="unused", enabled=False)
    assert run(watch, model, range(0, 20)) == []
    assert model.loss_calls == 0 and factory == [] and watch.history == []
    assert not watch.due(0)


@pytest.mark.parametrize("value", ["0", "off", "OFF", "false", "no"])
def test_environment_turns_the_watch_off(monkeypatch, value):
    monkeypatch.setenv("GRADWATCH", value)
    model = Regression()
    watch = GradWatch(model.loss, every=1, enabled=True)
    assert run(watch, model, range(0, 5)) == [] and model.loss_calls == 0


@pytest.mark.parametrize("value", ["1", "on", "true", "yes"])
def test_environment_turns_the_watch_on(monkeypatch, value):
    monkeypatch.setenv("GRADWATCH", value)
    model = Regression()
    watch = GradWatch(model.loss, enabled=False, seed=0)
    assert run(watch, model, range(0, 3)) == [0]


def test_environment_wins_over_a_config_that_disables(monkeypatch):
    monkeypatch.setenv("GRADWATCH", "1")
    model = Regression()
    watch = GradWatch.from_config({"enabled": False, "every": 2, "seed": 0}, loss_fn=model.loss)
    assert run(watch, model, range(0, 5)) == [0, 2, 4]


def test_environment_is_read_when_the_watch_is_built(monkeypatch):
    model = Regression()
    watch = GradWatch(model.loss, seed=0)
    monkeypatch.setenv("GRADWATCH", "0")
    assert run(watch, model, range(0, 2)) == [0]


def test_unknown_environment_value_is_an_error(monkeypatch):
    monkeypatch.setenv("GRADWATCH", "maybe")
    with pytest.raises(ConfigError, match="GRADWATCH must be .*got 'maybe'"):
        GradWatch(lambda p: 0.0)


def test_environment_config_wins_over_the_arguments(monkeypatch, tmp_path):
    path = tmp_path / "debug.yaml"
    path.write_text("every: 3\nsample: 2\n")
    monkeypatch.setenv("GRADWATCH_CONFIG", str(path))
    model = Regression()
    watch = GradWatch(model.loss, after_steps=1, sample="all", seed=0)
    assert run(watch, model, range(0, 7)) == [0, 1, 3, 6]  # the script's after_steps stays
    assert watch.config.sample == 2
    assert all(r.sample == 2 for _, r in watch.history)


def test_bad_environment_config_fails_at_construction(monkeypatch, tmp_path):
    monkeypatch.setenv("GRADWATCH_CONFIG", str(tmp_path / "missing.yaml"))
    with pytest.raises(ConfigError, match="missing.yaml"):
        GradWatch(lambda p: 0.0)


def test_environment_logdir_wins_over_arguments_and_config(monkeypatch, tmp_path, factory):
    path = tmp_path / "c.yaml"
    path.write_text(f"logdir: {tmp_path / 'from_config'}\n")
    monkeypatch.setenv("GRADWATCH_CONFIG", str(path))
    monkeypatch.setenv("GRADWATCH_LOGDIR", str(tmp_path / "from_env"))
    model = Regression()
    watch = GradWatch(model.loss, logdir=tmp_path / "from_argument", seed=0)
    run(watch, model, range(0, 1))
    assert [logger.logdir for logger in factory] == [str(tmp_path / "from_env")]


# ------------------------------------------------------------------------------------------
# dropout and randomness


def test_dropout_active_raises_without_calling_the_loss():
    model = Regression()
    logger = FakeLogger()
    watch = GradWatch(model.loss, dropout_active=True, logger=logger)
    with pytest.raises(DropoutActiveError, match="keep_prob=1"):
        watch.on_step(0, model.params, model.grads(model.params))
    assert model.loss_calls == 0
    assert [c[0] for c in logger.calls] == ["refusal"]  # logged before raising
    assert isinstance(watch.history[0][1], Refusal)


def test_dropout_active_skip_warns_logs_and_returns_none():
    model = Regression()
    logger = FakeLogger()
    watch = GradWatch(model.loss, after_steps=2, dropout_active=True, on_dropout="skip", logger=logger)
    with pytest.warns(GradWatchWarning, match="REFUSED at step 0.*dropout") as record:
        assert watch.on_step(0, model.params, model.grads(model.params)) is None
    assert record[0].filename == __file__  # the warning points at the caller's line
    assert model.loss_calls == 0
    assert logger.calls[0][:2] == ("refusal", 0) and "keep_prob=1" in logger.calls[0][2]


def test_callable_dropout_active_is_asked_only_at_due_checks():
    asked = []
    model = Regression()

    def dropout_on():
        asked.append(True)
        return False

    watch = GradWatch(model.loss, after_steps=5, dropout_active=dropout_on, seed=0)
    assert run(watch, model, range(0, 10)) == [0, 5]
    assert len(asked) == 2


def test_per_call_dropout_active_overrides_construction():
    model = Regression()
    watch = GradWatch(model.loss, dropout_active=True, after_steps=1, seed=0)
    assert watch.on_step(0, model.params, model.grads(model.params), dropout_active=False) is not None
    with pytest.raises(DropoutActiveError):
        GradWatch(model.loss).on_step(0, model.params, model.grads(model.params), dropout_active=lambda: True)


class NoisyLoss:
    """A loss with dropout inside: a fresh random mask at every call."""

    def __init__(self, model: Regression) -> None:
        self.model = model
        self.rng = np.random.default_rng(0)

    def __call__(self, p):
        r = p["W"] @ self.model.x + p["b"] - self.model.y
        mask = self.rng.random(r.shape) < 0.8
        return float(np.mean((r * mask / 0.8) ** 2))


def test_random_loss_is_refused_with_advice():
    model = Regression()
    logger = FakeLogger()
    watch = GradWatch(NoisyLoss(model), logger=logger)
    with pytest.raises(DropoutActiveError, match="keep_prob=1") as info:
        watch.on_step(3, model.params, model.grads(model.params))
    assert "step 3" in str(info.value)
    assert logger.calls[0][:2] == ("refusal", 3)


def test_random_loss_skip_mode_warns_and_training_goes_on():
    model = Regression()
    watch = GradWatch(NoisyLoss(model), on_dropout="skip", after_steps=1)
    with pytest.warns(GradWatchWarning, match="randomness"):
        assert watch.on_step(0, model.params, model.grads(model.params)) is None
    # a later check with a deterministic loss runs
    result = watch.on_step(1, model.params, model.grads(model.params), loss_fn=model.loss)
    assert result is not None and result.passed
    assert [type(r).__name__ for _, r in watch.history] == ["Refusal", "CheckResult"]


# ------------------------------------------------------------------------------------------
# wrong gradients


def test_wrong_gradient_is_returned_and_warned_with_the_report():
    model = Regression(bug=2.0)
    with pytest.warns(GradWatchWarning, match="FAILED") as record:
        result = GradWatch(model.loss, seed=0).on_step(0, model.params, model.grads(model.params))
    assert result is not None and result.failed == ("b",)
    assert str(result) in str(record[0].message)
    assert record[0].filename == __file__


def test_right_gradient_does_not_warn():
    model = Regression()
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        assert GradWatch(model.loss, seed=0).on_step(0, model.params, model.grads(model.params)).passed


def test_on_failure_raise():
    model = Regression(bug=2.0)
    logger = FakeLogger()
    watch = GradWatch(model.loss, on_failure="raise", seed=0, logger=logger)
    with pytest.raises(GradientCheckError, match="FAILED") as info:
        watch.on_step(4, model.params, model.grads(model.params))
    assert info.value.step == 4 and info.value.result.failed == ("b",)
    assert isinstance(info.value, GradWatchError)
    assert logger.calls[0][0] == "check"  # logged before raising


def test_on_failure_ignore_is_silent():
    model = Regression(bug=2.0)
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        result = GradWatch(model.loss, on_failure="ignore", seed=0).on_step(0, model.params, model.grads(model.params))
    assert not result.passed


# ------------------------------------------------------------------------------------------
# the loss function


def test_missing_loss_fn_at_a_due_check_is_named():
    model = Regression()
    watch = GradWatch(at_init=False, after_steps=2)
    watch.on_step(1, model.params, model.grads(model.params))  # nothing due: fine
    with pytest.raises(GradWatchError, match="step 2.*loss_fn"):
        watch.on_step(2, model.params, model.grads(model.params))


def test_loss_fn_given_per_call_is_used():
    model = Regression()
    result = GradWatch(seed=0).on_step(0, model.params, model.grads(model.params), loss_fn=model.loss)
    assert result.passed and model.loss_calls == result.loss_evaluations


def test_params_are_bitwise_unchanged_after_a_check():
    model = Regression(bug=2.0)
    before = {k: v.copy() for k, v in model.params.items()}
    GradWatch(model.loss, on_failure="ignore", seed=0).on_step(0, model.params, model.grads(model.params))
    assert all(np.array_equal(before[k], model.params[k]) for k in before)


# ------------------------------------------------------------------------------------------
# seeds


def test_seeded_checks_differ_by_step_and_replay():
    model = Regression()
    first = GradWatch(model.loss, after_steps=1, seed=7)
    second = GradWatch(model.loss, after_steps=1, seed=7)
    run(first, model, range(0, 2))
    run(second, model, range(0, 2))
    seeds = [r.seed for _, r in first.history]
    assert seeds[0] != seeds[1]
    assert seeds == [r.seed for _, r in second.history]
    replay = check_gradients(model.loss, model.params, model.grads(model.params), seed=seeds[1])
    assert replay.difference == first.history[1][1].difference


# ------------------------------------------------------------------------------------------
# validation at construction


@pytest.mark.parametrize(
    "kwargs, message",
    [
        ({"sample": -3}, 'sample must be "all", "auto" or a positive int; got -3'),
        ({"every": 0}, "every must be None (null) or a positive int; got 0"),
        ({"after_steps": [1, "2"]}, "after_steps must be a non-negative int or a list of them; got '2' (str)"),
        ({"epsilon": 0.0}, "epsilon must be None (null) or a positive finite number; got 0.0"),
        ({"threshold": "tiny"}, "threshold must be None (null) or a positive number"),
        ({"seed": -1}, "seed must be None (null) or a non-negative int; got -1"),
        ({"on_dropout": "ignore"}, 'on_dropout must be "raise" or "skip"; got \'ignore\' (str)'),
        ({"on_failure": "loud"}, 'on_failure must be "warn", "raise" or "ignore"'),
        ({"dropout_active": "yes"}, "dropout_active must be None, a bool or a callable"),
        ({"at_init": None}, "at_init must be true or false; got None"),
        ({"enabled": "no"}, "enabled must be None (null), true or false"),
    ],
)
def test_bad_argument_fails_at_construction(kwargs, message):
    with pytest.raises(ConfigError) as info:
        GradWatch(lambda p: 0.0, **kwargs)
    assert message in str(info.value)


def test_loss_fn_must_be_callable():
    with pytest.raises(TypeError, match="loss_fn must be None or callable"):
        GradWatch(3.0)  # type: ignore[arg-type]


def test_logdir_that_is_a_file_fails_at_construction(tmp_path):
    path = tmp_path / "file"
    path.write_text("")
    with pytest.raises(ConfigError, match="not a directory"):
        GradWatch(lambda p: 0.0, logdir=path)


def test_logdir_under_a_file_fails_at_construction_and_names_the_culprit(tmp_path):
    blocker = tmp_path / "file"
    blocker.write_text("")
    with pytest.raises(ConfigError, match=r"cannot be created: .*file' is not a directory"):
        GradWatch(lambda p: 0.0, logdir=blocker / "runs" / "mlp")
    assert not (tmp_path / "runs").exists()


def test_a_creatable_logdir_is_not_created_before_the_first_check(tmp_path):
    GradWatch(lambda p: 0.0, logdir=tmp_path / "runs" / "mlp")
    assert not (tmp_path / "runs").exists()


# ------------------------------------------------------------------------------------------
# from_config


def test_from_config_file_with_overrides(tmp_path):
    path = tmp_path / "c.yaml"
    path.write_text("at_init: false\nevery: 4\nseed: 1\n")
    model = Regression()
    watch = GradWatch.from_config(path, loss_fn=model.loss, every=3)
    assert run(watch, model, range(1, 10)) == [3, 6, 9]


def test_from_config_unknown_override_suggests_a_key():
    with pytest.raises(ConfigError, match="did you mean 'after_steps'"):
        GradWatch.from_config({}, after_step=3)


def test_from_config_bad_file_value_names_the_file(tmp_path):
    path = tmp_path / "c.yaml"
    path.write_text("sample: -3\n")
    with pytest.raises(ConfigError, match=f"{path}: sample must be"):
        GradWatch.from_config(path, loss_fn=lambda p: 0.0)


# ------------------------------------------------------------------------------------------
# logging


def test_logger_is_built_lazily_at_the_first_check(factory, tmp_path):
    model = Regression()
    watch = GradWatch(model.loss, at_init=False, after_steps=3, logdir=tmp_path, seed=0)
    run(watch, model, range(0, 3))
    assert factory == []
    run(watch, model, range(3, 6))
    assert len(factory) == 1 and factory[0].logdir == str(tmp_path)
    assert [(kind, step) for kind, step, _ in factory[0].calls] == [("check", 3)]


def test_no_logger_without_a_logdir(factory):
    model = Regression()
    run(GradWatch(model.loss, seed=0), model, range(0, 2))
    assert factory == []


def test_every_check_and_refusal_is_logged():
    model = Regression()
    logger = FakeLogger()
    watch = GradWatch(model.loss, every=2, seed=0, on_dropout="skip", logger=logger)
    for step in range(0, 5):
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            watch.on_step(step, model.params, model.grads(model.params), dropout_active=(step == 2))
    assert [(kind, step) for kind, step, _ in logger.calls] == [("check", 0), ("refusal", 2), ("check", 4)]
    assert logger.calls[0][2] is watch.history[0][1]


def test_a_logging_failure_warns_once_and_checks_go_on():
    model = Regression()
    watch = GradWatch(model.loss, every=1, seed=0, logger=BrokenLogger())
    with pytest.warns(GradWatchWarning, match="disk full") as record:
        results = [watch.on_step(s, model.params, model.grads(model.params)) for s in range(3)]
    assert all(r is not None and r.passed for r in results)
    assert len([w for w in record if "disk full" in str(w.message)]) == 1


def test_a_logger_that_cannot_be_built_warns_and_checks_go_on(monkeypatch):
    def refuse(logdir):
        raise GradWatchError(f"cannot create {logdir}")

    monkeypatch.setattr(callback, "make_logger", refuse)
    model = Regression()
    watch = GradWatch(model.loss, logdir="somewhere", seed=0)
    with pytest.warns(GradWatchWarning, match="cannot create somewhere"):
        assert watch.on_step(0, model.params, model.grads(model.params)).passed


def test_close_and_context_manager_close_the_logger(factory, tmp_path):
    model = Regression()
    with GradWatch(model.loss, logdir=tmp_path, seed=0) as watch:
        run(watch, model, range(0, 1))
    assert factory[0].closed and watch.logger is None


# ------------------------------------------------------------------------------------------
# progress


class FakeBar:
    made: List["FakeBar"] = []

    def __init__(self, **kwargs: Any) -> None:
        self.calls: List[tuple] = []
        self.closed = False
        FakeBar.made.append(self)

    def __call__(self, done: int, planned: int) -> None:
        self.calls.append((done, planned))

    def close(self) -> None:
        self.closed = True


@pytest.fixture
def bars(monkeypatch):
    FakeBar.made = []
    monkeypatch.setattr(callback, "ProgressBar", FakeBar)
    return FakeBar.made


def test_progress_is_reported_per_loss_evaluation(bars):
    model = Regression()
    result = GradWatch(model.loss, progress=True, seed=0).on_step(0, model.params, model.grads(model.params))
    assert len(bars) == 1 and bars[0].closed
    assert [done for done, _ in bars[0].calls] == list(range(1, result.loss_evaluations + 1))


def test_progress_off_when_asked(bars):
    model = Regression()
    GradWatch(model.loss, progress=False, seed=0).on_step(0, model.params, model.grads(model.params))
    assert bars == []


def test_progress_off_by_environment(bars, monkeypatch):
    monkeypatch.setenv("GRADWATCH_PROGRESS", "0")
    model = Regression()
    GradWatch(model.loss, progress=True, seed=0).on_step(0, model.params, model.grads(model.params))
    assert bars == []


def test_progress_off_when_stderr_is_not_a_terminal(bars, capsys):
    model = Regression()
    GradWatch(model.loss, seed=0).on_step(0, model.params, model.grads(model.params))
    assert bars == []


# ------------------------------------------------------------------------------------------
# a bug that only shows once the weights have grown


class TanhNet:
    """x -> tanh(W1 x + b1) -> W2 a + b2, squared error; the backprop writes tanh' as 1 - z**2."""

    def __init__(self, buggy: bool, seed: int = 0) -> None:
        rng = np.random.default_rng(seed)
        self.x = rng.standard_normal((3, 32))
        self.y = np.sin(2 * self.x[:1]) + self.x[1:2]
        self.buggy = buggy
        self.params = {
            "W1": rng.standard_normal((8, 3)) * 1e-3,  # a tiny initialisation: z ≈ 0
            "b1": np.zeros((8, 1)),
            "W2": rng.standard_normal((1, 8)) * 1e-3,
            "b2": np.zeros((1, 1)),
        }

    def _forward(self, p):
        z = p["W1"] @ self.x + p["b1"]
        a = np.tanh(z)
        return z, a, p["W2"] @ a + p["b2"]

    def loss(self, p) -> float:
        return float(np.mean((self._forward(p)[2] - self.y) ** 2) / 2)

    def grads(self, p):
        z, a, out = self._forward(p)
        d = (out - self.y) / self.x.shape[1]
        da = p["W2"].T @ d
        dz = da * ((1 - z**2) if self.buggy else (1 - np.tanh(z) ** 2))
        return {"dW1": dz @ self.x.T, "db1": dz.sum(axis=1, keepdims=True),
                "dW2": d @ a.T, "db2": d.sum(axis=1, keepdims=True)}


def train_tanh(buggy: bool) -> GradWatch:
    net = TanhNet(buggy)
    watch = GradWatch(net.loss, at_init=True, after_steps=60, seed=0, on_failure="ignore")
    for step in range(61):
        grads = net.grads(net.params)
        watch.on_step(step, net.params, grads)
        for name in net.params:
            net.params[name] -= 0.2 * grads["d" + name]
    return watch


def test_tanh_derivative_bug_passes_at_tiny_init_and_fails_after_training():
    (s0, at_init), (s1, later) = train_tanh(buggy=True).history
    assert (s0, s1) == (0, 60)
    assert at_init.passed  # z ≈ 0: 1 - z**2 and 1 - tanh(z)**2 agree to ~z**4
    assert not later.passed and set(later.failed) == {"W1", "b1"}


def test_correct_tanh_derivative_passes_at_both_checks():
    assert [r.passed for _, r in train_tanh(buggy=False).history] == [True, True]


# ------------------------------------------------------------------------------------------
# nothing the shell does stops training by accident


@pytest.mark.parametrize("step_type", [np.int64, np.int32, np.uint64, int])
def test_a_huge_every_never_overflows_whatever_the_steps_integer_type(step_type):
    model = Regression()
    watch = GradWatch(model.loss, at_init=False, every=2**63, seed=0)
    assert [watch.on_step(step_type(s), model.params, model.grads(model.params)) for s in (1, 2, 3)] == [None] * 3
    assert not watch.due(step_type(5))


def test_a_huge_every_still_divides_the_steps_it_divides():
    model = Regression()
    watch = GradWatch(model.loss, at_init=False, every=2**64 + 1, seed=0)
    assert watch.due(np.uint64(0)) and not watch.due(np.uint64(2**64 - 1))
    assert watch.on_step(np.int64(0), model.params, model.grads(model.params)) is not None


@pytest.mark.parametrize("schedule", [{"every": 5}, {"after_steps": (3,)}, {}])
@pytest.mark.parametrize("step", ["seven", "3", None, 3.7, 3.0, True, np.bool_(True), np.float64(3)])
def test_a_step_that_is_no_integer_is_refused_and_named_whatever_the_schedule(schedule, step):
    model = Regression()
    watch = GradWatch(model.loss, at_init=False, seed=0, **schedule)
    with pytest.raises(TypeError, match=f"step must be an integer.*got {re.escape(repr(step))} "):
        watch.on_step(step, model.params, model.grads(model.params))
    with pytest.raises(TypeError, match="step must be an integer"):
        watch.due(step)


def test_a_numpy_integer_step_is_the_step_it_names():
    model = Regression()
    watch = GradWatch(model.loss, at_init=False, after_steps=(3,), seed=0)
    assert watch.on_step(np.int16(2), model.params, model.grads(model.params)) is None
    assert watch.on_step(np.uint8(3), model.params, model.grads(model.params)) is not None


def test_a_check_without_stderr_goes_on(monkeypatch):
    monkeypatch.setattr("sys.stderr", None)
    model = Regression()
    result = GradWatch(model.loss, progress=True, seed=0).on_step(0, model.params, model.grads(model.params))
    assert result is not None and result.passed


class Diverged(Regression):
    """The loss turns NaN from ``nan_from`` on (training diverged)."""

    def __init__(self, nan_from: int) -> None:
        super().__init__()
        self.nan_from = nan_from
        self.step = 0

    def loss(self, p: Dict[str, np.ndarray]) -> float:
        return float("nan") if self.step >= self.nan_from else super().loss(p)


def test_a_nan_loss_at_a_due_check_is_a_failed_check_recorded_warned_and_training_goes_on():
    model = Diverged(nan_from=10)
    logger = FakeLogger()
    watch = GradWatch(model.loss, every=10, seed=0, logger=logger)
    steps = []
    with pytest.warns(GradWatchWarning, match="FAILED") as caught:
        for step in range(25):
            model.step = step
            watch.on_step(step, model.params, model.grads(model.params))
            steps.append(step)
    assert steps == list(range(25))
    assert [str(w.message).split(":")[0] for w in caught] == ["gradient check at step 10", "gradient check at step 20"]
    assert [(s, r.verdict) for s, r in watch.history] == [(0, "passed"), (10, "failed"), (20, "failed")]
    assert [(kind, step) for kind, step, _ in logger.calls] == [("check", 0), ("check", 10), ("check", 20)]


def test_a_nan_loss_raises_under_on_failure_raise():
    model = Diverged(nan_from=0)
    watch = GradWatch(model.loss, seed=0, on_failure="raise")
    with pytest.raises(GradientCheckError) as caught:
        watch.on_step(0, model.params, model.grads(model.params))
    assert caught.value.step == 0 and watch.history[0][1].verdict == "failed"


def test_the_logger_is_told_how_long_each_check_took():
    model = Regression()
    logger = FakeLogger()
    GradWatch(model.loss, seed=0, logger=logger).on_step(0, model.params, model.grads(model.params))
    assert isinstance(logger.seconds, float) and logger.seconds >= 0.0


# ------------------------------------------------------------------------------------------
# an inconclusive check is reported like a failed one


@pytest.fixture
def inconclusive(monkeypatch):
    """check_gradients replaced by an in-memory fake whose every result is inconclusive for b."""
    import dataclasses

    def fake_check(loss_fn, params, grads, **kwargs):
        result = check_gradients(loss_fn, params, grads, **kwargs)
        per = {**result.per_param, "b": dataclasses.replace(result.per_param["b"], passed=False, verdict="inconclusive")}
        return dataclasses.replace(result, passed=False, per_param=per, inconclusive=("b",))

    monkeypatch.setattr(callback, "check_gradients", fake_check)


def test_an_inconclusive_check_is_recorded_logged_and_warned(inconclusive):
    model = Regression()
    logger = FakeLogger()
    watch = GradWatch(model.loss, seed=0, logger=logger)
    with pytest.warns(GradWatchWarning, match="step 0"):
        result = watch.on_step(0, model.params, model.grads(model.params))
    assert result.verdict == "inconclusive"
    assert watch.history == [(0, result)] and logger.calls == [("check", 0, result)]


def test_an_inconclusive_check_raises_under_on_failure_raise(inconclusive):
    model = Regression()
    watch = GradWatch(model.loss, seed=0, on_failure="raise")
    with pytest.raises(GradientCheckError):
        watch.on_step(0, model.params, model.grads(model.params))


def test_an_inconclusive_check_is_silent_under_on_failure_ignore(inconclusive):
    model = Regression()
    watch = GradWatch(model.loss, seed=0, on_failure="ignore")
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        result = watch.on_step(0, model.params, model.grads(model.params))
    assert result.verdict == "inconclusive"


@pytest.mark.parametrize("flag", ["false", np.array([False, True]), lambda: "no", lambda: np.zeros(3), lambda: None])
def test_a_dropout_flag_that_is_no_bool_is_refused_naming_it(flag):
    model = Regression()
    watch = GradWatch(model.loss, seed=0)
    with pytest.raises(TypeError, match="dropout_active must be a bool or a callable returning one"):
        watch.on_step(0, model.params, model.grads(model.params), dropout_active=flag)
    # the check is still due: the user's mistake did not use it up
    assert watch.on_step(0, model.params, model.grads(model.params), dropout_active=np.bool_(False)).passed


def test_a_check_due_without_a_loss_stays_due_until_one_is_given():
    model = Regression()
    watch = GradWatch(seed=0)
    with pytest.raises(GradWatchError, match="no loss_fn was given"):
        watch.on_step(0, model.params, model.grads(model.params))
    assert watch.on_step(1, model.params, model.grads(model.params), loss_fn=model.loss).passed


def test_switched_off_by_the_environment_nothing_else_in_it_can_stop_training(monkeypatch, tmp_path):
    blocker = tmp_path / "a-file"
    blocker.write_text("")
    monkeypatch.setenv("GRADWATCH", "0")
    monkeypatch.setenv("GRADWATCH_CONFIG", str(tmp_path / "missing.yaml"))
    monkeypatch.setenv("GRADWATCH_LOGDIR", str(blocker / "logs"))  # under a file: cannot be created
    model = Regression()
    watch = GradWatch(model.loss, seed=0, logdir=blocker / "own")
    assert not watch.enabled and watch.on_step(0, model.params, model.grads(model.params)) is None
    monkeypatch.setenv("GRADWATCH", "1")
    with pytest.raises(ConfigError, match="missing.yaml"):
        GradWatch(model.loss, seed=0)
