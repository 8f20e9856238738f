"""An embedded, real Apache Kafka 4 broker (single KRaft node, broker+controller).

It runs ``kafka.Kafka`` from the jars provisioned by ``make setup``, bound to 127.0.0.1
only, with its data, log and pid file under ``home``. Used by ``python -m pipelines kafka
up|down|status``, ``make run`` and the tests (on free ports, in a temporary folder).

Example:
    >>> broker = LocalKafka(Path(".local/kafka"), port=9092, controller_port=9093,
    ...                     jars_dir=Path(".local/jars"))  # doctest: +SKIP
    >>> broker.start()  # doctest: +SKIP
    >>> broker.bootstrap_servers  # doctest: +SKIP
    '127.0.0.1:9092'

"""

from __future__ import annotations

import base64
import contextlib
import json
import os
import signal
import socket
import subprocess
import time
import uuid
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING

from pipelines.errors import BrokerError
from pipelines.local import jars

if TYPE_CHECKING:
    from pipelines.config import Config

HOST = "127.0.0.1"
PID_FILE = "broker.pid"
LOG_FILE = "broker.log"
PROPS_FILE = "server.properties"
LOG4J_FILE = "log4j2.properties"
FORMAT_FILE = "formatted.json"
DATA_SUBDIR = "data"

_LOG4J = """\
rootLogger.level = warn
rootLogger.appenderRef.stdout.ref = out
appender.out.type = Console
appender.out.name = out
appender.out.layout.type = PatternLayout
appender.out.layout.pattern = [%d] %p %m (%c)%n
logger.server.name = kafka.server
logger.server.level = info
logger.kafka.name = kafka.Kafka$
logger.kafka.level = info
"""


def new_cluster_id() -> str:
    """A KRaft cluster id: 22-character base64url of a random UUID (never starting with '-')."""
    while True:
        cid = base64.urlsafe_b64encode(uuid.uuid4().bytes).decode().rstrip("=")
        if not cid.startswith("-"):
            return cid


def free_port() -> int:
    """A free TCP port on 127.0.0.1 (for tests)."""
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as s:
        s.bind((HOST, 0))
        return int(s.getsockname()[1])


def port_is_free(port: int) -> bool:
    """True if nothing listens on 127.0.0.1:port and it can be bound."""
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as s:
        s.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        try:
            s.bind((HOST, port))
        except OSError:
            return False
    return True


def _answers_tcp(port: int) -> bool:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as s:
        s.settimeout(0.5)
        return s.connect_ex((HOST, port)) == 0


@dataclass
class BrokerStatus:
    """What ``status`` reports."""

    running: bool
    pid: int | None
    bootstrap_servers: str
    answering: bool
    home: str

    def describe(self) -> str:
        """One human line."""
        if not self.running:
            return f"stopped (home {self.home})"
        state = "answering metadata requests" if self.answering else "NOT answering metadata requests"
        return f"running, pid {self.pid}, {self.bootstrap_servers}, {state} (home {self.home})"


