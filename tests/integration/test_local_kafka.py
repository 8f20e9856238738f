"""The embedded broker through the CLI, and the clear errors it gives."""

from __future__ import annotations

import os
import socket
import subprocess
import sys
from pathlib import Path

import pytest

from pipelines.errors import BrokerError, DependencyError
from pipelines.local.kafka import LocalKafka, free_port

pytestmark = pytest.mark.integration
REPO = Path(__file__).resolve().parents[2]


def cli(*args: str, env: dict[str, str]) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-m", "pipelines", *args], capture_output=True, text=True,
                          env={**os.environ, **env}, cwd=REPO, timeout=180)


def test_cli_up_status_second_up_down(tmp_path):
    port, cport = free_port(), free_port()
    env = {"PIPELINES__LOCAL_KAFKA__PORT": str(port), "PIPELINES__LOCAL_KAFKA__CONTROLLER_PORT": str(cport),
           "PIPELINES__LOCAL_KAFKA__HOME": str(tmp_path / "k"), "PIPELINES__LOCAL_KAFKA__HEAP": "256m"}
    up = cli("kafka", "up", env=env)
    try:
        assert up.returncode == 0, up.stderr
        assert f"127.0.0.1:{port}" in up.stdout
        st = cli("kafka", "status", env=env)
        assert st.returncode == 0 and "answering metadata requests" in st.stdout
        again = cli("kafka", "up", env=env)
        assert again.returncode == 2
        assert "already running" in again.stderr and "hint:" in again.stderr
        assert "Traceback" not in again.stderr
    finally:
        down = cli("kafka", "down", env=env)
    assert down.returncode == 0 and "stopped" in down.stdout
    st = cli("kafka", "status", env=env)
    assert st.returncode == 3 and "stopped" in st.stdout
    assert "started" in (tmp_path / "k" / "broker.log").read_text().lower()


def test_port_in_use_is_reported(tmp_path, base_config):
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        s.listen(1)
        taken = s.getsockname()[1]
        broker = LocalKafka(tmp_path / "k", port=taken, controller_port=free_port(), jars_dir=base_config.jars_dir)
        with pytest.raises(BrokerError) as e:
            broker.start()
    assert f"127.0.0.1:{taken} is already in use" in e.value.message
    assert "local_kafka.port" in (e.value.hint or "")


def test_broker_that_dies_shows_its_log(tmp_path, base_config):
    broker = LocalKafka(tmp_path / "k", port=free_port(), controller_port=free_port(),
                        jars_dir=base_config.jars_dir, heap="1k")  # the JVM refuses this heap
    with pytest.raises(BrokerError) as e:
        broker.start()
    assert "exited with status" in e.value.message or "formatting KRaft storage" in e.value.message
    assert "heap" in e.value.message.lower()


def test_missing_jars_name_the_command(tmp_path):
    broker = LocalKafka(tmp_path / "k", port=free_port(), controller_port=free_port(), jars_dir=tmp_path / "none")
    with pytest.raises(DependencyError) as e:
        broker.start()
    assert "make setup" in (e.value.hint or "")


def test_bad_config_on_the_cli_names_key_and_file(tmp_path):
    conf = tmp_path / "conf"
    conf.mkdir()
    (conf / "bad.yaml").write_text("kafka:\n  max_offset_per_trigger: 5\n")
    res = cli("--conf", str(conf / "bad.yaml"), "kafka", "status", env={})
    assert res.returncode == 2
    assert "kafka.max_offset_per_trigger" in res.stderr and "bad.yaml" in res.stderr
    assert "Traceback" not in res.stderr


def test_help_lists_commands():
    res = cli("--help", env={})
    assert res.returncode == 0
    for cmd in ("jars", "kafka", "produce", "ingest", "verify", "demo", "spark-args"):
        assert cmd in res.stdout
