"""Shared helpers of the benchmark: machine facts, CPU accounting, preloading, fit, statistics, workers.

Nothing here imports Spark at module level: the orchestrator (``python -m bench``) never starts
a JVM itself; every Spark pipeline runs in its own worker subprocess (:func:`run_isolated`).
"""

from __future__ import annotations

import datetime as dt
import json
import os
import platform
import resource
import signal
import statistics
import subprocess
import sys
import time
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from pyspark.sql import SparkSession

REPO = Path(__file__).resolve().parents[1]
RESULT_TAG = "BENCH-RESULT "
WORKER_TIMEOUT_S = 30 * 60.0
IDLE_S = 30.0  # consume_all: stop after this long without a record


class BenchError(Exception):
    """A benchmark step failed; the message says which and where its log is."""


# ---- machine and code ----------------------------------------------------------------------------------
def git_commit(path: Path | str, *, mark_dirty: bool = True) -> str:
    """``git rev-parse --short HEAD`` of the checkout at ``path`` (``+dirty`` if tracked files changed)."""
    commit = subprocess.run(["git", "rev-parse", "--short", "HEAD"], capture_output=True, text=True,
                            cwd=path, timeout=30).stdout.strip() or "unknown"
    if not mark_dirty:
        return commit
    dirty = subprocess.run(["git", "status", "--porcelain", "--untracked-files=no"], capture_output=True,
                           text=True, cwd=path, timeout=30).stdout.strip()
    return commit + ("+dirty" if dirty else "")


def machine() -> dict[str, Any]:
    """CPU, cores, memory, Java, Python, date and the commit of this checkout."""
    cpuinfo = Path("/proc/cpuinfo")
    lines = cpuinfo.read_text().splitlines() if cpuinfo.exists() else []
    cpu = next((ln.split(":", 1)[1].strip() for ln in lines if ln.startswith("model name")), platform.processor())
    meminfo = Path("/proc/meminfo")
    mem_kb = int(next((ln.split()[1] for ln in meminfo.read_text().splitlines() if ln.startswith("MemTotal")),
                      "0")) if meminfo.exists() else 0
    try:
        java = subprocess.run(["java", "-version"], capture_output=True, text=True,
                              timeout=60).stderr.splitlines()[0]
    except (OSError, IndexError, subprocess.TimeoutExpired):
        java = "unknown"
    return {"date": dt.datetime.now(dt.UTC).strftime("%Y-%m-%d %H:%M UTC"), "cpu": cpu, "cores": os.cpu_count(),
            "memory_gib": round(mem_kb / 2**20, 1), "java": java, "python": platform.python_version(),
            "commit": git_commit(REPO)}


# ---- CPU accounting ------------------------------------------------------------------------------------
def process_cpu_s(pid: int) -> float:
    """User + system CPU seconds of process ``pid`` (all its threads), from ``/proc/<pid>/stat``."""
    fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


class Cpu:
    """CPU seconds of this Python process plus, if given, the Spark driver JVM (local mode: all executors).

    Args:
        jvm_pid: The JVM's process id (see :func:`jvm_pid`), or None for a Python-only pipeline.

    """

    def __init__(self, jvm_pid: int | None = None) -> None:
        self.jvm_pid = jvm_pid
        self.start = self.now()

    def now(self) -> float:
        """CPU seconds used so far by the accounted processes."""
        ru = resource.getrusage(resource.RUSAGE_SELF)
        total = ru.ru_utime + ru.ru_stime
        if self.jvm_pid:
            total += process_cpu_s(self.jvm_pid)
        return total

    def used(self) -> float:
        """CPU seconds since this object was made."""
        return self.now() - self.start


def jvm_pid(spark: SparkSession) -> int:
    """The process id of the session's JVM."""
    return int(spark.sparkContext._jvm.java.lang.ProcessHandle.current().pid())  # type: ignore[union-attr]


