"""Delta table creation: schemas and properties declared in code, created if absent."""

from __future__ import annotations

import json
from dataclasses import dataclass

from pyspark.sql import SparkSession
from pyspark.sql import types as T

from pipelines.config import Config
from pipelines.domain import schema as S
from pipelines.domain.schema import EventSpec
from pipelines.errors import PipelineError

BRONZE, SILVER, QUARANTINE, AUDIT, QUALITY = "bronze", "silver", "quarantine", "audit", "quality"
ALL_TABLES = (BRONZE, SILVER, QUARANTINE, AUDIT, QUALITY)

_COORD_STATS = ",".join([*S.COORDINATES, S.BATCH_ID, S.APP_ID])

#: Set on every table the pipeline creates (README "Running it in production" explains each):
#: - log and removed-file retention explicit (Delta's defaults, 30 and 7 days): time travel and
#:   change-feed reads reach back that far, VACUUM (``maintain``) keeps removed files that long;
#: - auto compaction and optimized writes off: both run inside the writing batch (a compaction
#:   commit after the batch's commit, a shuffle before its write), so they would land on the
#:   stream's critical path; ``maintain`` compacts on a schedule instead, off that path.
#: Set at creation only: changing a property later is a metadata commit, which fails every
#: concurrent writer's commit (stop the jobs for ``ALTER TABLE ... SET TBLPROPERTIES``).
COMMON_PROPERTIES: dict[str, str] = {
    "delta.logRetentionDuration": "interval 30 days",
    "delta.deletedFileRetentionDuration": "interval 7 days",
    "delta.autoOptimize.autoCompact": "false",
    "delta.autoOptimize.optimizeWrite": "false",
}

# Stats columns drive file skipping: the keyed MERGEs prune on them.
TABLE_PROPERTIES: dict[str, dict[str, str]] = {
    BRONZE: {"delta.dataSkippingStatsColumns": _COORD_STATS, "delta.appendOnly": "false"},
    QUARANTINE: {"delta.dataSkippingStatsColumns": _COORD_STATS + f",{S.REASON}"},
    SILVER: {
        "delta.dataSkippingStatsColumns": f"{S.MESSAGE_ID},{S.EVENT_DATE},{_COORD_STATS}",
        # Gold aggregates will read silver's change feed.
        "delta.enableChangeDataFeed": "true",
    },
    AUDIT: {},
    QUALITY: {},
}


@dataclass(frozen=True)
class TablePaths:
    """Where the tables live."""

    bronze: str
    silver: str
    quarantine: str
    audit: str
    quality: str

    @classmethod
    def from_config(cls, cfg: Config) -> TablePaths:
        """Resolve the table locations of ``cfg``."""
        return cls(*(cfg.table_path(name) for name in ALL_TABLES))

    def of(self, name: str) -> str:
        """Path of table ``name``."""
        return str(getattr(self, name))


def table_schemas(spec: EventSpec) -> dict[str, T.StructType]:
    """The declared schema of every table."""
    return {
        BRONZE: S.BRONZE_SCHEMA,
        SILVER: S.silver_schema(spec),
        QUARANTINE: S.QUARANTINE_SCHEMA,
        AUDIT: S.AUDIT_SCHEMA,
        QUALITY: S.QUALITY_SCHEMA,
    }


@dataclass(frozen=True)
class SchemaChange:
    """One difference between an existing table and the schema the code and contract declare.

    ``statements`` are the SQL that evolve the table safely; None means there is no safe
    in-place change (the message says what to do instead).
    """

    table: str
    column: str
    message: str
    statements: tuple[str, ...] | None

    @property
    def safe(self) -> bool:
        """True when :func:`migrate_tables` can apply it."""
        return self.statements is not None


def _is_decimal_widening(old: T.DataType, new: T.DataType) -> bool:
    return (isinstance(old, T.DecimalType) and isinstance(new, T.DecimalType) and new.scale >= old.scale
            and new.precision - new.scale >= old.precision - old.scale and new != old)


def table_schema(spark: SparkSession, path: str) -> T.StructType:
    """The schema Delta recorded for the table, with each column's nullability (NOT NULL or not)."""
    jvm = spark.sparkContext._jvm
    assert jvm is not None
    log = jvm.org.apache.spark.sql.delta.DeltaLog.forTable(spark._jsparkSession, path)
    snapshot = log.update(False, jvm.scala.Option.empty(), jvm.scala.Option.empty())
    return T.StructType.fromJson(json.loads(snapshot.schema().json()))


