from __future__ import annotations

import os
import stat
from pathlib import Path

import pytest

from pipelines.errors import DependencyError
from pipelines.local import jars


@pytest.mark.parametrize("text,major", [
    ('openjdk version "17.0.15" 2025-04-15', 17),
    ('java version "1.8.0_381"', 8),
    ('openjdk version "21" 2023-09-19', 21),
])
def test_parse_java_version(text, major):
    assert jars.parse_java_version(text) == major


@pytest.mark.parametrize("name,artifact", [
    ("delta-spark_4.1_2.13-4.4.0.jar", "delta-spark_4.1_2.13"),
    ("spark-sql-kafka-0-10_2.13-4.1.1.jar", "spark-sql-kafka-0-10_2.13"),
    ("zstd-jni-1.5.7-3.jar", "zstd-jni"),
    ("jackson-annotations-2.20.jar", "jackson-annotations"),
    ("log4j-slf4j2-impl-2.24.3.jar", "log4j-slf4j2-impl"),
])
def test_artifact_name(name, artifact):
    assert jars.artifact_name(name) == artifact


def test_missing_jars_say_what_to_run(tmp_path):
    with pytest.raises(DependencyError) as e:
        jars.spark_jars(tmp_path)
    assert "make setup" in (e.value.hint or "")
    with pytest.raises(DependencyError, match="Kafka broker jars are missing"):
        jars.kafka_classpath(tmp_path)
    assert not jars.is_provisioned(tmp_path)


def _fake_java(tmp_path: Path, version_line: str) -> Path:
    home = tmp_path / "jdk"
    (home / "bin").mkdir(parents=True)
    exe = home / "bin" / "java"
    exe.write_text(f"#!/bin/sh\necho '{version_line}' >&2\n")
    exe.chmod(exe.stat().st_mode | stat.S_IEXEC)
    return home


def test_old_java_is_rejected_with_a_hint(tmp_path, monkeypatch):
    home = _fake_java(tmp_path, 'openjdk version "11.0.2" 2019-01-15')
    monkeypatch.setenv("JAVA_HOME", str(home))
    with pytest.raises(DependencyError) as e:
        jars.check_java()
    assert "Java 11" in e.value.message and "17" in e.value.message
    assert "JAVA_HOME" in (e.value.hint or "")


def test_missing_java_is_reported(tmp_path, monkeypatch):
    monkeypatch.delenv("JAVA_HOME", raising=False)
    monkeypatch.setenv("PATH", str(tmp_path))
    with pytest.raises(DependencyError, match="Java was not found"):
        jars.java_executable()


def test_real_java_is_new_enough():
    assert jars.java_major_version() >= 17
    assert os.path.exists(jars.check_java())
