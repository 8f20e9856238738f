"""A real Spark standalone cluster on loopback, started with pyspark's own launcher.

One master (``org.apache.spark.deploy.master.Master``) and N workers
(``org.apache.spark.deploy.worker.Worker``), each a separate JVM started with pyspark's
``bin/spark-class``, bound to 127.0.0.1 on free ports. Each worker runs in its own process group,
so :meth:`LocalSparkCluster.kill_worker` SIGKILLs the worker *and* the executors it launched,
the way a lost machine takes both.

Used by ``make cluster-demo`` / ``python -m pipelines cluster-demo`` and by the cluster test;
not needed to run the pipeline (a real cluster has its own master).
"""

from __future__ import annotations

import json
import os
import signal
import subprocess
import time
import urllib.request
import zipfile
from dataclasses import dataclass, field
from pathlib import Path
from typing import IO, Any

from pipelines.errors import PipelineError
from pipelines.local.jars import spark_bin
from pipelines.local.kafka import free_port

HOST = "127.0.0.1"


def die_with_parent() -> None:
    """``preexec_fn``: SIGKILL this child when the process that started it dies (Linux ``prctl``).

    A run killed from outside (a test timeout, Ctrl-C twice) leaves no master, worker or driver
    behind. Elsewhere a no-op.
    """
    import ctypes
    import sys

    if sys.platform.startswith("linux"):
        libc = ctypes.CDLL(None, use_errno=True)
        libc.prctl(1, signal.SIGKILL)  # PR_SET_PDEATHSIG


def package_zip(dest: Path) -> Path:
    """The ``pipelines`` package as a zip for ``--py-files`` (the executors' ``import pipelines``).

    Python sources and the package's data files (``py.typed``, Maven POMs); no caches.
    """
    import pipelines

    root = Path(pipelines.__file__).resolve().parent
    dest.parent.mkdir(parents=True, exist_ok=True)
    tmp = dest.with_suffix(".zip.tmp")
    with zipfile.ZipFile(tmp, "w", zipfile.ZIP_DEFLATED) as z:
        for f in sorted(root.rglob("*")):
            if f.is_file() and "__pycache__" not in f.parts and f.suffix not in (".pyc", ".pyo"):
                z.write(f, f.relative_to(root.parent))
    tmp.replace(dest)
    return dest


def spark_env(extra: dict[str, str] | None = None) -> dict[str, str]:
    """The environment for pyspark's launchers: this pyspark's Spark (not an inherited SPARK_HOME), loopback."""
    import pyspark

    return {**os.environ, "SPARK_HOME": str(Path(pyspark.__file__).parent), "SPARK_LOCAL_IP": HOST,
            **(extra or {})}


@dataclass
class _Proc:
    name: str
    proc: subprocess.Popen
    log: IO[str]


