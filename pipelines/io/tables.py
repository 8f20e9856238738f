"""Delta table creation: schemas and properties declared in code, created if absent."""

from __future__ import annotations

from dataclasses import dataclass

from pyspark.sql import SparkSession
from pyspark.sql import types as T

from pipelines.config import Config
from pipelines.domain import schema as S
from pipelines.domain.schema import EventSpec
from pipelines.errors import PipelineError

BRONZE, SILVER, QUARANTINE, AUDIT = "bronze", "silver", "quarantine", "audit"
ALL_TABLES = (BRONZE, SILVER, QUARANTINE, AUDIT)

_COORD_STATS = ",".join([*S.COORDINATES, S.BATCH_ID, S.APP_ID])

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
}


@dataclass(frozen=True)
class TablePaths:
    """Where the four tables live."""

    bronze: str
    silver: str
    quarantine: str
    audit: str

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
    }


def ensure_tables(spark: SparkSession, tables: TablePaths, spec: EventSpec) -> None:
    """Create each table if absent; if present, check its columns match the declared schema.

    Raises:
        PipelineError: an existing table's columns differ from what the config declares.

    """
    from delta.tables import DeltaTable

    for name, schema in table_schemas(spec).items():
        path = tables.of(name)
        if DeltaTable.isDeltaTable(spark, path):
            existing = spark.read.format("delta").load(path).schema
            want = [(f.name, f.dataType.simpleString()) for f in schema.fields]
            have = [(f.name, f.dataType.simpleString()) for f in existing.fields]
            if want != have:
                raise PipelineError(
                    f"the {name} table at {path} has columns {have}, but the config declares {want}",
                    hint="point tables.* at a new location, or migrate the table (ALTER TABLE) before ingesting",
                )
            continue
        builder = DeltaTable.createIfNotExists(spark).location(path).addColumns(schema)
        for key, value in TABLE_PROPERTIES[name].items():
            builder = builder.property(key, value)
        builder.execute()
