"""Fault-injection points for the crash harness: inert unless an environment variable names one.

``PIPELINES_FAULT_POINT=after_silver_commit`` makes the process SIGKILL itself (and its
Spark driver JVM) the first time it reaches that point in a batch whose id is at least
``PIPELINES_FAULT_MIN_BATCH`` (default 0): an abrupt crash, as with ``kill -9``.
"""

from __future__ import annotations

import os
import signal
from pathlib import Path

POINT_ENV = "PIPELINES_FAULT_POINT"
MIN_BATCH_ENV = "PIPELINES_FAULT_MIN_BATCH"

AFTER_BRONZE = "after_bronze_commit"
AFTER_QUARANTINE = "after_quarantine_commit"
AFTER_SILVER = "after_silver_commit"  # before the audit row and before Spark's checkpoint commit
# After an audit commit: in a stream the audit rows are written in the background, several
# batches at a time, usually after Spark's checkpoint commit of those batches (the next start
# rebuilds rows lost this way from the batches' commits).
AFTER_AUDIT = "after_audit_commit"
# While the silver MERGE runs: a timer SIGKILLs the process 50-500 ms after the MERGE starts
# (a MERGE takes about a second here), i.e. while it reads, writes data files or its _delta_log
# entry: the middle of a Delta commit. The crash line says the table version at the start and
# at the kill, so the harness can count the kills that landed before the commit did.
DURING_SILVER = "during_silver_merge"
POINTS = (AFTER_BRONZE, AFTER_QUARANTINE, DURING_SILVER, AFTER_SILVER, AFTER_AUDIT)
# The gold job's points: 50-500 ms into a gold batch's first table (while it recomputes and
# MERGEs), and after that table's MERGE committed (the other tables and Spark's checkpoint
# commit not done yet).
DURING_GOLD = "during_gold_merge"
AFTER_GOLD = "after_gold_merge"
GOLD_POINTS = (DURING_GOLD, AFTER_GOLD)


def armed(point: str, batch_id: int) -> bool:
    """True when this process should crash at ``point`` in batch ``batch_id``."""
    return os.environ.get(POINT_ENV) == point and batch_id >= int(os.environ.get(MIN_BATCH_ENV, "0"))


def delta_log_version(table: str) -> int:
    """The newest commit version in a local Delta table's ``_delta_log`` (-1: none or not local)."""
    log = Path(table.removeprefix("file:")) / "_delta_log"
    versions = [int(p.stem) for p in log.glob("*.json") if p.stem.isdigit()] if log.is_dir() else []
    return max(versions, default=-1)


def arm(point: str, batch_id: int, jvm_pid: int | None = None, table: str | None = None) -> None:
    """Like :func:`inject`, but crash after a random 50-500 ms, from a timer thread.

    With ``table``, the crash line records that table's version when armed and at the kill.
    """
    if not armed(point, batch_id):
        return
    import random
    import threading

    before = delta_log_version(table) if table else None

    def fire() -> None:
        detail = (f" (table version at start {before}, at kill {delta_log_version(table)})"
                  if table is not None else "")
        inject(point, batch_id, jvm_pid, detail)

    timer = threading.Timer(random.uniform(0.05, 0.5), fire)
    timer.daemon = True
    timer.start()


def inject(point: str, batch_id: int, jvm_pid: int | None = None, detail: str = "") -> None:
    """Crash here if ``PIPELINES_FAULT_POINT`` names ``point`` (no-op otherwise)."""
    if not armed(point, batch_id):
        return
    # Straight to stderr, whatever the log level or format: the chaos harness parses this line.
    os.write(2, f"[fault] injected crash at {point} in batch {batch_id}{detail}\n".encode())
    if jvm_pid:
        os.kill(jvm_pid, signal.SIGKILL)
    os.kill(os.getpid(), signal.SIGKILL)
