"""The pipeline on a real Spark standalone cluster: a worker and then the driver killed mid-stream.

``python -m pipelines cluster-demo`` (``make cluster-demo``; the cluster test runs the same):

1. a Kafka broker and a standalone cluster (a master, two workers of one core each) on loopback,
   free ports; tables and checkpoints in one folder every process shares;
2. a producer sends ``--events`` records (duplicates and malformed ones included) over about
   ``--seconds`` seconds, writing its ledger;
3. the ingest job is submitted with ``spark-submit --master spark://127.0.0.1:PORT``, the package
   shipped with ``--py-files`` and the jars with ``--jars`` (the command is printed);
4. after a few batches one worker is SIGKILLed with its executor (a lost machine): the job must
   go on with the other worker's executor; after more batches the driver is SIGKILLed too;
5. once the producer is done the ingest job is submitted again from the same checkpoint
   (``--available-now``, at most 100,000 records per batch), then the gold job (``--available-now``);
6. ``verify --ledger`` checks bronze, quarantine, silver, the audit rows and gold against the
   topic and the producer's ledger.
"""

from __future__ import annotations

import json
import re
import shlex
import subprocess
import sys
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from pipelines import logs, paths
from pipelines.config import Config
from pipelines.errors import PipelineError
from pipelines.local.cluster import LocalSparkCluster, die_with_parent, kill_group, package_zip, spark_env
from pipelines.session import submit_command

_log = logs.get("cluster")

_BATCH = re.compile(r"^\[ingest\] batch (\d+):", re.M)

#: Executor settings for the demo's one-core workers (the driver runs locally, in client mode).
EXECUTOR_CONF = {"spark.executor.cores": "1", "spark.executor.memory": "768m", "spark.cores.max": "2"}


@dataclass
class ClusterReport:
    """What the run did and found."""

    master: str = ""
    events: int = 0
    batches_before_worker_kill: int = 0
    batches_after_worker_kill: int = 0
    executors_before_kill: int = 0
    alive_workers_after_kill: int = 0
    driver_killed_after_batches: int = 0
    catch_up_rc: int | None = None
    gold_rc: int | None = None
    verify: dict[str, Any] = field(default_factory=dict)
    command: str = ""
    #: Why the run stopped early (None: it ran to the end).
    error: str | None = None
    seconds: float = 0.0

    @property
    def ok(self) -> bool:
        """Exactly once after both kills, and the job kept going on one worker."""
        return (self.error is None and bool(self.verify.get("ok")) and self.catch_up_rc == 0 and self.gold_rc == 0
                and self.batches_after_worker_kill >= 2 and self.alive_workers_after_kill >= 1)

    def table(self) -> str:
        """The report as aligned lines."""
        totals = self.verify.get("totals", {})
        failed = [c["name"] for c in self.verify.get("checks", []) if not c.get("ok", True)]
        rows = [("master", self.master), ("events produced", self.events),
                ("executors before the worker kill", self.executors_before_kill),
                ("batches before the worker kill", self.batches_before_worker_kill),
                ("batches on the remaining worker", self.batches_after_worker_kill),
                ("workers alive after the kill", self.alive_workers_after_kill),
                ("driver SIGKILLed after batch", self.driver_killed_after_batches),
                ("catch-up run exit code", self.catch_up_rc), ("gold run exit code", self.gold_rc),
                ("silver rows", totals.get("silver_rows")), ("bronze rows", totals.get("bronze_rows")),
                *((f"failed check: {n}", "FAILED") for n in failed),
                *((("error", self.error),) if self.error else ()),
                ("verify", "OK" if self.verify.get("ok") else "FAILED"),
                ("seconds", f"{self.seconds:.0f}"), ("result", "PASS" if self.ok else "FAIL")]
        width = max(len(k) for k, _ in rows)
        return "\n".join(f"{k.ljust(width)}  {v}" for k, v in rows)


def _batches(log: Path) -> list[int]:
    return [int(m) for m in _BATCH.findall(log.read_text(errors="replace"))] if log.exists() else []


def _wait_for(cond: Callable[[], bool], timeout_s: float, proc: subprocess.Popen | None = None) -> bool:
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        if cond():
            return True
        if proc is not None and proc.poll() is not None:
            return cond()
        time.sleep(0.5)
    return False


