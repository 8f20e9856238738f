"""The Great Expectations project of a deployment: its stores, Data Docs, and whole-table checks.

It lives in ``<app.data_dir>/<quality.gx_dir>`` (a file context). Each batch's record goes to the
quality Delta table and then, from the job's background writer, to GX's validation store
(:class:`RecordStore`, once per batch and suite); :func:`build_docs` copies any record still
missing from the store, then builds Data Docs. :func:`check_table` validates a
whole table with GX itself, and stores that result too.
"""

from __future__ import annotations

import datetime as dt
import json
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from pyspark.sql import SparkSession
from pyspark.sql import functions as F

from pipelines.config import Config
from pipelines.domain import schema as S
from pipelines.errors import ConfigError, PipelineError
from pipelines.io.tables import ALL_TABLES, SILVER
from pipelines.quality.batch import RULE_META
from pipelines.quality.suites import load_suites

DOCS_INDEX = "gx/uncommitted/data_docs/local_site/index.html"
_UNIQUE_ID = "expect_column_values_to_be_unique"


def context(cfg: Config) -> Any:
    """The deployment's GX file context (``quality.gx_dir``, created on first use)."""
    return context_at(cfg.gx_dir)


def context_at(root: str | None) -> Any:
    """The GX file context at ``root`` (created on first use); None: an ephemeral one. No progress bars."""
    import great_expectations as gx
    from great_expectations.data_context.types.base import ProgressBarsConfig

    ctx: Any
    if root is None:
        ctx = gx.get_context(mode="ephemeral")
    else:
        if "://" in root and not root.startswith("file:"):
            raise ConfigError(f"quality.gx_dir resolves to {root}: the GX project must be a local folder",
                              hint="set quality.gx_dir to an absolute local path")
        Path(root.removeprefix("file:")).mkdir(parents=True, exist_ok=True)
        ctx = gx.get_context(mode="file", project_root_dir=root.removeprefix("file:"))
    ctx.variables.progress_bars = ProgressBarsConfig(globally=False)
    return ctx


def dataframe_definition(ctx: Any, source: str, asset: str, name: str) -> Any:
    """The whole-DataFrame batch definition ``source/asset/name`` of ``ctx``, added if absent.

    The Spark data source does not cache: GX would persist every DataFrame it validates and never
    release it (callers cache what they reuse, and release it).
    """
    try:
        spark_source = ctx.data_sources.get(source)
    except Exception:  # KeyError (or GX's own) when absent
        spark_source = ctx.data_sources.add_spark(source, persist=False)
    try:
        data_asset = spark_source.get_asset(asset)
    except Exception:
        data_asset = spark_source.add_dataframe_asset(asset)
    try:
        return data_asset.get_batch_definition(name)
    except Exception:
        return data_asset.add_batch_definition_whole_dataframe(name)


def _store_suite(ctx: Any, suite: Any) -> Any:
    """Add or replace ``suite`` (a GX ExpectationSuite) in the context's suite store."""
    import great_expectations as gx

    copy = gx.ExpectationSuite(name=suite.name, expectations=[e.copy() for e in suite.expectations])
    try:
        ctx.suites.delete(suite.name)
    except Exception:  # not there yet
        pass
    return ctx.suites.add(copy)


def _safe(text: str) -> str:
    """GX's file store keys may not hold path separators."""
    return text.replace("/", "_").replace("\\", "_")


