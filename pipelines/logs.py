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


def setup(level: str = "INFO", json_lines: bool = False, stream: TextIO | None = None) -> None:
    """(Re)configure the ``pipelines`` loggers: one handler on ``stream`` (default stderr), ``level``.

    Args:
        level: DEBUG, INFO, WARNING or ERROR.
        json_lines: one JSON object per record (time, level, logger, message) instead of the bare message.
        stream: where to write (default: ``sys.stderr`` at the time of each call).

    """
    root = logging.getLogger(ROOT)
    for h in [h for h in root.handlers if h.get_name() == _HANDLER_NAME]:
        root.removeHandler(h)
    handler: logging.Handler = logging.StreamHandler(stream) if stream is not None else _Stderr()
    handler.set_name(_HANDLER_NAME)
    if json_lines:
        from pythonjsonlogger.json import JsonFormatter

        handler.setFormatter(JsonFormatter("%(asctime)s %(levelname)s %(name)s %(message)s",
                                           rename_fields={"asctime": "time", "levelname": "level", "name": "logger"}))
    else:
        handler.setFormatter(logging.Formatter("%(message)s"))
    root.addHandler(handler)
    root.setLevel(level.upper())
    root.propagate = False


def ensure() -> None:
    """:func:`setup` with the defaults, unless logging was configured (ours, or the application's root logger)."""
    if not logging.getLogger(ROOT).handlers and not logging.getLogger().handlers:
        setup()
