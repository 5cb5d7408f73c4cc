"""``GradWatch``: gradient checks scheduled inside a plain NumPy training loop.

The documents' advice, as a callback: check at random initialisation, perhaps again after some
training, never while dropout is on, and otherwise stay out of the way. ``on_step`` decides in
O(1) whether a check is due; only a due check touches ``check_gradients``, the progress bar and
the TensorBoard logger (built, and TensorBoard imported, at the first check that has a logdir).

Settings come from the keywords, a config (``GradWatch.from_config``) and the environment, read
when the watch is built, in this order of precedence (last wins):

1. the keywords (or ``from_config``'s file, then its keyword overrides);
2. ``GRADWATCH_CONFIG=path.yaml``: the keys that file sets;
3. ``GRADWATCH_LOGDIR=dir``: the logdir;
4. ``GRADWATCH=0/off/false/no`` makes the watch inert, ``GRADWATCH=1/on/true/yes`` enables it,
   whatever the keywords and configs say. ``GRADWATCH_PROGRESS=0`` turns progress bars off.
"""

from __future__ import annotations

import operator
import os
import sys
import time
import warnings
from dataclasses import dataclass
from types import FrameType
from typing import Any, Callable, List, Mapping, Optional, Tuple, Union, cast

import numpy as np

from .check import CheckResult, check_gradients
from .config import GradWatchConfig, PathLike, read_config_file, read_options, validate_options
from .errors import ConfigError, DropoutActiveError, GradWatchError
from .progress import ProgressBar, env_allows_progress, wants_progress

LossFn = Callable[[Any], float]
DropoutFlag = Union[None, bool, Callable[[], Any]]

_ON = frozenset({"1", "on", "true", "yes"})
_OFF = frozenset({"0", "off", "false", "no"})


class GradientCheckError(GradWatchError):
    """A scheduled check did not pass (a wrong gradient, a loss that is not finite, or an inconclusive
    check) and the watch was built with ``on_failure="raise"``.

    ``.step`` is the training step and ``.result`` the :class:`~gradwatch.CheckResult`.
    """

    def __init__(self, step: int, result: CheckResult):
        super().__init__(f"gradient check at step {step}: {result}")
        self.step = step
        self.result = result


class GradWatchWarning(UserWarning):
    """A wrong gradient (``on_failure="warn"``), a skipped check, or a logging failure."""


@dataclass(frozen=True)
class Refusal:
    """A due check that did not run because dropout (or other randomness) was active."""

    step: int
    reason: str

    @property
    def passed(self) -> bool:  # so that history entries answer the same question
        return False

    def __str__(self) -> str:
        return f"gradient check REFUSED at step {self.step}: {self.reason}"


HistoryEntry = Tuple[int, Union[CheckResult, Refusal]]

DROPOUT_ADVICE = (
    "Gradient checking does not work with dropout: the loss is random, so its differences measure "
    "the masks, not the gradient. Switch dropout off for the check: keep_prob=1 in the loss_fn the "
    "watch uses (or a dropout-free loss_fn) and grads from a backward pass without dropout "
    "(watch.due(step) tells when to compute them)."
)


def make_logger(logdir: PathLike) -> Any:
    """The TensorBoard logger a watch writes to (replaced by a fake in tests)."""
    from .tensorboard import TensorBoardLogger  # imported at the first check, never before

    return TensorBoardLogger(logdir)


def _logdir_problem(logdir: PathLike) -> Optional[str]:
    """Why ``logdir`` could not be created, or ``None``; found without creating anything.

    The logger makes the directory at the first check; a path that can never be a directory is
    reported when the watch is built instead.
    """
    path = os.path.abspath(os.fspath(logdir))
    probe = path
    while not os.path.exists(probe) and os.path.dirname(probe) != probe:
        probe = os.path.dirname(probe)
    if not os.path.isdir(probe):
        return "it exists and is not a directory" if probe == path else f"{probe!r} is not a directory"
    if not os.access(probe, os.W_OK | os.X_OK):
        return f"{probe!r} is not writable"
    return None


def _env_switch(environ: Mapping[str, str]) -> Optional[bool]:
    raw = environ.get("GRADWATCH", "").strip()
    if not raw:
        return None
    value = raw.lower()
    if value in _ON:
        return True
    if value in _OFF:
        return False
    raise ConfigError(f"GRADWATCH must be 0/off/false/no or 1/on/true/yes; got {raw!r}")


