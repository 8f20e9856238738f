"""``maintain``: keep the tables healthy while the stream runs (compaction, VACUUM, old checkpoints).

Every micro-batch adds a few small files to each table; the MERGEs and every reader slow down
as they pile up. This job, run on a schedule (daily is plenty for most topics; see README
"Running it in production"), does per table:

1. **Compaction** (Delta ``OPTIMIZE``, bin-packing) once the table has at least
   ``maintenance.compact_min_small_files`` files below ``maintenance.small_file_mb``. Its commit
   changes no data (``dataChange=false``: the gold stream and other change readers skip it). A
   stream's MERGE whose files it replaced fails its commit with a concurrent-delete conflict and
   retries, and so does this job (``maintenance.conflict_retries``): rows are neither lost nor
   doubled either way (the writes are keyed and carry their transaction identity).
2. **VACUUM** with ``maintenance.vacuum_retention_hours`` (at least Delta's 168-hour floor):
   deletes files that left the table longer ago than that. The stream and batch readers read
   the newest version, so a retention longer than the longest query is safe for them; the gold
   query reads *older* silver versions (silver's change feed): silver is not vacuumed while
   gold's position is older than the retention (it says so; start gold, or lower nothing).
3. **Old checkpoints**: a checkpoint ``rebind`` moved aside (``<checkpoint>.replaced-<time>``)
   is deleted once older than the retention. Spark itself keeps the last
   ``spark.sql.streaming.minBatchesToRetain`` (100) batches of a live checkpoint and removes
   older ones; Delta removes its own expired log files (``delta.logRetentionDuration``) when it
   writes a log checkpoint.

It never changes a table's metadata or properties (a metadata change fails every concurrent
writer's commit without a retry).
"""

from __future__ import annotations

import argparse
import datetime as dt
import json
import re
import sys
import time
from dataclasses import asdict, dataclass, field
from typing import Any

from pyspark.sql import SparkSession
from pyspark.sql import functions as F

from pipelines import logs
from pipelines.config import Config, load_config
from pipelines.errors import ConfigError
from pipelines.io import writers
from pipelines.io.checkpoint import hadoop_path
from pipelines.io.health import table_health, table_inventory

_log = logs.get("maintain")

#: Delta refuses a shorter VACUUM retention unless its safety check is turned off.
DELTA_MIN_RETENTION_HOURS = 168
#: The tables' ``delta.deletedFileRetentionDuration`` (how long Delta remembers a removed file).
TOMBSTONE_RETENTION_HOURS = 168


@dataclass
class TableUpkeep:
    """What ``maintain`` did to one table."""

    table: str
    files_before: int = 0
    small_before: int = 0
    compacted: bool = False
    files_after: int | None = None
    vacuumed_files: int | None = None
    skipped: str | None = None
    error: str | None = None
    attempts: int = 0


@dataclass
class MaintainSummary:
    """Totals of one ``maintain`` run (also its JSON output)."""

    tables: list[TableUpkeep] = field(default_factory=list)
    checkpoints_removed: list[str] = field(default_factory=list)
    seconds: float = 0.0

    @property
    def ok(self) -> bool:
        """No table failed, and none was left unvacuumed for a lagging reader (exit 1 otherwise)."""
        return not any(u.error or (u.skipped and u.skipped.startswith("VACUUM skipped")) for u in self.tables)

    def as_dict(self) -> dict[str, Any]:
        """Plain dict (for JSON)."""
        return {**asdict(self), "ok": self.ok}


