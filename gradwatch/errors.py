"""The exceptions gradwatch raises. ``GradWatchError`` is the base of all of them."""

from __future__ import annotations


class GradWatchError(Exception):
    """Base class of every error gradwatch raises on purpose."""


class DropoutActiveError(GradWatchError):
    """A gradient check was refused: dropout (or other randomness) is active in the loss."""


class ConfigError(GradWatchError, ValueError):
    """A configuration (file, mapping or keyword) holds an unknown key, a wrong type or a bad value."""
