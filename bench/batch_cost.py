"""Section 2, fixed versus marginal cost per micro-batch, and where the fixed cost goes.

The exactly-once pipeline drains a topic at several ``maxOffsetsPerTrigger`` settings (each
in its own worker process); a least-squares fit over the batches (the first batches of each
run skipped: they warm up) gives ``t = a + b * rows``: ``a`` is the fixed cost per batch,
``b`` the marginal cost per row. ``t`` is the whole micro-batch as Spark times it (the query
progress ``triggerExecution``); a second fit uses our own ``foreachBatch`` time (``duration_ms``).

The stage breakdown uses the small-batch setting (1000 rows): per batch, the job's own
``timings_ms`` stages (see :func:`stacked_keys` for which are stacked), ``other
(foreachBatch)`` (our batch time minus those stages) and ``spark (outside foreachBatch)``
(the query progress ``triggerExecution`` minus ``addBatch``); the median of each over the
batches. With ``--before-src`` the same setting also runs on the older code ("before").
"""

from __future__ import annotations

import shutil
from collections.abc import Mapping, Sequence
from typing import TYPE_CHECKING, Any

from bench.common import fit, log, median, preload, run_isolated

if TYPE_CHECKING:
    from bench.common import CodeUnderTest, Settings

#: Per-table stages; when the job reports a ``writes`` phase, they ran concurrently inside it.
OVERLAPPING = ("bronze", "quarantine", "silver", "dedupe")
OTHER = "other (foreachBatch)"
SPARK = "spark (outside foreachBatch)"
STAGE_SETTING = 1000


def stacked_keys(timings: Mapping[str, Any]) -> list[str]:
    """The ``timings_ms`` keys that add up (no overlap), in their order.

    If a ``writes`` key is present it is the wall-clock phase during which bronze, quarantine,
    silver and dedupe ran concurrently: those per-table keys are overlapping durations inside
    it and are not stacked (stats, writes, audit and any other key are). Without ``writes``
    every key is stacked. Keys starting with ``_`` and non-numeric values are ignored.
    """
    keys = [k for k, v in timings.items()
            if not k.startswith("_") and isinstance(v, int | float) and not isinstance(v, bool)]
    if "writes" in keys:
        return [k for k in keys if k not in OVERLAPPING]
    return keys


WARMUP_BATCHES = 5
"""Batches skipped at the start of a run that has enough of them: a fresh JVM spends its first
minute compiling (Spark's generated code, then the JIT), which is not the cost of a batch in a
stream that has been running for a while."""


def measured(batches: Sequence[dict[str, Any]]) -> list[dict[str, Any]]:
    """The batches that count: all but the warm-up ones (``WARMUP_BATCHES`` when at least three
    remain, else the first only), unless there is only one."""
    if len(batches) >= WARMUP_BATCHES + 3:
        return list(batches[WARMUP_BATCHES:])
    return list(batches[1:]) if len(batches) > 1 else list(batches)


def stage_breakdown(batches: Sequence[dict[str, Any]], *, skip_first: bool = True) -> dict[str, Any]:
    """Median milliseconds per stage over ``batches`` (each ``{"rows", "ms", "timings_ms", "durationMs"?}``).

    Returns:
        ``stages_ms`` (stacked, in order: the job's stacked stages, then ``other (foreachBatch)``,
        then ``spark (outside foreachBatch)`` when progress durations are known), ``inside_writes_ms``
        (the overlapping per-table stages, only when there is a ``writes`` phase), ``total_ms``
        (the sum of the stacked medians), ``batch_ms`` (median of our batch time),
        ``trigger_ms`` (median ``triggerExecution``), ``batches`` and ``mode``.

    """
    use = measured(batches) if skip_first else list(batches)
    order: list[str] = []
    inside: list[str] = []
    for b in use:
        t = b.get("timings_ms") or {}
        for k in stacked_keys(t):
            if k not in order:
                order.append(k)
        if "writes" in t:
            for k in OVERLAPPING:
                if k in t and k not in inside:
                    inside.append(k)
    per_stage: dict[str, list[float]] = {k: [] for k in [*order, OTHER, SPARK]}
    inside_vals: dict[str, list[float]] = {k: [] for k in inside}
    triggers: list[float] = []
    for b in use:
        t = b.get("timings_ms") or {}
        stacked = stacked_keys(t)
        for k in order:
            per_stage[k].append(float(t.get(k, 0)) if k in stacked else 0.0)
        per_stage[OTHER].append(float(b["ms"]) - sum(float(t[k]) for k in stacked))
        d = b.get("durationMs")
        if d and "triggerExecution" in d and "addBatch" in d:
            per_stage[SPARK].append(float(d["triggerExecution"]) - float(d["addBatch"]))
            triggers.append(float(d["triggerExecution"]))
        for k in inside:
            inside_vals[k].append(float(t.get(k, 0)))
    stages = {k: median(v) for k, v in per_stage.items() if v}
    return {
        "batches": len(use),
        "mode": "writes (per-table stages overlap inside it)" if inside else "sequential stages",
        "stages_ms": stages,
        "inside_writes_ms": {k: median(v) for k, v in inside_vals.items()},
        "total_ms": sum(stages.values()),
        "batch_ms": median([float(b["ms"]) for b in use]),
        "trigger_ms": median(triggers) if triggers else None,
        "rows": median([float(b["rows"]) for b in use]),
    }


