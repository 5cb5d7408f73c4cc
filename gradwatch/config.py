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
import reprlib
from dataclasses import dataclass, fields
from typing import Any, Callable, Dict, List, Mapping, Optional, Tuple, Union

import numpy as np

from .inputs import normalise_sample
from .errors import ConfigError

PathLike = Union[str, "os.PathLike[str]"]

#: Values of ``on_dropout``: what a due check does when dropout (or other randomness) is active.
ON_DROPOUT = ("raise", "skip")
#: Values of ``on_failure``: what a check that finds a wrong gradient does besides returning it.
ON_FAILURE = ("warn", "raise", "ignore")


#: The largest config file read, in bytes (a config is a handful of lines).
MAX_CONFIG_BYTES = 1 << 20
#: The most YAML nodes a config may hold once its aliases are expanded.
MAX_CONFIG_NODES = 10_000

_SHORT = reprlib.Repr()
_SHORT.maxlevel, _SHORT.maxlist, _SHORT.maxtuple, _SHORT.maxdict = 3, 6, 6, 6
_SHORT.maxset, _SHORT.maxfrozenset, _SHORT.maxstring, _SHORT.maxother, _SHORT.maxlong = 6, 6, 60, 60, 40


def _got(value: Any) -> str:
    """How a received value is shown in an error: a cut repr (never built whole), and its type."""
    shown = _SHORT.repr(value)
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
        if isinstance(path, str) and path.strip() and "\x00" not in path:  # no path holds a NUL
            return path
    raise ConfigError(f"logdir must be None (null) or a directory path; got {_got(value)}")


def _dropout_active(value: Any) -> Union[None, bool, Callable[[], Any]]:
    if value is None:
        return None
    if _is_bool(value):
        return bool(value)
    if callable(value):
        flag: Callable[[], Any] = value
        return flag
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


class _DuplicateKey(Exception):
    def __init__(self, key: Any, first: int, second: int) -> None:
        super().__init__(key)
        self.key, self.first, self.second = key, first, second


class _TooBig(Exception):
    pass


def _loader(text: str) -> Any:
    """A ``yaml.SafeLoader`` that refuses duplicate keys and configs whose aliases expand too far."""
    import yaml

    class Loader(yaml.SafeLoader):
        def construct_mapping(self, node: Any, deep: bool = False) -> Any:
            seen: Dict[Any, int] = {}
            for key_node, _ in node.value:
                if key_node.tag == "tag:yaml.org,2002:merge" or not isinstance(key_node, yaml.ScalarNode):
                    continue
                key = self.construct_object(key_node, deep=False)
                line = key_node.start_mark.line + 1
                if key in seen:
                    raise _DuplicateKey(key, seen[key], line)
                seen[key] = line
            return super().construct_mapping(node, deep=deep)

        def get_single_node(self) -> Any:
            node = super().get_single_node()
            if node is not None:
                _count_nodes(node, {})
            return node

    return Loader(text)


def _count_nodes(node: Any, sizes: Dict[int, int]) -> int:
    """Nodes under ``node`` with every alias expanded; raises _TooBig past MAX_CONFIG_NODES (shared
    nodes are counted once per use but walked once, so a billion laughs costs microseconds)."""
    known = sizes.get(id(node))
    if known is None:
        children: List[Any] = []
        if isinstance(node.value, list):
            for item in node.value:
                children.extend(item if isinstance(item, tuple) else (item,))
        sizes[id(node)] = -1  # a node that holds itself: counted as one
        known = 1 + sum(max(_count_nodes(child, sizes), 1) for child in children)
        if known > MAX_CONFIG_NODES:
            raise _TooBig()
        sizes[id(node)] = known
    return known


def _read_text(name: str) -> str:
    try:
        with open(name, "rb") as handle:
            data = handle.read(MAX_CONFIG_BYTES + 1)
    except FileNotFoundError:
        raise ConfigError(f"config file not found: {name}") from None
    except OSError as err:
        raise ConfigError(f"cannot read config file {name}: {err.strerror or err}") from None
    if len(data) > MAX_CONFIG_BYTES:
        raise ConfigError(f"{name}: a config file is at most {MAX_CONFIG_BYTES} bytes; this one is larger")
    try:
        return data.decode("utf-8")
    except UnicodeDecodeError as err:
        raise ConfigError(
            f"{name}: not UTF-8 text (byte 0x{data[err.start]:02x} at offset {err.start}); save the config as UTF-8"
        ) from None


def read_config_file(path: PathLike) -> Dict[str, Any]:
    """The keys a YAML config file sets, validated (only those keys: the rest stay unset).

    A missing, unreadable, oversized or non-UTF-8 file, invalid YAML, a duplicate key, aliases that
    expand past :data:`MAX_CONFIG_NODES` nodes, a top level that is not a mapping, an unknown key, a
    wrong type or a bad value raise :class:`ConfigError` naming the file.
    """
    import yaml  # only when a file is read

    name = os.fspath(path)
    text = _read_text(name)
    loader = _loader(text)
    try:
        data = loader.get_single_data()
    except _DuplicateKey as dup:
        raise ConfigError(f"{name}: key {_SHORT.repr(dup.key)} is given twice (lines {dup.first} and {dup.second}); "
                          "keep one") from None
    except _TooBig:
        raise ConfigError(f"{name}: its YAML aliases expand to more than {MAX_CONFIG_NODES} values; "
                          "a gradwatch config needs none") from None
    except RecursionError:
        raise ConfigError(f"{name}: its YAML is nested too deeply to be a gradwatch config") from None
    except yaml.YAMLError as err:
        raise ConfigError(f"{name}: not valid YAML: {err}") from None
    finally:
        loader.dispose()
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
    gradwatch.errors.ConfigError: config mapping: unknown key 'sampel'; did you mean 'sample'? Allowed keys: ...
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
