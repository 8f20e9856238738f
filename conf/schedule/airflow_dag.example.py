"""An Airflow DAG for the scheduled runs (an example, not run by the tests).

Needs ``apache-airflow-providers-apache-spark`` and a ``spark_default`` connection to the cluster.
The package reaches the driver and executors as a wheel: ``pip wheel --no-deps . -w dist``.
Every task is idempotent: a retry, or a run of the same interval twice, adds nothing.
"""

from __future__ import annotations

import datetime as dt

from airflow import DAG
from airflow.providers.apache.spark.operators.spark_submit import SparkSubmitOperator

ROOT = "/opt/lakehouse"
WHEEL = f"{ROOT}/dist/pipelines-0.1.0-py3-none-any.whl"
PACKAGES = "io.delta:delta-spark_4.1_2.13:4.4.0,org.apache.spark:spark-sql-kafka-0-10_2.13:4.1.1"
CONF = f"{ROOT}/conf/cluster.yaml"
COMMON = {"conn_id": "spark_default", "packages": PACKAGES, "py_files": WHEEL,
          "conf": {"spark.sql.extensions": "io.delta.sql.DeltaSparkSessionExtension",
                   "spark.sql.catalog.spark_catalog": "org.apache.spark.sql.delta.catalog.DeltaCatalog"}}

with DAG(
    dag_id="lakehouse_pipelines",
    schedule="*/15 * * * *",
    start_date=dt.datetime(2026, 12, 1, tzinfo=dt.UTC),
    catchup=False,
    max_active_runs=1,  # never two runs on one checkpoint
    default_args={"retries": 2, "retry_delay": dt.timedelta(minutes=2)},
) as dag:
    ingest = SparkSubmitOperator(task_id="ingest", application=f"{ROOT}/pipelines/jobs/ingest.py",
                                 application_args=["--conf", CONF, "--available-now"], **COMMON)
    gold = SparkSubmitOperator(task_id="gold", application=f"{ROOT}/pipelines/jobs/gold.py",
                               application_args=["--conf", CONF, "--available-now"], **COMMON)
    ingest >> gold

with DAG(
    dag_id="lakehouse_backfill_daily",
    schedule="30 2 * * *",
    start_date=dt.datetime(2026, 12, 1, tzinfo=dt.UTC),
    catchup=True,  # backfilling past days is the point; each day's range is its own idempotent run
    max_active_runs=1,
) as backfill_dag:
    SparkSubmitOperator(task_id="backfill_day", application=f"{ROOT}/pipelines/jobs/backfill.py",
                        application_args=["--conf", CONF, "--from", "{{ data_interval_start | ts }}",
                                          "--to", "{{ data_interval_end | ts }}"], **COMMON)
