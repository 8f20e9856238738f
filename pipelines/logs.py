"""Logging: one configuration point for the package's messages (``pipelines.*`` loggers).

Jobs and tools log their progress lines (``[ingest] batch 3: ...``) at INFO and their troubles
at WARNING/ERROR on ``pipelines.<job>`` loggers; the command line's final output (tables, JSON
summaries) is printed to stdout. :func:`setup` sends the ``pipelines`` loggers to stderr, as
plain lines (the default) or as JSON objects for log shippers (``--log-json``), at a level
(``--log-level``). Spark's own JVM logging is configured by ``spark.log4j_file``.

A notebook that never calls :func:`setup` gets it on the first :func:`pipelines.session.build_session`
(plain lines, INFO), unless it configured logging itself.
"""

from __future__ import annotations

import logging
import os
import sys
from typing import TextIO

ROOT = "pipelines"
LEVELS = ("DEBUG", "INFO", "WARNING", "ERROR")
_HANDLER_NAME = "pipelines-stderr"


class _Stderr(logging.StreamHandler):
    """A handler on whatever ``sys.stderr`` is when a record is written (test runners swap it)."""

    def __init__(self) -> None:
        super().__init__(sys.stderr)

    @property
    def stream(self) -> TextIO:
        return sys.stderr

    @stream.setter
    def stream(self, _value: TextIO) -> None:
        pass


def get(name: str) -> logging.Logger:
    """The logger ``pipelines.<name>``."""
    return logging.getLogger(f"{ROOT}.{name}")


LEVEL_ENV, JSON_ENV = "PIPELINES_LOG_LEVEL", "PIPELINES_LOG_JSON"


def env_level() -> str:
    """``$PIPELINES_LOG_LEVEL`` if it names a level, else INFO."""
    level = os.environ.get(LEVEL_ENV, "INFO").upper()
    return level if level in LEVELS else "INFO"


def setup(level: str | None = None, json_lines: bool | None = None, stream: TextIO | None = None) -> None:
    """(Re)configure the ``pipelines`` loggers: one handler on ``stream`` (default stderr), ``level``.

    Args:
        level: DEBUG, INFO, WARNING or ERROR (default: ``$PIPELINES_LOG_LEVEL``, else INFO).
        json_lines: one JSON object per record (time in ISO 8601 UTC, level, logger, message)
            instead of the bare message (default: ``$PIPELINES_LOG_JSON`` is ``1``).
        stream: where to write (default: ``sys.stderr`` at the time of each call).

    """
    level = (level or env_level()).upper()
    if level not in LEVELS:
        raise ValueError(f"log level must be one of {', '.join(LEVELS)}, got {level!r}")
    if json_lines is None:
        json_lines = os.environ.get(JSON_ENV) == "1"
    root = logging.getLogger(ROOT)
    for h in [h for h in root.handlers if h.get_name() == _HANDLER_NAME]:
        root.removeHandler(h)
    handler: logging.Handler = logging.StreamHandler(stream) if stream is not None else _Stderr()
    handler.set_name(_HANDLER_NAME)
    if json_lines:
        from pythonjsonlogger.json import JsonFormatter

        handler.setFormatter(JsonFormatter("%(levelname)s %(name)s %(message)s", timestamp="time",
                                           rename_fields={"levelname": "level", "name": "logger"}))
    else:
        handler.setFormatter(logging.Formatter("%(message)s"))
    root.addHandler(handler)
    root.setLevel(level)
    root.propagate = False


def ensure() -> None:
    """:func:`setup` with the environment's defaults, unless logging is configured (ours, or the root's)."""
    if not logging.getLogger(ROOT).handlers and not logging.getLogger().handlers:
        setup()