def _diff(name: str, path: str, have: T.StructType, want: T.StructType) -> list[SchemaChange]:
    table = f"delta.`{path}`"
    changes: list[SchemaChange] = []

    def change(column: str, message: str, *statements: str) -> None:
        """Record a difference; no statements means there is no safe in-place change."""
        changes.append(SchemaChange(name, column, f"{name}.{column} {message}", statements or None))

    existing = {f.name: f for f in have.fields}
    for f in want.fields:
        old, ddl, col = existing.get(f.name), f.dataType.simpleString(), f"`{f.name}`"
        if old is None and f.nullable:
            change(f.name, f"({ddl}) is declared but not in the table: add it (existing rows get NULL)",
                   f"ALTER TABLE {table} ADD COLUMNS ({col} {ddl})")
        elif old is None:
            change(f.name, f"({ddl}) is declared required but not in the table: existing rows have no value for "
                   "it. Declare it with required: false, or write to new tables and backfill")
        elif old.dataType != f.dataType and _is_decimal_widening(old.dataType, f.dataType):
            change(f.name, f"is {old.dataType.simpleString()} in the table, {ddl} declared: widen it (Delta type "
                   "widening; readers need Delta 3.2 or later)",
                   f"ALTER TABLE {table} SET TBLPROPERTIES ('delta.enableTypeWidening' = 'true')",
                   f"ALTER TABLE {table} ALTER COLUMN {col} TYPE {ddl}")
        elif old.dataType != f.dataType:
            change(f.name, f"is {old.dataType.simpleString()} in the table, {ddl} declared: not a safe widening. "
                   "Keep the old type, or write to new tables (tables.*) and backfill")
        elif old.nullable and not f.nullable:
            change(f.name, "is nullable in the table, required in the contract: set NOT NULL (Delta refuses if a "
                   "row holds NULL)", f"ALTER TABLE {table} ALTER COLUMN {col} SET NOT NULL")
        elif f.nullable and not old.nullable:
            change(f.name, "is NOT NULL in the table, optional in the contract: drop the NOT NULL constraint",
                   f"ALTER TABLE {table} ALTER COLUMN {col} DROP NOT NULL")
    declared = {f.name for f in want.fields}
    for f in have.fields:
        if f.name not in declared:
            change(f.name, "is in the table but no longer declared: keep it in the contract (with required: "
                   "false) rather than removing it")
    return changes


def schema_changes(spark: SparkSession, tables: TablePaths, spec: EventSpec) -> list[SchemaChange]:
    """Every difference between the existing tables and the declared schemas (none for new tables)."""
    from delta.tables import DeltaTable

    out: list[SchemaChange] = []
    for name, schema in table_schemas(spec).items():
        path = tables.of(name)
        if DeltaTable.isDeltaTable(spark, path):
            out += _diff(name, path, table_schema(spark, path), schema)
    return out


MIGRATE_COMMAND = "python -m pipelines migrate"


def ensure_tables(spark: SparkSession, tables: TablePaths, spec: EventSpec) -> None:
    """Create each table if absent; if present, check it matches the declared schema exactly.

    Column names, types and nullability are compared (column order is not: writes go by name).

    Raises:
        PipelineError: an existing table differs; the message lists each column and whether
            ``migrate`` can evolve it.

    """
    from delta.tables import DeltaTable

    changes = schema_changes(spark, tables, spec)
    if changes:
        lines = "\n".join(f"  - {c.message}" + ("" if c.safe else " [no safe in-place change]") for c in changes)
        unsafe = [c for c in changes if not c.safe]
        raise PipelineError(
            f"the tables differ from what this version declares (the event contract in the config, and the "
            f"pipeline's own columns):\n{lines}",
            hint=(f"run `{MIGRATE_COMMAND}` (with the same --conf) to apply these changes, then start again"
                  if not unsafe else "change the config back, or follow the note of each change marked "
                  "[no safe in-place change]; `migrate` applies only safe changes"),
        )
    for name, schema in table_schemas(spec).items():
        path = tables.of(name)
        if DeltaTable.isDeltaTable(spark, path):
            continue
        builder = DeltaTable.createIfNotExists(spark).location(path).addColumns(schema)
        for key, value in {**COMMON_PROPERTIES, **TABLE_PROPERTIES[name]}.items():
            builder = builder.property(key, value)
        builder.execute()


def migrate_tables(spark: SparkSession, tables: TablePaths, spec: EventSpec, *,
                   dry_run: bool = False) -> list[SchemaChange]:
    """Apply the safe schema changes (see :func:`schema_changes`); refuse all if any is unsafe.

    Returns:
        The changes (applied unless ``dry_run``).

    Raises:
        PipelineError: a change has no safe in-place form; nothing was applied.

    """
    changes = schema_changes(spark, tables, spec)
    unsafe = [c for c in changes if not c.safe]
    if unsafe:
        raise PipelineError("no table was changed: " + "; ".join(c.message for c in unsafe),
                            hint="change the config back, or write to new tables (tables.*) and backfill")
    if not dry_run:
        for c in changes:
            for stmt in c.statements or ():
                spark.sql(stmt).collect()
    return changes
