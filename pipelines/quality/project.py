"""The Great Expectations project of a deployment: its stores, Data Docs, and whole-table checks.

It lives in ``<app.data_dir>/<quality.gx_dir>`` (a file context). The streaming job never touches
it (GX is not thread-safe, and the batch path must stay cheap): each batch's record goes to the
quality Delta table, and :func:`build_docs` copies the records not yet in GX's validation store
into it, as GX validation results, before building Data Docs. :func:`check_table` validates a
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
from pipelines.quality.suites import Suite, load_suites

DOCS_INDEX = "gx/uncommitted/data_docs/local_site/index.html"
_UNIQUE_ID = "expect_column_values_to_be_unique"


def context(cfg: Config) -> Any:
    """The deployment's GX file context (created on first use), with the configured suites in it."""
    import great_expectations as gx
    from great_expectations.data_context.types.base import ProgressBarsConfig

    root = cfg.gx_dir
    if "://" in root and not root.startswith("file:"):
        raise ConfigError(f"quality.gx_dir resolves to {root}: the GX project must be a local folder",
                          hint="set quality.gx_dir to an absolute local path")
    Path(root.removeprefix("file:")).mkdir(parents=True, exist_ok=True)
    ctx = gx.get_context(mode="file", project_root_dir=root.removeprefix("file:"))
    ctx.variables.progress_bars = ProgressBarsConfig(globally=False)
    return ctx


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


def sync_results(spark: SparkSession, cfg: Config, ctx: Any, *, batches: int | None = 100) -> int:
    """Copy the newest ``batches`` batch records of the quality table into GX's validation store.

    Keyed by suite and (app id, batch id): a record already there is not written again.

    Returns:
        How many validation results were added.

    """
    from delta.tables import DeltaTable
    from great_expectations.core import ExpectationSuiteValidationResult, ExpectationValidationResult
    from great_expectations.core.run_identifier import RunIdentifier
    from great_expectations.data_context.types.resource_identifiers import (
        ExpectationSuiteIdentifier,
        ValidationResultIdentifier,
    )
    from great_expectations.expectations.expectation_configuration import ExpectationConfiguration
    from great_expectations.expectations.metadata_types import FailureSeverity

    path = cfg.table_path("quality")
    if not DeltaTable.isDeltaTable(spark, path):
        return 0
    q = spark.read.format("delta").load(path)
    keys = q.select(S.APP_ID, S.BATCH_ID, "suite", "run_time").distinct().orderBy(F.col("run_time").desc(),
                                                                                   F.col(S.BATCH_ID).desc())
    wanted = keys.limit(batches).collect() if batches else keys.collect()
    store = ctx.validation_results_store
    stored = {(k.expectation_suite_identifier.name, k.run_id.run_name) for k in store.list_keys()}
    todo = [k for k in wanted if (k["suite"], _safe(f"{k[S.APP_ID]}.batch-{k[S.BATCH_ID]}")) not in stored]
    if not todo:
        return 0
    pairs = spark.createDataFrame([(k[S.APP_ID], k[S.BATCH_ID], k["suite"]) for k in todo],
                                  f"{S.APP_ID} string, {S.BATCH_ID} long, suite string")
    rows: dict[tuple[str, int, str], list[Any]] = {}
    for r in q.join(pairs, [S.APP_ID, S.BATCH_ID, "suite"]).orderBy("expectation").collect():
        rows.setdefault((r[S.APP_ID], r[S.BATCH_ID], r["suite"]), []).append(r)
    for (app_id, batch_id, suite), results in rows.items():
        run_name = _safe(f"{app_id}.batch-{batch_id}")
        run_time = results[0]["run_time"].replace(tzinfo=dt.UTC)
        run_id = RunIdentifier(run_name=run_name, run_time=run_time)
        evrs = []
        for r in results:
            result: dict[str, Any] = {"element_count": r["element_count"]}
            if r["unexpected_count"] is not None:
                result.update(unexpected_count=r["unexpected_count"], unexpected_percent=r["unexpected_percent"],
                              missing_count=0)
            if r["observed_value"] is not None:
                result["observed_value"] = json.loads(r["observed_value"])
            config = ExpectationConfiguration(type=r["expectation_type"], kwargs=json.loads(r["kwargs"]),
                                              meta={"policy": r["policy"], "rule": r["expectation"]},
                                              severity=FailureSeverity(r["severity"] or "critical"))
            evrs.append(ExpectationValidationResult(success=r["success"], expectation_config=config, result=result))
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
        ctx.validation_results_store.set(key, validation)
    return len(rows)


