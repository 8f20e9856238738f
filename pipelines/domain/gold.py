"""Gold tables: declared in ``gold.tables`` of the config, computed by pure transforms of silver.

A gold table groups silver rows by its ``group_by`` columns and, optionally, a tumbling
event-time window (keys ``window_start``, ``window_end``), and computes its aggregates:

- ``sum`` / ``min`` / ``max`` of a silver column over the rows its ``where`` selects (a sum of no
  rows is 0, a min or max of none is NULL);
- ``count`` of the rows its ``where`` selects (of the non-NULL values of ``column`` if given);
- ``expr``: Spark SQL over the table's sum/count/min/max aggregates and the exprs declared before
  it (e.g. ``captured - refunded``).

Only decimal and integer arithmetic: a float or double anywhere in a gold table is refused, so
sums add up exactly. Example::

    spec = gold_specs(cfg, silver_schema)[0]
    silver.transform(aggregate(spec))      # the whole table, recomputed from silver
"""

from __future__ import annotations

import hashlib
import json
import re
from collections.abc import Callable, Sequence
from dataclasses import asdict, dataclass

from pyspark.sql import Column, DataFrame, SparkSession
from pyspark.sql import functions as F
from pyspark.sql import types as T

from pipelines.config import Config, GoldAggregate, GoldWindow
from pipelines.domain import schema as S
from pipelines.errors import ConfigError

WINDOW_START, WINDOW_END = "window_start", "window_end"
_NAME = re.compile(r"^[A-Za-z_][A-Za-z0-9_]*$")
_INTERVAL = re.compile(r"^\s*(\d+)\s+(second|minute|hour|day|week)s?\s*$", re.IGNORECASE)
_SECONDS = {"second": 1, "minute": 60, "hour": 3600, "day": 86400, "week": 7 * 86400}
_FLOATS = (T.FloatType, T.DoubleType)
#: Column names the gold job uses for its own bookkeeping; not allowed as aggregate names.
RESERVED_PREFIX = "_g_"


@dataclass(frozen=True)
class GoldSpec:
    """One validated gold table (see :func:`gold_specs`)."""

    name: str
    path: str
    group_by: tuple[str, ...]
    window: GoldWindow | None
    aggregates: tuple[GoldAggregate, ...]
    #: The silver column that ``event_date`` is derived from (the contract's event time): a
    #: window over it lets a recompute read only the silver files of the dates it needs.
    event_time_field: str = ""

    @property
    def keys(self) -> tuple[str, ...]:
        """The columns that identify a gold row."""
        return ((WINDOW_START, WINDOW_END) if self.window else ()) + self.group_by

    @property
    def values(self) -> tuple[str, ...]:
        """The aggregate columns."""
        return tuple(a.name for a in self.aggregates)

    @property
    def window_seconds(self) -> int:
        """The window's length in seconds (0 without a window)."""
        if self.window is None:
            return 0
        m = _INTERVAL.match(self.window.size)
        assert m is not None  # checked by gold_specs
        return int(m.group(1)) * _SECONDS[m.group(2).lower()]

    @property
    def definition(self) -> str:
        """A fingerprint of what the table computes (recorded as a table property)."""
        text = json.dumps({"group_by": self.group_by, "window": asdict(self.window) if self.window else None,
                           "aggregates": [asdict(a) for a in self.aggregates]}, sort_keys=True)
        return hashlib.sha256(text.encode()).hexdigest()[:16]

    @property
    def prunes_by_event_date(self) -> bool:
        """True when the windows are over the event time, so silver's ``event_date`` narrows a recompute."""
        return self.window is not None and self.window.column == self.event_time_field


def _type(text: str) -> T.DataType:
    name = text.strip().lower()
    if name in ("int", "integer"):
        return T.IntegerType()
    if name in ("bigint",):
        return T.LongType()
    return S.spark_type(name)


def _loses_digits(column: T.DataType, declared: T.DataType) -> bool:
    """True if casting values of ``column`` to ``declared`` would drop fractional digits."""
    scale = column.scale if isinstance(column, T.DecimalType) else 0
    if isinstance(declared, T.DecimalType):
        return declared.scale < scale
    return isinstance(declared, T.IntegralType) and scale > 0


