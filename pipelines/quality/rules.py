"""Row-level expectations as predicates: a Spark column for the batch path, a Python function for ``verify``.

Both are read from the same :class:`~pipelines.quality.suites.Rule` (the suite file is the one
source of truth) and follow Great Expectations' semantics for these types:

- a NULL value is not evaluated (it passes), except by ``expect_column_values_to_not_be_null``;
- ``row_condition`` (GX's structured conditions: ``comparison``, ``nullity``, ``and``, ``or``)
  restricts the rows evaluated; a row it does not select passes;
- ``min_value``/``max_value`` are inclusive unless ``strict_min``/``strict_max``; either may be
  absent; ``mostly`` only changes whether the batch's result counts as a success, not which rows
  fail.

A bound may be a GX suite parameter ``{"$PARAMETER": "now() + timedelta(days=1)"}``. In the
pipeline, ``now()`` is the record's Kafka timestamp, not the wall clock: a batch re-run after a
crash, days later, must route every record exactly as the first run did (a record must never land
in quarantine in one run and in silver in the other). A whole-table ``quality check`` (GX itself)
leaves such rules out.

The Python side exists so that ``verify`` judges the Spark routing with an independent
implementation; both are kept side by side here so that they stay the same rules.
"""

from __future__ import annotations

import datetime as dt
import json
import re
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from decimal import Decimal, InvalidOperation
from typing import Any

from pyspark.sql import Column
from pyspark.sql import functions as F
from pyspark.sql import types as T

from pipelines.domain import schema as S
from pipelines.errors import ConfigError
from pipelines.quality.suites import Rule, Suite

#: The reason code prefix of a row quarantined by an expectation: ``EXPECTATION:<rule name>``.
REASON_PREFIX = S.Reason.EXPECTATION

_PARAMETER = re.compile(r"^\s*now\(\)\s*(?:([+-])\s*timedelta\(([^()]*)\))?\s*$")
_DELTA_ARG = re.compile(r"^\s*(weeks|days|hours|minutes|seconds)\s*=\s*([0-9]+(?:\.[0-9]+)?)\s*$")


@dataclass(frozen=True)
class RelativeToRecord:
    """A bound ``now() ± delta``, where now is the record's Kafka timestamp."""

    delta: dt.timedelta

    def spark(self) -> Column:
        """The bound for each row."""
        micros = int(self.delta / dt.timedelta(microseconds=1))
        return F.timestamp_micros(F.unix_micros(F.col(S.KAFKA_TIMESTAMP)) + F.lit(micros))

    def python(self, kafka_ts: dt.datetime | None) -> dt.datetime | None:
        """The bound for a record with Kafka timestamp ``kafka_ts`` (UTC)."""
        return None if kafka_ts is None else _aware(kafka_ts) + self.delta


def parameter(where: str, value: Any) -> RelativeToRecord | None:
    """A bound ``{"$PARAMETER": "now() +/- timedelta(...)"}`` read as :class:`RelativeToRecord`; None for a constant.

    Raises:
        ConfigError: another parameter expression (named with ``where``).

    """
    if not (isinstance(value, dict) and "$PARAMETER" in value):
        return None
    text = str(value["$PARAMETER"])
    m = _PARAMETER.match(text)
    args = {}
    if m and m.group(2) is not None:
        for part in (p for p in m.group(2).split(",") if p.strip()):
            a = _DELTA_ARG.match(part)
            if not a:
                m = None
                break
            args[a.group(1)] = float(a.group(2))
    if not m:
        raise ConfigError(f"{where}: suite parameter {text!r} is not supported in a row-level rule",
                          hint="use now() or now() +/- timedelta(days=N, hours=N, minutes=N, seconds=N); "
                               "now() is the record's Kafka timestamp")
    delta = dt.timedelta(**args)
    return RelativeToRecord(-delta if m.group(1) == "-" else delta)


def _aware(v: dt.datetime) -> dt.datetime:
    return v.replace(tzinfo=dt.UTC) if v.tzinfo is None else v.astimezone(dt.UTC)


