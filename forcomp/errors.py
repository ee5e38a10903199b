"""Exceptions that carry a user-facing message (the CLI prints them without a traceback)."""

from __future__ import annotations


class ForcompError(Exception):
    """Base class for errors a user can fix (bad arguments, missing weights, bad cache)."""


class WeightsNotFoundError(ForcompError, FileNotFoundError):
    """A backend needs a checkpoint that is not in the weights directory."""


class CacheFormatError(ForcompError, ValueError):
    """A cache on disk does not follow the format (missing files, wrong sizes, bad index)."""


class UnsafePathError(ForcompError, ValueError):
    """A class name, stem or archive member would escape its directory."""


class ImageDecodeError(ForcompError, ValueError):
    """An input image could not be decoded; the message names the file and the reason."""
