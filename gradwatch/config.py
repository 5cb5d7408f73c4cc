"""GradWatch's settings: one frozen dataclass of defaults, one validator per key, a YAML loader.

Every keyword of :class:`gradwatch.GradWatch` except ``loss_fn`` (and the test hook ``logger``)
is a field of :class:`GradWatchConfig`. The same validators check keywords when a watch is built
and keys when a config file or mapping is loaded, so a bad value gets the same message either way,
prefixed with the file it came from. YAML is read with ``yaml.safe_load`` and only overrides the
defaults held here.
"""

from __future__ import annotations

import difflib
import math
import os
from dataclasses import dataclass, fields
from typing import Any, Callable, Dict, Mapping, Optional, Tuple, Union

import numpy as np

from .inputs import normalise_sample
from .errors import ConfigError

PathLike = Union[str, "os.PathLike[str]"]

#: Values of ``on_dropout``: what a due check does when dropout (or other randomness) is active.
ON_DROPOUT = ("raise", "skip")
#: Values of ``on_failure``: what a check that finds a wrong gradient does besides returning it.
ON_FAILURE = ("warn", "raise", "ignore")


def _got(value: Any) -> str:
    """How a received value is shown in an error: its repr, and its type when that helps."""
    shown = repr(value)
    if len(shown) > 80:
        shown = shown[:77] + "..."
    if isinstance(value, (bool, int, float, type(None))) and not isinstance(value, np.generic):
        return shown
    return f"{shown} ({type(value).__name__})"


def _is_int(value: Any) -> bool:
    return isinstance(value, (int, np.integer)) and not isinstance(value, (bool, np.bool_))


def _is_bool(value: Any) -> bool:
    return isinstance(value, (bool, np.bool_))


def _bool(name: str) -> Callable[[Any], bool]:
    def check(value: Any) -> bool:
        if _is_bool(value):
            return bool(value)
        raise ConfigError(f"{name} must be true or false; got {_got(value)}")

    return check


def _optional_bool(name: str) -> Callable[[Any], Optional[bool]]:
    def check(value: Any) -> Optional[bool]:
        if value is None:
            return None
        if _is_bool(value):
            return bool(value)
        raise ConfigError(f"{name} must be None (null), true or false; got {_got(value)}")

    return check


def _after_steps(value: Any) -> Tuple[int, ...]:
    message = "after_steps must be a non-negative int or a list of them"
    if value is None:
        return ()
    if _is_int(value):
        items = [value]
    elif isinstance(value, (list, tuple, set, frozenset, range)) or (isinstance(value, np.ndarray) and value.ndim == 1):
        items = list(value)
    else:
        raise ConfigError(f"{message}; got {_got(value)}")
    for item in items:
        if not _is_int(item) or item < 0:
            where = "" if item is value else f" in {_got(value)}"
            raise ConfigError(f"{message}; got {_got(item)}{where}")
    return tuple(sorted({int(i) for i in items}))


def _every(value: Any) -> Optional[int]:
    if value is None:
        return None
    if _is_int(value) and value > 0:
        return int(value)
    raise ConfigError(f"every must be None (null) or a positive int; got {_got(value)}")


def _sample(value: Any) -> Union[str, int]:
    sample = normalise_sample(value)  # the rule check_gradients applies
    if sample is not None:
        return sample
    raise ConfigError(f'sample must be "all", "auto" or a positive int; got {_got(value)}')


def _positive_number(name: str) -> Callable[[Any], Optional[float]]:
    def check(value: Any) -> Optional[float]:
        if value is None:
            return None
        number: Optional[float] = None
        if isinstance(value, str):
            # YAML 1.1 reads 1e-7 (no dot) as a string: take the number the user meant
            try:
                number = float(value.strip())
            except ValueError:
                number = None
        elif isinstance(value, (int, float, np.integer, np.floating)) and not _is_bool(value):
            number = float(value)
        if number is None:
            raise ConfigError(f"{name} must be None (null) or a positive number such as 1e-7; got {_got(value)}")
        if not (number > 0 and math.isfinite(number)):
            raise ConfigError(f"{name} must be None (null) or a positive finite number; got {_got(value)}")
        return number

    return check