# ---- Kafka ---------------------------------------------------------------------------------------------
def preload(bootstrap: str, topic: str, n: int, seed: int = 1) -> dict[str, Any]:
    """Send ``n`` records to ``topic`` (3 partitions, 5 % duplicates, 1 % malformed); the producer's stats."""
    from pipelines.tools.producer import produce

    stats = produce(bootstrap, topic, n, partitions=3, seed=seed, duplicate_fraction=0.05,
                    malformed_fraction=0.01, id_prefix=f"{topic}-{seed}", progress=False)
    return stats.as_dict()


def consume_all(bootstrap: str, topic: str, *, parse: bool, deadline_s: float = 600.0) -> dict[str, Any]:
    """Read ``topic`` from the beginning to its current end with confluent-kafka.

    Args:
        bootstrap: Kafka bootstrap servers.
        topic: The topic to read.
        parse: ``json.loads`` every value (the raw consumer's "decode" work).
        deadline_s: Give up after this many seconds (the count then falls short); also after
            ``IDLE_S`` seconds without a record.

    Returns:
        ``records``, ``bytes`` (value bytes), ``seconds``, ``cpu_s`` (this process) and
        ``complete`` (every partition was read to its high watermark).

    """
    from confluent_kafka import OFFSET_BEGINNING, Consumer, TopicPartition

    c = Consumer({"bootstrap.servers": bootstrap, "group.id": f"bench-raw-{os.getpid()}-{time.time()}",
                  "enable.auto.commit": False, "auto.offset.reset": "earliest"})
    try:
        parts = list(c.list_topics(topic, timeout=10).topics[topic].partitions)
        high = {p: c.get_watermark_offsets(TopicPartition(topic, p), timeout=10)[1] for p in parts}
        todo = {p for p in parts if high[p] > 0}
        c.assign([TopicPartition(topic, p, OFFSET_BEGINNING) for p in parts])
        cpu = Cpu()
        t0 = time.monotonic()
        deadline = t0 + deadline_s
        got = size = 0
        last_data = t0
        while todo and time.monotonic() < deadline and time.monotonic() - last_data < IDLE_S:
            msgs = c.consume(10_000, timeout=1.0)
            if msgs:
                last_data = time.monotonic()
            for m in msgs:
                if m.error():
                    continue
                got += 1
                v = m.value()
                if v:
                    size += len(v)
                    if parse:
                        try:
                            json.loads(v)
                        except ValueError:
                            pass
                offset, part = m.offset(), m.partition()
                if offset is not None and part is not None and offset + 1 >= high[part]:
                    todo.discard(part)
        return {"records": got, "bytes": size, "seconds": time.monotonic() - t0, "cpu_s": cpu.used(),
                "complete": not todo}
    finally:
        c.close()


# ---- statistics ----------------------------------------------------------------------------------------
def fit(points: Sequence[tuple[float, float]]) -> tuple[float, float]:
    """Least squares ``t = a + b * rows`` (``numpy.polyfit``, degree 1); returns ``(a, b)``.

    With fewer than two distinct ``rows`` values there is no slope: ``(mean t, 0.0)``.
    """
    import numpy as np

    if not points:
        return 0.0, 0.0
    x = np.array([p[0] for p in points], dtype=float)
    y = np.array([p[1] for p in points], dtype=float)
    if len(np.unique(x)) < 2:
        return float(y.mean()), 0.0
    b, a = np.polyfit(x, y, 1)
    return float(a), float(b)


def spread(values: Sequence[float]) -> dict[str, float]:
    """``median``, ``min`` and ``max`` of ``values`` (zeros when empty)."""
    if not values:
        return {"median": 0.0, "min": 0.0, "max": 0.0}
    return {"median": float(statistics.median(values)), "min": float(min(values)), "max": float(max(values))}


def median(values: Sequence[float]) -> float:
    """The median of ``values`` (0.0 when empty)."""
    return float(statistics.median(values)) if values else 0.0


