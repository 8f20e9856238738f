"""The one command line: ``python -m pipelines <command>`` (also installed as ``lakehouse``).

Commands:
    jars          resolve the Delta, Kafka connector and broker jars from Maven Central
    kafka         up | down | status of the embedded local broker (127.0.0.1 only)
    produce       send a seeded demo stream with duplicates and malformed records
    ingest        run the exactly-once ingest job (streaming, or --available-now)
    gold          keep the gold aggregates exact (streaming, or --available-now); gold rebuild [--table T]
    backfill      a bounded Kafka range (--from/--to or --offsets), archived files (--files) or bronze (--bronze)
                  through the batch path, exactly once; backfill status
    quarantine    replay [--reason R] [--since T] [--dry-run]: move records that pass now into silver, once
    verify        reconcile the topic with the tables, and gold with silver; exit 1 on any discrepancy
    quality       docs: build Great Expectations Data Docs; check --table T: validate a whole table
    migrate       evolve existing tables to a changed event contract (safe changes only)
    rebind        accept a new Kafka source (another cluster, a recreated topic) deliberately
    demo          what `make run` does: broker, produce, ingest, verify, summary
    spark-args    print spark-submit arguments (--jars/--conf) equivalent to the session factory
    submit        run a job file with spark-submit, e.g. `submit pipelines/jobs/ingest.py --available-now`
"""

from __future__ import annotations

import argparse
import json
import os
import sys
import time
from collections.abc import Sequence
from pathlib import Path
from typing import TYPE_CHECKING, Any

from pipelines import logs, paths
from pipelines.config import Config, load_config
from pipelines.errors import PipelineError
from pipelines.jobs.backfill import add_range_arguments

if TYPE_CHECKING:
    from pipelines.local.kafka import LocalKafka

DEFAULT_CONF = "conf/local.yaml"

_log = logs.get("cli")


def _default_conf() -> str:
    if Path(DEFAULT_CONF).exists():
        return DEFAULT_CONF
    return str(paths.REPO_ROOT / DEFAULT_CONF)


