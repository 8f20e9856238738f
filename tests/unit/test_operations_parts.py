"""The pure parts of metrics, status and maintain: offsets parsing, names, tables, session defaults."""

from __future__ import annotations

import json
from pathlib import Path
from types import SimpleNamespace

import pytest

from pipelines.config import load_config
from pipelines.errors import ConfigError
from pipelines.jobs.backfill import status_table
from pipelines.metrics import kafka_lag, metric_name
from pipelines.session import METRICS_CONF, loopback_env, session_conf
from pipelines.tools.console import render, table
from pipelines.tools.status import DELTA_END_INDEX, delta_next_version

REPO = Path(__file__).resolve().parents[2]


def source(end: object, latest: object) -> SimpleNamespace:
    return SimpleNamespace(endOffset=json.dumps(end) if end is not None else None,
                           latestOffset=json.dumps(latest) if latest is not None else None)


def test_kafka_lag_per_partition_from_a_progress():
    lag = kafka_lag([source({"events": {"0": 10, "1": 7}}, {"events": {"0": 15, "1": 7, "2": 3}})])
    assert lag == {("events", 0): 5, ("events", 1): 0}  # partition 2 not read yet: unknown, not 0
    assert kafka_lag([source(None, {"events": {"0": 1}})]) == {}
    # A Delta source (gold's) or a garbled offset is not Kafka: no lag, no error.
    assert kafka_lag([source({"reservoirVersion": 3, "index": -1}, {"reservoirVersion": 4, "index": -1})]) == {}
    assert kafka_lag([SimpleNamespace(endOffset="{not json", latestOffset="[]")]) == {}


def test_delta_source_position():
    assert delta_next_version({"reservoirVersion": 7, "index": -1}) == 7  # at the version's start
    # what Delta writes once version 6 is read completely: the next version, at its start
    assert delta_next_version({"sourceVersion": 1, "reservoirVersion": 7, "index": -1, "isStartingVersion": False}) == 7
    assert delta_next_version({"reservoirVersion": 7, "index": -100}) == 7
    assert delta_next_version({"reservoirVersion": 7, "index": 3}) == 7  # part of it read
    assert delta_next_version({"reservoirVersion": 7, "index": DELTA_END_INDEX}) == 8  # all of it read
    assert delta_next_version({"events": {"0": 1}}) is None


def test_metric_names_are_prometheus_names():
    assert metric_name("ingest", "lag", "orders-v2.eu", "0") == "ingest_lag_orders_v2_eu_0"


def test_metrics_and_ui_defaults_can_be_overridden():
    cfg = load_config(REPO / "conf" / "local.yaml", environ={})
    conf = session_conf(cfg)
    for key, value in METRICS_CONF.items():
        assert conf[key] == value
    assert "spark.ui.enabled" not in conf  # the UI is on (Spark's default)
    off = load_config(REPO / "conf" / "local.yaml", environ={
        "PIPELINES__SPARK__CONF": json.dumps({"spark.metrics.namespace": "orders", "spark.ui.enabled": "false"})})
    assert session_conf(off)["spark.metrics.namespace"] == "orders"
    assert session_conf(off)["spark.ui.enabled"] == "false"


def test_loopback_only_for_local_masters(monkeypatch):
    monkeypatch.delenv("SPARK_LOCAL_IP", raising=False)
    assert loopback_env("local[2]") == {"SPARK_LOCAL_IP": "127.0.0.1"}
    assert loopback_env("spark://10.0.0.5:7077") == {}
    monkeypatch.setenv("SPARK_LOCAL_IP", "10.0.0.9")
    assert loopback_env("local[*]") == {}  # the user's choice stands


def test_tables_for_people():
    text = render(table([{"table": "silver", "files": 12345, "MB": "1.5"}, {"table": "bronze", "files": None,
                                                                           "MB": "0.1"}], title="tables"))
    assert "tables" in text and "12,345" in text and "silver" in text and "bronze" in text
    rows = [{"run_id": "backfill-1", "status": "done", "rows_read": 10, "silver_inserted": 9, "quarantined": 1,
             "bronze_inserted": 10, "started_at": None, "finished_at": None, "error": None},
            {"run_id": "backfill-1", "status": "failed", "rows_read": None, "silver_inserted": None,
             "quarantined": None, "bronze_inserted": None, "started_at": None, "finished_at": None,
             "error": "boom"}]
    shown = status_table(rows)
    assert "backfill-1" in shown and "chunks done" in shown and "boom" in shown
    assert status_table([]) == "no backfills recorded yet"


def test_maintenance_settings_are_validated(tmp_path):
    conf = tmp_path / "ops.yaml"
    conf.write_text("maintenance:\n  vacuum_retention_hours: a week\n")
    with pytest.raises(ConfigError, match=r"ops.yaml: maintenance.vacuum_retention_hours must be an integer"):
        load_config(conf, environ={})
    conf.write_text("maintenance:\n  retention: 1\n")
    with pytest.raises(ConfigError, match=r"ops.yaml.*maintenance.retention"):
        load_config(conf, environ={})
    assert load_config(REPO / "conf" / "local.yaml", environ={}).maintenance.vacuum_retention_hours == 168
