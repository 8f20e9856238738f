"""Errors that carry a clear message and the next step to take.

Every error a user can provoke (bad config, missing Java or jars, a port in use, a dead
broker) is a :class:`PipelineError`. The CLI prints ``error: <message>`` and, when there is
one, ``hint: <what to do>``, and exits with status 2: never a bare Java stack trace.
"""

from __future__ import annotations


class PipelineError(Exception):
    """Base class for errors with a human message and an optional hint."""

    def __init__(self, message: str, hint: str | None = None) -> None:
        super().__init__(message)
        self.message = message
        self.hint = hint

    def __str__(self) -> str:
        return self.message if not self.hint else f"{self.message}\nhint: {self.hint}"


class ConfigError(PipelineError):
    """A configuration file or override is invalid; the message names the key and the file."""


class DependencyError(PipelineError):
    """A required external dependency (Java, Maven, jars) is missing or too old."""


class BrokerError(PipelineError):
    """The local Kafka broker could not be started, stopped or reached."""



class CheckpointRewindError(PipelineError):
    """A checkpoint was rewound under the same query id: Delta would skip batches it never saw."""


class ContractChangedError(PipelineError):
    """A batch started under one event contract is re-run under another."""
