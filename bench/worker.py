"""One benchmark pipeline in a fresh process (and JVM): ``python -m bench.worker --pipeline NAME ...``.

The orchestrator (``python -m bench``) starts one worker per measurement through
:func:`bench.common.run_isolated`. The worker builds its own SparkSession (except for the
Python-only pipelines), runs the pipeline, and prints exactly one line ``BENCH-RESULT <json>``
on stdout; everything else (Spark, the JVM, our own prints) goes to stderr.

Pipelines: ``probe`` (which ``pipelines`` package is imported; no Spark), ``raw_consumer``,
``spark_ceiling``, ``delta_sink``, ``single_append``, ``at_least_once``, ``exactly_once``,
``exactly_once_no_quality`` (see :mod:`bench.drain`), ``freshness`` (:mod:`bench.freshness`), ``gold``
(:mod:`bench.gold_cost`), ``backfill`` (:mod:`bench.backfill_load`) and ``merge`` (:mod:`bench.merge_scope`).

Which ``pipelines`` is imported depends on how the worker is started (``PYTHONPATH``; see
:func:`bench.common.worker_launch`); the config is that checkout's ``conf/local.yaml``.
"""

from __future__ import annotations

import argparse
import json
import os
import sys
from pathlib import Path
from typing import TYPE_CHECKING, Any

from bench.common import REPO, RESULT_TAG

if TYPE_CHECKING:
    from pipelines.config import Config

SPARK_PIPELINES = ("spark_ceiling", "delta_sink", "single_append", "at_least_once", "exactly_once",
                   "exactly_once_no_quality", "freshness", "gold", "backfill", "merge")
PIPELINES = ("probe", "raw_consumer", *SPARK_PIPELINES)


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    """The worker's command line."""
    p = argparse.ArgumentParser(prog="python -m bench.worker", description=__doc__,
                                formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--pipeline", required=True, choices=PIPELINES)
    p.add_argument("--work", required=True, type=Path, help="this worker's own folder (tables, checkpoint)")
    p.add_argument("--bootstrap", help="Kafka bootstrap servers, HOST:PORT")
    p.add_argument("--topic", help="the topic to read")
    p.add_argument("--max-offsets", type=int, default=100_000, help="maxOffsetsPerTrigger (chunk size)")
    p.add_argument("--records", type=int, help="records expected in the topic (for messages only); backfill: "
                   "records of history to produce first")
    p.add_argument("--rate", type=float, help="freshness: records per second to produce")
    p.add_argument("--seconds", type=float, help="freshness: how long to produce (measured)")
    p.add_argument("--warmup-seconds", type=float, default=0.0, help="freshness: produce this long first, unmeasured")
    p.add_argument("--trigger", default="0 seconds", help="freshness: the processing-time trigger interval")
    p.add_argument("--backfill-rate", type=float, help="backfill: backfill.max_records_per_second (none: no limit)")
    p.add_argument("--merge-size", type=int, help="merge: silver rows before the MERGE")
    p.add_argument("--merge-batch-rows", type=int, default=100_000, help="merge: rows of the merged batch")
    return p.parse_args(argv)


def pipelines_file() -> str:
    """Where ``import pipelines`` resolved (a check that the intended checkout is measured)."""
    import pipelines

    return str(Path(pipelines.__file__).resolve())


def load_cfg(work: Path, bootstrap: str | None) -> Config:
    """``conf/local.yaml`` of the imported checkout, with the benchmark's overrides.

    Data under ``work``, jars from this checkout's ``.local/jars`` (an older worktree has none),
    the bootstrap servers of the benchmark's broker, the UI off, 4 shuffle partitions, and room
    for 1000 progress updates (the streaming pipelines count their input rows from them).
    """
    import pipelines
    from pipelines.config import load_config

    root = Path(pipelines.__file__).resolve().parents[1]
    overrides: dict[str, Any] = {
        "app": {"data_dir": str(work / "data"), "jars_dir": str(REPO / ".local" / "jars")},
        "spark": {"conf": {"spark.ui.enabled": "false", "spark.sql.shuffle.partitions": "4",
                           "spark.sql.streaming.numRecentProgressUpdates": "1000"}},
    }
    if bootstrap:
        overrides["kafka"] = {"bootstrap_servers": bootstrap}
    return load_config(root / "conf" / "local.yaml").with_overrides(**overrides)


def run(args: argparse.Namespace) -> dict[str, Any]:
    """Run the pipeline named by ``args.pipeline`` and return its result."""
    from bench import drain

    work = args.work.resolve()
    work.mkdir(parents=True, exist_ok=True)
    if args.pipeline == "probe":
        return {"python": sys.executable, "pythonpath": os.environ.get("PYTHONPATH", "")}
    if args.pipeline == "raw_consumer":
        return drain.raw_consumer(_need(args, "bootstrap"), _need(args, "topic"))

    from pipelines.session import build_session

    cfg = load_cfg(work, args.bootstrap)
    spark = build_session(cfg)
    try:
        if args.pipeline == "freshness":
            from bench.freshness import measure

            return measure(spark, cfg, _need(args, "topic"), work, rate=_need(args, "rate"),
                           seconds=_need(args, "seconds"), trigger=args.trigger, max_offsets=args.max_offsets,
                           warmup_s=args.warmup_seconds)
        if args.pipeline == "gold":
            from bench.gold_cost import measure as gold_measure

            return gold_measure(spark, cfg, _need(args, "topic"), work, rate=_need(args, "rate"),
                                seconds=_need(args, "seconds"), trigger=args.trigger, warmup_s=args.warmup_seconds)
        if args.pipeline == "backfill":
            from bench.backfill_load import measure as backfill_measure

            return backfill_measure(spark, cfg, _need(args, "topic"), work, rate=_need(args, "rate"),
                                    seconds=_need(args, "seconds"), trigger=args.trigger,
                                    history=_need(args, "records"), warmup_s=args.warmup_seconds,
                                    backfill_rate=args.backfill_rate)
        if args.pipeline == "merge":
            from bench.merge_scope import merge_scaling

            rows = merge_scaling(spark, [_need(args, "merge_size")], args.merge_batch_rows, work)
            return {"rows": rows}
        fn = {"spark_ceiling": drain.spark_ceiling, "delta_sink": drain.delta_sink,
              "single_append": drain.single_append, "at_least_once": drain.at_least_once,
              "exactly_once": drain.exactly_once,
              "exactly_once_no_quality": drain.exactly_once_no_quality}[args.pipeline]
        return fn(spark, cfg, _need(args, "topic"), work, args.max_offsets)
    finally:
        spark.stop()


def _need(args: argparse.Namespace, name: str) -> Any:
    value = getattr(args, name)
    if value is None:
        raise SystemExit(f"bench.worker --pipeline {args.pipeline} needs --{name.replace('_', '-')}")
    return value


def main(argv: list[str] | None = None) -> int:
    """Run one pipeline; print ``BENCH-RESULT <json>`` as the only line on stdout."""
    args = parse_args(argv)
    sys.stdout.flush()
    result_fd = os.dup(1)
    os.dup2(2, 1)  # from here on, stdout (ours, the JVM's) goes to stderr
    result = run(args)
    result.update(pipeline=args.pipeline, pipelines_file=pipelines_file(), pid=os.getpid())
    sys.stdout.flush()
    os.write(result_fd, (RESULT_TAG + json.dumps(result, default=str) + "\n").encode())
    os.close(result_fd)
    return 0


if __name__ == "__main__":
    sys.exit(main())
