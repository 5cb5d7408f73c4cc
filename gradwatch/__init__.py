"""gradwatch: make hand-written backpropagation trustworthy.

The numerics (:mod:`gradwatch.numerics`) and the check (:mod:`gradwatch.check`) are pure; the
callback, the TensorBoard writer, the config loader and the command line sit around them.
"""

from typing import TYPE_CHECKING, Any

from .backward import check_backward
from .check import CheckResult, ParamCheck, check_gradients
from .errors import ConfigError, DropoutActiveError, GradWatchError
from .numerics import numerical_gradient, params_to_vector, relative_difference, vector_to_params

__all__ = [
    "CheckResult",
    "ConfigError",
    "DropoutActiveError",
    "GradWatch",
    "GradWatchConfig",
    "GradWatchError",
    "GradWatchWarning",
    "GradientCheckError",
    "ParamCheck",
    "check_backward",
    "check_gradients",
    "load_config",
    "numerical_gradient",
    "params_to_vector",
    "relative_difference",
    "vector_to_params",
]

__version__ = "0.1.0"


if TYPE_CHECKING:  # type checkers see the real classes; at run time they are imported on first use
    from .callback import GradientCheckError, GradWatch, GradWatchWarning
    from .config import GradWatchConfig, load_config

_LAZY = {
    "GradWatch": "callback",
    "GradientCheckError": "callback",
    "GradWatchWarning": "callback",
    "GradWatchConfig": "config",
    "load_config": "config",
}


def __getattr__(name: str) -> Any:
    # the shell is imported on first use, so that importing the pure core imports nothing else
    if name in _LAZY:
        import importlib

        return getattr(importlib.import_module(f".{_LAZY[name]}", __name__), name)
    raise AttributeError(f"module 'gradwatch' has no attribute {name!r}")