@dataclass
class LocalSparkCluster:
    """A standalone master and ``workers`` workers of ``cores`` cores and ``memory`` each."""

    work_dir: Path
    workers: int = 2
    cores: int = 1
    memory: str = "1g"
    port: int = field(default_factory=free_port)
    webui_port: int = field(default_factory=free_port)
    _procs: dict[str, _Proc] = field(default_factory=dict)

    @property
    def master_url(self) -> str:
        """``spark://127.0.0.1:PORT`` for ``--master``."""
        return f"spark://{HOST}:{self.port}"

    @property
    def webui_url(self) -> str:
        """The master's web UI (its ``/json/`` lists the workers and applications)."""
        return f"http://{HOST}:{self.webui_port}"

    def _env(self) -> dict[str, str]:
        return spark_env({"SPARK_MASTER_HOST": HOST, "SPARK_WORKER_DIR": str(self.work_dir / "work")})

    def _spawn(self, name: str, *args: str) -> None:
        self.work_dir.mkdir(parents=True, exist_ok=True)
        log = open(self.work_dir / f"{name}.log", "a")  # noqa: SIM115 - closed in stop()
        proc = subprocess.Popen([spark_bin("spark-class"), *args], stdout=log, stderr=subprocess.STDOUT,
                                env=self._env(), start_new_session=True, preexec_fn=die_with_parent)
        self._procs[name] = _Proc(name, proc, log)

    def start(self, timeout_s: float = 120.0) -> LocalSparkCluster:
        """Start the master, then the workers; return when every worker is ALIVE at the master."""
        self._spawn("master", "org.apache.spark.deploy.master.Master", "--host", HOST, "--port", str(self.port),
                    "--webui-port", str(self.webui_port))
        self._wait(lambda s: s is not None, timeout_s, "the master to answer")
        for i in range(self.workers):
            self.start_worker(i)
        self._wait(lambda s: s is not None and self.alive_workers(s) >= self.workers, timeout_s,
                   f"{self.workers} workers to register")
        return self

    def start_worker(self, i: int) -> None:
        """Start worker ``i`` (again, after a kill)."""
        self._spawn(f"worker-{i}", "org.apache.spark.deploy.worker.Worker", self.master_url, "--host", HOST,
                    "--cores", str(self.cores), "--memory", self.memory, "--webui-port", str(free_port()),
                    "--work-dir", str(self.work_dir / f"work-{i}"))

    def state(self) -> dict[str, Any] | None:
        """The master's JSON state (workers, applications), or None if it does not answer."""
        try:
            with urllib.request.urlopen(f"{self.webui_url}/json/", timeout=3) as r:  # noqa: S310 - loopback
                return json.loads(r.read())
        except (OSError, ValueError):
            return None

    def alive_workers(self, state: dict[str, Any] | None = None) -> int:
        """Workers the master sees ALIVE."""
        s = state if state is not None else self.state()
        return sum(1 for w in (s or {}).get("workers", []) if w.get("state") == "ALIVE")

    def running_executors(self) -> int:
        """Executors of running applications, per the master (cores used by apps, 1 core each here)."""
        s = self.state() or {}
        return sum(int(w.get("coresused", 0)) for w in s.get("workers", []) if w.get("state") == "ALIVE")

    def kill_worker(self, i: int) -> None:
        """SIGKILL worker ``i`` and everything it started (its executors): a lost machine."""
        p = self._procs.pop(f"worker-{i}")
        kill_group(p.proc)
        p.log.close()

    def _wait(self, ok: Any, timeout_s: float, what: str) -> None:
        deadline = time.monotonic() + timeout_s
        while time.monotonic() < deadline:
            for p in self._procs.values():
                if p.proc.poll() is not None:
                    raise PipelineError(f"the Spark {p.name} exited (status {p.proc.returncode}) while waiting for "
                                        f"{what}; see {self.work_dir / (p.name + '.log')}")
            if ok(self.state()):
                return
            time.sleep(0.5)
        raise PipelineError(f"timed out after {timeout_s:.0f}s waiting for {what}; see the logs in {self.work_dir}")

    def stop(self) -> None:
        """Stop every process of the cluster (workers first)."""
        for name in sorted(self._procs, key=lambda n: n == "master"):
            p = self._procs[name]
            if p.proc.poll() is None:
                os.killpg(p.proc.pid, signal.SIGTERM)
                try:
                    p.proc.wait(20)
                except subprocess.TimeoutExpired:
                    kill_group(p.proc)
            p.log.close()
        self._procs.clear()

    def __enter__(self) -> LocalSparkCluster:
        return self.start()

    def __exit__(self, *exc: object) -> None:
        self.stop()


def kill_group(proc: subprocess.Popen, wait_s: float = 60.0) -> None:
    """SIGKILL ``proc``'s process group (it was started with ``start_new_session``) and reap it."""
    try:
        os.killpg(proc.pid, signal.SIGKILL)
    except ProcessLookupError:
        pass
    proc.wait(wait_s)
