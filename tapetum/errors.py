"""Typed errors. Each carries a message a user can act on; the CLI prints it as one line."""

from __future__ import annotations


class TapetumError(Exception):
    """Base class for every error Tapetum raises on purpose."""


class SourceError(TapetumError):
    """A source cannot be opened or read (missing file, unreachable stream, no video track)."""


class ModelLoadError(TapetumError):
    """A model file is missing, unreadable, or not of a layout the adapter understands."""


class ConfigError(TapetumError):
    """A configuration value is invalid (bad threshold, unknown option, wrong input size)."""


class DatasetError(TapetumError):
    """A labelled data set cannot be read: missing folder or file, malformed annotation JSON or
    label line (the message names the file and line), classes that do not match the model."""


class SinkError(TapetumError):
    """A sink cannot be opened or written (unwritable path, unsupported codec)."""


class MissingDependencyError(TapetumError):
    """An optional dependency is not installed; the message names the extra to install."""