class RecordStore:
    """GX's validation store of the project at ``root``: a batch's quality record, stored once.

    Keyed by suite and run name (``<app id>.batch-<batch id>``): a record already there is not
    stored again, whatever its run time (GX's own key includes it, so a re-run would otherwise
    add a second result for the batch). Not thread-safe, like GX: one user at a time.
    """

    def __init__(self, root: str) -> None:
        self.ctx = context_at(root)
        store = self.ctx.validation_results_store
        self.known = {(k.expectation_suite_identifier.name, k.run_id.run_name) for k in store.list_keys()}

    @staticmethod
    def run_name(app_id: str, batch_id: int) -> str:
        """The GX run name of a batch."""
        return _safe(f"{app_id}.batch-{batch_id}")

    def has(self, app_id: str, batch_id: int, suite: str) -> bool:
        """The batch's record of ``suite`` is stored."""
        return (suite, self.run_name(app_id, batch_id)) in self.known

    def add(self, rows: list[dict[str, Any]]) -> int:
        """Store the records in ``rows`` (quality-table rows as dicts) not stored yet; returns how many."""
        from great_expectations.core import ExpectationSuiteValidationResult, ExpectationValidationResult
        from great_expectations.core.run_identifier import RunIdentifier
        from great_expectations.data_context.types.resource_identifiers import (
            ExpectationSuiteIdentifier,
            ValidationResultIdentifier,
        )
        from great_expectations.expectations.expectation_configuration import ExpectationConfiguration
        from great_expectations.expectations.metadata_types import FailureSeverity

        records: dict[tuple[str, int, str], list[dict[str, Any]]] = {}
        for r in rows:
            records.setdefault((r[S.APP_ID], int(r[S.BATCH_ID]), r["suite"]), []).append(r)
        added = 0
        for (app_id, batch_id, suite), results in records.items():
            if self.has(app_id, batch_id, suite):
                continue
            run_name = self.run_name(app_id, batch_id)
            run_time = max(r["run_time"] for r in results).replace(tzinfo=dt.UTC)
            run_id = RunIdentifier(run_name=run_name, run_time=run_time)
            evrs = []
            for r in sorted(results, key=lambda r: str(r["expectation"])):
                result: dict[str, Any] = {"element_count": r["element_count"]}
                if r["unexpected_count"] is not None:
                    result.update(unexpected_count=r["unexpected_count"],
                                  unexpected_percent=r["unexpected_percent"], missing_count=0)
                if r["observed_value"] is not None:
                    result["observed_value"] = json.loads(r["observed_value"])
                config = ExpectationConfiguration(type=r["expectation_type"], kwargs=json.loads(r["kwargs"]),
                                                  meta={"policy": r["policy"], "rule": r["expectation"]},
                                                  severity=FailureSeverity(r["severity"] or "critical"))
                evrs.append(ExpectationValidationResult(success=r["success"], expectation_config=config,
                                                        result=result))
            ok = sum(1 for e in evrs if e.success)
            validation = ExpectationSuiteValidationResult(
                success=ok == len(evrs), suite_name=suite, results=evrs,
                statistics={"evaluated_expectations": len(evrs), "successful_expectations": ok,
                            "unsuccessful_expectations": len(evrs) - ok,
                            "success_percent": 100.0 * ok / len(evrs) if evrs else 100.0},
                meta={"run_id": run_id, "batch_spec": {"data_asset_name": f"{SILVER} (ingest batch {batch_id})"},
                      "app_id": app_id, "batch_id": batch_id},
            )
            key = ValidationResultIdentifier(expectation_suite_identifier=ExpectationSuiteIdentifier(name=suite),
                                             run_id=run_id, batch_identifier=_safe(f"{app_id}-{batch_id}"))
            self.ctx.validation_results_store.set(key, validation)
            self.known.add((suite, run_name))
            added += 1
        return added


def sync_results(spark: SparkSession, cfg: Config, store: RecordStore, *, batches: int | None = None) -> int:
    """Copy the quality table's batch records that GX's validation store lacks into it.

    With ``batches``, only the newest that many of them. The stream stores each batch's record
    itself (after writing it to the table); this fills in any it could not.

    Returns:
        How many validation results were added.

    """
    from delta.tables import DeltaTable

    path = cfg.table_path("quality")
    if not DeltaTable.isDeltaTable(spark, path):
        return 0
    q = spark.read.format("delta").load(path)
    keys = (q.groupBy(S.APP_ID, S.BATCH_ID, "suite").agg(F.max("run_time").alias("run_time"))
            .orderBy(F.col("run_time").desc(), F.col(S.BATCH_ID).desc()))
    wanted = keys.limit(batches).collect() if batches else keys.collect()
    todo = [k for k in wanted if not store.has(k[S.APP_ID], k[S.BATCH_ID], k["suite"])]
    if not todo:
        return 0
    pairs = spark.createDataFrame([(k[S.APP_ID], k[S.BATCH_ID], k["suite"]) for k in todo],
                                  f"{S.APP_ID} string, {S.BATCH_ID} long, suite string")
    return store.add([r.asDict() for r in q.join(pairs, [S.APP_ID, S.BATCH_ID, "suite"]).collect()])


def build_docs(spark: SparkSession, cfg: Config, *, batches: int | None = None) -> tuple[Path, int]:
    """Store the suites and the batch records not stored yet in the GX project, then build Data Docs.

    Returns:
        The Data Docs index page, and how many batch records were added to the store.

    """
    store = RecordStore(cfg.gx_dir)
    for suite in load_suites(cfg.expectations_dir).values():
        _store_suite(store.ctx, suite.gx_suite)
    added = sync_results(spark, cfg, store, batches=batches)
    store.ctx.build_data_docs()
    return Path(cfg.gx_dir.removeprefix("file:")) / DOCS_INDEX, added


