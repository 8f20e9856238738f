#!/usr/bin/env bash
# A backfill with spark-submit (here: local jars and this venv, as `python -m pipelines submit` does).
# On a cluster: --packages io.delta:delta-spark_4.1_2.13:4.4.0,org.apache.spark:spark-sql-kafka-0-10_2.13:4.1.1
# and the package shipped with --py-files (e.g. a wheel built by `pip wheel --no-deps . -w dist`).
set -euo pipefail
cd "$(dirname "$0")/../.."
# By record timestamps (UTC): [from, to)
.venv/bin/python -m pipelines --conf conf/local.yaml submit pipelines/jobs/backfill.py \
    --from 2026-12-01T00:00:00Z --to 2026-12-02T00:00:00Z
# Or by offsets, per topic and partition: [first, end)
#   ... submit pipelines/jobs/backfill.py --offsets '{"events": {"0": [0, 50000], "1": [0, 50000], "2": [0, 50000]}}'
# Or by hand:
#   eval PYSPARK_PYTHON=.venv/bin/python .venv/bin/spark-submit "$(.venv/bin/python -m pipelines spark-args)" \
#       pipelines/jobs/backfill.py --conf conf/local.yaml --from 2026-12-01 --to 2026-12-02
