"""Shared fixtures: one SparkSession and one real Kafka broker per test session."""

from __future__ import annotations

import shutil
import tempfile
from collections.abc import Iterator
from pathlib import Path

import pytest

from pipelines import paths
from pipelines.config import Config, load_config

REPO = paths.REPO_ROOT


@pytest.fixture(scope="session")
def tmp_root() -> Iterator[Path]:
    d = Path(tempfile.mkdtemp(prefix="pipelines-tests-"))
    yield d
    shutil.rmtree(d, ignore_errors=True)


@pytest.fixture(scope="session")
def base_config(tmp_root: Path) -> Config:
    """The repo's conf/local.yaml with data redirected to a temporary folder."""
    cfg = load_config(REPO / "conf" / "local.yaml", environ={})
    return cfg.with_overrides(
        app={"data_dir": str(tmp_root / "data"), "jars_dir": str(REPO / ".local" / "jars")},
        ingest={"progress": False},
    )


@pytest.fixture(scope="session")
def spark(base_config: Config):
    """One small SparkSession for the whole test run (UI off, 2 shuffle partitions)."""
    from pipelines.session import build_session

    session = build_session(
        base_config,
        master="local[2]",
        extra={
            "spark.ui.enabled": "false",
            "spark.sql.shuffle.partitions": "2",
            "spark.default.parallelism": "2",
            "spark.sql.warehouse.dir": str(base_config.data_dir) + "/warehouse",
            "spark.databricks.delta.snapshotPartitions": "2",
            "spark.driver.memory": "2g",
        },
    )
    yield session
    session.stop()


@pytest.fixture(scope="session")
def kafka(tmp_root: Path, base_config: Config):
    """A real single-node KRaft broker on free loopback ports, for the whole test run."""
    from pipelines.local.kafka import LocalKafka, free_port

    port = free_port()
    cport = free_port()
    while cport == port:
        cport = free_port()
    broker = LocalKafka(tmp_root / "kafka", port=port, controller_port=cport, jars_dir=base_config.jars_dir,
                        heap="384m", default_partitions=3)
    broker.start()
    yield broker
    broker.stop()