def topic_size(m: int, quick: bool) -> int:
    """Records to preload for setting ``m``: enough batches to skip the warm-up one and still have a median."""
    if quick:  # one worker: three full batches and a half one give the fit two batch sizes
        return m * 3 + m // 2
    if m <= 10_000:
        return m * 20
    if m < 1_000_000:
        return m * 3
    return m


def run_setting(st: Settings, code: CodeUnderTest, m: int, topic: str, label: str) -> dict[str, Any]:
    """The exactly-once pipeline over ``topic`` at ``maxOffsetsPerTrigger`` = ``m``, in its own worker."""
    return run_isolated("exactly_once", work=st.work / "sweep" / f"{label}-{m}", code=code,
                        label=f"sweep {label} {m}", timeout_s=st.timeout_s,
                        args={"bootstrap": st.bootstrap, "topic": topic, "max-offsets": m})


def run(st: Settings, drain_topic: str | None) -> dict[str, Any]:
    """Section 2: the sweep, the fit and the stage breakdown (before/after)."""
    assert st.bootstrap is not None
    stage_m = STAGE_SETTING if STAGE_SETTING in st.sweep else min(st.sweep)
    points: list[tuple[int, float]] = []  # (rows, micro-batch seconds: progress triggerExecution)
    fb_points: list[tuple[int, float]] = []  # (rows, our foreachBatch seconds: duration_ms)
    settings = []
    stages: dict[str, Any] = {}
    topics: dict[int, str] = {}
    for m in st.sweep:
        size = topic_size(m, st.quick)
        if drain_topic is not None and size >= st.records:
            topic, size = drain_topic, st.records
        else:
            topic = f"sweep-{m}"
            log(f"sweep: preloading {size} records into {topic} ...")
            preload(st.bootstrap, topic, size, seed=m)
        topics[m] = topic
        log(f"sweep: maxOffsetsPerTrigger={m} over {size} records ...")
        r = run_setting(st, st.after, m, topic, "after")
        use = measured(r["batches"])
        points += [(b["rows"], batch_seconds(b)) for b in use]
        fb_points += [(b["rows"], b["ms"] / 1000) for b in use]
        settings.append({
            "max_offsets": m, "topic_records": size, "batches": len(use),
            "mean_rows": sum(b["rows"] for b in use) / max(len(use), 1),
            "median_s": median([batch_seconds(b) for b in use]),
            "median_foreach_batch_s": median([b["ms"] / 1000 for b in use]),
            "duration_ms": _median_durations(use),
            "progress_matched": r.get("progress_matched"),
        })
        if m == stage_m:
            stages["after"] = {**stage_breakdown(r["batches"]), "commit": st.after.commit}
        shutil.rmtree(st.work / "sweep" / f"after-{m}", ignore_errors=True)
    if st.before is not None:
        log(f"sweep: maxOffsetsPerTrigger={stage_m} on the before code ({st.before.commit}) ...")
        r = run_setting(st, st.before, stage_m, topics[stage_m], "before")
        stages["before"] = {**stage_breakdown(r["batches"]), "commit": st.before.commit}
        shutil.rmtree(st.work / "sweep" / f"before-{stage_m}", ignore_errors=True)
    a, b = fit(points)
    fa, fb = fit(fb_points)
    return {"points": points, "fit": {"a_s": a, "b_s_per_row": b, "b_s_per_m": b * 1e6},
            "fit_foreach_batch": {"a_s": fa, "b_s_per_row": fb, "b_s_per_m": fb * 1e6},
            "settings": settings, "stage_setting": stage_m, "stages": stages}


def batch_seconds(b: Mapping[str, Any]) -> float:
    """A micro-batch's wall time: the query progress ``triggerExecution`` (our ``duration_ms`` if unknown)."""
    d = b.get("durationMs") or {}
    return float(d.get("triggerExecution", b["ms"])) / 1000


def _median_durations(batches: Sequence[dict[str, Any]]) -> dict[str, float]:
    """Median of each query progress ``durationMs`` part over ``batches``."""
    keys: list[str] = []
    for b in batches:
        for k in b.get("durationMs") or {}:
            if k not in keys:
                keys.append(k)
    return {k: median([float(b["durationMs"][k]) for b in batches if k in (b.get("durationMs") or {})])
            for k in keys}