class LocalKafka:
    """One local KRaft broker+controller process. Its collaborators are passed in, not looked up."""

    def __init__(
        self,
        home: Path,
        *,
        port: int,
        controller_port: int,
        jars_dir: Path,
        heap: str = "512m",
        start_timeout_s: float = 90.0,
        default_partitions: int = 3,
    ) -> None:
        if port == controller_port:
            raise BrokerError(f"broker port and controller port are both {port}; they must differ")
        self.home = Path(home).resolve()
        self.port = port
        self.controller_port = controller_port
        self.jars_dir = Path(jars_dir).resolve()
        self.heap = heap
        self.start_timeout_s = start_timeout_s
        self.default_partitions = default_partitions

    @classmethod
    def from_config(cls, cfg: Config) -> LocalKafka:
        """Build from a :class:`pipelines.config.Config`."""
        lk = cfg.local_kafka
        return cls(
            Path(cfg.path(lk.home)),
            port=lk.port,
            controller_port=lk.controller_port,
            jars_dir=cfg.jars_dir,
            heap=lk.heap,
            start_timeout_s=lk.start_timeout_s,
            default_partitions=lk.default_partitions,
        )

    # ---- locations ----------------------------------------------------------------------
    @property
    def bootstrap_servers(self) -> str:
        """``127.0.0.1:<port>``."""
        return f"{HOST}:{self.port}"

    @property
    def log_path(self) -> Path:
        """The broker's stdout/stderr (its log4j output)."""
        return self.home / LOG_FILE

    @property
    def data_dir(self) -> Path:
        """``log.dirs`` of the broker."""
        return self.home / DATA_SUBDIR

    # ---- process ------------------------------------------------------------------------
    def pid(self) -> int | None:
        """The pid of our broker if it is alive, else None (stale pid files are ignored)."""
        try:
            pid = int((self.home / PID_FILE).read_text().strip())
        except (OSError, ValueError):
            return None
        try:
            cmdline = Path(f"/proc/{pid}/cmdline").read_bytes().split(b"\0")
        except OSError:
            return None
        # The pid may have been reused by another process: check it is *this* broker.
        if b"kafka.Kafka" not in cmdline or str(self.home / PROPS_FILE).encode() not in cmdline:
            return None
        with contextlib.suppress(OSError):
            stat = Path(f"/proc/{pid}/stat").read_text()
            if stat.rsplit(")", 1)[1].split()[0] == "Z":
                return None
        return pid

    def is_running(self) -> bool:
        """True if our broker process is alive."""
        return self.pid() is not None

    def answers_metadata(self, timeout_s: float = 3.0) -> bool:
        """True if the broker answers a metadata request and lists itself."""
        if not _answers_tcp(self.port):
            return False
        from confluent_kafka.admin import AdminClient

        admin = AdminClient({"bootstrap.servers": self.bootstrap_servers, "log_level": 0})
        try:
            md = admin.list_topics(timeout=timeout_s)
        except Exception:
            return False
        return len(md.brokers) >= 1

    def status(self) -> BrokerStatus:
        """Whether it runs, whether it answers, and where."""
        pid = self.pid()
        return BrokerStatus(
            running=pid is not None,
            pid=pid,
            bootstrap_servers=self.bootstrap_servers,
            answering=pid is not None and self.answers_metadata(),
            home=str(self.home),
        )

    def log_tail(self, lines: int = 25) -> str:
        """The last lines of the broker log, for error messages."""
        try:
            text = self.log_path.read_text(errors="replace")
        except OSError:
            return "(no broker log)"
        return "\n".join(text.rstrip().splitlines()[-lines:])

    # ---- lifecycle ----------------------------------------------------------------------
    def _write_config(self) -> Path:
        self.home.mkdir(parents=True, exist_ok=True)
        props = {
            "process.roles": "broker,controller",
            "node.id": "1",
            "controller.quorum.bootstrap.servers": f"{HOST}:{self.controller_port}",
            "listeners": f"PLAINTEXT://{HOST}:{self.port},CONTROLLER://{HOST}:{self.controller_port}",
            "advertised.listeners": f"PLAINTEXT://{HOST}:{self.port},CONTROLLER://{HOST}:{self.controller_port}",
            "controller.listener.names": "CONTROLLER",
            "listener.security.protocol.map": "PLAINTEXT:PLAINTEXT,CONTROLLER:PLAINTEXT",
            "inter.broker.listener.name": "PLAINTEXT",
            "log.dirs": str(self.data_dir),
            "num.partitions": str(self.default_partitions),
            "default.replication.factor": "1",
            "offsets.topic.replication.factor": "1",
            "offsets.topic.num.partitions": "3",
            "transaction.state.log.replication.factor": "1",
            "transaction.state.log.min.isr": "1",
            "share.coordinator.state.topic.replication.factor": "1",
            "share.coordinator.state.topic.min.isr": "1",
            "group.initial.rebalance.delay.ms": "0",
            "auto.create.topics.enable": "false",
            # Local data is kept until deleted: the demo and tests replay from earliest.
            "log.retention.hours": "-1",
            "log.segment.bytes": str(256 * 1024 * 1024),
        }
        path = self.home / PROPS_FILE
        path.write_text("".join(f"{k}={v}\n" for k, v in props.items()))
        (self.home / LOG4J_FILE).write_text(_LOG4J)
        return path

    def _java_cmd(self, java: str, main: str, *args: str) -> list[str]:
        return [
            java,
            f"-Xmx{self.heap}",
            f"-Xms{self.heap}",
            "-XX:+UseG1GC",
            "-Djava.awt.headless=true",
            f"-Dlog4j2.configurationFile={self.home / LOG4J_FILE}",
            "-cp",
            jars.kafka_classpath(self.jars_dir),
            main,
            *args,
        ]

    def _format_if_needed(self, java: str, props: Path) -> None:
        marker = self.home / FORMAT_FILE
        ports = {"port": self.port, "controller_port": self.controller_port}
        if marker.exists() and (self.data_dir / "meta.properties").exists():
            formatted = json.loads(marker.read_text())
            if formatted.get("controller_port") != self.controller_port:
                raise BrokerError(
                    f"the broker data in {self.home} was formatted for controller port "
                    f"{formatted.get('controller_port')}, not {self.controller_port}",
                    hint="use the old port, or wipe it with `python -m pipelines kafka down --wipe`",
                )
            return
        cmd = self._java_cmd(java, "kafka.tools.StorageTool", "format", "-t", new_cluster_id(),
                             "-c", str(props), "--standalone")
        res = subprocess.run(cmd, capture_output=True, text=True, timeout=120)
        if res.returncode != 0:
            raise BrokerError(
                f"formatting KRaft storage in {self.data_dir} failed (exit {res.returncode}):\n"
                + "\n".join((res.stdout + res.stderr).strip().splitlines()[-15:])
            )
        marker.write_text(json.dumps(ports))

    def start(self) -> int:
        """Format storage if new, start the broker and wait until it answers metadata requests.

        Returns:
            The broker's pid.

        Raises:
            BrokerError: Already running, port taken, or the broker died/timed out (with its log tail).
            DependencyError: Java missing/too old or broker jars missing.

        """
        running = self.pid()
        if running is not None:
            raise BrokerError(
                f"a local broker is already running (pid {running}, {self.bootstrap_servers}, home {self.home})",
                hint="use it as it is, or stop it first with `python -m pipelines kafka down`",
            )
        java = jars.check_java()
        jars.kafka_classpath(self.jars_dir)  # fail early and clearly if jars are missing
        for p, what in ((self.port, "broker"), (self.controller_port, "controller")):
            if not port_is_free(p):
                raise BrokerError(
                    f"the {what} port {HOST}:{p} is already in use by another process",
                    hint="stop whatever listens there (`ss -ltnp`), or choose another port with "
                    "local_kafka.port / local_kafka.controller_port (or PIPELINES__LOCAL_KAFKA__PORT)",
                )
        props = self._write_config()
        self._format_if_needed(java, props)
        log = open(self.log_path, "ab")  # noqa: SIM115 - handed to the child process
        log.write(f"\n===== starting broker {time.strftime('%Y-%m-%d %H:%M:%S')} =====\n".encode())
        log.flush()
        proc = subprocess.Popen(
            self._java_cmd(java, "kafka.Kafka", str(props)),
            stdout=log,
            stderr=subprocess.STDOUT,
            stdin=subprocess.DEVNULL,
            start_new_session=True,  # survives the CLI that started it; not hit by the terminal's Ctrl-C
            cwd=self.home,
        )
        log.close()
        (self.home / PID_FILE).write_text(f"{proc.pid}\n")
        deadline = time.monotonic() + self.start_timeout_s
        while time.monotonic() < deadline:
            if proc.poll() is not None:
                raise BrokerError(
                    f"the Kafka broker exited with status {proc.returncode} while starting; "
                    f"last lines of {self.log_path}:\n{self.log_tail()}"
                )
            if self.answers_metadata(timeout_s=2.0):
                return proc.pid
            time.sleep(0.3)
        self._signal_and_wait(proc.pid, signal.SIGKILL, 10)
        raise BrokerError(
            f"the Kafka broker did not answer within {self.start_timeout_s:.0f}s; "
            f"last lines of {self.log_path}:\n{self.log_tail()}"
        )

    def stop(self, timeout_s: float = 30.0) -> bool:
        """Stop our broker cleanly (SIGTERM, then SIGKILL after ``timeout_s``). False if it was not running."""
        pid = self.pid()
        if pid is None:
            (self.home / PID_FILE).unlink(missing_ok=True)
            return False
        if not self._signal_and_wait(pid, signal.SIGTERM, timeout_s):
            self._signal_and_wait(pid, signal.SIGKILL, 10)
        (self.home / PID_FILE).unlink(missing_ok=True)
        return True

    def kill(self) -> bool:
        """SIGKILL the broker (fault injection). False if it was not running."""
        pid = self.pid()
        if pid is None:
            return False
        self._signal_and_wait(pid, signal.SIGKILL, 10)
        return True

    def _signal_and_wait(self, pid: int, sig: int, timeout_s: float) -> bool:
        with contextlib.suppress(ProcessLookupError):
            os.kill(pid, sig)
        deadline = time.monotonic() + timeout_s
        while time.monotonic() < deadline:
            with contextlib.suppress(ChildProcessError):
                os.waitpid(pid, os.WNOHANG)  # reap if it is our child
            if not Path(f"/proc/{pid}").exists() or self.pid() is None:
                return True
            time.sleep(0.2)
        return False

    def wipe(self) -> None:
        """Delete the broker's data and log (it must be stopped)."""
        if self.is_running():
            raise BrokerError("refusing to wipe a running broker", hint="run `python -m pipelines kafka down` first")
        import shutil

        if self.home.exists():
            shutil.rmtree(self.home)

    # ---- topics ------------------------------------------------------------------------
    def create_topic(self, name: str, partitions: int | None = None) -> bool:
        """Create ``name`` if it does not exist. Returns True if it was created."""
        return ensure_topic(self.bootstrap_servers, name, partitions or self.default_partitions)


def ensure_topic(bootstrap_servers: str, name: str, partitions: int, timeout_s: float = 30.0) -> bool:
    """Create a topic if absent (replication factor 1). Returns True if it was created now."""
    from confluent_kafka import KafkaException
    from confluent_kafka.admin import AdminClient, NewTopic

    admin = AdminClient({"bootstrap.servers": bootstrap_servers})
    md = admin.list_topics(timeout=timeout_s)
    if name in md.topics:
        return False
    fut = admin.create_topics([NewTopic(name, num_partitions=partitions, replication_factor=1)])[name]
    try:
        fut.result(timeout=timeout_s)
    except KafkaException as e:
        if "TOPIC_ALREADY_EXISTS" in str(e):
            return False
        raise BrokerError(f"could not create topic {name} on {bootstrap_servers}: {e}") from e
    # Wait until the metadata shows all partitions with a leader.
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        t = admin.list_topics(topic=name, timeout=5).topics.get(name)
        if t is not None and t.error is None and len(t.partitions) == partitions and all(
            p.leader >= 0 for p in t.partitions.values()
        ):
            return True
        time.sleep(0.2)
    raise BrokerError(f"topic {name} was created but its partitions have no leader after {timeout_s}s")
