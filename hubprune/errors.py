"""Errors a user can act on. Each says what went wrong and what to do, in one line.

The CLI prints `hubprune: error: <message>` and exits with code 2 for every `HubPruneError`;
anything else is a bug and keeps its traceback.
"""
from __future__ import annotations


class HubPruneError(Exception):
    """Base class: bad input or an environment problem the user can fix."""


class InvalidOptionError(HubPruneError, ValueError):
    """An option has a value outside what it accepts."""


class UnknownMethodError(HubPruneError, KeyError):
    """`--method` names no registered pruning method."""

    def __str__(self) -> str:  # KeyError would quote the message
        return self.args[0]


class PlanError(HubPruneError, ValueError):
    """A pruning plan is malformed or does not fit the model."""


class UnsupportedArchitectureError(HubPruneError):
    """The model's family has no hubprune adapter."""


class ModelNotFoundError(HubPruneError):
    """No such repo, revision or local path."""


class RemoteCodeError(HubPruneError):
    """The model ships its own Python code and `--trust-remote-code` was not given."""


class DamagedModelError(HubPruneError):
    """A model file is truncated or corrupt (an interrupted download or copy)."""


class GatedRepoAccessError(HubPruneError):
    """The repo is gated and the token has not been granted access."""


class AuthenticationError(HubPruneError):
    """The repo needs a token and none (or an invalid one) was given."""


class OfflineError(HubPruneError):
    """The Hub cannot be reached and the model or data set is not cached."""


class InsufficientResourcesError(HubPruneError):
    """Not enough disk, RAM or GPU memory for the job (checked before starting, or hit while writing)."""


class OutputExistsError(HubPruneError):
    """The output folder exists and `--overwrite` was not given."""


class OutputNotWritableError(HubPruneError):
    """The output location cannot be written (a file in the path, a read-only disk, no permission)."""


class OutputBusyError(HubPruneError):
    """Another hubprune run is writing the same output (it holds the output's lock)."""


class DatasetUnavailableError(HubPruneError):
    """A text corpus cannot be loaded, or is too short for the requested windows."""


class MissingAssetError(HubPruneError):
    """An embedded asset (default model or corpus) is not installed."""


class ExportError(HubPruneError):
    """This pruned model cannot be written in the format asked for (the text names the formats that can
    carry it)."""
