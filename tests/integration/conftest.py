from __future__ import annotations

import itertools

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