def _seed(value: Any) -> Optional[int]:
    if value is None:
        return None
    if _is_int(value) and value >= 0:
        return int(value)
    raise ConfigError(f"seed must be None (null) or a non-negative int; got {_got(value)}")


def _logdir(value: Any) -> Optional[str]:
    if value is None:
        return None
    if isinstance(value, (str, os.PathLike)):
        path = os.fspath(value)
        if isinstance(path, str) and path.strip():
            return path
    raise ConfigError(f"logdir must be None (null) or a directory path; got {_got(value)}")


def _dropout_active(value: Any) -> Union[None, bool, Callable[[], Any]]:
    if value is None:
        return None
    if _is_bool(value):
        return bool(value)
    if callable(value):
        return value
    raise ConfigError(f"dropout_active must be None, a bool or a callable returning one; got {_got(value)}")


def _choice(name: str, allowed: Tuple[str, ...]) -> Callable[[Any], str]:
    def check(value: Any) -> str:
        if isinstance(value, str) and value in allowed:
            return value
        options = ", ".join(f'"{a}"' for a in allowed[:-1]) + f' or "{allowed[-1]}"'
        raise ConfigError(f"{name} must be {options}; got {_got(value)}")

    return check


#: key -> validator returning the normalised value (or raising ConfigError)
VALIDATORS: Dict[str, Callable[[Any], Any]] = {
    "at_init": _bool("at_init"),
    "after_steps": _after_steps,
    "every": _every,
    "sample": _sample,
    "epsilon": _positive_number("epsilon"),
    "threshold": _positive_number("threshold"),
    "seed": _seed,
    "logdir": _logdir,
    "enabled": _optional_bool("enabled"),
    "dropout_active": _dropout_active,
    "on_dropout": _choice("on_dropout", ON_DROPOUT),
    "on_failure": _choice("on_failure", ON_FAILURE),
    "progress": _optional_bool("progress"),
}


@dataclass(frozen=True)
class GradWatchConfig:
    """The defaults of every :class:`~gradwatch.GradWatch` keyword (``loss_fn`` aside), validated.

    Building one validates and normalises every field (``after_steps=5`` becomes ``(5,)``,
    ``epsilon="1e-7"`` becomes ``1e-07``); a bad value raises :class:`ConfigError`.

    >>> GradWatchConfig(after_steps=500, epsilon="1e-7").after_steps
    (500,)
    >>> GradWatchConfig().replace(every=100).every
    100
    """

    at_init: bool = True
    after_steps: Tuple[int, ...] = ()
    every: Optional[int] = None
    sample: Union[str, int] = "auto"
    epsilon: Optional[float] = None
    threshold: Optional[float] = None
    seed: Optional[int] = None
    logdir: Optional[str] = None
    enabled: Optional[bool] = None
    dropout_active: Union[None, bool, Callable[[], Any]] = None
    on_dropout: str = "raise"
    on_failure: str = "warn"
    progress: Optional[bool] = None

    def __post_init__(self) -> None:
        for f in fields(self):
            object.__setattr__(self, f.name, VALIDATORS[f.name](getattr(self, f.name)))

    def replace(self, **changes: Any) -> "GradWatchConfig":
        """A copy with ``changes`` applied (validated; an unknown key raises :class:`ConfigError`)."""
        values = self.as_dict()
        values.update(validate_options(changes, source="keyword arguments"))
        return GradWatchConfig(**values)

    def as_dict(self) -> Dict[str, Any]:
        return {f.name: getattr(self, f.name) for f in fields(self)}


KEYS: Tuple[str, ...] = tuple(f.name for f in fields(GradWatchConfig))


