"""gradwatch: make hand-written backpropagation trustworthy.

The numerics (:mod:`gradwatch.numerics`) and the check (:mod:`gradwatch.check`) are pure; the
callback, the TensorBoard writer, the config loader and the command line sit around them.
"""

from .check import CheckResult, ParamCheck, check_gradients
from .errors import ConfigError, DropoutActiveError, GradWatchError
from .numerics import numerical_gradient, params_to_vector, relative_difference, vector_to_params

__all__ = [
    "CheckResult",
    "ConfigError",
    "DropoutActiveError",
    "GradWatch",
    "GradWatchError",
    "ParamCheck",
    "check_gradients",
    "numerical_gradient",
    "params_to_vector",
    "relative_difference",
    "vector_to_params",
]

__version__ = "0.1.0"


def __getattr__(name: str):
    # the callback is imported on first use, so that the pure core imports nothing else
    if name == "GradWatch":
        from .callback import GradWatch

        return GradWatch
    raise AttributeError(f"module 'gradwatch' has no attribute {name!r}")