def _parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(
        prog="python -m pipelines",
        description="Exactly-once streaming lakehouse: Kafka -> Spark Structured Streaming -> Delta Lake.",
        formatter_class=argparse.RawDescriptionHelpFormatter,
        epilog="Config: conf/base.yaml + the --conf file + PIPELINES__<SECTION>__<KEY> environment variables.",
    )
    p.add_argument("--conf", default=None, help=f"environment config file (default: {DEFAULT_CONF})")
    p.add_argument("--log-level", default=logs.env_level(),
                   type=str.upper, choices=logs.LEVELS,
                   help="the package's messages on stderr at this level and above (default: $PIPELINES_LOG_LEVEL or "
                        "INFO; Spark's own logging: spark.log4j_file)")
    p.add_argument("--log-json", action="store_true", default=os.environ.get(logs.JSON_ENV) == "1",
                   help="log one JSON object per message (time, level, logger, message) for log shippers "
                        "(or PIPELINES_LOG_JSON=1)")
    sub = p.add_subparsers(dest="command", required=True, metavar="command")

    j = sub.add_parser("jars", help="resolve jars from Maven Central into app.jars_dir")
    j.add_argument("--force", action="store_true", help="resolve again even if up to date")

    k = sub.add_parser("kafka", help="the embedded local Kafka broker")
    k.add_argument("action", choices=["up", "down", "status"])
    k.add_argument("--wipe", action="store_true", help="with down: also delete the broker's data")

    pr = sub.add_parser("produce", help="send a seeded demo stream (duplicates, late and malformed records)")
    pr.add_argument("--topic", help="default: producer.topic")
    pr.add_argument("--events", type=int, help="records to send (default: producer.events)")
    pr.add_argument("--rate", type=float, help="records per second, 0 = unlimited (default: producer.rate)")
    pr.add_argument("--partitions", type=int, help="partitions if the topic is created (default: producer.partitions)")
    pr.add_argument("--seed", type=int, help="default: producer.seed")
    pr.add_argument("--duplicates", type=float, help="duplicate fraction (default: producer.duplicate_fraction)")
    pr.add_argument("--malformed", type=float, help="malformed fraction (default: producer.malformed_fraction)")
    pr.add_argument("--no-ledger", action="store_true", help="do not write the ledger")

    ing = sub.add_parser("ingest", help="run the exactly-once ingest job")
    ing.add_argument("--available-now", action="store_true", help="catch up with Kafka, then exit")
    ing.add_argument("--max-offsets", type=int, help="override kafka.max_offsets_per_trigger")

    g = sub.add_parser("gold", help="the gold aggregates: keep them equal to a recomputation from silver "
                       "(streaming from silver's change feed, or --available-now), or rebuild them")
    g.add_argument("action", nargs="?", choices=["rebuild"],
                   help="rebuild: recompute gold tables from silver and replace each in one commit "
                   "(stop the gold job first)")
    g.add_argument("--available-now", action="store_true", help="catch up with silver, then exit")
    g.add_argument("--table", action="append", help="with rebuild: only this table (repeatable; default: all)")
    g.add_argument("--show", type=int, default=0, metavar="N", help="after catching up, print N rows of each table")

    bf = sub.add_parser("backfill", help="read a bounded Kafka range, archived files or bronze as a batch job, "
                        "in chunks, through the stream's batch path into the same tables (exactly once; resumable; "
                        "safe beside the live stream); `backfill status` shows the ledger",
                        description="Backfill into bronze/quarantine/silver exactly once: a Kafka range (--from/--to "
                        "record timestamps, or --offsets), archived files (--files, --format), or the raw records "
                        "bronze stores (--bronze: re-derive silver and quarantine after a parser fix). The same "
                        "range run again adds nothing; a killed run, started again, skips its finished chunks.")
    bf.add_argument("action", nargs="?", choices=["status"], help="status: one line per run from the ledger")
    add_range_arguments(bf)

    qr = sub.add_parser("quarantine", help="replay: re-run quarantined records through the current parser and "
                        "rules; those that pass move into silver once and are marked replayed in quarantine")
    qr.add_argument("action", choices=["replay"])
    qr.add_argument("--reason", help="only rows with this reason (the primary reason, or any reason code, e.g. "
                    "MISSING_FIELD or MISSING_FIELD:amount or EXPECTATION)")
    qr.add_argument("--since", metavar="TIME", help="only rows quarantined at or after this time (ISO-8601, UTC "
                    "unless a zone is given)")
    qr.add_argument("--dry-run", action="store_true", help="count what would move; write nothing")
    qr.add_argument("--chunk-records", type=int, metavar="N", help="rows per chunk (default: backfill.chunk_records)")

    v = sub.add_parser("verify", help="reconcile the topic with bronze/quarantine/silver, and gold with silver")
    v.add_argument("--ledger", action="store_true", help="also check the producer ledgers of the topic")
    v.add_argument("--json", action="store_true", help="print the report as JSON")

    st = sub.add_parser("status", help="one screen: the queries' last batches, lag per partition, table versions, "
                                       "sizes and small files, the last quality result (read-only)")
    st.add_argument("--json", action="store_true", help="print the report as JSON (for scripts and alerts)")

    from pipelines.jobs.maintain import add_arguments as maintain_arguments

    mt = sub.add_parser("maintain", help="compact small files (OPTIMIZE), VACUUM, remove checkpoints rebind moved "
                                         "aside; safe while the stream runs (maintenance.* in the config)")
    maintain_arguments(mt)

    q = sub.add_parser("quality", help="data-quality contracts: Data Docs, whole-table checks")
    qs = q.add_subparsers(dest="quality_command", required=True, metavar="action")
    qd = qs.add_parser("docs", help="store the suites and the batch records not stored yet in the GX project, "
                       "build Data Docs (HTML) under the data folder, print the index path")
    qd.add_argument("--batches", type=int, default=0,
                    help="add only the newest N batch records missing from GX's store (default 0: all of them)")
    qc = qs.add_parser("check", help="validate a whole table with its suite (for silver also: message_id unique); "
                       "exit 1 if a quarantine or fail rule failed (warn rules are reported only)")
    qc.add_argument("--table", required=True, help="bronze, silver, quarantine, audit or quality")
    qc.add_argument("--json", action="store_true", help="print the results as JSON")

    mg = sub.add_parser("migrate", help="evolve existing tables to the event contract in the config (safe changes "
                        "only: add an optional column, drop NOT NULL, widen a decimal)")
    mg.add_argument("--dry-run", action="store_true", help="print the changes without applying them")

    sub.add_parser("rebind", help="accept a new Kafka source deliberately (another cluster, or a recreated topic): "
                   "move the checkpoint aside and record the new ids in the tables (stop the job first)")

    d = sub.add_parser("demo", help="broker up, produce, ingest and gold (available-now), verify, summary")
    d.add_argument("--events", type=int, help="default: producer.events")
    d.add_argument("--fresh", action="store_true",
                   help="delete tables, checkpoint, ledger, the GX project and topic data first")

    pk = sub.add_parser("package", help="zip the pipelines package for the executors (spark-submit --py-files)")
    pk.add_argument("--out", default=".local/dist/pipelines.zip", help="the zip to write (default: %(default)s)")
    cd = sub.add_parser("cluster-demo", help="the pipeline on a local Spark standalone cluster (2 workers): a worker "
                        "and the driver SIGKILLed mid-stream, then verify")
    cd.add_argument("--events", type=int, default=20000, help="records to produce (default: 20000)")
    cd.add_argument("--seconds", type=float, default=60.0, help="produce them over about this long (default: 60)")
    cd.add_argument("--max-offsets", type=int, default=1000, help="maxOffsetsPerTrigger (default: 1000)")
    cd.add_argument("--seed", type=int, default=5)
    cd.add_argument("--timeout", type=float, default=1200.0, help="seconds for the whole run before it gives up "
                    "(verify excluded; default: 1200)")
    cd.add_argument("--keep", action="store_true", help="keep the work folder (logs, tables) when the run passes")
    ch = sub.add_parser("chaos", help="fault-injection run: kill -9 the job anywhere, restart the broker, verify")
    ch.add_argument("--rounds", type=int, default=5)
    ch.add_argument("--events", type=int, default=20000)
    ch.add_argument("--broker-restarts", type=int, default=1)
    ch.add_argument("--seed", type=int, default=1)
    ch.add_argument("--max-offsets", type=int, default=5000, help="maxOffsetsPerTrigger of the job (default: 5000)")
    ch.add_argument("--no-checkpoint-reset", action="store_true")
    ch.add_argument("--round-seconds", default="15,35", help="how long a round lets the job run before its "
                    "action, drawn between LO,HI seconds (default: %(default)s)")
    ch.add_argument("--actions", help="comma-separated schedule instead of the seeded one, "
                    "e.g. fault:after_silver_commit,kill,broker-kill")
    ch.add_argument("--ingest-command", help="run this command instead of `python -m pipelines ingest` (it gets "
                    "--conf FILE [--available-now]); tests use it to prove the harness catches a broken job")
    ch.add_argument("--no-gold", action="store_true", help="do not run the gold job beside ingest")
    ch.add_argument("--no-backfill", action="store_true", help="do not run backfills of recent offsets beside "
                    "ingest (killed and resumed on a seeded schedule)")
    ch.add_argument("--result-file", help="also write the result table (markdown) here")

    sub.add_parser("spark-args", help="print spark-submit arguments equivalent to the session factory")

    sm = sub.add_parser("submit", help="run a job file with spark-submit, local jars and this config")
    sm.add_argument("job", help="e.g. pipelines/jobs/ingest.py")
    sm.add_argument("job_args", nargs=argparse.REMAINDER, help="arguments for the job (the --conf is added)")
    return p


