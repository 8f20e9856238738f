"""The silver suite on every ingest batch: routing in Spark, counts in the stats pass, the validation record.

Per batch, in the job's own passes (nothing is collected row by row to the driver):

1. :meth:`BatchQuality.route` (a projection right after parsing) evaluates every row-level rule
   on each row that passed the event contract; a failed ``quarantine`` rule adds the reason code
   ``EXPECTATION:<rule>`` and a message, so the row goes to quarantine and not to silver.
2. :meth:`BatchQuality.sums` adds one counter per rule to the batch's stats aggregation: the
   unexpected counts of every rule come with the stats the job computes anyway.
3. Rules without a row-level predicate (aggregates) are validated by Great Expectations itself on
   the batch's rows that passed the contract, in a context owned by this object (one per query).
4. :meth:`BatchQuality.check_failures` stops the batch, before any table write, when a ``fail``
   rule did not succeed, naming the rule and a few failing message IDs.

The evaluated rows are the batch's rows that passed the event contract (before in-batch
deduplication). The results go to the quality table and in every commit's metadata, so a
record lost in a crash is rebuilt from the batch's commits (exactly one per batch and suite).
"""

from __future__ import annotations

import datetime as dt
import json
from dataclasses import dataclass
from typing import Any

from pyspark.sql import Column, DataFrame, Row
from pyspark.sql import functions as F

from pipelines.config import Config
from pipelines.domain import schema as S
from pipelines.domain.schema import EventSpec
from pipelines.errors import ConfigError, PipelineError
from pipelines.quality.rules import REASON_PREFIX, RowCheck, kwargs_json, row_checks, rule_expectation
from pipelines.quality.suites import Rule, Suite, closest

CONTRACT_OK = "_q_contract_ok"
RULE_META = "pipelines_rule"
_EVALUATED = "_q_evaluated"
SAMPLE_IDS = 5


def _flag(i: int) -> str:
    return f"_q_fail_{i}"


def _sum(i: int, what: str = "unexpected") -> str:
    return f"_q_{what}_{i}"


# Pipeline columns a silver row gets at write time: not there when the rules run.
_LINEAGE = {f.name for f in S.LINEAGE_FIELDS} | {S.KAFKA_TOPIC_ID}


class QualityFailedError(PipelineError):
    """A ``fail`` rule did not hold for a batch: nothing of the batch was written."""


@dataclass(frozen=True)
class RuleResult:
    """One rule's result on one batch (a row of the quality table, without the batch identity)."""

    expectation: str
    expectation_type: str
    kwargs: str
    policy: str
    severity: str | None
    success: bool
    element_count: int
    unexpected_count: int | None
    unexpected_percent: float | None
    observed_value: str | None

    def as_list(self) -> list[Any]:
        """Compact form for commit metadata."""
        return [self.expectation, self.expectation_type, self.kwargs, self.policy, self.severity, self.success,
                self.element_count, self.unexpected_count, self.unexpected_percent, self.observed_value]

    @classmethod
    def from_list(cls, values: list[Any]) -> RuleResult:
        """Inverse of :meth:`as_list`."""
        return cls(*values)


def _raised(info: Any) -> str | None:
    """The exception message in a GX result's ``exception_info`` (flat, or per metric), if one was raised."""
    if not isinstance(info, dict):
        return None
    if info.get("raised_exception"):
        return str(info.get("exception_message"))
    for value in info.values():
        if isinstance(value, dict) and value.get("raised_exception"):
            return str(value.get("exception_message"))
    return None


def quality_rows(app_id: str, batch_id: int, suite: str, results: list[RuleResult],
                 run_time: dt.datetime) -> list[tuple[Any, ...]]:
    """The quality table's rows of one batch (see ``schema.QUALITY_SCHEMA``)."""
    return [(app_id, batch_id, suite, r.expectation, r.expectation_type, r.kwargs, r.policy, r.severity,
             r.success, r.element_count, r.unexpected_count, r.unexpected_percent, r.observed_value, run_time)
            for r in results]


def _success(rule: Rule, unexpected: int, nonnull: int) -> bool:
    """GX's rule: success when the share of expected among the non-null values is at least ``mostly``."""
    if nonnull == 0 or unexpected == 0:
        return True
    mostly = float(rule.kwargs.get("mostly", 1.0))
    return (nonnull - unexpected) / nonnull >= mostly