@dataclass(frozen=True)
class CheckResult:
    """One expectation's result in a whole-table check."""

    expectation: str
    policy: str
    success: bool
    element_count: int | None
    unexpected_count: int | None
    observed_value: Any
    sample: list[Any]
    skipped: str | None = None  # why GX did not run it

    @property
    def blocking(self) -> bool:
        """A failure that fails the check: a quarantine or fail rule (warn rules are reported only)."""
        return not self.success and self.skipped is None and self.policy != "warn"


UNIQUE_IDS = "message_id_unique"


def table_suite(cfg: Config, table: str) -> tuple[Any, list[CheckResult]]:
    """The GX suite a whole-table check of ``table`` runs, and the rules it leaves out.

    Its suite file's expectations, each tagged with its rule's name and policy; for silver also
    ``message_id`` unique (the exactly-once invariant, policy fail). A bound relative to now()
    means each record's Kafka timestamp, which GX cannot read per row: such rules are left out
    (they were checked on every record at ingest).
    """
    import great_expectations as gx

    from pipelines.quality.rules import parameter

    found = load_suites(cfg.expectations_dir).get(table)
    expectations, skipped = [], []
    pairs = zip(found.rules, found.gx_suite.expectations, strict=True) if found is not None else iter(())
    source = found.source if found is not None else ""
    for rule, e in pairs:
        if any(parameter(f"{source}: {rule.name}", getattr(e, k, None)) is not None
               for k in ("min_value", "max_value")):
            skipped.append(CheckResult(rule.name, rule.policy, True, None, None, None, [],
                                       skipped="bound relative to each record's Kafka timestamp (checked at ingest)"))
            continue
        expectations.append(e.copy(update={"meta": {RULE_META: rule.name, "policy": rule.policy}}))
    if table == SILVER and not any(e.expectation_type == _UNIQUE_ID and getattr(e, "column", None) == S.MESSAGE_ID
                                   for e in expectations):
        expectations.append(gx.expectations.ExpectColumnValuesToBeUnique(
            column=S.MESSAGE_ID, description="exactly once: one silver row per message_id",
            meta={RULE_META: UNIQUE_IDS, "policy": "fail"}))
    name = found.name if found is not None else table
    return gx.ExpectationSuite(name=f"{name}_table_check", expectations=expectations), skipped


def check_table(spark: SparkSession, cfg: Config, table: str) -> tuple[bool, list[CheckResult], str]:
    """Validate the whole ``table`` with its suite (GX on Spark); the result is also stored in the GX project.

    Returns:
        (passed: no quarantine or fail rule failed, one result per expectation, the suite's name).

    Raises:
        PipelineError: unknown table, or the table does not exist yet.

    """
    import great_expectations as gx
    from delta.tables import DeltaTable

    if table not in ALL_TABLES:
        raise PipelineError(f"unknown table {table!r}", hint=f"one of {', '.join(ALL_TABLES)}")
    path = cfg.table_path(table)
    if not DeltaTable.isDeltaTable(spark, path):
        raise PipelineError(f"the {table} table does not exist yet at {path}", hint="run ingest first")
    ctx = context(cfg)
    gx_suite, skipped = table_suite(cfg, table)
    suite = _store_suite(ctx, gx_suite)
    definition = dataframe_definition(ctx, "tables", table, "whole table")
    name = f"check {table}"
    try:
        ctx.validation_definitions.delete(name)
    except Exception:
        pass
    vd = ctx.validation_definitions.add(gx.ValidationDefinition(name=name, data=definition, suite=suite))
    df = spark.read.format("delta").load(path).persist()
    try:
        result = vd.run(batch_parameters={"dataframe": df}, result_format="SUMMARY")
    finally:
        df.unpersist()
    out = []
    for r in result.results:
        res = r.result or {}
        meta = r.expectation_config.meta or {}
        out.append(CheckResult(str(meta.get(RULE_META, r.expectation_config.type)), str(meta.get("policy", "fail")),
                               bool(r.success), res.get("element_count"), res.get("unexpected_count"),
                               res.get("observed_value"), list(res.get("partial_unexpected_list") or [])[:5]))
    out += skipped
    return not any(r.blocking for r in out), out, suite.name