def rotate(items: Sequence[str], k: int) -> list[str]:
    """``items`` rotated left by ``k``: repeat ``k`` starts with a different pipeline."""
    if not items:
        return []
    k %= len(items)
    return [*items[k:], *items[:k]]


# ---- isolated workers ----------------------------------------------------------------------------------
@dataclass(frozen=True)
class CodeUnderTest:
    """Which ``pipelines`` package a worker imports.

    Attributes:
        label: ``after`` (this checkout) or ``before``.
        src: The checkout whose ``pipelines`` is imported (this repo for ``after``).
        commit: Its ``git rev-parse --short HEAD``.

    """

    label: str
    src: Path
    commit: str

    @property
    def is_current(self) -> bool:
        """True for this checkout's code."""
        return self.src.resolve() == REPO


def current_code() -> CodeUnderTest:
    """This checkout's ``pipelines``."""
    return CodeUnderTest("after", REPO, git_commit(REPO))


def before_code(src: Path | str) -> CodeUnderTest:
    """An older checkout (e.g. ``git worktree add /tmp/before HEAD~1``) whose ``pipelines`` a worker imports."""
    path = Path(src).resolve()
    if not (path / "pipelines" / "__init__.py").is_file():
        raise BenchError(f"--before-src {path}: no pipelines/__init__.py there (expected a checkout of this repo)")
    if not (path / "conf" / "local.yaml").is_file():
        raise BenchError(f"--before-src {path}: no conf/local.yaml there (expected a checkout of this repo)")
    return CodeUnderTest("before", path, git_commit(path, mark_dirty=True))


def worker_launch(code: CodeUnderTest, work: Path) -> tuple[dict[str, str], Path]:
    """Environment and working directory for a worker that must import ``code``'s ``pipelines``.

    This checkout's code: run from the repo root (``python -m`` puts the working directory first
    on ``sys.path``; the editable install points at the same folder). Another checkout: run from
    the worker's own folder (not the repo root, which would win over ``PYTHONPATH``) with
    ``PYTHONPATH=<shim>:<src>``, where ``<shim>`` holds only a link ``bench`` -> this checkout's
    ``bench``: ``pipelines`` then comes from ``<src>`` (``PYTHONPATH`` is searched before
    site-packages, and the editable install's finder is appended *after* the path finder), and
    ``bench`` from here even when ``<src>`` has a ``bench`` package of its own.
    """
    env = dict(os.environ)
    if code.is_current:
        env.pop("PYTHONPATH", None)
        return env, REPO
    shim = work / "_pythonpath"
    shim.mkdir(parents=True, exist_ok=True)
    link = shim / "bench"
    if not link.exists():
        link.symlink_to(REPO / "bench", target_is_directory=True)
    env["PYTHONPATH"] = os.pathsep.join([str(shim), str(code.src)])
    return env, work