def _typed(where: str, value: Any, dtype: T.DataType) -> Any:
    """A constant of the rule converted to the column's type (Decimal for decimals: exact)."""
    try:
        if isinstance(value, bool) and not isinstance(dtype, T.BooleanType):
            raise TypeError("a boolean")
        if isinstance(dtype, T.DecimalType):
            d = Decimal(str(value))
            if not d.is_finite():
                raise ValueError("not a finite number")
            # 1E+6 would be a literal of negative scale, which Spark refuses: write its digits out
            return d.quantize(Decimal(1)) if d.as_tuple().exponent > 0 else d  # type: ignore[operator]
        if isinstance(dtype, T.TimestampType):
            if isinstance(value, dt.datetime):
                return _aware(value)
            if isinstance(value, dt.date):
                return dt.datetime(value.year, value.month, value.day, tzinfo=dt.UTC)
            return _aware(dt.datetime.fromisoformat(str(value)))
        if isinstance(dtype, T.DateType):
            if isinstance(value, dt.datetime):
                raise TypeError("a timestamp, not a date")
            return value if isinstance(value, dt.date) else dt.date.fromisoformat(str(value))
        if isinstance(dtype, T.LongType | T.IntegerType):
            if isinstance(value, float) and not value.is_integer():
                raise ValueError("not a whole number")
            return int(value)
        if isinstance(dtype, T.DoubleType):
            return float(value)
        if isinstance(dtype, T.BooleanType):
            if not isinstance(value, bool):
                raise TypeError("write true or false")
            return value
        if not isinstance(value, str):  # YAML reads NO, 1.0, 2020-01-01 as other types
            raise TypeError(f"a {type(value).__name__}: quote it to mean text")
        return value
    except (ValueError, TypeError, InvalidOperation) as e:
        raise ConfigError(f"{where}: {value!r} is not a {dtype.simpleString()} value: {e}") from e


def _lit(value: Any) -> Column:
    """A Spark literal that means the same in every session time zone."""
    if isinstance(value, dt.datetime):
        micros = (value - dt.datetime(1970, 1, 1, tzinfo=dt.UTC)) // dt.timedelta(microseconds=1)
        return F.timestamp_micros(F.lit(micros))
    return F.lit(value)


def _text(value: Any) -> str:
    if isinstance(value, RelativeToRecord):
        sign = "-" if value.delta < dt.timedelta(0) else "+"
        return f"the Kafka timestamp {sign} {abs(value.delta)}"
    if isinstance(value, dt.datetime):
        return value.isoformat()
    return str(value)


# ---- row conditions -----------------------------------------------------------------------------


def _check_condition(where: str, cond: Any, types: Mapping[str, T.DataType]) -> Any:
    """GX's structured row condition with its constants typed like their columns."""
    kind = getattr(cond, "type", None)
    if kind in ("and", "or"):
        return (kind, [_check_condition(where, c, types) for c in cond.conditions])
    if kind not in ("comparison", "nullity"):
        raise ConfigError(f"{where}: row_condition must be GX's structured form (type: comparison, nullity, "
                          f"and, or), got {cond!r}",
                          hint="e.g. row_condition: {type: comparison, column: {name: event_type}, "
                               "operator: '==', parameter: refund_issued}")
    name = cond.column.name
    if name not in types:
        raise ConfigError(f"{where}: row_condition column {name!r} is not a column of the table",
                          hint=f"columns: {', '.join(sorted(types))}")
    if kind == "nullity":
        return ("null" if cond.is_null else "notnull", name)
    op = str(cond.operator)
    if op in ("IN", "NOT_IN"):
        return (op, name, [_typed(where, v, types[name]) for v in cond.parameter])
    return (op, name, _typed(where, cond.parameter, types[name]))


_OPS: dict[str, Callable[[Any, Any], Any]] = {
    "==": lambda a, b: a == b, "!=": lambda a, b: a != b, "<": lambda a, b: a < b,
    "<=": lambda a, b: a <= b, ">": lambda a, b: a > b, ">=": lambda a, b: a >= b,
}


def _cond_spark(c: Any) -> Column:
    if c[0] in ("and", "or"):
        parts = [_cond_spark(x) for x in c[1]]
        out = parts[0]
        for p in parts[1:]:
            out = (out & p) if c[0] == "and" else (out | p)
        return out
    col = F.col(c[1])
    if c[0] == "null":
        return col.isNull()
    if c[0] == "notnull":
        return col.isNotNull()
    if c[0] in ("IN", "NOT_IN"):
        member = F.coalesce(col.isin(*[_lit(v) for v in c[2]]), F.lit(False))
        return member if c[0] == "IN" else col.isNotNull() & ~member
    return F.coalesce(_OPS[c[0]](col, _lit(c[2])), F.lit(False))


def _cond_py(c: Any, row: Mapping[str, Any]) -> bool:
    if c[0] == "and":
        return all(_cond_py(x, row) for x in c[1])
    if c[0] == "or":
        return any(_cond_py(x, row) for x in c[1])
    v = row.get(c[1])
    if c[0] == "null":
        return v is None
    if c[0] == "notnull" or v is None:
        return v is not None
    v = _norm(v)
    if c[0] == "IN":
        return v in c[2]
    if c[0] == "NOT_IN":
        return v not in c[2]
    return bool(_OPS[c[0]](v, c[2]))


