"""Benchmarks, measured side by side in one run: ``make bench`` (full) or ``python -m bench --quick``.

Run from the repo root. Sections (``--sections``, default ``drain,sweep,freshness,gold,backfill``):

drain      throughput draining one preloaded topic (1,000,000 records by default): a raw
           consumer, the Spark ceiling without Kafka, Spark's Delta sink, a single blind
           append, the fair at-least-once baseline (same parse, dedupe and shaping, plain
           appends to three tables), our exactly-once job, and with --before-src the same job
           on older code; each Spark pipeline in its own fresh JVM, --repeats times in rotated
           order; median records/s, spread, CPU-s per million records, MB/s, ratios.
sweep      fixed vs marginal cost per micro-batch (maxOffsetsPerTrigger sweep, numpy fit
           t = a + b*rows), and where a 1000-row batch's time goes, stage by stage (before/after).
freshness  Kafka timestamp -> the silver commit that made the row visible, p50/p99, at 25/50/75 %
           of our median drain rate (quick: 50 %).
gold       ingest and gold streaming side by side at 50 % of our drain rate: silver commit -> every
           gold table reflects it (p50/p99), and each gold batch's time vs the silver rows it touched.
backfill   the stream at 25 % of our drain rate, its freshness alone and then beside a concurrent
           backfill of 400,000 older records into the same tables (target: within 2x).
quality    the exactly-once job with the silver expectation suite on vs off, at 10,000 and
           100,000 records per batch (target: on >= 0.75x off); not in the default sections.
merge      MERGE time vs silver size, key MERGE over the table vs the event-date scope
           (slow: 50M rows; `make bench-merge` writes bench/results/merge-scope).

Writes ``<out>/results.json``, ``<out>/results.md`` and PNG plots, with machine and commit.
``--quick`` uses tiny sizes: it checks the harness end to end, not the numbers.

Before/after: ``git worktree add /tmp/before HEAD~1`` then ``--before-src /tmp/before``: the
"before" workers import that checkout's ``pipelines`` (via ``PYTHONPATH``) with this checkout's
benchmark code.
"""

from __future__ import annotations

import argparse
import dataclasses
import shlex
import shutil
import sys
from pathlib import Path
from typing import Any

from bench import backfill_load, batch_cost, drain, freshness, gold_cost, merge_scope, quality_cost, report
from bench.common import (
    REPO,
    WORKER_TIMEOUT_S,
    BenchError,
    Settings,
    before_code,
    consume_all,
    current_code,
    log,
    machine,
    preload,
    run_isolated,
)

SECTIONS = ("drain", "sweep", "freshness", "gold", "backfill", "quality", "merge")
DEFAULT_SECTIONS = "drain,sweep,freshness,gold,backfill"
NEEDS_BROKER = frozenset({"drain", "sweep", "freshness", "gold", "backfill", "quality"})
DRAIN_TOPIC = "drain"