def _load(args: argparse.Namespace, **overrides: dict) -> Config:
    cfg = load_config(args.conf or _default_conf())
    return cfg.with_overrides(**overrides) if overrides else cfg


def _ledger_dir(cfg: Config, topic: str) -> Path:
    return Path(cfg.data_dir) / paths.LEDGER_SUBDIR / topic


def cmd_jars(cfg: Config, args: argparse.Namespace) -> int:
    """``jars``."""
    from pipelines.local import jars

    t0 = time.monotonic()
    found = jars.provision(cfg.jars_dir, force=args.force)
    print(f"jars ready in {cfg.jars_dir} ({len(found)} Spark jars, broker jars in "
          f"{jars.kafka_jars_dir(cfg.jars_dir)}) in {time.monotonic() - t0:.1f}s")
    return 0


def cmd_kafka(cfg: Config, args: argparse.Namespace) -> int:
    """``kafka up|down|status``."""
    from pipelines.local.kafka import LocalKafka

    broker = LocalKafka.from_config(cfg)
    if args.action == "up":
        t0 = time.monotonic()
        pid = broker.start()
        print(f"kafka up: pid {pid}, {broker.bootstrap_servers}, data and log in {broker.home} "
              f"({time.monotonic() - t0:.1f}s)")
    elif args.action == "down":
        stopped = broker.stop()
        print("kafka down: stopped" if stopped else "kafka down: it was not running")
        if args.wipe:
            broker.wipe()
            print(f"kafka down: wiped {broker.home}")
    else:
        st = broker.status()
        print(f"kafka {st.describe()}")
        return 0 if st.running and st.answering else 3
    return 0


