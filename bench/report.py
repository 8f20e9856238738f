"""The benchmark's report: ``results.md`` (tables, ratios, stage breakdown) and PNG plots (matplotlib, Agg).

Both take the results dict the orchestrator builds (also written as ``results.json``) and
render only the sections it holds.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

from bench.batch_cost import OTHER, SPARK

DESCRIPTIONS = {
    "raw_consumer": "confluent-kafka consumer + json.loads (no JVM)",
    "spark_ceiling": "Spark without Kafka: our parse + dedupe + Parquet writes, records in memory",
    "delta_sink": "Spark's Delta streaming sink, raw records",
    "single_append": "from_json + one blind Delta append per batch",
    "at_least_once": "our parse, dedupe, shaping; plain appends to bronze/quarantine/silver",
    "exactly_once": "this pipeline (keyed MERGEs, transaction identity, audit)",
    "exactly_once_before": "this pipeline, older code (--before-src)",
}
RATIO_LABELS = {
    "at_least_once": "vs at-least-once with the same parse/dedupe/shaping (the fair baseline)",
    "single_append": "vs parse + single blind append",
    "delta_sink": "vs Spark's Delta streaming sink",
    "spark_ceiling": "vs the Spark ceiling without Kafka",
    "exactly_once_before": "vs the same pipeline before (older code)",
}
ALL_PLOTS = ("throughput.png", "batch_time.png", "stages.png", "merge_scaling.png")
COLORS = {"raw_consumer": "#999999", "spark_ceiling": "#b58900", "delta_sink": "#6699cc",
          "single_append": "#cc6666", "at_least_once": "#aa66cc", "exactly_once": "#33aa33",
          "exactly_once_before": "#88cc88"}


# ---- markdown ------------------------------------------------------------------------------------------------
def _fmt_int(x: float) -> str:
    return f"{x:,.0f}"


def drain_lines(res: dict[str, Any]) -> list[str]:
    """Section 1: the throughput table and the ratios."""
    d, sizes = res["drain"], res["sizes"]
    lines = ["## 1. Drain throughput", "",
             f"{sizes['drain_records']:,} records (~{sizes['avg_value_bytes']:.0f}-byte JSON values, 3 partitions, "
             f"5 % duplicates, 1 % malformed), maxOffsetsPerTrigger {sizes['max_offsets']:,}; every Spark "
             f"pipeline in its own fresh JVM with its own checkpoint and tables; {sizes['repeats']} repeat(s), "
             "the order rotated each repeat. records/s: median (min–max); CPU: Python + JVM process CPU.", "",
             "| pipeline | what | records/s | min–max | MB/s | CPU-s per M records | records drained | "
             "exactly_once / this |",
             "|---|---|---:|---:|---:|---:|---:|---:|"]
    ours = d["pipelines"].get("exactly_once", {}).get("records_per_s", 0.0)
    for name, r in d["pipelines"].items():
        what = DESCRIPTIONS.get(name, "")
        if r.get("commit") and name.startswith("exactly_once"):
            what += f" (`{r['commit']}`)"
        ratio = f"{ours / r['records_per_s']:.2f}x" if r["records_per_s"] > 0 and ours > 0 else "-"
        lines.append(f"| {name} | {what} | {_fmt_int(r['records_per_s'])} | {_fmt_int(r['records_per_s_min'])}–"
                     f"{_fmt_int(r['records_per_s_max'])} | {r['mb_per_s']:.2f} | {r['cpu_s_per_m']:.0f} | "
                     f"{r['records']:,} | {ratio} |")
    if d.get("ceiling_processing"):
        lines += ["", f"spark_ceiling processing: {d['ceiling_processing']}."]
    alo = d["pipelines"].get("at_least_once", {}).get("tables")
    if alo:
        lines += ["", "at_least_once tables after the last run: "
                  + ", ".join(f"{k} {v:,} rows" for k, v in alo.items())
                  + " (silver keeps cross-batch duplicates: no keys)."]
    ratios = d.get("ratios", {})
    if ratios:
        lines += ["", "Ratios (exactly_once median records/s over the other's):", ""]
        for base, label in RATIO_LABELS.items():
            if base in ratios:
                extra = ""
                t = ratios.get("target")
                if base == "at_least_once" and t:
                    extra = f" (target >= {t['min']:.2f}x: {'met' if t['met'] else 'NOT met'})"
                lines.append(f"- exactly_once {label}: **{ratios[base]:.2f}x**{extra}")
    return lines


def stage_table(stages: dict[str, Any]) -> list[str]:
    """The stage breakdown as a markdown table: one column per code version (before, after)."""
    cols = [c for c in ("before", "after") if c in stages]
    if not cols:
        return []
    names: list[str] = []
    for c in cols:
        for k in stages[c]["stages_ms"]:
            if k not in names and k not in (OTHER, SPARK):
                names.append(k)
    names += [k for k in (OTHER, SPARK) if any(k in stages[c]["stages_ms"] for c in cols)]
    head = " | ".join(f"{c} (`{stages[c].get('commit', '?')}`) ms" for c in cols)
    lines = [f"| stage | {head} |", "|---|" + "---:|" * len(cols)]
    for k in names:
        vals = " | ".join(f"{stages[c]['stages_ms'][k]:.0f}" if k in stages[c]["stages_ms"] else "-" for c in cols)
        lines.append(f"| {k} | {vals} |")
    lines.append("| **total** | " + " | ".join(f"**{stages[c]['total_ms']:.0f}**" for c in cols) + " |")
    inside = sorted({k for c in cols for k in stages[c].get("inside_writes_ms", {})})
    for k in inside:
        vals = " | ".join(f"({stages[c]['inside_writes_ms'][k]:.0f})" if k in stages[c].get("inside_writes_ms", {})
                          else "-" for c in cols)
        lines.append(f"| {k} (inside writes, overlapping: not stacked) | {vals} |")
    lines.append("| batches (median rows) | " + " | ".join(
        f"{stages[c]['batches']} ({stages[c]['rows']:.0f})" for c in cols) + " |")
    return lines


def sweep_lines(res: dict[str, Any]) -> list[str]:
    """Section 2: the fit, the settings and the stage breakdown."""
    s = res["sweep"]
    f = s["fit"]
    lines = ["## 2. Fixed vs marginal cost per micro-batch (exactly-once pipeline)", "",
             f"Fit (numpy.polyfit, degree 1) over {len(s['points'])} batches "
             "(the first batches of each run skipped: JVM warm-up), "
             "t = the whole micro-batch (query progress `triggerExecution`): "
             f"**t = {f['a_s']:.2f} s + {f['b_s_per_m']:.1f} s per million rows** (fixed a = {f['a_s']:.2f} s, "
             f"marginal b = {f['b_s_per_m']:.1f} s per million rows)."]
    fb = s.get("fit_foreach_batch")
    if fb:
        lines.append(f"Our foreachBatch alone (`duration_ms`): t = {fb['a_s']:.2f} s + {fb['b_s_per_m']:.1f} s "
                     "per million rows.")
    lines += ["", "| maxOffsetsPerTrigger | batches used | mean rows | median batch s | median foreachBatch s "
              "| median durationMs (ms) |", "|---:|---:|---:|---:|---:|---|"]
    for row in s["settings"]:
        dur = ", ".join(f"{k} {v:.0f}" for k, v in row["duration_ms"].items())
        lines.append(f"| {row['max_offsets']:,} | {row['batches']} | {row['mean_rows']:,.0f} | "
                     f"{row['median_s']:.2f} | {row.get('median_foreach_batch_s', 0):.2f} | {dur} |")
    if s.get("stages"):
        lines += ["", f"### Where the fixed cost goes ({s['stage_setting']:,}-row batches, median per stage)", "",
                  "Stages from the job's `timings_ms`; when it reports a `writes` phase, the per-table stages ran "
                  "concurrently inside it and are shown in parentheses, not stacked. "
                  f"`{OTHER}` = our batch time minus the stacked stages; `{SPARK}` = the query progress "
                  "`triggerExecution` minus `addBatch`.", ""]
        lines += stage_table(s["stages"])
    return lines


def freshness_lines(res: dict[str, Any]) -> list[str]:
    """Section 3: latency to visibility in silver."""
    warm = max((float(f.get("warmup_s", 0) or 0) for f in res["freshness"]), default=0.0)
    lines = ["## 3. Freshness (Kafka timestamp -> the silver commit that made the row visible)", ""]
    if warm:
        lines += [f"Each run (its own fresh JVM) first produced {warm:.0f} s at the same rate, not measured "
                  "(JVM warm-up); the rows below are those produced after it.", ""]
    lines += ["| load | rate (rec/s) | trigger | rows | batches | p50 s | p99 s | max s |",
             "|---|---:|---|---:|---:|---:|---:|---:|"]
    for f in res["freshness"]:
        lines.append(f"| {f['load']} | {f['rate']:,.0f} | {f['trigger']} | {f['rows']:,} | {f.get('batches', '-')} | "
                     f"{f['p50_s']:.2f} | {f['p99_s']:.2f} | {f.get('max_s', 0):.2f} |")
    missed = [f["load"] for f in res["freshness"] if not f.get("caught_up", True) or f.get("unmatched_rows")]
    if missed:
        lines += ["", f"Warning: at {', '.join(missed)} the job did not read everything produced, or some silver "
                  "rows had no batch commit in the history."]
    return lines


def merge_lines(res: dict[str, Any]) -> list[str]:
    """Section 4: MERGE time by silver size and scope."""
    lines = [f"## 4. MERGE scaling ({res['sizes']['merge_batch']:,}-row batch, 5 % duplicates)", "",
             "| silver rows | variant | MERGE s | files read (est.) / total | with one lower bound "
             "| inserted (expected) |",
             "|---:|---|---:|---|---:|---|"]
    for r in res["merge"]:
        single = r.get("files_single_lower_bound")
        lines.append(f"| {r['table_rows']:,} | {r['variant']} | {r['seconds']:.2f} | "
                     f"{r['files_read_estimate']} / {r['files_total']} | {'-' if single is None else single} | "
                     f"{r['inserted']} ({r['expected_inserted']}) |")
    growth = []
    for variant in sorted({r["variant"] for r in res["merge"]}):
        rows = sorted((r for r in res["merge"] if r["variant"] == variant), key=lambda r: r["table_rows"])
        if len(rows) > 1 and rows[0]["seconds"] > 0:
            growth.append(f"{variant} {rows[-1]['seconds'] / rows[0]['seconds']:.2f}x")
    if growth:
        lines += ["", f"MERGE time at the largest table / at the smallest: {', '.join(growth)}."]
    return lines


def markdown(res: dict[str, Any]) -> str:
    """``results.md``: machine, date, commit, sizes, every measured section, the plots."""
    m = res["machine"]
    code = res.get("code", {})
    lines = [f"# Benchmark results{' (quick mode: harness check, not numbers)' if res.get('quick') else ''}", "",
             f"{m['date']}, commit `{m['commit']}`; {m['cpu']}, {m['cores']} cores, {m['memory_gib']} GiB; "
             f"{m['java']}; Python {m['python']}.", ""]
    if code.get("before"):
        b = code["before"]
        lines += [f"Before: commit `{b['commit']}` (from `{b['src']}`); after: commit `{m['commit']}`.", ""]
    if res.get("command"):
        lines += [f"Command: `{res['command']}`", ""]
    if res.get("error"):
        lines += ["**The run failed; only the sections that finished are below.**", "", "```", res["error"], "```", ""]
    from bench.backfill_load import lines as backfill_lines
    from bench.gold_cost import lines as gold_lines
    from bench.quality_cost import lines as quality_lines

    for key, render in (("drain", drain_lines), ("sweep", sweep_lines), ("freshness", freshness_lines),
                        ("gold", gold_lines), ("backfill", backfill_lines), ("quality", quality_lines),
                        ("merge", merge_lines)):
        if res.get(key):
            lines += render(res) + [""]
    if res.get("plots"):
        lines += ["Plots: " + ", ".join(f"`{p}`" for p in res["plots"]), ""]
    return "\n".join(lines)


# ---- plots ------------------------------------------------------------------------------------------------------
def _stage_segments(stages: dict[str, Any]) -> list[str]:
    names: list[str] = []
    for c in ("before", "after"):
        for k in stages.get(c, {}).get("stages_ms", {}):
            if k not in names and k not in (OTHER, SPARK):
                names.append(k)
    return names + [OTHER, SPARK]


def plots(res: dict[str, Any], out: Path) -> list[str]:
    """Write the PNGs for the sections in ``res`` to ``out``; return their file names."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    files: list[str] = []

    def save(fig: Any, name: str) -> None:
        fig.tight_layout()
        fig.savefig(out / name, dpi=110)
        plt.close(fig)
        files.append(name)

    if res.get("drain"):
        d = res["drain"]["pipelines"]
        names = list(d)
        med = [d[k]["records_per_s"] for k in names]
        err = [[d[k]["records_per_s"] - d[k]["records_per_s_min"] for k in names],
               [d[k]["records_per_s_max"] - d[k]["records_per_s"] for k in names]]
        fig, ax = plt.subplots(figsize=(9, 4))
        ax.bar(names, med, yerr=err, capsize=4, color=[COLORS.get(k, "#777777") for k in names])
        for i, v in enumerate(med):
            ax.annotate(f"{v:,.0f}", (i, v), ha="center", va="bottom", fontsize=8, xytext=(0, 3),
                        textcoords="offset points")
        if min(med) > 0 and max(med) / min(med) > 20:
            ax.set_yscale("log")
        ax.set_ylabel("records / s (median, min–max)")
        ax.set_title(f"Drain throughput ({res['sizes']['drain_records']:,} records, "
                     f"{res['sizes']['repeats']} repeat(s), {res['machine']['cores']} cores)")
        ax.tick_params(axis="x", labelrotation=20, labelsize=8)
        save(fig, "throughput.png")

    if res.get("sweep"):
        s = res["sweep"]
        pts = s["points"]
        a, b = s["fit"]["a_s"], s["fit"]["b_s_per_row"]
        fig, ax = plt.subplots(figsize=(7, 3.5))
        ax.scatter([p[0] for p in pts], [p[1] for p in pts], s=12, label="batches")
        xs = [0, max((p[0] for p in pts), default=1)]
        ax.plot(xs, [a + b * x for x in xs], "r-", label=f"t = {a:.2f} s + {b * 1e6:.1f} s/M rows")
        ax.set_xlabel("rows in batch")
        ax.set_ylabel("batch seconds")
        ax.legend()
        ax.set_title("Exactly-once batch time vs rows")
        save(fig, "batch_time.png")

        stages = s.get("stages") or {}
        cols = [c for c in ("before", "after") if c in stages]
        if cols:
            import matplotlib.colors as mcolors

            segs = _stage_segments(stages)
            cmap = matplotlib.colormaps["tab20"]
            fig, ax = plt.subplots(figsize=(6, 4.5))
            bottoms = [0.0] * len(cols)
            for j, seg in enumerate(segs):
                vals = [max(0.0, stages[c]["stages_ms"].get(seg, 0.0)) / 1000 for c in cols]
                if not any(vals):
                    continue
                ax.bar([f"{c}\n{stages[c].get('commit', '')}" for c in cols], vals, bottom=bottoms, label=seg,
                       color=mcolors.to_hex(cmap(j % 20)), width=0.5)
                bottoms = [x + v for x, v in zip(bottoms, vals, strict=True)]
            for i, top in enumerate(bottoms):
                ax.annotate(f"{top:.2f} s", (i, top), ha="center", va="bottom", xytext=(0, 3),
                            textcoords="offset points", fontweight="bold")
            ax.set_ylabel("seconds per batch (median per stage)")
            ax.set_ylim(0, max(bottoms) * 1.15 or 1)
            ax.set_title(f"Where a {s['stage_setting']:,}-row batch's time goes")
            ax.legend(fontsize=7, loc="upper left", bbox_to_anchor=(1.01, 1.0))
            save(fig, "stages.png")

    if res.get("merge"):
        fig, ax = plt.subplots(figsize=(7, 3.5))
        for variant in ("table", "event_date", "event_date_spread"):
            rows = sorted((r for r in res["merge"] if r["variant"] == variant), key=lambda r: r["table_rows"])
            if rows:
                ax.plot([r["table_rows"] for r in rows], [r["seconds"] for r in rows], "o-", label=variant)
        ax.set_xscale("log")
        ax.set_xlabel("silver rows before the MERGE")
        ax.set_ylabel("MERGE seconds")
        ax.legend()
        ax.set_title("MERGE time vs table size")
        save(fig, "merge_scaling.png")
    return files


def write(res: dict[str, Any], out: Path) -> str:
    """Write the plots, ``results.json`` and ``results.md`` to ``out``; return the markdown.

    Plots of sections this run did not measure, left by an earlier run, are removed.
    """
    out.mkdir(parents=True, exist_ok=True)
    res["plots"] = plots(res, out)
    for stale in set(ALL_PLOTS) - set(res["plots"]):  # from an earlier run with other sections
        (out / stale).unlink(missing_ok=True)
    (out / "results.json").write_text(json.dumps(res, indent=2, default=str))
    md = markdown(res)
    (out / "results.md").write_text(md)
    return md