def gold_specs(cfg: Config, silver: T.StructType) -> list[GoldSpec]:
    """Validate ``gold.tables`` against silver's columns and return the specs.

    Raises:
        ConfigError: naming the key (``gold.tables[i]...``) and the config files, for a bad or
            reserved name, a table without keys, a path another table has, an unknown column, a
            window that is not on a timestamp, a bad interval, a sum of a non-numeric column, a
            float or double anywhere, a declared type that would round a column's digits, or an
            ``expr`` without an expression.

    """
    where = ", ".join(cfg.sources) or "config"
    columns = {f.name: f.dataType for f in silver.fields}
    specs: list[GoldSpec] = []
    names: set[str] = set()

    def bad(key: str, message: str, hint: str | None = None) -> ConfigError:
        return ConfigError(f"{where}: {key}: {message}", hint=hint)

    def column(key: str, name: str) -> T.DataType:
        if name not in columns:
            raise bad(key, f"silver has no column {name!r}", hint=f"silver's columns: {', '.join(columns)}")
        return columns[name]

    taken = {cfg.table_path(n): f"tables.{n}" for n in ("bronze", "silver", "quarantine", "audit", "quality")}
    for i, t in enumerate(cfg.gold.tables):
        at = f"gold.tables[{i}]"
        if not _NAME.match(t.name) or t.name in names:
            raise bad(f"{at}.name", f"{t.name!r} must be a unique name of letters, digits and _")
        names.add(t.name)
        path = cfg.gold_table_path(t)
        if path.rstrip("/") in taken:
            raise bad(f"{at}.path", f"{path} is already the location of {taken[path.rstrip('/')]}",
                      hint="give every gold table its own path (default: gold/<name>)")
        taken[path.rstrip("/")] = f"{at}"
        if not t.group_by and t.window is None:
            raise bad(f"{at}.group_by", "a gold table needs keys: declare group_by columns, a window, or both")
        seen: set[str] = set()
        for j, g in enumerate(t.group_by):
            if isinstance(column(f"{at}.group_by[{j}]", g), _FLOATS):
                raise bad(f"{at}.group_by[{j}]", f"{g} is a floating-point column: not a key")
            seen.add(g)
        if t.window is not None:
            if not isinstance(column(f"{at}.window.column", t.window.column), T.TimestampType):
                raise bad(f"{at}.window.column", f"{t.window.column} is not a timestamp")
            m = _INTERVAL.match(t.window.size)
            if not m or int(m.group(1)) == 0:
                raise bad(f"{at}.window.size", f"{t.window.size!r} is not an interval like '1 minute' or '2 hours'")
            seen |= {WINDOW_START, WINDOW_END}
        if not any(a.fn != "expr" for a in t.aggregates):
            raise bad(f"{at}.aggregates", "declare at least one sum, count, min or max")
        for j, a in enumerate(t.aggregates):
            key = f"{at}.aggregates[{j}]"
            if not _NAME.match(a.name) or a.name in seen or a.name.lower().startswith(RESERVED_PREFIX):
                raise bad(f"{key}.name", f"{a.name!r} must be a unique column name (letters, digits, _; "
                          f"not starting with {RESERVED_PREFIX}, which the gold job uses)")
            seen.add(a.name)
            declared = None
            if a.type:
                try:
                    declared = _type(a.type)
                except ValueError as e:
                    raise bad(f"{key}.type", str(e)) from None
                if isinstance(declared, _FLOATS):
                    raise bad(f"{key}.type", f"{a.type}: gold is decimal and integer only (sums must be exact)",
                              hint="use a decimal, e.g. decimal(24,2)")
            if a.fn == "expr":
                if not a.expr or a.column or a.where:
                    raise bad(key, "fn: expr takes `expr` (SQL over the aggregates before it), not column or where")
                continue
            if a.expr:
                raise bad(f"{key}.expr", f"only fn: expr takes an expression (this one is fn: {a.fn})")
            if a.fn == "count":
                if a.column:
                    column(f"{key}.column", a.column)
                if declared is not None and not isinstance(declared, T.IntegralType | T.DecimalType):
                    raise bad(f"{key}.type", f"a count is a number, not {a.type}")
                continue
            if not a.column:
                raise bad(f"{key}.column", f"fn: {a.fn} needs a column")
            ctype = column(f"{key}.column", a.column)
            if isinstance(ctype, _FLOATS):
                raise bad(f"{key}.column", f"{a.column} is floating point: gold is decimal and integer only")
            if a.fn == "sum" and not isinstance(ctype, T.IntegralType | T.DecimalType):
                raise bad(f"{key}.column", f"cannot sum {a.column} ({ctype.simpleString()})")
            if a.fn == "sum" and declared is not None and not isinstance(declared, T.IntegralType | T.DecimalType):
                raise bad(f"{key}.type", f"a sum is a number, not {a.type}")
            if declared is not None and _loses_digits(ctype, declared):
                raise bad(f"{key}.type", f"{a.type} would round or truncate {a.column} ({ctype.simpleString()}): "
                          "gold keeps every digit", hint="declare at least the column's scale, e.g. "
                          f"decimal(38,{ctype.scale if isinstance(ctype, T.DecimalType) else 0})")
        specs.append(GoldSpec(t.name, cfg.gold_table_path(t), tuple(t.group_by), t.window, tuple(t.aggregates),
                              cfg.events.event_time_field))
    return specs