def _produce(cfg: Config, *, topic: str, events: int, rate: float, partitions: int, seed: int,
             duplicates: float, malformed: float, ledger: bool, bootstrap: str) -> dict:
    from pipelines.tools.producer import produce

    pc = cfg.producer
    ledger_path = None
    if ledger:
        ledger_path = _ledger_dir(cfg, topic) / f"{time.strftime('%Y%m%dT%H%M%S')}-seed{seed}.jsonl"
    stats = produce(
        bootstrap, topic, events, partitions=partitions, rate=rate, seed=seed,
        duplicate_fraction=duplicates, conflicting_fraction=pc.conflicting_fraction,
        cross_partition_fraction=pc.cross_partition_fraction, malformed_fraction=malformed,
        late_fraction=pc.late_fraction, ledger_path=ledger_path,
        id_prefix=f"s{seed}-{time.strftime('%Y%m%dT%H%M%S')}",
        progress=sys.stderr.isatty(),
    )
    return stats.as_dict()


def cmd_produce(cfg: Config, args: argparse.Namespace) -> int:
    """``produce``."""
    pc = cfg.producer
    out = _produce(
        cfg, topic=args.topic or pc.topic, events=args.events if args.events is not None else pc.events,
        rate=args.rate if args.rate is not None else pc.rate,
        partitions=args.partitions or pc.partitions, seed=args.seed if args.seed is not None else pc.seed,
        duplicates=args.duplicates if args.duplicates is not None else pc.duplicate_fraction,
        malformed=args.malformed if args.malformed is not None else pc.malformed_fraction,
        ledger=not args.no_ledger, bootstrap=cfg.kafka.bootstrap_servers,
    )
    print(json.dumps(out, indent=2))
    return 0


def cmd_ingest(cfg: Config, args: argparse.Namespace) -> int:
    """``ingest``."""
    from pipelines.jobs.ingest import run_ingest
    from pipelines.session import build_session

    if args.max_offsets is not None:
        cfg = cfg.with_overrides(kafka={"max_offsets_per_trigger": args.max_offsets})
    spark = build_session(cfg)
    summary = run_ingest(spark, cfg, available_now=True if args.available_now else None,
                         install_signal_handlers=True)
    print(json.dumps(summary.as_dict(), indent=2))
    return 0


def cmd_gold(cfg: Config, args: argparse.Namespace) -> int:
    """``gold`` and ``gold rebuild``."""
    from pipelines.jobs.gold import rebuild, run_gold
    from pipelines.session import build_session

    spark = build_session(cfg)
    if args.action == "rebuild":
        for r in rebuild(spark, cfg, args.table):
            print(f"gold rebuild: {r.table}: {r.rows} rows, from silver version {r.silver_version}")
        return 0
    if args.table:
        raise PipelineError("--table goes with `gold rebuild`; the gold job keeps every declared table")
    summary = run_gold(spark, cfg, available_now=True if args.available_now else None,
                       install_signal_handlers=True)
    print(json.dumps(summary.as_dict(), indent=2))
    if args.show:
        _show_gold(spark, cfg, args.show)
    return 0


def _show_gold(spark: Any, cfg: Config, n: int) -> None:
    from pipelines.jobs.gold import select_specs

    for spec in select_specs(spark, cfg):
        df = spark.read.format("delta").load(spec.path)
        order = [f"{k} DESC" if k == "window_start" else k for k in spec.keys]
        print(f"gold {spec.name} ({df.count()} rows), first {n} by {', '.join(order)}:")
        df.orderBy(*[spark_col(o) for o in order]).show(n, truncate=False)


def spark_col(order: str) -> Any:
    """A sort column from ``name`` or ``name DESC``."""
    from pyspark.sql import functions as F

    name, _, direction = order.partition(" ")
    return F.col(name).desc() if direction == "DESC" else F.col(name)


