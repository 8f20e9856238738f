from __future__ import annotations

from pathlib import Path

import pytest

from pipelines.config import Config, load_config
from pipelines.errors import ConfigError

REPO = Path(__file__).resolve().parents[2]


def write(tmp_path: Path, name: str, text: str) -> Path:
    p = tmp_path / name
    p.write_text(text)
    return p


def test_repo_configs_load_and_merge():
    cfg = load_config(REPO / "conf" / "local.yaml", environ={})
    assert cfg.kafka.topics == ("events",)
    assert cfg.kafka.fail_on_data_loss is True
    assert cfg.spark.conf["spark.sql.shuffle.partitions"] == "4"  # from local.yaml
    assert cfg.spark.app_name == "lakehouse"  # from base.yaml
    assert [f.name for f in cfg.events.fields][:2] == ["message_id", "event_type"]
    assert cfg.events.fields[4].type == "decimal(18,2)"
    assert cfg.app.root == str(REPO)
    assert cfg.table_path("silver") == str(REPO / ".local/data/tables/silver")
    assert cfg.checkpoint_path == str(REPO / ".local/data/checkpoints/ingest")
    assert cfg.sources == (str(REPO / "conf/base.yaml"), str(REPO / "conf/local.yaml"))


def test_cluster_example_loads():
    cfg = load_config(REPO / "conf" / "cluster.example.yaml", environ={})
    assert cfg.spark.use_local_jars is False
    assert cfg.table_path("bronze") == "s3a://my-bucket/lakehouse/tables/bronze"
    with pytest.raises(ConfigError, match="KAFKA_JAAS_CONFIG"):
        cfg.kafka_options(environ={})
    opts = cfg.kafka_options(environ={"KAFKA_JAAS_CONFIG": "secret-jaas"})
    assert opts["kafka.sasl.jaas.config"] == "secret-jaas"


def test_environment_overrides_win_and_are_typed(tmp_path):
    write(tmp_path, "base.yaml", "kafka:\n  bootstrap_servers: a:1\n  max_offsets_per_trigger: 10\n")
    env = write(tmp_path, "dev.yaml", "kafka:\n  bootstrap_servers: b:2\n")
    cfg = load_config(env, environ={"PIPELINES__KAFKA__MAX_OFFSETS_PER_TRIGGER": "500",
                                    "PIPELINES__KAFKA__TOPICS": "[x, y]"})
    assert cfg.kafka.bootstrap_servers == "b:2"
    assert cfg.kafka.max_offsets_per_trigger == 500
    assert cfg.kafka.topics == ("x", "y")
    assert cfg.app.root == str(tmp_path.parent)


def test_unknown_key_names_key_and_file(tmp_path):
    write(tmp_path, "base.yaml", "kafka:\n  bootstrap_servers: a:1\n")
    env = write(tmp_path, "dev.yaml", "kafka:\n  bootstrap_server: typo:1\n")
    with pytest.raises(ConfigError) as e:
        load_config(env, environ={})
    assert "kafka.bootstrap_server" in str(e.value)
    assert str(env) in str(e.value)
    assert "bootstrap_servers" in (e.value.hint or "")


def test_unknown_section_names_file(tmp_path):
    env = write(tmp_path, "dev.yaml", "kafak:\n  x: 1\n")
    with pytest.raises(ConfigError, match=r"dev.yaml: unknown key 'kafak'"):
        load_config(env, environ={})


def test_wrong_type_names_key_and_origin(tmp_path):
    env = write(tmp_path, "dev.yaml", "kafka:\n  fail_on_data_loss: maybe\n")
    with pytest.raises(ConfigError, match=r"dev.yaml: kafka.fail_on_data_loss must be true or false, got 'maybe'"):
        load_config(env, environ={})
    env2 = write(tmp_path, "ok.yaml", "{}\n")
    with pytest.raises(ConfigError, match=r"environment variable PIPELINES__LOCAL_KAFKA__PORT: "
                                          r"local_kafka.port must be an integer"):
        load_config(env2, environ={"PIPELINES__LOCAL_KAFKA__PORT": "ninety"})