def _ints(text: str) -> tuple[int, ...]:
    return tuple(int(x) for x in text.split(",") if x.strip())


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    """The orchestrator's command line."""
    p = argparse.ArgumentParser(prog="python -m bench", description=__doc__,
                                formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--quick", action="store_true", help="tiny sizes: check the harness, not the numbers")
    p.add_argument("--out", default=str(REPO / "bench" / "results" / "latest"),
                   help="output folder (default: bench/results/latest)")
    p.add_argument("--sections", default=DEFAULT_SECTIONS,
                   help=f"comma list of {','.join(SECTIONS)} (default: {DEFAULT_SECTIONS})")
    p.add_argument("--records", type=int, help="records in the drain topic (default 1000000; quick 3000)")
    p.add_argument("--repeats", type=int, help="drain repeats, order rotated each time (default 3; quick 1)")
    p.add_argument("--max-offsets", type=int, help="drain maxOffsetsPerTrigger (default 100000; quick 1000)")
    p.add_argument("--pipelines", default="",
                   help="drain: comma list of pipelines to run (default: all; exactly_once is always run)")
    p.add_argument("--sweep", type=_ints,
                   help="maxOffsetsPerTrigger settings of the sweep "
                        "(default 1000,10000,100000,1000000; quick 500)")
    p.add_argument("--before-src", type=Path,
                   help="an older checkout (e.g. a git worktree of HEAD~1): also measure its pipelines code")
    p.add_argument("--trigger", default="0 seconds", help="freshness: processing-time trigger (default: 0 seconds)")
    p.add_argument("--fresh-seconds", type=float, help="freshness: seconds of load per run (default 60; quick 8)")
    p.add_argument("--fresh-rate", type=float,
                   help="freshness: our max rate (records/s) when the drain section does not run "
                        "(default: measured with one exactly-once drain)")
    p.add_argument("--merge-sizes", type=_ints,
                   help="merge: silver sizes (default 1000000,10000000,50000000; quick 20000,50000)")
    p.add_argument("--timeout", type=float,
                   help=f"seconds before a worker process is killed (default {WORKER_TIMEOUT_S:.0f}; quick 600)")
    return p.parse_args(argv)


def settings_from(args: argparse.Namespace, work: Path) -> Settings:
    """The run's settings: explicit options, else the quick or full defaults."""
    quick = args.quick
    return Settings(
        quick=quick, work=work, bootstrap=None,
        records=args.records or (3000 if quick else 1_000_000),
        repeats=args.repeats or (1 if quick else 3),
        max_offsets=args.max_offsets or (1000 if quick else 100_000),
        sweep=args.sweep or ((500,) if quick else (1000, 10_000, 100_000, 1_000_000)),
        trigger=args.trigger,
        fresh_seconds=args.fresh_seconds or (8.0 if quick else 60.0),
        fresh_warmup_s=0.0 if quick else 45.0,
        fresh_loads=freshness.QUICK_LOADS if quick else freshness.FULL_LOADS,
        fresh_rate=args.fresh_rate,
        merge_sizes=args.merge_sizes or ((20_000, 50_000) if quick else (1_000_000, 10_000_000, 50_000_000)),
        merge_batch_rows=2000 if quick else 100_000,
        after=current_code(),
        before=before_code(args.before_src) if args.before_src else None,
        timeout_s=args.timeout or (600.0 if quick else WORKER_TIMEOUT_S),
        pipelines=tuple(n.strip() for n in args.pipelines.split(",") if n.strip()),
    )


def start_broker(work: Path) -> Any:
    """The embedded KRaft broker on free ports (512m heap), data under ``work``."""
    from pipelines.config import load_config
    from pipelines.local.kafka import LocalKafka, free_port

    base = load_config(REPO / "conf" / "local.yaml")
    port = free_port()
    cport = free_port()
    while cport == port:
        cport = free_port()
    broker = LocalKafka(work / "kafka", port=port, controller_port=cport, jars_dir=base.jars_dir, heap="512m")
    broker.start()
    return broker


def run_sections(st: Settings, sections: list[str], res: dict[str, Any]) -> None:
    """Run the chosen sections, filling ``res``."""
    if st.before is not None:
        probe = run_isolated("probe", work=st.work / "probe-before", code=st.before, label="probe before")
        log(f"before code: commit {st.before.commit}, pipelines from {probe['pipelines_file']}")
    assert st.bootstrap is not None or not (NEEDS_BROKER & set(sections))
    drain_topic = None
    need_drain_topic = "drain" in sections or "sweep" in sections or "quality" in sections or (
        ({"freshness", "gold", "backfill"} & set(sections)) and st.fresh_rate is None)
    if need_drain_topic:
        assert st.bootstrap is not None
        log(f"preloading {st.records:,} records into {DRAIN_TOPIC} ...")
        stats = preload(st.bootstrap, DRAIN_TOPIC, st.records)
        size = consume_all(st.bootstrap, DRAIN_TOPIC, parse=False)
        if size["records"] != st.records:
            raise BenchError(f"topic {DRAIN_TOPIC} holds {size['records']} records, expected {st.records}")
        drain_topic = DRAIN_TOPIC
        res["sizes"].update(drain_records=st.records, drain_bytes=size["bytes"],
                            avg_value_bytes=size["bytes"] / max(st.records, 1), preload=stats)
    if "drain" in sections:
        assert drain_topic is not None
        res["drain"] = drain.run(st, drain_topic, res["sizes"]["drain_bytes"])
    if "sweep" in sections:
        res["sweep"] = batch_cost.run(st, drain_topic)
    if {"freshness", "gold", "backfill"} & set(sections):
        if res.get("drain"):
            rate = res["drain"]["pipelines"][drain.OURS]["records_per_s"]
        elif st.fresh_rate:
            rate = st.fresh_rate
        else:
            assert drain_topic is not None
            log("freshness: measuring our drain rate once (no drain section, no --fresh-rate) ...")
            r = drain.run_one(st, drain.OURS, drain_topic, st.work / "fresh-rate")
            rate = r["records"] / r["seconds"]
        res["sizes"]["fresh_max_rate"] = rate
        if "freshness" in sections:
            res["freshness"] = freshness.run(st, rate)
        if "gold" in sections:
            res["gold"] = gold_cost.run(st, rate)
        if "backfill" in sections:
            res["backfill"] = backfill_load.run(st, rate)
    if "quality" in sections:
        assert drain_topic is not None
        res["quality"] = quality_cost.run(st, drain_topic)
    if "merge" in sections:
        res["merge"] = merge_scope.run(st)


def main(argv: list[str] | None = None) -> int:
    """Run the benchmark; exit status 0 on success, 1 if a step failed (partial results are written)."""
    args = parse_args(argv)
    sections = [s.strip() for s in args.sections.split(",") if s.strip()]
    unknown = sorted(set(sections) - set(SECTIONS))
    if unknown or not sections:
        print(f"[bench] unknown section(s) {unknown}; choose from {','.join(SECTIONS)}", file=sys.stderr)
        return 2
    out = Path(args.out).resolve()
    work = out / "_work"
    shutil.rmtree(work, ignore_errors=True)
    work.mkdir(parents=True)
    try:
        st = settings_from(args, work)
    except BenchError as e:
        print(f"[bench] {e}", file=sys.stderr)
        return 2
    res: dict[str, Any] = {
        "quick": st.quick, "machine": machine(), "sections": sections,
        "command": "python -m bench " + shlex.join(sys.argv[1:] if argv is None else argv),
        "code": {"after": {"commit": st.after.commit, "src": str(st.after.src)},
                 "before": ({"commit": st.before.commit, "src": str(st.before.src)} if st.before else None)},
        "sizes": {"drain_records": st.records, "max_offsets": st.max_offsets, "repeats": st.repeats,
                  "sweep": list(st.sweep), "trigger": st.trigger, "fresh_seconds": st.fresh_seconds,
                  "fresh_warmup_s": st.fresh_warmup_s,
                  "fresh_loads": list(st.fresh_loads), "merge_sizes": list(st.merge_sizes),
                  "merge_batch": st.merge_batch_rows},
    }
    broker = None
    ok = False
    try:
        if NEEDS_BROKER & set(sections):
            log("starting the embedded Kafka broker ...")
            broker = start_broker(work)
            st = dataclasses.replace(st, bootstrap=broker.bootstrap_servers)
        run_sections(st, sections, res)
        ok = True
    except BenchError as e:
        res["error"] = str(e)
        print(f"[bench] FAILED: {e}", file=sys.stderr, flush=True)
    except Exception as e:  # the broker, the producer: report it the same way
        res["error"] = f"{type(e).__name__}: {e}"
        print(f"[bench] FAILED: {type(e).__name__}: {e}", file=sys.stderr, flush=True)
    finally:
        if broker is not None:
            broker.stop()
    md = report.write(res, out)
    if not ok:
        print(f"[bench] partial results in {out}; worker logs kept under {work}", file=sys.stderr)
        return 1
    shutil.rmtree(work, ignore_errors=True)
    print(md)
    return 0


if __name__ == "__main__":
    sys.exit(main())