def _warn(message: str) -> None:
    """warnings.warn pointing at the user's line: the first frame outside this module."""
    frame: Optional[FrameType] = sys._getframe(1)
    level = 2
    while frame is not None and frame.f_globals.get("__name__") == __name__:
        frame, level = frame.f_back, level + 1
    warnings.warn(message, GradWatchWarning, stacklevel=level)


def _derived_seed(seed: int, step: Any) -> int:
    """A seed per check, different at every step, the same on every replay."""
    try:
        key = operator.index(step)
    except TypeError:
        key = hash(step)
    state = np.random.SeedSequence([seed, key % (1 << 64)]).generate_state(1, np.uint64)[0]
    return int(state >> np.uint64(1))


class GradWatch:
    """Gradient checks at initialisation and after chosen steps of a NumPy training loop.

    Call ``on_step(step, params, grads)`` every step, before the update, with the gradients of
    that step's backward pass; it returns ``None`` at once unless a check is due, and then the
    :class:`~gradwatch.CheckResult`. ``loss_fn(params) -> float`` must give the cost on the batch
    that produced ``grads``, regularisation included, dropout off.

    A check is due at the first ``on_step`` call (``at_init``), at every step in ``after_steps``
    (an int means one step) and at every step that ``every`` divides. With ``seed=s`` each check
    uses a seed derived from ``(s, step)``: checks differ from step to step, and ``result.seed``
    replays one. A wrong gradient is returned and, by ``on_failure``, warned about (``"warn"``),
    raised as :class:`GradientCheckError` (``"raise"``) or left to the caller (``"ignore"``).
    When ``dropout_active`` (a bool or a callable, here or per call) is true at a due check, or
    ``loss_fn`` turns out random, no check runs: :class:`~gradwatch.DropoutActiveError`
    (``on_dropout="raise"``) or a warning and ``None`` (``"skip"``); the refusal is logged either
    way. ``history`` lists ``(step, CheckResult or Refusal)``. With ``logdir``, each check and
    refusal goes to TensorBoard event files there.

    >>> import numpy as np
    >>> x, y = np.array([[0.5, -1.0, 2.0]]), np.array([[1.0, 0.0, 3.0]])
    >>> params = {"W": np.array([[0.3]]), "b": np.array([[0.1]])}
    >>> def loss(p):
    ...     return float(np.mean((p["W"] @ x + p["b"] - y) ** 2))
    >>> def backward(p):
    ...     r = 2 * (p["W"] @ x + p["b"] - y) / x.shape[1]
    ...     return {"dW": r @ x.T, "db": r.sum(axis=1, keepdims=True)}
    >>> with GradWatch(loss, after_steps=50, seed=0) as watch:
    ...     for step in range(100):
    ...         grads = backward(params)
    ...         result = watch.on_step(step, params, grads)
    ...         if result is not None:
    ...             print(step, result.passed)
    ...         params = {k: v - 0.1 * grads["d" + k] for k, v in params.items()}
    0 True
    50 True
    """

    def __init__(
        self,
        loss_fn: Optional[LossFn] = None,
        *,
        at_init: bool = True,
        after_steps: Union[int, Tuple[int, ...], List[int]] = (),
        every: Optional[int] = None,
        sample: Union[str, int] = "auto",
        epsilon: Optional[float] = None,
        threshold: Optional[float] = None,
        seed: Optional[int] = None,
        logdir: Optional[PathLike] = None,
        enabled: Optional[bool] = None,
        dropout_active: DropoutFlag = None,
        on_dropout: str = "raise",
        on_failure: str = "warn",
        progress: Optional[bool] = None,
        logger: Any = None,
    ) -> None:
        if loss_fn is not None and not callable(loss_fn):
            raise TypeError(
                f"loss_fn must be None or callable, loss_fn(params) -> float; got {type(loss_fn).__name__}")
        if logger is not None and not all(callable(getattr(logger, m, None)) for m in ("log_check", "log_refusal")):
            raise TypeError("logger must have log_check(step, result) and log_refusal(step, reason); "
                            f"got {type(logger).__name__}")
        config = GradWatchConfig(
            at_init=at_init, after_steps=cast(Any, after_steps), every=every, sample=sample, epsilon=epsilon,
            threshold=threshold, seed=seed, logdir=cast(Any, logdir), enabled=enabled, dropout_active=dropout_active,
            on_dropout=on_dropout, on_failure=on_failure, progress=progress,
        )
        environ = os.environ
        switch = _env_switch(environ)
        # GRADWATCH=0 switches the watch off: nothing else in the environment can stop training then
        env_config = environ.get("GRADWATCH_CONFIG", "").strip() if switch is not False else ""
        if env_config:
            config = GradWatchConfig(**{**config.as_dict(), **read_config_file(env_config)})
        env_logdir = environ.get("GRADWATCH_LOGDIR", "").strip() if switch is not False else ""
        if env_logdir:
            config = config.replace(logdir=env_logdir)
        if config.logdir is not None and switch is not False:
            problem = _logdir_problem(config.logdir)
            if problem:
                raise ConfigError(f"logdir {os.fspath(config.logdir)!r} cannot be created: {problem}")

        self.loss_fn = loss_fn
        self.config = config
        self._enabled: bool = switch if switch is not None else (config.enabled is not False)
        self.history: List[HistoryEntry] = []
        self._logger = logger
        self._injected_logger = logger is not None
        self._logger_failed = False
        self._log_warned = False
        self._progress: Optional[bool] = config.progress if env_allows_progress(environ) else False
        # the schedule, in the form on_step tests in O(1); all empty when inert
        self._init_pending = self._enabled and config.at_init
        self._after = frozenset(config.after_steps) if self._enabled else frozenset()
        self._every = (config.every or 0) if self._enabled else 0

    # ---------------------------------------------------------------------------------------
    # construction from a config

    @classmethod
    def from_config(cls, path_or_mapping: Union[PathLike, Mapping[str, Any], GradWatchConfig], **overrides: Any) -> "GradWatch":
        """A watch from a YAML file (or a mapping); ``overrides`` (keywords, ``loss_fn`` too) win over it.

        >>> watch = GradWatch.from_config({"at_init": False, "every": 100}, loss_fn=lambda p: 0.0)
        >>> watch.due(0), watch.due(100), watch.due(150)
        (True, True, False)
        """
        options = read_options(path_or_mapping)
        loss_fn = overrides.pop("loss_fn", None)
        logger = overrides.pop("logger", None)
        options.update(validate_options(overrides, source="from_config keyword arguments"))
        return cls(loss_fn, logger=logger, **options)

    # ---------------------------------------------------------------------------------------
    # the hot path

    def on_step(
        self,
        step: int,
        params: Any,
        grads: Any,
        loss_fn: Optional[LossFn] = None,
        dropout_active: DropoutFlag = None,
    ) -> Optional[CheckResult]:
        """Check the gradients if a check is due at ``step``; otherwise return ``None`` at once."""
        if type(step) is not int:
            step = _step_number(step)
        if not (self._init_pending or step in self._after or (self._every and not step % self._every)):
            return None
        return self._check(step, params, grads, loss_fn, dropout_active)

    def due(self, step: int) -> bool:
        """Whether ``on_step(step, ...)`` would run a check (to compute dropout-free grads only then)."""
        if type(step) is not int:
            step = _step_number(step)
        return bool(self._init_pending or step in self._after or (self._every and not step % self._every))

    # ---------------------------------------------------------------------------------------
    # a due check

    def _check(self, step: int, params: Any, grads: Any, loss_fn: Optional[LossFn],
               dropout_active: DropoutFlag) -> Optional[CheckResult]:
        fn = loss_fn if loss_fn is not None else self.loss_fn
        if fn is None:
            raise GradWatchError(
                f"a gradient check is due at step {step} but no loss_fn was given: pass loss_fn to "
                "GradWatch(loss_fn=...) or to on_step(..., loss_fn=...)"
            )
        if not callable(fn):
            raise TypeError(f"loss_fn must be callable, loss_fn(params) -> float; got {type(fn).__name__}")
        flag = dropout_active if dropout_active is not None else self.config.dropout_active
        called = callable(flag)
        if called:
            flag = cast(Callable[[], Any], flag)()
        if not isinstance(flag, (bool, np.bool_)) and not (flag is None and not called):
            raise TypeError(f"dropout_active must be a bool or a callable returning one; "
                            f"{'it returned' if called else 'got'} {flag!r:.80} ({type(flag).__name__})")
        self._init_pending = False  # a check is under way (a user error above leaves it due)
        if flag:
            self._refuse(step, f"dropout is active (dropout_active is true). {DROPOUT_ADVICE}")
            return None

        seed = None if self.config.seed is None else _derived_seed(self.config.seed, step)
        bar = self._bar(step)
        started = time.monotonic()
        try:
            result = check_gradients(
                fn, params, grads, sample=self.config.sample, epsilon=self.config.epsilon,
                threshold=self.config.threshold, seed=seed, progress=bar,
            )
        except DropoutActiveError as err:  # loss_fn gave two values for the same params
            refused: Optional[str] = str(err)
        else:
            refused = None
        finally:
            if bar is not None:
                bar.close()
        if refused is not None:
            self._refuse(step, refused)
            return None
        seconds = time.monotonic() - started

        # a failed, inconclusive or diverged (non-finite loss: every tensor wrong) check alike
        self.history.append((step, result))
        self._log("log_check", step, result, seconds=seconds)
        if not result.passed:
            if self.config.on_failure == "raise":
                raise GradientCheckError(step, result)
            if self.config.on_failure == "warn":
                _warn(f"gradient check at step {step}: {result}")
        return result

    def _bar(self, step: Any) -> Optional[ProgressBar]:
        """A progress bar for this check, or ``None``; never an exception (no stderr, a broken one)."""
        try:
            if wants_progress(self._progress, sys.stderr):
                return ProgressBar(label=f"gradient check at step {step}")
        except Exception:  # noqa: BLE001 - progress output must never stop training
            pass
        return None

    def _refuse(self, step: int, reason: str) -> None:
        refusal = Refusal(step, reason)
        self.history.append((step, refusal))
        self._log("log_refusal", step, reason)
        if self.config.on_dropout == "raise":
            raise DropoutActiveError(f"gradient check refused at step {step}: {reason}")
        _warn(str(refusal))
        return None

    # ---------------------------------------------------------------------------------------
    # logging: built at first use, never breaks training

    def _log(self, method: str, step: int, payload: Any, **extra: Any) -> None:
        logger = self._logger
        if logger is None:
            if self.config.logdir is None or self._logger_failed:
                return
            try:
                logger = self._logger = make_logger(self.config.logdir)
            except Exception as err:  # noqa: BLE001 - a logging failure must not stop training
                self._logger_failed = True
                self._warn_log(f"cannot log gradient checks to {self.config.logdir!r}: {err}")
                return
        try:
            getattr(logger, method)(step, payload, **extra)
        except Exception as err:  # noqa: BLE001
            self._warn_log(f"logging the gradient check at step {step} failed: {err}")

    def _warn_log(self, message: str) -> None:
        if not self._log_warned:
            self._log_warned = True
            _warn(f"{message} (the checks go on; further logging errors are not reported)")

    # ---------------------------------------------------------------------------------------

    @property
    def enabled(self) -> bool:
        """Whether the watch checks at all (``enabled`` and ``GRADWATCH``, as read when it was built)."""
        return self._enabled

    @property
    def logger(self) -> Any:
        """The logger in use, ``None`` before the first logged check (or without a logdir)."""
        return self._logger

    def close(self) -> None:
        """Flush and close the logger, if one was opened. A closed watch may go on checking."""
        logger = self._logger
        if logger is None:
            return
        if not self._injected_logger:
            self._logger = None  # a check after close opens a new event file
        try:
            close = getattr(logger, "close", None)
            if close is not None:
                close()
        except Exception as err:  # noqa: BLE001
            self._warn_log(f"closing the gradient-check log failed: {err}")

    def __enter__(self) -> "GradWatch":
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    def __repr__(self) -> str:
        c = self.config
        if not self.enabled:
            return "GradWatch(enabled=False)"
        return (
            f"GradWatch(at_init={c.at_init}, after_steps={c.after_steps}, every={c.every}, "
            f"sample={c.sample!r}, logdir={c.logdir!r}, on_dropout={c.on_dropout!r}, on_failure={c.on_failure!r})"
        )


__all__ = ["GradWatch", "GradWatchWarning", "GradientCheckError", "Refusal", "make_logger"]


def _step_number(step: Any) -> int:
    """A training step as a Python int (NumPy integers included; bools, floats and strings refused)."""
    if not isinstance(step, (bool, np.bool_)):
        try:
            return operator.index(step)
        except TypeError:
            pass
    raise TypeError(f"step must be an integer (int or NumPy integer); got {step!r} ({type(step).__name__})")
