"""Fault-injection points for the crash harness: inert unless an environment variable names one.

``PIPELINES_FAULT_POINT=after_silver_commit`` makes the process SIGKILL itself (and its
Spark driver JVM) the first time it reaches that point in a batch whose id is at least
``PIPELINES_FAULT_MIN_BATCH`` (default 0): an abrupt crash, as with ``kill -9``.
"""

from __future__ import annotations

import os
import signal
import sys

POINT_ENV = "PIPELINES_FAULT_POINT"
MIN_BATCH_ENV = "PIPELINES_FAULT_MIN_BATCH"

AFTER_BRONZE = "after_bronze_commit"
AFTER_QUARANTINE = "after_quarantine_commit"
AFTER_SILVER = "after_silver_commit"  # before the audit row and before Spark's checkpoint commit
AFTER_AUDIT = "after_audit_commit"  # the batch is in every table, the checkpoint commit not yet written
# While the silver MERGE runs: a timer SIGKILLs the process 50-1500 ms after the MERGE starts,
# i.e. while it writes data files or its _delta_log entry (the middle of a Delta commit).
DURING_SILVER = "during_silver_merge"
POINTS = (AFTER_BRONZE, AFTER_QUARANTINE, DURING_SILVER, AFTER_SILVER, AFTER_AUDIT)


def arm(point: str, batch_id: int, jvm_pid: int | None = None) -> None:
    """Like :func:`inject`, but crash after a random 50-1500 ms, from a timer thread."""
    if os.environ.get(POINT_ENV) != point or batch_id < int(os.environ.get(MIN_BATCH_ENV, "0")):
        return
    import random
    import threading

    timer = threading.Timer(random.uniform(0.05, 1.5), inject, (point, batch_id, jvm_pid))
    timer.daemon = True
    timer.start()


def inject(point: str, batch_id: int, jvm_pid: int | None = None) -> None:
    """Crash here if ``PIPELINES_FAULT_POINT`` names ``point`` (no-op otherwise)."""
    if os.environ.get(POINT_ENV) != point:
        return
    if batch_id < int(os.environ.get(MIN_BATCH_ENV, "0")):
        return
    print(f"[fault] injected crash at {point} in batch {batch_id}", file=sys.stderr, flush=True)
    if jvm_pid:
        os.kill(jvm_pid, signal.SIGKILL)
    os.kill(os.getpid(), signal.SIGKILL)