def _norm(v: Any) -> Any:
    return _aware(v) if isinstance(v, dt.datetime) else v


# ---- the rules ----------------------------------------------------------------------------------


@dataclass(frozen=True)
class RowCheck:
    """One row-level rule of a suite, ready to evaluate.

    :meth:`spark_fails` is true on a row that fails (false, never NULL, on a row it does not
    evaluate); :meth:`fails` says the same for a dict of column -> Python value (with
    ``kafka_timestamp``). Plain data: it pickles to executors, and builds Spark columns only
    when asked (there may be no SparkContext when a suite is loaded).
    """

    rule: Rule
    suite: str
    column: str
    kind: str  # null | range | length | in | not_in | regex | not_regex
    lo: Any = None
    hi: Any = None
    strict_min: bool = False
    strict_max: bool = False
    values: tuple[Any, ...] = ()
    regex: str = ""
    condition: Any = None
    says: str = ""

    @property
    def code(self) -> str:
        """The reason code of a row this rule quarantines."""
        return f"{REASON_PREFIX}:{self.rule.name}"

    def spark_fails(self) -> Column:
        """True on a failing row, else false."""
        col = F.col(self.column)
        if self.kind == "null":
            bad = col.isNull()
        elif self.kind in ("range", "length"):
            subject = F.length(col) if self.kind == "length" else col
            ok = F.lit(True)
            if self.lo is not None:
                lo = self.lo.spark() if isinstance(self.lo, RelativeToRecord) else _lit(self.lo)
                ok = ok & ((subject > lo) if self.strict_min else (subject >= lo))
            if self.hi is not None:
                hi = self.hi.spark() if isinstance(self.hi, RelativeToRecord) else _lit(self.hi)
                ok = ok & ((subject < hi) if self.strict_max else (subject <= hi))
            bad = col.isNotNull() & ~F.coalesce(ok, F.lit(False))
        elif self.kind in ("in", "not_in"):
            member = col.isin(*[_lit(v) for v in self.values])
            bad = col.isNotNull() & (~member if self.kind == "in" else member)
        else:  # Java's find(): a match anywhere, as GX's Spark engine
            found = col.cast("string").rlike(self.regex)
            bad = col.isNotNull() & (~found if self.kind == "regex" else found)
        if self.condition is not None:
            bad = self.spark_domain() & bad
        return F.coalesce(bad, F.lit(False))

    def routing_key(self) -> list[Any]:
        """What decides which rows this rule fails (for the contract fingerprint)."""
        return [self.kind, self.column, _text(self.lo) if self.lo is not None else None,
                _text(self.hi) if self.hi is not None else None, self.strict_min, self.strict_max,
                sorted(map(_text, self.values)), self.regex, repr(self.condition)]

    def spark_domain(self) -> Column:
        """The rows GX evaluates this rule on: those its ``row_condition`` selects (all without one)."""
        return _cond_spark(self.condition) if self.condition is not None else F.lit(True)

    def spark_nonnull(self) -> Column:
        """The rows GX's percentages and ``mostly`` count: the domain's non-null values (``not_be_null``: all)."""
        return self.spark_domain() if self.kind == "null" else self.spark_domain() & F.col(self.column).isNotNull()

    def spark_message(self) -> Column:
        """Why a failing row failed, for quarantine's reason_message."""
        about = f"{self.rule.name}{': ' + self.rule.description if self.rule.description else ''}"
        return F.concat(F.lit(f"{self.column} "), F.coalesce(F.col(self.column).cast("string"), F.lit("null")),
                        F.lit(f" {self.says} ({about})"))

    def fails(self, row: Mapping[str, Any]) -> bool:
        """The Python reading of :meth:`spark_fails` for one row."""
        if self.condition is not None and not _cond_py(self.condition, row):
            return False
        v = row.get(self.column)
        if self.kind == "null":
            return v is None
        if v is None:
            return False
        if self.kind in ("range", "length"):
            x: Any = len(v) if self.kind == "length" else _norm(v)
            ts = row.get(S.KAFKA_TIMESTAMP)
            lo: Any = self.lo.python(ts) if isinstance(self.lo, RelativeToRecord) else self.lo
            hi: Any = self.hi.python(ts) if isinstance(self.hi, RelativeToRecord) else self.hi
            if self.lo is not None and (lo is None or not (x > lo if self.strict_min else x >= lo)):
                return True
            return self.hi is not None and (hi is None or not (x < hi if self.strict_max else x <= hi))
        if self.kind in ("in", "not_in"):
            return (_norm(v) in self.values) != (self.kind == "in")
        # Java's syntax (Spark's rlike) read by Python's re in ASCII mode: the same for the common
        # subset (classes, anchors ^ and \A, quantifiers, groups); see README, Data quality.
        return (re.search(self.regex, v, re.ASCII) is not None) != (self.kind == "regex")


