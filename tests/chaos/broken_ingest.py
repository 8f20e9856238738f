"""A deliberately broken ingest job, for the chaos harness's own test: silver as a plain append.

An append has no key and no transaction identity, so a crash after the silver commit and
before Spark's checkpoint commit makes the re-run append the batch again. Production code has
no switch for this; the test injects the writer through ``IngestJob``'s ``silver_writer`` seam.
"""

from __future__ import annotations

import sys

from pyspark.sql import DataFrame

from pipelines.jobs import ingest


def append_silver(rows: DataFrame, path: str, **_ignored: object) -> int:
    """At-least-once: append whatever the batch holds."""
    n = rows.count()
    rows.write.format("delta").mode("append").save(path)
    return n


if __name__ == "__main__":
    sys.exit(ingest.main(sys.argv[1:], silver_writer=append_silver))
