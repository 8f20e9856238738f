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
from pipelines.errors import PipelineError
from pipelines.quality.rules import REASON_PREFIX, RowCheck, kwargs_json, row_checks, rule_expectation
from pipelines.quality.suites import Rule, Suite

CONTRACT_OK = "_q_contract_ok"
_EVALUATED = "_q_evaluated"
SAMPLE_IDS = 5


def _flag(i: int) -> str:
    return f"_q_fail_{i}"


def _sum(i: int) -> str:
    return f"_q_unexpected_{i}"


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


def quality_rows(app_id: str, batch_id: int, suite: str, results: list[RuleResult],
                 run_time: dt.datetime) -> list[tuple[Any, ...]]:
    """The quality table's rows of one batch (see ``schema.QUALITY_SCHEMA``)."""
    return [(app_id, batch_id, suite, r.expectation, r.expectation_type, r.kwargs, r.policy, r.severity,
             r.success, r.element_count, r.unexpected_count, r.unexpected_percent, r.observed_value, run_time)
            for r in results]


def _success(rule: Rule, unexpected: int, elements: int) -> bool:
    """GX's rule: success when the share of expected values is at least ``mostly`` (default 1)."""
    if elements == 0 or unexpected == 0:
        return True
    mostly = float(rule.kwargs.get("mostly", 1.0))
    return (elements - unexpected) / elements >= mostly


class BatchQuality:
    """The silver suite prepared for the batch path (see the module docstring)."""

    def __init__(self, suite: Suite, spec: EventSpec) -> None:
        types = {f.name: f.dataType for f in S.silver_schema(spec).fields}
        self.suite = suite
        self.checks: list[RowCheck] = row_checks(suite, types)
        self.aggregates: list[Rule] = [r for r in suite.rules if not r.row_level]
        self._quarantine = [(i, c) for i, c in enumerate(self.checks) if c.rule.policy == "quarantine"]
        self._gx: Any = None

    @property
    def fingerprint(self) -> str:
        """What decides routing (the quarantine rules): part of the job's contract id."""
        return json.dumps([[c.rule.name, c.rule.kwargs] for _, c in self._quarantine], sort_keys=True, default=str)

    def route(self, df: DataFrame) -> DataFrame:
        """Add the rule flags and route rows that fail a ``quarantine`` rule (one projection)."""
        contract_ok = F.size(S.REASON_CODES) == 0
        flags = [(contract_ok & c.spark_fails()).alias(_flag(i)) for i, c in enumerate(self.checks)]
        extra = [contract_ok.alias(CONTRACT_OK), *flags]
        if not self._quarantine:
            return df.select("*", *extra)
        failed = [(contract_ok & c.spark_fails(), c) for _, c in self._quarantine]
        codes = F.array_compact(F.array(*[F.when(f, F.lit(c.code)) for f, c in failed]))
        hit = F.size(codes) > 0
        routed = {
            S.REASON_CODES: F.when(hit, codes).otherwise(F.col(S.REASON_CODES)),
            S.REASON: F.when(hit, F.lit(REASON_PREFIX)).otherwise(F.col(S.REASON)),
            S.REASON_MESSAGE: F.when(hit, F.concat_ws("; ", *[F.when(f, c.spark_message()) for f, c in failed]))
            .otherwise(F.col(S.REASON_MESSAGE)),
        }
        kept = [F.col(c) for c in df.columns if c not in routed]
        return df.select(*kept, *[v.alias(k) for k, v in routed.items()], *extra)

    def sums(self) -> list[Column]:
        """Aggregates for the batch's stats pass: rows evaluated, and each rule's unexpected count."""
        return [F.sum(F.col(CONTRACT_OK).cast("long")).alias(_EVALUATED),
                *[F.sum(F.col(_flag(i)).cast("long")).alias(_sum(i)) for i in range(len(self.checks))]]

    def results(self, stats: list[Row], evaluated_df: DataFrame) -> list[RuleResult]:
        """Every rule's result from the stats rows (row-level) and from GX (aggregates)."""
        evaluated = sum(int(r[_EVALUATED] or 0) for r in stats)
        out = []
        for i, c in enumerate(self.checks):
            unexpected = sum(int(r[_sum(i)] or 0) for r in stats)
            out.append(RuleResult(c.rule.name, c.rule.type, kwargs_json(c.rule), c.rule.policy, c.rule.severity,
                                  _success(c.rule, unexpected, evaluated), evaluated, unexpected,
                                  100.0 * unexpected / evaluated if evaluated else 0.0, None))
        if self.aggregates and evaluated:
            out += self._validate_aggregates(evaluated_df.filter(F.col(CONTRACT_OK)), evaluated)
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
            hint="fix the data at its source, or change the rule (policy quarantine or warn, or its bounds) in "
                 f"{self.suite.source}; then start again: the batch is re-run from the checkpoint, nothing lost or "
                 "doubled",
        )

    # ---- aggregate expectations, by Great Expectations -------------------------------------------

    def _validate_aggregates(self, df: DataFrame, evaluated: int) -> list[RuleResult]:
        import great_expectations as gx

        if self._gx is None:  # one context per query (GX is not thread-safe): never shared
            from great_expectations.data_context.types.base import ProgressBarsConfig

            ctx = gx.get_context(mode="ephemeral")
            ctx.variables.progress_bars = ProgressBarsConfig(globally=False)
            # persist=False: GX would cache every batch's DataFrame and never release it (the rows
            # are cached by the job already, for the batch's duration).
            asset = ctx.data_sources.add_spark("batch", persist=False).add_dataframe_asset("silver_batch")
            suite = gx.ExpectationSuite(name=f"{self.suite.name}_aggregates",
                                        expectations=[rule_expectation(self.suite, r) for r in self.aggregates])
            self._gx = (asset.add_batch_definition_whole_dataframe("batch"), suite)
        definition, suite = self._gx
        validation = definition.get_batch(batch_parameters={"dataframe": df}).validate(suite, result_format="BASIC")
        out = []
        for rule, r in zip(self.aggregates, validation.results, strict=True):
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