def _verify(cfg: Config, spark: Any, ledger: bool) -> Any:
    from pipelines.tools.verify import verify

    files: list[Path] = []
    if ledger:
        for topic in cfg.kafka.topics:
            files += sorted(_ledger_dir(cfg, topic).glob("*.jsonl"))
    return verify(spark, cfg, ledger_files=files or None)


def cmd_backfill(cfg: Config, args: argparse.Namespace) -> int:
    """``backfill`` and ``backfill status``."""
    from pipelines.jobs.backfill import check_range_arguments, ledger_rows, run_from_arguments, status_table
    from pipelines.session import build_session

    if args.action == "status":
        if args.start or args.end or args.offsets or args.files or args.bronze or args.chunk_records:
            raise PipelineError("`backfill status` takes no source or range options")
        spark = build_session(cfg)
        print(status_table(ledger_rows(spark, cfg.table_path("backfills"))))
        return 0
    check_range_arguments(args)  # before Spark starts
    spark = build_session(cfg)
    summary = run_from_arguments(spark, cfg, args)
    print(json.dumps(summary.as_dict(), indent=2, default=str))
    return 0


def cmd_quarantine(cfg: Config, args: argparse.Namespace) -> int:
    """``quarantine replay``."""
    from pipelines.jobs.backfill import parse_time
    from pipelines.jobs.replay import run_quarantine_replay
    from pipelines.session import build_session

    since = parse_time(args.since) if args.since else None
    spark = build_session(cfg)
    summary = run_quarantine_replay(spark, cfg, reason=args.reason, since=since, chunk_records=args.chunk_records,
                                    dry_run=args.dry_run)
    print(json.dumps(summary.as_dict(), indent=2, default=str))
    return 0


def cmd_verify(cfg: Config, args: argparse.Namespace) -> int:
    """``verify``."""
    from pipelines.session import build_session

    spark = build_session(cfg)
    report = _verify(cfg, spark, args.ledger)
    print(json.dumps(report.as_dict(), indent=2, default=str) if args.json else report.table())
    return 0 if report.ok else 1


def cmd_status(cfg: Config, args: argparse.Namespace) -> int:
    """``status``."""
    from pipelines.session import build_session
    from pipelines.tools.console import show
    from pipelines.tools.status import collect_status, render_status

    spark = build_session(cfg, extra={"spark.ui.enabled": "false"})
    report = collect_status(spark, cfg)
    if args.json:
        print(json.dumps(report.as_dict(), indent=2))
    else:
        show(*render_status(report))
    return 0


def cmd_maintain(cfg: Config, args: argparse.Namespace) -> int:
    """``maintain``."""
    from pipelines.jobs.maintain import maintain, render_summary
    from pipelines.session import build_session

    spark = build_session(cfg)
    summary = maintain(spark, cfg, compact=args.compact, vacuum=args.vacuum, checkpoints=args.checkpoints,
                       only=args.only)
    print(json.dumps(summary.as_dict(), indent=2) if args.json else render_summary(summary), end="")
    return 0 if summary.ok else 1


def cmd_quality(cfg: Config, args: argparse.Namespace) -> int:
    """``quality docs`` and ``quality check --table T``."""
    from pipelines.quality import project
    from pipelines.session import build_session

    spark = build_session(cfg)
    if args.quality_command == "docs":
        index, added = project.build_docs(spark, cfg, batches=args.batches or None)
        print(f"quality: {added} batch result(s) added to the GX store")
        print(f"Data Docs: {index}")
        return 0
    ok, results, suite = project.check_table(spark, cfg, args.table)
    if args.json:
        print(json.dumps({"table": args.table, "suite": suite, "success": ok,
                          "results": [r.__dict__ for r in results]}, indent=2, default=str))
    else:
        print(f"quality check of {args.table} (suite {suite}): {'passed' if ok else 'FAILED'} (a failed quarantine "
              "or fail rule fails the check; warn rules are reported)")
        width = max((len(r.expectation) for r in results), default=10)
        for r in results:
            detail = (f"skipped: {r.skipped}" if r.skipped else
                      f"{r.unexpected_count} of {r.element_count} unexpected" if r.unexpected_count is not None
                      else f"observed {r.observed_value}")
            sample = f"  e.g. {', '.join(map(str, r.sample[:3]))}" if r.sample and not r.success else ""
            status = "ok  " if r.success else ("FAIL" if r.blocking else "warn")
            print(f"  {status}  {r.expectation:<{width}}  {r.policy:<10}  {detail}{sample}")
    return 0 if ok else 1


