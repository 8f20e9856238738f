from __future__ import annotations

import itertools
import json
import os

import pytest

from pipelines.config import Config

_counter = itertools.count()


@pytest.fixture
def make_cfg(base_config: Config, kafka, tmp_path):
    """A config on the test broker with its own topic and data folder."""

    def make(topic: str | None = None, **sections) -> Config:
        topic = topic or f"t{next(_counter)}-{tmp_path.name[:20]}"
        cfg = base_config.with_overrides(
            app={"data_dir": str(tmp_path / "data")},
            kafka={"bootstrap_servers": kafka.bootstrap_servers, "topics": [topic],
                   "max_offsets_per_trigger": 1000},
            producer={"topic": topic},
            ingest={"progress": False, "trigger_interval": "1 second"},
        )
        return cfg.with_overrides(**sections) if sections else cfg

    return make


@pytest.fixture
def job_env():
    """``job_env(cfg, max_offsets, spark_conf)``: see :func:`_job_env`."""
    return _job_env


def _job_env(cfg: Config, max_offsets: int, spark_conf: dict[str, str]) -> dict[str, str]:
    """The environment of a job started as a process (``python -m pipelines ingest``) on ``cfg``'s topic and data."""
    return {**os.environ,
            "PIPELINES__APP__DATA_DIR": cfg.app.data_dir,
            "PIPELINES__APP__JARS_DIR": str(cfg.jars_dir),
            "PIPELINES__KAFKA__BOOTSTRAP_SERVERS": cfg.kafka.bootstrap_servers,
            "PIPELINES__KAFKA__TOPICS": json.dumps(list(cfg.kafka.topics)),
            "PIPELINES__KAFKA__MAX_OFFSETS_PER_TRIGGER": str(max_offsets),
            "PIPELINES__INGEST__TRIGGER_INTERVAL": "1 second",
            "PIPELINES__SPARK__CONF": json.dumps({"spark.sql.shuffle.partitions": "2", **spark_conf}),
            "PIPELINES__SPARK__MASTER": "local[2]", "PIPELINES_LOG_LEVEL": "INFO", "PIPELINES_LOG_JSON": "0"}