def check_retention(cfg: Config, spark: SparkSession) -> int:
    """The VACUUM retention in hours, refused (naming the key) outside what protects anything.

    Below Delta's 168-hour floor VACUUM can delete files a running query reads. Above the tables'
    ``delta.deletedFileRetentionDuration`` (168 hours, :data:`pipelines.io.tables.COMMON_PROPERTIES`)
    it protects nothing more: Delta forgets a removed file after that long, and VACUUM then deletes
    it by its age as an unknown file.
    """
    hours = cfg.maintenance.vacuum_retention_hours
    where = f"maintenance.vacuum_retention_hours is {hours} (from {', '.join(cfg.sources)})"
    check = spark.conf.get("spark.databricks.delta.retentionDurationCheck.enabled", "true")
    if hours < DELTA_MIN_RETENTION_HOURS and str(check).lower() != "false":
        raise ConfigError(
            f"{where}: below Delta's minimum of {DELTA_MIN_RETENTION_HOURS} hours, VACUUM can delete files a "
            "running reader or the gold stream still needs",
            hint=f"use at least {DELTA_MIN_RETENTION_HOURS}; or, knowing no reader lags that long, set "
                 "spark.databricks.delta.retentionDurationCheck.enabled to false in spark.conf")
    if hours > TOMBSTONE_RETENTION_HOURS:
        raise ConfigError(
            f"{where}: longer than the tables' delta.deletedFileRetentionDuration ({TOMBSTONE_RETENTION_HOURS} "
            "hours), after which Delta forgets removed files and VACUUM deletes them by age: it would protect "
            "nothing more", hint=f"use {TOMBSTONE_RETENTION_HOURS}, or raise the tables' "
            "delta.deletedFileRetentionDuration first (README: Running it in production)")
    return hours


def silver_versions_in_use(spark: SparkSession, cfg: Config, latest: int) -> dict[str, int]:
    """Who still reads an older silver version than ``latest``, and the oldest version each reads.

    The gold stream reads silver's changes from its checkpoint's position on; ``verify`` and
    ``gold`` compare each gold table with silver *as of* the version its newest gold commit
    recorded (which stays put while silver's commits change no data, e.g. a compaction).
    """
    from delta.tables import DeltaTable

    from pipelines.jobs.gold import silver_version_of
    from pipelines.tools.status import delta_next_version, query_status

    users: dict[str, int] = {}
    position = delta_next_version(query_status(spark, cfg.gold.query_name, cfg.gold_checkpoint_path).offsets)
    if position is not None and position <= latest:
        users["the gold stream"] = position
    for t in cfg.gold.tables:
        path = cfg.gold_table_path(t)
        if DeltaTable.isDeltaTable(spark, path):
            version = silver_version_of(spark, path)[0]
            if version is not None and version < latest:
                users[f"gold.{t.name} (as of its last commit)"] = version
    return users


def commit_epoch_s(spark: SparkSession, path: str, version: int, latest: int) -> float | None:
    """When ``version`` was committed, in epoch seconds (None if its log entry is gone)."""
    from delta.tables import DeltaTable

    row = (DeltaTable.forPath(spark, path).history(max(1, latest - version + 1))
           .where(F.col("version") == version).select(F.unix_millis("timestamp").alias("ms")).first())
    return row["ms"] / 1000 if row is not None else None


#: VACUUM of silver waits this much longer than the retention for an older reader (clock skew,
#: files written a little before their commit).
GUARD_MARGIN_S = 3600.0


def silver_vacuum_blocker(spark: SparkSession, cfg: Config, path: str, hours: int) -> str | None:
    """Why silver must not be vacuumed now (None: nobody reads a version whose files VACUUM would delete).

    A version's files can only have been removed by a later commit; VACUUM deletes files removed
    more than ``hours`` ago. So an oldest reader at version V is safe while commit V+1 is younger.
    """
    from pipelines.io import writers

    latest = writers.table_version(spark, path)
    users = silver_versions_in_use(spark, cfg, latest)
    if not users:
        return None
    who, oldest = min(users.items(), key=lambda kv: kv[1])
    after = commit_epoch_s(spark, path, oldest + 1, latest)
    if after is not None and after > time.time() - hours * 3600 + GUARD_MARGIN_S:
        return None
    return (f"{who} reads silver version {oldest}, and the commits after it are older than the {hours}h "
            "retention: VACUUM could delete files it needs")