def build_docs(spark: SparkSession, cfg: Config, *, batches: int | None = 100) -> tuple[Path, int]:
    """Store the suites and the newest batch records in the GX project, then build Data Docs.

    Returns:
        The Data Docs index page, and how many batch records were added to the store.

    """
    ctx = context(cfg)
    for suite in load_suites(cfg.expectations_dir).values():
        _store_suite(ctx, suite.gx_suite)
    added = sync_results(spark, cfg, ctx, batches=batches)
    ctx.build_data_docs()
    return Path(cfg.gx_dir.removeprefix("file:")) / DOCS_INDEX, added


@dataclass(frozen=True)
class CheckResult:
    """One expectation's result in a whole-table check."""

    expectation: str
    success: bool
    element_count: int | None
    unexpected_count: int | None
    observed_value: Any
    sample: list[Any]


def table_suite(cfg: Config, table: str) -> Any:
    """The GX suite a whole-table check of ``table`` runs: its suite file, plus, for silver, unique message IDs."""
    import great_expectations as gx

    suites: dict[str, Suite] = load_suites(cfg.expectations_dir)
    found = suites.get(table)
    name = found.name if found is not None else table
    now = dt.datetime.now(dt.UTC)
    expectations = ([_resolve_now(e, now, f"{found.source}: expectations[{i}]")
                     for i, e in enumerate(found.gx_suite.expectations, start=1)] if found is not None else [])
    if table == SILVER and not any(e.expectation_type == _UNIQUE_ID and getattr(e, "column", None) == S.MESSAGE_ID
                                   for e in expectations):
        # The pipeline's own invariant: one row per message.
        expectations.append(gx.expectations.ExpectColumnValuesToBeUnique(
            column=S.MESSAGE_ID, description="exactly once: one silver row per message_id"))
    return gx.ExpectationSuite(name=f"{name}_table_check", expectations=expectations)


def _resolve_now(expectation: Any, now: dt.datetime, where: str) -> Any:
    """A copy of ``expectation`` whose ``now() +/- timedelta(...)`` bounds are fixed at ``now``.

    In the batch path now() is each record's Kafka timestamp; a whole table has no single one, so
    the check uses the wall clock (a looser bound: every record arrived before it). GX would
    compare its own naive now() with a zoned bound and fail.
    """
    from pipelines.quality.rules import parameter

    update = {}
    for key in ("min_value", "max_value"):
        rel = parameter(where, getattr(expectation, key, None))
        if rel is not None:
            update[key] = now + rel.delta
    return expectation.copy(update=update) if update else expectation.copy()


def check_table(spark: SparkSession, cfg: Config, table: str) -> tuple[bool, list[CheckResult], str]:
    """Validate the whole ``table`` with its suite (GX on Spark); the result is also stored in the GX project.

    Returns:
        (success, one result per expectation, the suite's name).

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
    suite = _store_suite(ctx, table_suite(cfg, table))
    try:
        source = ctx.data_sources.get("tables")
    except Exception:  # KeyError (or GX's own) when absent
        source = ctx.data_sources.add_spark("tables", persist=False)  # cached below, and released
    try:
        asset = source.get_asset(table)
    except Exception:
        asset = source.add_dataframe_asset(table)
    try:
        definition = asset.get_batch_definition("whole table")
    except Exception:
        definition = asset.add_batch_definition_whole_dataframe("whole table")
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
        cfg_ = r.expectation_config
        column = cfg_.kwargs.get("column")
        out.append(CheckResult(f"{cfg_.type}:{column}" if column else cfg_.type, bool(r.success),
                               res.get("element_count"), res.get("unexpected_count"), res.get("observed_value"),
                               list(res.get("partial_unexpected_list") or [])[:5]))
    return bool(result.success), out, suite.name