def row_checks(suite: Suite, types: Mapping[str, T.DataType]) -> list[RowCheck]:
    """Every row-level rule of ``suite``, checked against the columns ``types`` (name -> type).

    Raises:
        ConfigError: a rule names an unknown column, a constant of the wrong type, or an
            unsupported parameter or row condition; the message names the file and the rule.

    """
    return [_row_check(suite, rule, types) for rule in suite.rules if rule.row_level]


_KINDS = {
    "expect_column_values_to_not_be_null": "null",
    "expect_column_values_to_be_between": "range",
    "expect_column_value_lengths_to_be_between": "length",
    "expect_column_values_to_be_in_set": "in",
    "expect_column_values_to_not_be_in_set": "not_in",
    "expect_column_values_to_match_regex": "regex",
    "expect_column_values_to_not_match_regex": "not_regex",
}


def _row_check(suite: Suite, rule: Rule, types: Mapping[str, T.DataType]) -> RowCheck:
    where = f"{suite.source}: {rule.name}"
    kw = rule.kwargs
    name = str(kw.get("column"))
    if name not in types:
        raise ConfigError(f"{where}: column {name!r} is not a column of the {suite.table} table",
                          hint=f"columns: {', '.join(sorted(types))}")
    dtype = types[name]
    kind = _KINDS[rule.type]
    if kind in ("length", "regex", "not_regex") and not isinstance(dtype, T.StringType):
        raise ConfigError(f"{where}: {rule.type} applies to text; {name} is {dtype.simpleString()}",
                          hint="use expect_column_values_to_be_between or _in_set for other types")
    fields: dict[str, Any] = {}
    if kind in ("range", "length"):
        bounds: dict[str, Any] = {}
        for key in ("min_value", "max_value"):
            raw = kw.get(key)
            rel = parameter(f"{where}: {key}", raw)
            if rel is not None and (kind == "length" or not isinstance(dtype, T.TimestampType)):
                raise ConfigError(f"{where}: {key}: now() only applies to the values of a timestamp column")
            bounds[key] = rel if rel is not None else (
                None if raw is None else _typed(f"{where}: {key}", raw, T.LongType() if kind == "length" else dtype))
        lo, hi = bounds["min_value"], bounds["max_value"]
        if lo is None and hi is None:
            raise ConfigError(f"{where}: give min_value, max_value or both")
        strict_min, strict_max = bool(kw.get("strict_min")), bool(kw.get("strict_max"))
        what = "length" if kind == "length" else "value"
        says = (f"{what} is not "
                + (f"between {_text(lo)} and {_text(hi)}" if lo is not None and hi is not None
                   else f"{'>' if strict_min else '>='} {_text(lo)}" if lo is not None
                   else f"{'<' if strict_max else '<='} {_text(hi)}"))
        fields = {"lo": lo, "hi": hi, "strict_min": strict_min, "strict_max": strict_max, "says": says}
    elif kind in ("in", "not_in"):
        raw_set = kw.get("value_set")
        if not isinstance(raw_set, list | tuple) or not raw_set:
            raise ConfigError(f"{where}: value_set must be a non-empty list")
        values = tuple(_typed(f"{where}: value_set", v, dtype) for v in raw_set)
        shown = ", ".join(map(_text, values[:10])) + (", ..." if len(values) > 10 else "")
        fields = {"values": values, "says": f"is {'not ' if kind == 'in' else ''}in {{{shown}}}"}
    elif kind in ("regex", "not_regex"):
        regex = kw.get("regex")
        if not isinstance(regex, str):
            raise ConfigError(f"{where}: regex must be a string")
        try:
            re.compile(regex, re.ASCII)
        except re.error as e:
            raise ConfigError(f"{where}: regex {regex!r} does not compile: {e}") from e
        fields = {"regex": regex, "says": f"does {'not ' if kind == 'regex' else ''}match {regex}"}
    else:
        fields = {"says": "is null"}
    cond = getattr(rule_expectation(suite, rule), "row_condition", None)
    if cond is not None:
        fields["condition"] = _check_condition(where, cond, types)
        fields["says"] += f" (where {cond!r})"
    return RowCheck(rule, suite.name, name, kind, **fields)


def rule_expectation(suite: Suite, rule: Rule) -> Any:
    """The GX expectation object of ``rule``."""
    return suite.gx_suite.expectations[suite.rules.index(rule)]


def kwargs_json(rule: Rule) -> str:
    """The rule's kwargs as JSON (for the validation record)."""
    return json.dumps(rule.kwargs, sort_keys=True, default=str)