class BatchQuality:
    """The silver suite prepared for the batch path (see the module docstring)."""

    def __init__(self, suite: Suite, spec: EventSpec) -> None:
        types = {f.name: f.dataType for f in S.silver_schema(spec).fields if f.name not in _LINEAGE}
        self.suite = suite
        self.checks: list[RowCheck] = row_checks(suite, types)
        self.aggregates: list[Rule] = [r for r in suite.rules if not r.row_level]
        for rule in self.aggregates:
            for key in ("column", "column_A", "column_B"):
                column = rule.kwargs.get(key)
                if column is not None and column not in types:
                    raise ConfigError(f"{suite.source}: {rule.name}: {key} {column!r} is not a column of the "
                                      f"{suite.table} table{closest(str(column), types)}")
        self._quarantine = [(i, c) for i, c in enumerate(self.checks) if c.rule.policy == "quarantine"]
        self._gx: Any = None
        self._built: dict[int, tuple[list[Column], dict[str, Column], list[Column]]] = {}

    @property
    def fingerprint(self) -> str:
        """What decides routing (the quarantine rules): part of the job's contract id."""
        return json.dumps(sorted(c.routing_key() for _, c in self._quarantine), default=str)

    def route(self, df: DataFrame) -> DataFrame:
        """Add the rule flags and route rows that fail a ``quarantine`` rule (projections Spark collapses)."""
        flags, routed, _ = self._columns()
        df = df.select("*", *flags)  # the flags read the contract's reason codes, before routing
        return df.withColumns(routed) if routed else df

    def sums(self) -> list[Column]:
        """Aggregates for the batch's stats pass: rows evaluated, and each rule's unexpected count."""
        return self._columns()[2]

    def _columns(self) -> tuple[list[Column], dict[str, Column], list[Column]]:
        """The flags, the routed reason columns and the sums, built once per SparkContext.

        Like ``parse_records``: building them is hundreds of Py4J calls, not to be paid per batch.
        """
        from pyspark import SparkContext

        key = id(SparkContext._active_spark_context)
        built = self._built.get(key)
        if built is not None:
            return built
        contract_ok = F.size(S.REASON_CODES) == 0
        flags = [contract_ok.alias(CONTRACT_OK),
                 *[(contract_ok & c.spark_fails()).alias(_flag(i)) for i, c in enumerate(self.checks)]]
        routed: dict[str, Column] = {}
        if self._quarantine:
            codes = F.array_compact(F.array(*[F.when(F.col(_flag(i)), F.lit(c.code)) for i, c in self._quarantine]))
            hit = F.size(codes) > 0
            messages = F.concat_ws("; ", *[F.when(F.col(_flag(i)), c.spark_message()) for i, c in self._quarantine])
            routed = {
                S.REASON_CODES: F.when(hit, codes).otherwise(F.col(S.REASON_CODES)),
                S.REASON: F.when(hit, F.lit(REASON_PREFIX)).otherwise(F.col(S.REASON)),
                S.REASON_MESSAGE: F.when(hit, messages).otherwise(F.col(S.REASON_MESSAGE)),
            }
        ok = F.col(CONTRACT_OK)
        per_rule = [col for i, c in enumerate(self.checks) for col in (
            F.sum(F.col(_flag(i)).cast("long")).alias(_sum(i)),
            F.sum((ok & c.spark_domain()).cast("long")).alias(_sum(i, "domain")),
            F.sum((ok & c.spark_nonnull()).cast("long")).alias(_sum(i, "nonnull")))]
        built = self._built[key] = (flags, routed, [F.sum(ok.cast("long")).alias(_EVALUATED), *per_rule])
        return built

    def results(self, stats: list[Row], evaluated_df: DataFrame) -> list[RuleResult]:
        """Every rule's result from the stats rows (row-level) and from GX (aggregates)."""
        def total(name: str) -> int:
            return sum(int(r[name] or 0) for r in stats)

        evaluated = total(_EVALUATED)
        out = []
        for i, c in enumerate(self.checks):
            # As GX counts: element_count = rows in the domain; the percent and `mostly` are over
            # its non-null values (NULL is not evaluated, except by not_be_null).
            unexpected, domain, nonnull = total(_sum(i)), total(_sum(i, "domain")), total(_sum(i, "nonnull"))
            out.append(RuleResult(c.rule.name, c.rule.type, kwargs_json(c.rule), c.rule.policy, c.rule.severity,
                                  _success(c.rule, unexpected, nonnull), domain, unexpected,
                                  100.0 * unexpected / nonnull if nonnull else 0.0, None))
        if self.aggregates and evaluated:
            out += self._validate_aggregates(evaluated_df.filter(F.col(CONTRACT_OK)), evaluated)
        elif self.aggregates:  # no row passed the contract: nothing to aggregate, recorded as such
            out += [RuleResult(r.name, r.type, kwargs_json(r), r.policy, r.severity, True, 0, None, None, None)
                    for r in self.aggregates]
        return out

    def check_failures(self, results: list[RuleResult], df: DataFrame) -> None:
        """Raise :class:`QualityFailedError` if a ``fail`` rule did not succeed (before any write)."""
        failed = [r for r in results if r.policy == "fail" and not r.success]
        if not failed:
            return
        lines = []
        for r in failed:
            idx = next((i for i, c in enumerate(self.checks) if c.rule.name == r.expectation), None)
            ids = ([str(x[0]) for x in df.filter(F.col(_flag(idx))).select(S.MESSAGE_ID).limit(SAMPLE_IDS).collect()]
                   if idx is not None else [])
            what = (f"{r.unexpected_count} of {r.element_count} rows failed"
                    if r.unexpected_count is not None else f"observed {r.observed_value}")
            lines.append(f"  - {r.expectation} (policy fail): {what}"
                         + (f"; e.g. message_id {', '.join(ids)}" if ids else ""))
        raise QualityFailedError(
            f"the batch failed expectation(s) of suite {self.suite.name} ({self.suite.source}) whose policy is "
            "'fail'; nothing of this batch was written to any table:\n" + "\n".join(lines),
            hint=f"the records are in Kafka as they are: change the rule in {self.suite.source} (policy quarantine "
                 "sends the failing rows to quarantine, warn lets them through, or correct its bounds), then start "
                 "again: the batch is re-run from the checkpoint, nothing lost or doubled",
        )

    # ---- aggregate expectations, by Great Expectations -------------------------------------------

    def _validate_aggregates(self, df: DataFrame, evaluated: int) -> list[RuleResult]:
        import great_expectations as gx

        if self._gx is None:  # one context per query (GX is not thread-safe): never shared
            from pipelines.quality.project import context_at, dataframe_definition

            ctx = context_at(None)
            # Each expectation carries its rule's name: GX does not keep the suite's order in results.
            suite = gx.ExpectationSuite(name=f"{self.suite.name}_aggregates", expectations=[
                rule_expectation(self.suite, r).copy(update={"meta": {RULE_META: r.name}}) for r in self.aggregates])
            self._gx = (dataframe_definition(ctx, "batch", "silver_batch", "batch"), suite)
        definition, suite = self._gx
        validation = definition.get_batch(batch_parameters={"dataframe": df}).validate(suite, result_format="BASIC")
        by_name = {(r.expectation_config.meta or {}).get(RULE_META): r for r in validation.results}
        out = []
        for rule in self.aggregates:
            r = by_name.get(rule.name)
            error = "no result" if r is None else _raised(r.exception_info)
            if r is None or error is not None:
                # A failure to compute is not a failed expectation: fail the batch (re-run on restart).
                raise PipelineError(
                    f"Great Expectations could not evaluate {rule.name} of suite {self.suite.name} "
                    f"({self.suite.source}): {error}",
                    hint="fix the expectation's kwargs (or the cause shown), then start again: the batch is re-run")
            result = r.result or {}
            observed = result.get("observed_value")
            unexpected = result.get("unexpected_count")
            out.append(RuleResult(rule.name, rule.type, kwargs_json(rule), rule.policy, rule.severity,
                                  bool(r.success), int(result.get("element_count", evaluated) or evaluated),
                                  None if unexpected is None else int(unexpected),
                                  None if result.get("unexpected_percent") is None
                                  else float(result["unexpected_percent"]),
                                  None if observed is None else json.dumps(observed, default=str)))
        return out

    def summary(self, results: list[RuleResult]) -> str:
        """The per-batch quality line."""
        failed = [r for r in results if not r.success or (r.unexpected_count or 0) > 0]
        ok = len(results) - sum(1 for r in results if not r.success)
        parts = [f"{r.expectation} {r.policy} {r.unexpected_count if r.unexpected_count is not None else 'x'}"
                 for r in failed[:4]]
        more = f" +{len(failed) - 4} more" if len(failed) > 4 else ""
        return (f"suite {self.suite.name}: {ok}/{len(results)} expectations met"
                + (f" | unexpected: {'; '.join(parts)}{more}" if parts else ""))


def batch_quality(cfg: Config, spec: EventSpec) -> BatchQuality | None:
    """The silver suite of ``cfg`` (``<quality.expectations_dir>/silver.yaml``) for the batch path, if any.

    Raises:
        ConfigError: the suite file is invalid (the message names the file and the entry).

    """
    path = cfg.expectations_dir / "silver.yaml"
    if not path.is_file():
        return None
    from pipelines.quality.suites import load_suite

    return BatchQuality(load_suite(path), spec)
