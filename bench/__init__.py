"""Benchmarks of the exactly-once pipeline, run from the repo root: ``python -m bench [--quick] ...``.

Modules: :mod:`bench.__main__` (the orchestrator: broker, preload, sections, report),
:mod:`bench.worker` (one pipeline in a fresh process and JVM), :mod:`bench.common` (machine,
CPU accounting, preload, fit, statistics, :func:`~bench.common.run_isolated`),
:mod:`bench.drain` (section 1), :mod:`bench.batch_cost` (section 2), :mod:`bench.freshness`
(section 3), :mod:`bench.merge_scope` (section 4) and :mod:`bench.report` (results.md, plots).
"""