def test_exact_types_lists_and_property_maps(tmp_path):
    env = write(tmp_path, "dev.yaml", "kafka:\n  topics: payments\nspark:\n  conf:\n    a.b: true\n    c: 4\n")
    cfg = load_config(env, environ={})
    assert cfg.kafka.topics == ("payments",)  # one string is a list of one
    assert cfg.spark.conf == {"a.b": "true", "c": "4"}  # scalar properties as Spark reads them
    # YAML's true is not a number, "5" (a quoted string) is not an integer, a nested value is no property.
    for text, message in (("local_kafka:\n  port: true\n", r"local_kafka.port must be an integer, got True"),
                          ("local_kafka:\n  port: '5'\n", r"local_kafka.port must be an integer, got '5'"),
                          ("producer:\n  rate: false\n", r"producer.rate must be a number, got False"),
                          ("spark:\n  conf:\n    a: {b: 1}\n", r"dev2.yaml: spark.conf.a must be a scalar"),
                          ("gold:\n  tables: [{name: t, aggregates: [{name: x}]}]\n",
                           r"dev2.yaml: gold.tables.0.aggregates.0: missing required key 'fn'")):
        bad = write(tmp_path, "dev2.yaml", text)
        with pytest.raises(ConfigError, match=message):
            load_config(bad, environ={})


def test_literal_choices_are_enforced(tmp_path):
    env = write(tmp_path, "dev.yaml", "ingest:\n  trigger: sometimes\n")
    with pytest.raises(ConfigError, match="ingest.trigger must be one of 'processingTime', 'availableNow'"):
        load_config(env, environ={})


def test_missing_file_and_bad_yaml(tmp_path):
    with pytest.raises(ConfigError, match="does not exist"):
        load_config(tmp_path / "nope.yaml", environ={})
    env = write(tmp_path, "bad.yaml", "kafka: [unclosed\n")
    with pytest.raises(ConfigError, match="invalid YAML"):
        load_config(env, environ={})


def test_malformed_env_variable_name(tmp_path):
    env = write(tmp_path, "dev.yaml", "{}\n")
    with pytest.raises(ConfigError, match="PIPELINES__KAFKA"):
        load_config(env, environ={"PIPELINES__KAFKA": "x"})


def test_with_overrides_keeps_other_values():
    cfg = load_config(REPO / "conf" / "local.yaml", environ={})
    other = cfg.with_overrides(kafka={"topics": ["t2"]}, ingest={"progress": False})
    assert isinstance(other, Config)
    assert other.kafka.topics == ("t2",)
    assert other.kafka.bootstrap_servers == cfg.kafka.bootstrap_servers
    assert other.ingest.progress is False and cfg.ingest.progress is True


@pytest.mark.parametrize("option", ["failOnDataLoss", "kafka.isolation.level", "startingOffsets",
                                    "STARTINGOFFSETS", "maxOffsetsPerTrigger", "subscribePattern"])
def test_kafka_options_cannot_override_managed_options(tmp_path, option):
    from pipelines.io.kafka_source import source_options

    env = write(tmp_path, "dev.yaml", f"kafka:\n  options:\n    {option}: 'x'\n")
    cfg = load_config(env, environ={})
    with pytest.raises(ConfigError) as e:
        source_options(cfg)
    assert f"kafka.options.{option}" in str(e.value) and str(env) in str(e.value)


def test_source_options_read_committed_by_default_and_configurable(tmp_path):
    from pipelines.io.kafka_source import source_options

    cfg = load_config(REPO / "conf" / "local.yaml", environ={})
    for streaming in (True, False):
        opts = source_options(cfg, streaming=streaming)
        assert opts["kafka.isolation.level"] == "read_committed" and opts["failOnDataLoss"] == "true"
    env = write(tmp_path, "dev.yaml", "kafka:\n  isolation_level: read_uncommitted\n"
                                      "  options:\n    kafka.security.protocol: SSL\n")
    opts = source_options(load_config(env, environ={}))
    assert opts["kafka.isolation.level"] == "read_uncommitted" and opts["kafka.security.protocol"] == "SSL"
    with pytest.raises(ConfigError, match="kafka.isolation_level"):
        load_config(write(tmp_path, "bad.yaml", "kafka:\n  isolation_level: committed\n"), environ={})
