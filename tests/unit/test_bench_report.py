"""The benchmark's pure parts: the fit, the stage stacking rule, summaries and the report (no Spark, no Kafka)."""

from __future__ import annotations

import json

import pytest

from bench import batch_cost, drain, report
from bench.common import fit, rotate, spread


def test_fit_recovers_a_known_line():
    a, b = 2.5, 4e-5
    points = [(x, a + b * x) for x in (1000, 10_000, 100_000, 1_000_000)]
    got_a, got_b = fit(points)
    assert got_a == pytest.approx(a, rel=1e-9)
    assert got_b == pytest.approx(b, rel=1e-9)


def test_fit_without_two_distinct_sizes_has_no_slope():
    assert fit([(1000, 4.0), (1000, 6.0)]) == (5.0, 0.0)
    assert fit([]) == (0.0, 0.0)


def test_spread_and_rotation():
    assert spread([3.0, 1.0, 2.0]) == {"median": 2.0, "min": 1.0, "max": 3.0}
    names = ["a", "b", "c"]
    orders = [rotate(names, k) for k in range(3)]
    assert orders == [["a", "b", "c"], ["b", "c", "a"], ["c", "a", "b"]]
    assert {o[0] for o in orders} == set(names) and {o[-1] for o in orders} == set(names)


def test_without_writes_every_stage_is_stacked():
    timings = {"stats": 100, "bronze": 300, "quarantine": 200, "dedupe": 50, "silver": 400, "audit": 80}
    assert batch_cost.stacked_keys(timings) == list(timings)


def test_with_writes_the_per_table_stages_overlap_and_are_not_stacked():
    timings = {"stats": 100, "bronze": 300, "silver": 420, "quarantine": 200, "dedupe": 40, "writes": 450,
               "audit": 60, "prewarm": 5, "_phases": ["a"]}
    assert batch_cost.stacked_keys(timings) == ["stats", "writes", "audit", "prewarm"]


def _batch(rows, ms, timings, trigger, add_batch):
    return {"rows": rows, "ms": ms, "timings_ms": timings,
            "durationMs": {"triggerExecution": trigger, "addBatch": add_batch, "walCommit": 20}}


def test_stage_breakdown_skips_the_warm_up_batch_and_adds_other_and_spark():
    warm = _batch(1000, 9000, {"stats": 5000, "writes": 3000}, 9500, 9100)
    batches = [warm] + [_batch(1000, 1000 + i, {"stats": 300, "bronze": 500, "silver": 600, "writes": 650}, 1100 + i,
                               1010 + i) for i in range(3)]
    b = batch_cost.stage_breakdown(batches)
    assert b["batches"] == 3
    assert list(b["stages_ms"]) == ["stats", "writes", batch_cost.OTHER, batch_cost.SPARK]
    assert b["stages_ms"]["stats"] == 300 and b["stages_ms"]["writes"] == 650
    assert b["stages_ms"][batch_cost.OTHER] == 1001 - 950
    assert b["stages_ms"][batch_cost.SPARK] == 90
    assert b["inside_writes_ms"] == {"bronze": 500, "silver": 600}
    assert b["total_ms"] == pytest.approx(300 + 650 + 51 + 90)


def test_stage_breakdown_of_sequential_stages():
    batches = [_batch(1000, 2000, {"stats": 400, "bronze": 500, "quarantine": 300, "dedupe": 100, "silver": 500,
                                   "audit": 100}, 2100, 2010)] * 2
    b = batch_cost.stage_breakdown(batches)
    assert list(b["stages_ms"])[:6] == ["stats", "bronze", "quarantine", "dedupe", "silver", "audit"]
    assert b["stages_ms"][batch_cost.OTHER] == 100
    assert b["inside_writes_ms"] == {}