def run_isolated(pipeline: str, *, work: Path, code: CodeUnderTest | None = None, label: str | None = None,
                 args: Mapping[str, object] | None = None, timeout_s: float = WORKER_TIMEOUT_S) -> dict[str, Any]:
    """Run one pipeline in a fresh ``python -m bench.worker`` process (its own JVM) and return its result.

    Args:
        pipeline: The worker's ``--pipeline``.
        work: The worker's own folder (tables, checkpoint, log); created if needed.
        code: Which ``pipelines`` to import (default: this checkout's).
        label: For messages and the log file name (default: ``pipeline``).
        args: More worker options, ``{"max-offsets": 1000, ...}`` (None values are left out).
        timeout_s: Kill the worker (its whole process group) after this long.

    Returns:
        The JSON the worker printed after ``BENCH-RESULT``.

    Raises:
        BenchError: The worker failed, timed out or printed no result (with the tail of its log).

    """
    code = code or current_code()
    label = label or pipeline
    work = work.resolve()
    work.mkdir(parents=True, exist_ok=True)
    cmd = [sys.executable, "-m", "bench.worker", "--pipeline", pipeline, "--work", str(work)]
    for key, value in (args or {}).items():
        if value is not None:
            cmd += [f"--{key}", str(value)]
    env, cwd = worker_launch(code, work)
    log = work.parent / f"{work.name}.log"
    with open(log, "w") as err:
        proc = subprocess.Popen(cmd, cwd=cwd, env=env, stdout=subprocess.PIPE, stderr=err, text=True,
                                start_new_session=True)
        try:
            out, _ = proc.communicate(timeout=timeout_s)
        except subprocess.TimeoutExpired:
            _kill_group(proc)
            raise BenchError(f"worker {label} did not finish within {timeout_s:.0f}s; last lines of its stderr:\n"
                             f"{tail(log)}\n(log: {log})") from None
        except BaseException:
            _kill_group(proc)
            raise
    lines = [ln for ln in out.splitlines() if ln.startswith(RESULT_TAG)]
    if proc.returncode != 0 or len(lines) != 1:
        why = f"exit status {proc.returncode}" if proc.returncode else f"{len(lines)} result lines"
        raise BenchError(f"worker {label} failed ({why}); last lines of its stderr:\n{tail(log)}\n(log: {log})")
    result: dict[str, Any] = json.loads(lines[0][len(RESULT_TAG):])
    where = Path(result.get("pipelines_file", "/")).resolve()
    if code.src.resolve() not in where.parents:
        raise BenchError(f"worker {label} imported pipelines from {where}, not from {code.src}")
    result["code"] = {"label": code.label, "commit": code.commit, "src": str(code.src)}
    return result


@dataclass(frozen=True)
class Settings:
    """What one benchmark run measures, shared by the sections.

    Attributes:
        quick: Tiny sizes (checks the harness, not the numbers).
        work: Scratch folder (worker folders, logs, broker data).
        bootstrap: The benchmark broker's bootstrap servers (None for MERGE-only runs).
        records: Records preloaded into the drain topic.
        repeats: Drain repeats (the order is rotated each repeat).
        max_offsets: maxOffsetsPerTrigger of the drain (and the ceiling's chunk size).
        sweep: maxOffsetsPerTrigger settings of the batch-cost sweep.
        trigger: Processing-time trigger of the freshness runs.
        fresh_seconds: How long each freshness run produces (measured).
        fresh_warmup_s: How long it produces first, at the same rate, unmeasured (JVM warm-up).
        fresh_loads: Fractions of our median drain rate the freshness runs produce at.
        fresh_rate: Our max rate, if given (used when the drain section does not run).
        merge_sizes: Silver table sizes of the MERGE section.
        merge_batch_rows: Rows of the MERGE section's batch.
        after: This checkout's code.
        before: An older checkout's code (``--before-src``), if any.
        timeout_s: Timeout of each worker process.
        pipelines: The drain pipelines to run (empty: all).

    """

    quick: bool
    work: Path
    bootstrap: str | None
    records: int
    repeats: int
    max_offsets: int
    sweep: tuple[int, ...]
    trigger: str
    fresh_seconds: float
    fresh_warmup_s: float
    fresh_loads: tuple[float, ...]
    fresh_rate: float | None
    merge_sizes: tuple[int, ...]
    merge_batch_rows: int
    after: CodeUnderTest
    before: CodeUnderTest | None = None
    timeout_s: float = WORKER_TIMEOUT_S
    pipelines: tuple[str, ...] = ()


def _kill_group(proc: subprocess.Popen[str]) -> None:
    """Kill the worker we started and its children (its own process group, by id)."""
    try:
        os.killpg(proc.pid, signal.SIGKILL)
    except ProcessLookupError:
        pass
    proc.wait(timeout=60)


def tail(path: Path, lines: int = 40) -> str:
    """The last ``lines`` lines of a text file (empty if unreadable)."""
    try:
        return "\n".join(path.read_text(errors="replace").splitlines()[-lines:])
    except OSError:
        return ""


def log(message: str) -> None:
    """One progress line of the orchestrator."""
    print(f"[bench] {message}", flush=True)