def _unknown_key(key: Any, source: str) -> ConfigError:
    hint = ""
    if isinstance(key, str):
        close = difflib.get_close_matches(key, KEYS, n=1, cutoff=0.6)
        if close:
            hint = f"; did you mean {close[0]!r}?"
    return ConfigError(f"{source}: unknown key {key!r}{hint or '.'} Allowed keys: {', '.join(KEYS)}")


def validate_options(options: Mapping[Any, Any], *, source: str = "config") -> Dict[str, Any]:
    """Check every key and value of ``options``; return the normalised values of the keys given.

    Errors name ``source`` (a file name, say), the key and what is allowed.
    """
    out: Dict[str, Any] = {}
    for key, value in options.items():
        if key not in VALIDATORS:
            raise _unknown_key(key, source)
        try:
            out[key] = VALIDATORS[key](value)
        except ConfigError as err:
            raise ConfigError(f"{source}: {err}") from None
    return out


def read_config_file(path: PathLike) -> Dict[str, Any]:
    """The keys a YAML config file sets, validated (only those keys: the rest stay unset).

    A missing or unreadable file, invalid YAML, a top level that is not a mapping, an unknown key,
    a wrong type or a bad value raise :class:`ConfigError` naming the file.
    """
    import yaml  # only when a file is read

    name = os.fspath(path)
    try:
        with open(name, "r", encoding="utf-8") as handle:
            text = handle.read()
    except FileNotFoundError:
        raise ConfigError(f"config file not found: {name}") from None
    except OSError as err:
        raise ConfigError(f"cannot read config file {name}: {err.strerror or err}") from None
    try:
        data = yaml.safe_load(text)
    except yaml.YAMLError as err:
        raise ConfigError(f"{name}: not valid YAML: {err}") from None
    if data is None:
        return {}
    if not isinstance(data, Mapping):
        raise ConfigError(
            f"{name}: a gradwatch config must be a mapping of keys to values; got {type(data).__name__}. "
            f"Allowed keys: {', '.join(KEYS)}"
        )
    return validate_options(data, source=name)


def read_options(path_or_mapping: Union[PathLike, Mapping[str, Any], GradWatchConfig]) -> Dict[str, Any]:
    """The validated keys set by a config file, a mapping or a :class:`GradWatchConfig` (all fields)."""
    if isinstance(path_or_mapping, GradWatchConfig):
        return path_or_mapping.as_dict()
    if isinstance(path_or_mapping, Mapping):
        return validate_options(path_or_mapping, source="config mapping")
    if isinstance(path_or_mapping, (str, os.PathLike)):
        return read_config_file(path_or_mapping)
    raise ConfigError(
        f"a config must be a path to a YAML file or a mapping; got {_got(path_or_mapping)}"
    )


def load_config(path_or_mapping: Union[PathLike, Mapping[str, Any], GradWatchConfig]) -> GradWatchConfig:
    """Load a YAML config file (or a mapping) over the defaults of :class:`GradWatchConfig`.

    Keys are :class:`~gradwatch.GradWatch`'s keyword names; ``after_steps`` may be an int or a
    list; ``epsilon: 1e-7`` (a string to YAML 1.1) is read as the number meant.

    >>> load_config({"after_steps": 1000, "threshold": "1e-7"}).after_steps
    (1000,)
    >>> load_config({"sampel": 10})
    Traceback (most recent call last):
    ...
    gradwatch.errors.ConfigError: config mapping: unknown key 'sampel'; did you mean 'sample'? Allowed keys: at_init, after_steps, every, sample, epsilon, threshold, seed, logdir, enabled, dropout_active, on_dropout, on_failure, progress
    """
    return GradWatchConfig(**read_options(path_or_mapping))


__all__ = [
    "GradWatchConfig",
    "KEYS",
    "ON_DROPOUT",
    "ON_FAILURE",
    "VALIDATORS",
    "load_config",
    "read_config_file",
    "read_options",
    "validate_options",
]
