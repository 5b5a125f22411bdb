"""Errors raised for bad input. Each message names the fix: the valid values, the command to run,
or the file at fault."""

from __future__ import annotations

from typing import Iterable


class WsssError(Exception):
    """Base class of every error wsss_edu raises on purpose."""


class ParameterError(WsssError, ValueError):
    """A parameter has a value outside its valid set."""


class DatasetNotFoundError(WsssError, FileNotFoundError):
    """A dataset folder is missing; the message names the command that fetches it."""


class DataFileError(WsssError, ValueError):
    """A file of a dataset cannot be used (unreadable, wrong size, wrong format); names the file."""


class DownloadError(WsssError, RuntimeError):
    """A download failed on every mirror, or its checksum did not match."""


class ShardIncomplete(WsssError, RuntimeError):
    """This machine wrote its shard of a per-image pass, but other shards' files are still
    missing; the message says how many and how to go on."""


def check_choice(name: str, value, valid: Iterable) -> None:
    """Raise :class:`ParameterError` listing ``valid`` unless ``value`` is one of them."""
    valid = list(valid)
    if value not in valid:
        shown = ", ".join(repr(v) for v in valid)
        raise ParameterError(f"{name}={value!r} is not valid; choose one of: {shown}")


class RunInProgress(WsssError, RuntimeError):
    """Another live process runs the same computation (it holds its lock); the message names that
    process and the lock file."""
