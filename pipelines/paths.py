"""Names of on-disk locations, in one place."""

from __future__ import annotations

from pathlib import Path

PACKAGE_DIR = Path(__file__).resolve().parent
#: The repository root when running from a checkout (editable install).
REPO_ROOT = PACKAGE_DIR.parent
MAVEN_DIR = PACKAGE_DIR / "local" / "maven"
SPARK_POM = MAVEN_DIR / "spark-jars.pom.xml"
KAFKA_POM = MAVEN_DIR / "kafka-broker.pom.xml"

# Sub-paths below `app.data_dir`.
TABLES_SUBDIR = "tables"
CHECKPOINTS_SUBDIR = "checkpoints"
LEDGER_SUBDIR = "ledger"

# Sub-paths below `app.jars_dir`.
SPARK_JARS_SUBDIR = "spark"
KAFKA_JARS_SUBDIR = "kafka"