def cmd_migrate(cfg: Config, args: argparse.Namespace) -> int:
    """``migrate``: apply the safe schema changes, or refuse naming the unsafe ones."""
    from pipelines.domain.schema import EventSpec
    from pipelines.io.tables import TablePaths, migrate_tables
    from pipelines.session import build_session

    spark = build_session(cfg)
    changes = migrate_tables(spark, TablePaths.from_config(cfg), EventSpec.from_config(cfg.events),
                             dry_run=args.dry_run)
    if not changes:
        print("migrate: the tables already match the config")
    for c in changes:
        print(f"{'would apply' if args.dry_run else 'applied'}: {c.message}")
        for stmt in c.statements or ():
            print(f"    {stmt}")
    return 0


def cmd_rebind(cfg: Config, args: argparse.Namespace) -> int:
    """``rebind``: accept the Kafka source the brokers report now."""
    from pipelines.io.binding import rebind
    from pipelines.session import build_session

    spark = build_session(cfg)
    identity, moved = rebind(spark, cfg, cfg.table_path("bronze"))
    print(f"rebind: cluster {identity.cluster_id}, topics {identity.topics}")
    if moved:
        print(f"rebind: the old checkpoint is at {moved}; the next start reads from kafka.starting_offsets "
              f"({cfg.kafka.starting_offsets}) under a new app id")
    if cfg.kafka.starting_offsets != "earliest":
        _log.warning(f"rebind: kafka.starting_offsets is {cfg.kafka.starting_offsets!r}: records of the new "
                     "source before that point will not be read; set it to earliest to read them all")
    return 0


def cmd_demo(cfg: Config, args: argparse.Namespace) -> int:
    """``demo``: the whole flow of ``make run``."""
    import shutil

    from pipelines.jobs.ingest import run_ingest
    from pipelines.local import jars
    from pipelines.local.kafka import LocalKafka
    from pipelines.session import build_session

    t_all = time.monotonic()
    pc = cfg.producer
    jars.provision(cfg.jars_dir)
    broker = LocalKafka.from_config(cfg)
    if args.fresh:
        broker.stop()
        broker.wipe()
        for sub in (paths.TABLES_SUBDIR, paths.CHECKPOINTS_SUBDIR, paths.LEDGER_SUBDIR):
            shutil.rmtree(Path(cfg.data_dir) / sub, ignore_errors=True)
        if "://" not in cfg.gx_dir:  # the GX project's stored results belong to the deleted tables
            shutil.rmtree(cfg.gx_dir, ignore_errors=True)
    if broker.is_running():
        _log.info(f"[demo] kafka already running at {broker.bootstrap_servers}")
    else:
        _log.info(f"[demo] starting kafka at {broker.bootstrap_servers} ...")
        broker.start()
    bootstrap = broker.bootstrap_servers
    cfg = cfg.with_overrides(kafka={"bootstrap_servers": bootstrap})
    events = args.events if args.events is not None else pc.events
    _log.info(f"[demo] producing {events} records to '{pc.topic}' "
              f"(~{pc.duplicate_fraction:.0%} duplicates, ~{pc.malformed_fraction:.0%} malformed) ...")
    t0 = time.monotonic()
    produced = _produce(cfg, topic=pc.topic, events=events, rate=pc.rate, partitions=pc.partitions,
                        seed=pc.seed, duplicates=pc.duplicate_fraction, malformed=pc.malformed_fraction,
                        ledger=True, bootstrap=bootstrap)
    _log.info(f"[demo] produced {produced['sent']} in {time.monotonic() - t0:.1f}s")
    _log.info("[demo] starting Spark and ingesting (available-now) ...")
    spark = build_session(cfg)
    summary = run_ingest(spark, cfg, available_now=True, install_signal_handlers=True)
    _log.info(f"[demo] ingested {summary.rows_read} records in {summary.batches} batches, {summary.seconds:.1f}s")
    gold = None
    if cfg.gold.tables:
        from pipelines.jobs.gold import run_gold

        _log.info("[demo] updating the gold aggregates from silver's change feed (available-now) ...")
        gold = run_gold(spark, cfg, available_now=True, install_signal_handlers=True)
        built = f"{gold.tables_built} tables built from silver, then " if gold.tables_built else ""
        _log.info(f"[demo] gold: {built}{gold.changes} silver changes, {gold.groups_recomputed} groups recomputed "
                  f"(+{gold.inserted} ~{gold.updated}) in {gold.seconds:.1f}s")
    _log.info("[demo] verifying (topic from earliest vs tables, plus the producer ledger) ...")
    report = _verify(cfg, spark, True)
    docs = None
    if (cfg.expectations_dir / "silver.yaml").is_file():
        from pipelines.quality import project

        _log.info("[demo] building Great Expectations Data Docs ...")
        docs, _ = project.build_docs(spark, cfg)
    print()
    print("=" * 72)
    print("produced this run:  " + ", ".join(
        f"{k}={produced[k]}" for k in ("sent", "unique_valid", "duplicates", "conflicting", "cross_partition",
                                       "late", "malformed_total")))
    print("ingested this run:  " + ", ".join(
        f"{k}={getattr(summary, k)}" for k in ("batches", "rows_read", "silver_inserted", "quarantined",
                                               "duplicates_in_batch", "duplicates_in_table")))
    if gold is not None:
        _show_gold(spark, cfg, 5)
    print(report.table())
    print(f"tables: {Path(cfg.data_dir) / paths.TABLES_SUBDIR}  checkpoint: {cfg.checkpoint_path}")
    if docs is not None:
        print(f"data quality: {cfg.expectations_dir / 'silver.yaml'} -> quality table, Data Docs: {docs}")
    print(f"total {time.monotonic() - t_all:.0f}s; the broker keeps running (`make kafka-down` stops it)")
    print("=" * 72)
    return 0 if report.ok else 1