def run_cluster_demo(cfg: Config, conf_file: str, bootstrap: str, work_dir: Path, *, events: int = 20_000,
                     seconds: float = 60.0, seed: int = 5, timeout_s: float = 1200.0,
                     out: Callable[[str], None] = _log.info) -> ClusterReport:
    """See the module docstring. ``cfg`` points at the broker ``bootstrap`` and its own data dir.

    Every wait shares one deadline, ``timeout_s`` from the start (the verify step after it has its own).
    """
    from pipelines.tools.producer import produce

    t0 = time.monotonic()

    def left() -> float:
        return max(1.0, t0 + timeout_s - time.monotonic())

    report = ClusterReport(events=events)
    topic = cfg.producer.topic
    env = {**spark_env(),
           "PIPELINES__APP__DATA_DIR": cfg.data_dir, "PIPELINES__APP__JARS_DIR": str(cfg.jars_dir),
           "PIPELINES__KAFKA__BOOTSTRAP_SERVERS": bootstrap, "PIPELINES__KAFKA__TOPICS": json.dumps([topic]),
           "PIPELINES__KAFKA__MAX_OFFSETS_PER_TRIGGER": str(cfg.kafka.max_offsets_per_trigger or 1000),
           "PIPELINES__INGEST__TRIGGER_INTERVAL": "1 second", "PYTHONUNBUFFERED": "1",
           "PIPELINES_LOG_LEVEL": "INFO", "PIPELINES_LOG_JSON": "0",  # the demo reads the job's plain lines
           "PYSPARK_PYTHON": sys.executable, "PYSPARK_DRIVER_PYTHON": sys.executable}
    ledger = Path(cfg.data_dir) / paths.LEDGER_SUBDIR / topic / f"cluster-seed{seed}.jsonl"
    produced: dict[str, Any] = {}

    def producer() -> None:
        stats = produce(bootstrap, topic, events, partitions=cfg.producer.partitions, rate=events / seconds,
                        seed=seed, ledger_path=ledger, id_prefix=f"cluster{seed}", progress=False, timeout_s=900)
        produced.update(stats.as_dict())

    py_files = package_zip(work_dir / "dist" / "pipelines.zip")
    cluster = LocalSparkCluster(work_dir / "spark", workers=2, cores=1, memory="1g")
    out(f"[cluster] starting a standalone master and 2 workers on {cluster.master_url} (UI {cluster.webui_url}) ...")
    report.master = cluster.master_url
    env["PIPELINES__SPARK__MASTER"] = cluster.master_url
    cfg = cfg.with_overrides(spark={"master": cluster.master_url})

    def submit(job: str, *job_args: str) -> list[str]:
        return submit_command(cfg, job, list(job_args), conf_file, py_files=py_files, extra=EXECUTOR_CONF)

    log = work_dir / "ingest.log"
    driver: subprocess.Popen | None = None
    try:
        cluster.start()
        prod = threading.Thread(target=producer, daemon=True)
        prod.start()
        cmd = submit("pipelines/jobs/ingest.py")
        report.command = shlex.join(cmd)
        out(f"[cluster] submitting: {report.command}")
        driver = _submit(cmd, env, log)
        if not _wait_for(lambda: len(_batches(log)) >= 3 and cluster.running_executors() >= 2, left(), driver):
            report.error = f"the ingest job did not run 3 batches on 2 executors; see {log}"
            return report
        report.batches_before_worker_kill = len(_batches(log))
        report.executors_before_kill = cluster.running_executors()
        out(f"[cluster] {report.batches_before_worker_kill} batches on {report.executors_before_kill} executors; "
            "SIGKILL worker 1 and its executor")
        cluster.kill_worker(1)
        before = len(_batches(log))
        _wait_for(lambda: len(_batches(log)) >= before + 3, left(), driver)
        report.batches_after_worker_kill = len(_batches(log)) - before
        report.alive_workers_after_kill = cluster.alive_workers()
        out(f"[cluster] {report.batches_after_worker_kill} batches after the kill (workers alive: "
            f"{report.alive_workers_after_kill}); SIGKILL the driver")
        report.driver_killed_after_batches = max(_batches(log), default=-1)
        kill_group(driver)
        prod.join(timeout=left())
        out("[cluster] producer done; restarting the driver from the checkpoint (--available-now) ...")
        # The rest in as few batches as it takes (the small cap above only spreads the run over batches).
        catch_up_env = {**env, "PIPELINES__KAFKA__MAX_OFFSETS_PER_TRIGGER": "100000"}
        driver = _submit(submit("pipelines/jobs/ingest.py", "--available-now"), catch_up_env, log)
        report.catch_up_rc = _wait_rc(driver, left())
        out("[cluster] gold on the cluster (--available-now) ...")
        gold = _submit(submit("pipelines/jobs/gold.py", "--available-now"), env, work_dir / "gold.log")
        report.gold_rc = _wait_rc(gold, left())
    except PipelineError as e:  # the cluster did not start
        report.error = str(e)
        return report
    finally:
        if driver is not None and driver.poll() is None:
            kill_group(driver)
        cluster.stop()
        report.seconds = time.monotonic() - t0
    out("[cluster] verify --ledger ...")
    local = {**env, "PIPELINES__SPARK__MASTER": "local[2]"}
    from pipelines.tools.verify import verify_subprocess

    report.verify = verify_subprocess(conf_file, local, timeout_s=1200)
    report.events = int(produced.get("sent", events))
    report.seconds = time.monotonic() - t0
    return report


def _submit(cmd: list[str], env: dict[str, str], log: Path) -> subprocess.Popen:
    with open(log, "a") as f:
        return subprocess.Popen(cmd, stdout=f, stderr=subprocess.STDOUT, env=env, cwd=paths.REPO_ROOT,
                                start_new_session=True, preexec_fn=die_with_parent)


def _wait_rc(proc: subprocess.Popen, timeout_s: float) -> int | None:
    """The exit status, or None after ``timeout_s`` (the process is killed then)."""
    try:
        return proc.wait(timeout_s)
    except subprocess.TimeoutExpired:
        kill_group(proc)
        return None