def _retrying(cfg: Config, name: str, what: str, write: Any, upkeep: TableUpkeep) -> Any:
    def retry(attempt: int, error: BaseException) -> None:
        upkeep.attempts = attempt + 1
        _log.info(f"[maintain] {name}: {what} lost a race with a concurrent commit (attempt {attempt}); again")

    upkeep.attempts = max(upkeep.attempts, 1)
    return writers.retry_on_conflict(write, retries=cfg.maintenance.conflict_retries, on_retry=retry)


def _vacuum(spark: SparkSession, path: str, hours: int) -> int:
    """VACUUM ``path``; returns how many files it was to delete.

    Counted by a DRY RUN just before (Delta records the count in the table's history only where
    ``spark.databricks.delta.vacuum.logging.enabled``).
    """
    from delta.tables import DeltaTable

    eligible = spark.sql(f"VACUUM delta.`{path}` RETAIN {hours} HOURS DRY RUN").count()
    if eligible:
        DeltaTable.forPath(spark, path).vacuum(hours).collect()
    return int(eligible)


def _upkeep(spark: SparkSession, cfg: Config, name: str, path: str, upkeep: TableUpkeep, *, compact: bool,
            vacuum: bool, hours: int, small: int) -> None:
    from delta.tables import DeltaTable

    before = table_health(spark, name, path, small)
    upkeep.files_before, upkeep.small_before = before.files, before.small_files
    if not before.exists:
        upkeep.skipped = "not created yet"
        return
    if compact and before.small_files >= cfg.maintenance.compact_min_small_files:
        _retrying(cfg, name, "compaction", lambda: DeltaTable.forPath(spark, path).optimize()
                  .executeCompaction().collect(), upkeep)
        upkeep.compacted = True
        upkeep.files_after = table_health(spark, name, path, small).files
        _log.info(f"[maintain] {name}: compacted {before.files} files ({before.small_files} small) into "
                  f"{upkeep.files_after}")
    if not vacuum:
        return
    if name == "silver":
        blocker = silver_vacuum_blocker(spark, cfg, path, hours)
        if blocker is not None:
            upkeep.skipped = f"VACUUM skipped: {blocker}"
            _log.warning(f"[maintain] silver: {upkeep.skipped}; run gold to catch up")
            return
    upkeep.vacuumed_files = _retrying(cfg, name, "VACUUM", lambda: _vacuum(spark, path, hours), upkeep)


def maintain(spark: SparkSession, cfg: Config, *, compact: bool = True, vacuum: bool = True,
             checkpoints: bool = True, only: list[str] | None = None) -> MaintainSummary:
    """Compact, vacuum and clean up (see the module docstring); safe while the jobs run.

    A table whose upkeep fails (e.g. it lost every race) is recorded with its error and the
    others still get theirs; ``only`` (some tables) leaves the checkpoints alone.
    """
    t0 = time.monotonic()
    summary = MaintainSummary()
    hours = check_retention(cfg, spark) if vacuum else cfg.maintenance.vacuum_retention_hours
    small = cfg.maintenance.small_file_mb * 1024 * 1024
    inventory = table_inventory(cfg)
    if only:
        unknown = sorted(set(only) - set(inventory))
        if unknown:
            raise ConfigError(f"no table named {', '.join(unknown)}; the tables are: {', '.join(inventory)}")
        inventory = {k: v for k, v in inventory.items() if k in only}
    # OPTIMIZE rewrites files below minFileSize (Delta's default: 1 GiB, i.e. every file, every
    # day): only the small ones here.
    key = "spark.databricks.delta.optimize.minFileSize"
    previous = spark.conf.get(key, None)
    spark.conf.set(key, str(small))
    try:
        for name, path in inventory.items():
            upkeep = TableUpkeep(name)
            summary.tables.append(upkeep)
            try:
                _upkeep(spark, cfg, name, path, upkeep, compact=compact, vacuum=vacuum, hours=hours, small=small)
            except Exception as e:  # the other tables still get their upkeep; the run exits 1
                upkeep.error = str(e).strip().splitlines()[0][:300] if str(e).strip() else type(e).__name__
                _log.error(f"[maintain] {name}: {upkeep.error}")
    finally:
        if previous is None:
            spark.conf.unset(key)
        else:
            spark.conf.set(key, previous)
    if checkpoints and not only:
        summary.checkpoints_removed = remove_replaced_checkpoints(spark, cfg, hours,
                                                                  dt.datetime.now(dt.UTC).replace(tzinfo=None))
    summary.seconds = round(time.monotonic() - t0, 1)
    return summary