def _scratch_run(cfg: Config, name: str, max_offsets: int) -> tuple[Path, LocalKafka, Config]:
    """A work folder, a started broker of its own (free ports) and a config with topic ``name`` and tables in it."""
    import tempfile

    from pipelines.local import jars
    from pipelines.local.kafka import LocalKafka, free_port

    jars.provision(cfg.jars_dir)
    work = Path(tempfile.mkdtemp(prefix=f"{name}-", dir=cfg.data_dir if Path(cfg.data_dir).exists() else None))
    broker = LocalKafka(work / "kafka", port=free_port(), controller_port=free_port(), jars_dir=cfg.jars_dir,
                        heap=cfg.local_kafka.heap)
    broker.start()
    run_cfg = cfg.with_overrides(app={"data_dir": str(work / "data")}, producer={"topic": name},
                                 kafka={"bootstrap_servers": broker.bootstrap_servers,
                                        "max_offsets_per_trigger": max_offsets})
    return work, broker, run_cfg


def cmd_chaos(cfg: Config, args: argparse.Namespace) -> int:
    """``chaos``: a seeded fault-injection run on its own broker, topic and data folder."""
    import shlex

    from pipelines.tools.chaos import run_chaos

    work, broker, run_cfg = _scratch_run(cfg, "chaos", args.max_offsets)
    try:
        report = run_chaos(run_cfg, args.conf or _default_conf(), broker, rounds=args.rounds, events=args.events,
                           seed=args.seed, broker_restarts=args.broker_restarts,
                           round_seconds=_seconds_range(args.round_seconds),
                           checkpoint_reset=not args.no_checkpoint_reset, work_dir=work,
                           ingest_command=shlex.split(args.ingest_command) if args.ingest_command else None,
                           actions=args.actions.split(",") if args.actions else None, gold=not args.no_gold,
                           backfill=not args.no_backfill)
    finally:
        broker.stop()
    print(report.table())
    if args.result_file:
        import subprocess

        commit = subprocess.run(["git", "rev-parse", "--short", "HEAD"], capture_output=True, text=True,
                                cwd=paths.REPO_ROOT).stdout.strip()
        Path(args.result_file).parent.mkdir(parents=True, exist_ok=True)
        Path(args.result_file).write_text(f"# chaos run\n\ncommit {commit}, {time.strftime('%Y-%m-%d %H:%M')}, "
                                          f"seed {args.seed}\n\n```\n{report.table()}\n```\n")
    print(f"work folder (logs, tables): {work}")
    return 0 if report.ok else 1


def cmd_package(cfg: Config, args: argparse.Namespace) -> int:
    """``package``: the zip for ``--py-files``."""
    from pipelines.local.cluster import package_zip

    print(package_zip(Path(args.out).resolve()))
    return 0


