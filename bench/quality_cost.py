"""Section ``quality``: the exactly-once job with the silver expectation suite on and off.

Both drain the same preloaded topic at 10,000 and 100,000 records per micro-batch, each run in
its own fresh JVM, ``--repeats`` times in rotated order. Reported: records/s on and off (the
target: quality on within 25 % of off, i.e. a ratio >= 0.75), the median batch time, and the
median of the batch's own ``quality`` stage (computing the results from the stats pass and, for
aggregate expectations, GX). The routing itself runs inside the parse and the stats pass, so
it shows in the totals, not in a stage of its own.
"""

from __future__ import annotations

import shutil
from typing import Any

from bench.batch_cost import measured
from bench.common import Settings, log, median, rotate, run_isolated

ON, OFF = "exactly_once", "exactly_once_no_quality"
SETTINGS = (10_000, 100_000)
QUICK_SETTINGS = (500, 2_000)
TARGET_RATIO = 0.75


def run(st: Settings, topic: str) -> dict[str, Any]:
    """Both variants at each batch size; medians over the repeats."""
    assert st.bootstrap is not None
    out: dict[str, Any] = {"topic": topic, "records": st.records, "settings": [], "target": TARGET_RATIO}
    for m in QUICK_SETTINGS if st.quick else SETTINGS:
        runs: dict[str, list[dict[str, Any]]] = {ON: [], OFF: []}
        for rep in range(st.repeats):
            for name in rotate([ON, OFF], rep):
                log(f"quality: {name}, {m} records per batch, repeat {rep + 1}/{st.repeats} ...")
                work = st.work / "quality" / f"{name}-{m}-r{rep}"
                r = run_isolated(name, work=work, code=st.after, label=f"quality {name} {m}", timeout_s=st.timeout_s,
                                 args={"bootstrap": st.bootstrap, "topic": topic, "max-offsets": m})
                runs[name].append(r)
                log(f"  {r['records']} records in {r['seconds']:.1f}s = {r['records'] / r['seconds']:.0f}/s")
                shutil.rmtree(work, ignore_errors=True)
        row: dict[str, Any] = {"max_offsets": m}
        for name, rs in runs.items():
            batches = [b for r in rs for b in measured(r["batches"])]
            row[name] = {
                "records_per_s": median([r["records"] / r["seconds"] for r in rs]),
                "median_batch_ms": median([b["ms"] for b in batches]) if batches else None,
                "median_quality_ms": median([b["timings_ms"].get("quality", 0) for b in batches]) if batches else None,
                "quarantine_rows": rs[-1]["tables"]["quarantine"], "silver_rows": rs[-1]["tables"]["silver"],
            }
        off = row[OFF]["records_per_s"]
        row["ratio"] = row[ON]["records_per_s"] / off if off else None
        row["met"] = row["ratio"] is not None and row["ratio"] >= TARGET_RATIO
        out["settings"].append(row)
    return out


def lines(res: dict[str, Any]) -> list[str]:
    """The section in ``results.md``."""
    q = res["quality"]
    out = ["## 5. Cost of the data-quality suite (exactly-once job, `conf/expectations/silver.yaml` on vs off)", "",
           f"{q['records']:,} records; each run in its own JVM; medians over the repeats. Target: on/off >= "
           f"{q['target']} (throughput with quality within 25 % of without).", "",
           "| records per batch | off: records/s | on: records/s | on/off | batch ms off | batch ms on "
           "| quality stage ms | quarantined on / off |",
           "|---:|---:|---:|---:|---:|---:|---:|---:|"]
    for s in q["settings"]:
        on, off = s[ON], s[OFF]
        out.append(f"| {s['max_offsets']:,} | {off['records_per_s']:,.0f} | {on['records_per_s']:,.0f} | "
                   f"{s['ratio']:.2f} {'(met)' if s['met'] else '(missed)'} | {off['median_batch_ms']:,.0f} | "
                   f"{on['median_batch_ms']:,.0f} | {on['median_quality_ms']:,.0f} | "
                   f"{on['quarantine_rows']:,} / {off['quarantine_rows']:,} |")
    return out