def fake_results():
    runs = {
        "raw_consumer": [{"records": 3000, "seconds": 0.1, "cpu_s": 0.1}],
        "spark_ceiling": [{"records": 3000, "seconds": 2.0, "cpu_s": 3.0}],
        "delta_sink": [{"records": 3000, "seconds": 1.0, "cpu_s": 1.5}],
        "single_append": [{"records": 3000, "seconds": 1.5, "cpu_s": 2.0}],
        "at_least_once": [{"records": 3000, "seconds": 4.0, "cpu_s": 5.0,
                           "tables": {"bronze": 3000, "quarantine": 40, "silver": 2850}}],
        "exactly_once": [{"records": 3000, "seconds": 5.0, "cpu_s": 6.0, "code": {"commit": "abc1234"}},
                         {"records": 3000, "seconds": 6.0, "cpu_s": 6.5, "code": {"commit": "abc1234"}}],
    }
    pipelines = {k: drain.summarize(v, 3000, 600_000) for k, v in runs.items()}
    after = [_batch(1000, 1500, {"stats": 300, "bronze": 500, "silver": 600, "writes": 650}, 1600, 1510)] * 3
    before = [_batch(1000, 4000, {"stats": 900, "bronze": 800, "quarantine": 700, "dedupe": 300, "silver": 900,
                                  "audit": 300}, 4100, 4010)] * 3
    return {
        "quick": True,
        "machine": {"date": "2026-11-29 10:00 UTC", "cpu": "Test CPU", "cores": 2, "memory_gib": 8.0,
                    "java": "openjdk 17", "python": "3.11.7", "commit": "abc1234+dirty"},
        "code": {"after": {"commit": "abc1234+dirty", "src": "/repo"}, "before": {"commit": "0ld0ld0", "src": "/b"}},
        "sizes": {"drain_records": 3000, "avg_value_bytes": 200.0, "max_offsets": 1000, "repeats": 2,
                  "merge_batch": 2000},
        "drain": {"pipelines": pipelines, "ratios": drain.ratios(pipelines), "runs": runs,
                  "ceiling_processing": "3 chunks of up to 1000 offsets"},
        "sweep": {"points": [[1000, 1.6], [1000, 1.5], [3000, 2.5], [3000, 2.6]],
                  "fit": {"a_s": 1.05, "b_s_per_row": 5e-4, "b_s_per_m": 500.0},
                  "fit_foreach_batch": {"a_s": 1.0, "b_s_per_row": 5e-4, "b_s_per_m": 500.0},
                  "settings": [{"max_offsets": 1000, "batches": 2, "mean_rows": 1000, "median_s": 1.55,
                                "median_foreach_batch_s": 1.5, "duration_ms": {"addBatch": 1500.0}}],
                  "stage_setting": 1000,
                  "stages": {"after": {**batch_cost.stage_breakdown(after), "commit": "abc1234+dirty"},
                             "before": {**batch_cost.stage_breakdown(before), "commit": "0ld0ld0"}}},
        "freshness": [{"load": "50%", "rate": 300.0, "trigger": "0 seconds", "rows": 2400, "batches": 9,
                       "p50_s": 1.2, "p99_s": 2.5, "max_s": 2.9, "caught_up": True, "unmatched_rows": 0}],
        "merge": [{"table_rows": n, "variant": v, "seconds": s, "inserted": 1900, "expected_inserted": 1900,
                   "files_total": 4, "files_read_estimate": 2, "files_single_lower_bound": None if v == "table" else 3}
                  for n, s in ((20_000, 1.0), (50_000, 2.0)) for v in ("table", "event_date", "event_date_spread")],
    }


def test_summary_takes_medians_and_ratios_compare_with_the_fair_baseline():
    res = fake_results()
    ours = res["drain"]["pipelines"]["exactly_once"]
    assert ours["records_per_s"] == pytest.approx((600 + 500) / 2)
    assert (ours["records_per_s_min"], ours["records_per_s_max"]) == (500, 600)
    assert ours["mb_per_s"] == pytest.approx(((0.6 / 5) + (0.6 / 6)) / 2)
    ratios = res["drain"]["ratios"]
    assert ratios["at_least_once"] == pytest.approx(550 / 750)
    assert ratios["target"] == {"vs": "at_least_once", "min": 0.75, "met": False}
    assert "exactly_once_before" not in ratios


def test_report_writes_tables_ratios_stages_and_plots(tmp_path):
    res = fake_results()
    md = report.write(res, tmp_path)
    assert "abc1234+dirty" in md and "0ld0ld0" in md
    assert "| exactly_once |" in md and "| at_least_once |" in md
    assert "vs at-least-once with the same parse/dedupe/shaping (the fair baseline): **0.73x**" in md
    assert "target >= 0.75x: NOT met" in md
    assert "t = 1.05 s + 500.0 s per million rows" in md
    # the stage table: stacked stages of both versions, the overlapping ones marked, totals
    assert "| stage | before (`0ld0ld0`) ms | after (`abc1234+dirty`) ms |" in md
    assert "| stats | 900 | 300 |" in md
    assert "| writes | - | 650 |" in md
    assert "| audit | 300 | - |" in md
    assert "| bronze (inside writes, overlapping: not stacked) | - | (500) |" in md
    assert f"| {batch_cost.SPARK} | 90 | 90 |" in md
    assert "| **total** | **4090** | **1590** |" in md
    assert "| 50% | 300 | 0 seconds | 2,400 | 9 | 1.20 | 2.50 | 2.90 |" in md
    assert "MERGE time at the largest table / at the smallest" in md
    assert json.loads((tmp_path / "results.json").read_text())["plots"] == res["plots"]
    assert res["plots"] == ["throughput.png", "batch_time.png", "stages.png", "merge_scaling.png"]
    for png in res["plots"]:
        assert (tmp_path / png).stat().st_size > 1000
    assert (tmp_path / "results.md").read_text() == md