def check_sql(spark: SparkSession, specs: Sequence[GoldSpec], silver: T.StructType, sources: Sequence[str]) -> None:
    """Analyse every ``where`` and ``expr`` on an empty silver frame (Spark's own parser and analyser).

    Raises:
        ConfigError: naming the key and the files, with Spark's message, for SQL that does not
            parse or resolve, and for a table whose result would hold a float or double.

    """
    from pyspark.errors import AnalysisException, ParseException

    where = ", ".join(sources) or "config"
    empty = spark.createDataFrame([], silver)
    for i, spec in enumerate(specs):
        at = f"gold.tables[{i}]"
        for j, a in enumerate(spec.aggregates):
            if a.where:
                try:
                    empty.select(F.expr(a.where).cast("boolean")).schema  # noqa: B018 - analysis only
                except (AnalysisException, ParseException) as e:
                    raise ConfigError(f"{where}: {at}.aggregates[{j}].where: {_first_line(e)}") from None
        try:
            out = empty.transform(aggregate(spec)).schema
        except (AnalysisException, ParseException) as e:
            raise ConfigError(f"{where}: {at}.aggregates: {_first_line(e)}",
                              hint="an expr may use the sum/count/min/max aggregates and the exprs declared "
                              "before it") from None
        floats = [f.name for f in out.fields if isinstance(f.dataType, _FLOATS)]
        if floats:
            raise ConfigError(f"{where}: {at}: {', '.join(floats)} would be floating point: gold is decimal and "
                              "integer only", hint="give those aggregates a decimal `type`")


def _first_line(e: BaseException) -> str:
    return str(e).strip().splitlines()[0][:400]


def with_keys(spec: GoldSpec) -> Callable[[DataFrame], DataFrame]:
    """Add ``window_start`` / ``window_end`` (the tumbling window each row falls in), if ``spec`` has a window."""
    def apply(df: DataFrame) -> DataFrame:
        if spec.window is None:
            return df
        w = F.window(F.col(spec.window.column), spec.window.size)
        return df.withColumns({WINDOW_START: w.getField("start"), WINDOW_END: w.getField("end")})
    return apply


def _aggregate(a: GoldAggregate, rows: T.StructType) -> Column:
    selected = F.expr(a.where).cast("boolean") if a.where else None
    value: Column = F.col(a.column) if a.column else F.lit(1)
    if selected is not None:
        value = F.when(selected, value)
    if a.fn == "count":
        out = F.count(value)
    elif a.fn == "sum":
        ctype = rows[a.column].dataType
        total = F.sum(value)
        out = F.coalesce(total, F.lit(0).cast(ctype if isinstance(ctype, T.DecimalType) else T.LongType()))
    elif a.fn == "min":
        out = F.min(value)
    else:
        out = F.max(value)
    return out.cast(_type(a.type)) if a.type else out


def aggregate_keyed(spec: GoldSpec) -> Callable[[DataFrame], DataFrame]:
    """Group rows that already carry the keys (:func:`with_keys`) and compute the aggregates."""
    def apply(df: DataFrame) -> DataFrame:
        first = [a for a in spec.aggregates if a.fn != "expr"]
        out = df.groupBy(*spec.keys).agg(*[_aggregate(a, df.schema).alias(a.name) for a in first])
        for a in spec.aggregates:
            if a.fn == "expr":
                value = F.expr(a.expr)
                out = out.withColumn(a.name, value.cast(_type(a.type)) if a.type else value)
        return out.select(*spec.keys, *spec.values)
    return apply


def aggregate(spec: GoldSpec) -> Callable[[DataFrame], DataFrame]:
    """The gold table ``spec`` computed from silver rows (for ``df.transform``)."""
    def apply(silver: DataFrame) -> DataFrame:
        return silver.transform(with_keys(spec)).transform(aggregate_keyed(spec))
    return apply


def touched_keys(spec: GoldSpec) -> Callable[[DataFrame], DataFrame]:
    """The distinct keys of ``spec`` that the given silver rows (e.g. a change feed batch) fall in."""
    def apply(rows: DataFrame) -> DataFrame:
        return rows.transform(with_keys(spec)).select(*spec.keys).distinct()
    return apply


def keys_match(left: DataFrame, right: DataFrame, keys: Sequence[str], prefix: str) -> Column:
    """Null-safe equality of ``keys`` between ``left`` and ``right``, whose key columns are named ``prefix + key``."""
    cond = F.lit(True)
    for k in keys:
        cond = cond & left[k].eqNullSafe(right[prefix + k])
    return cond