_REPLACED = re.compile(r"\.replaced-(\d{8}T\d{6}Z)$")


def remove_replaced_checkpoints(spark: SparkSession, cfg: Config, hours: int, now: dt.datetime) -> list[str]:
    """Delete checkpoints ``rebind`` moved aside more than ``hours`` ago; returns their paths."""
    removed = []
    for checkpoint in (cfg.checkpoint_path, cfg.gold_checkpoint_path):
        fs, pattern = hadoop_path(spark, checkpoint.rstrip("/") + ".replaced-*")
        for st in fs.globStatus(pattern) or []:
            p = st.getPath()
            m = _REPLACED.search(p.getName())
            if m is None:
                continue
            moved_at = dt.datetime.strptime(m.group(1), "%Y%m%dT%H%M%SZ")
            if moved_at < now - dt.timedelta(hours=hours):
                fs.delete(p, True)
                removed.append(str(p))
                _log.info(f"[maintain] removed the checkpoint replaced at {moved_at} UTC: {p}")
    return removed


def render_summary(summary: MaintainSummary) -> str:
    """The summary as a table for people."""
    from pipelines.tools.console import render, table

    rows = [{"table": u.table, "files before": u.files_before, "small": u.small_before,
             "compacted": "yes" if u.compacted else "", "files after": u.files_after,
             "vacuumed files": u.vacuumed_files, "attempts": u.attempts, "note": u.error or u.skipped or ""}
            for u in summary.tables]
    text = render(table(rows, title="maintain"))
    if summary.checkpoints_removed:
        text += "removed checkpoints: " + ", ".join(summary.checkpoints_removed) + "\n"
    return text + f"{summary.seconds:.1f}s\n"


def add_arguments(p: argparse.ArgumentParser) -> None:
    """The options of ``maintain`` (shared by the CLI and this job file)."""
    p.add_argument("--no-compact", dest="compact", action="store_false", help="skip compaction (OPTIMIZE)")
    p.add_argument("--no-vacuum", dest="vacuum", action="store_false", help="skip VACUUM")
    p.add_argument("--no-checkpoints", dest="checkpoints", action="store_false",
                   help="keep the checkpoints rebind moved aside")
    p.add_argument("--table", action="append", dest="only", metavar="NAME",
                   help="only this table (repeatable): bronze, silver, quarantine, audit, quality, backfills, "
                        "gold.<name>")
    p.add_argument("--json", action="store_true", help="print the summary as JSON")


def main(argv: list[str] | None = None) -> int:
    """Entry point for ``spark-submit pipelines/jobs/maintain.py --conf conf/local.yaml``."""
    p = argparse.ArgumentParser(prog="maintain", description="Compact and vacuum the tables, remove old "
                                "checkpoints; safe while the stream runs.")
    p.add_argument("--conf", default="conf/local.yaml", help="environment config file (default: %(default)s)")
    add_arguments(p)
    args = p.parse_args(argv)
    from pipelines.session import build_session

    cfg = load_config(args.conf)
    spark = build_session(cfg)
    summary = maintain(spark, cfg, compact=args.compact, vacuum=args.vacuum, checkpoints=args.checkpoints,
                       only=args.only)
    print(json.dumps(summary.as_dict()) if args.json else render_summary(summary))
    return 0 if summary.ok else 1


if __name__ == "__main__":
    sys.exit(main())