def cmd_cluster_demo(cfg: Config, args: argparse.Namespace) -> int:
    """``cluster-demo``: ingest and gold on a loopback standalone cluster, a worker and the driver killed."""
    import shutil

    from pipelines.tools.cluster_demo import run_cluster_demo

    work, broker, run_cfg = _scratch_run(cfg, "cluster", args.max_offsets)
    try:
        report = run_cluster_demo(run_cfg, args.conf or _default_conf(), broker.bootstrap_servers, work,
                                  events=args.events, seconds=args.seconds, seed=args.seed, timeout_s=args.timeout)
    finally:
        broker.stop()
    print(report.table())
    if report.ok and not args.keep:
        shutil.rmtree(work, ignore_errors=True)
    else:
        print(f"work folder (logs, tables): {work}")
    return 0 if report.ok else 1


def _seconds_range(text: str) -> tuple[float, float]:
    try:
        lo, hi = (float(x) for x in text.split(","))
    except ValueError:
        raise PipelineError(f"--round-seconds must be LO,HI (e.g. 15,35), got {text!r}") from None
    if not 0 < lo <= hi:
        raise PipelineError(f"--round-seconds needs 0 < LO <= HI, got {text!r}")
    return lo, hi


def cmd_spark_args(cfg: Config, args: argparse.Namespace) -> int:
    """``spark-args``."""
    import shlex

    from pipelines.session import spark_submit_args

    print(" ".join(shlex.quote(a) for a in spark_submit_args(cfg)))
    return 0


def cmd_submit(cfg: Config, args: argparse.Namespace) -> int:
    """``submit``: exec spark-submit (the driver's Python is this interpreter)."""
    from pipelines.session import is_local_master, loopback_env, submit_command

    py_files = None
    if not is_local_master(cfg.spark.master):  # the executors import the package: ship it
        from pipelines.local.cluster import package_zip

        py_files = package_zip(paths.REPO_ROOT / ".local" / "dist" / "pipelines.zip")
        _log.info(f"[submit] shipping the package to the executors: --py-files {py_files}")
    cmd = submit_command(cfg, args.job, args.job_args, args.conf or _default_conf(), py_files=py_files)
    env = {**os.environ, "PYSPARK_PYTHON": sys.executable, "PYSPARK_DRIVER_PYTHON": sys.executable,
           **loopback_env(cfg.spark.master)}
    os.execve(cmd[0], cmd, env)
    return 0  # not reached


COMMANDS = {
    "jars": cmd_jars, "kafka": cmd_kafka, "produce": cmd_produce, "ingest": cmd_ingest,
    "verify": cmd_verify, "gold": cmd_gold, "backfill": cmd_backfill, "quarantine": cmd_quarantine,
    "migrate": cmd_migrate, "rebind": cmd_rebind, "demo": cmd_demo, "spark-args": cmd_spark_args,
    "submit": cmd_submit, "chaos": cmd_chaos, "quality": cmd_quality, "cluster-demo": cmd_cluster_demo,
    "package": cmd_package, "status": cmd_status, "maintain": cmd_maintain,
}


def main(argv: Sequence[str] | None = None) -> int:
    """Run the CLI; returns the exit status (2 for errors with a clear message)."""
    args = _parser().parse_args(argv)
    logs.setup(args.log_level, json_lines=args.log_json)
    # Jobs this command starts (spark-submit, the harnesses' processes) log the same way.
    os.environ[logs.LEVEL_ENV], os.environ[logs.JSON_ENV] = args.log_level, "1" if args.log_json else "0"
    try:
        cfg = _load(args)
        return COMMANDS[args.command](cfg, args)
    except PipelineError as e:
        print(f"error: {e.message}", file=sys.stderr)
        if e.hint:
            print(f"hint: {e.hint}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        print("interrupted", file=sys.stderr)
        return 130
    except Exception as e:  # a JVM error: show its first lines, not a page of Java frames
        name = type(e).__name__
        if name in ("Py4JJavaError", "AnalysisException", "StreamingQueryException", "Py4JError") or \
                name.endswith("Exception") and "pyspark" in type(e).__module__:
            text = str(e).strip().splitlines()
            print(f"error: Spark failed: {' '.join(text[:3])[:800]}", file=sys.stderr)
            print("hint: see the lines above for the cause; set PIPELINES_DEBUG=1 for the full trace",
                  file=sys.stderr)
            if os.environ.get("PIPELINES_DEBUG") == "1":
                raise
            return 2
        raise
