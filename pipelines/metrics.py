"""Metrics: Spark's own Prometheus endpoint, carrying the pipeline's per-batch counters too.

One scrape target per job, the way Spark users already scrape Spark: the driver's UI serves

* ``/metrics/prometheus`` (Spark's ``PrometheusServlet`` sink):
  the driver's metrics, the streaming queries' own gauges (``spark.sql.streaming.metricsEnabled``:
  input and processing rate, latency per query) and this module's counters;
* ``/metrics/executors/prometheus`` (``spark.ui.prometheus.enabled``): the executors' metrics.

The pipeline's counters are Spark ``LongAccumulator`` s registered with Spark's metrics system
(``LongAccumulatorSource``; the Spark properties are :data:`pipelines.session.METRICS_CONF`), so
they appear in the same text as Spark's, named
``metrics_<namespace>_driver_AccumulatorSource_<name>_Value`` with ``<namespace>`` from
``spark.metrics.namespace`` (default here ``pipelines``, so names do not change with the
application id). Counters (totals since the job started) and gauges (the last batch's value):

=====================================  =====================================================
``<query>_batches``                    batches run (a replayed batch counts in ``_replayed``)
``<query>_rows_read``                  Kafka records read
``<query>_bronze_inserted``            rows inserted into bronze
``<query>_silver_inserted``            rows inserted into silver
``<query>_quarantined``                rows written to quarantine
``<query>_duplicates``                 duplicates dropped (in the batch and against silver)
``<query>_replayed``                   batches found already committed and skipped
``<query>_last_batch_id``              gauge: the last batch's id
``<query>_last_batch_rows``            gauge: rows in the last batch
``<query>_last_batch_duration_ms``     gauge: the last batch's duration (Spark's triggerExecution)
``<query>_freshness_ms``               gauge: now - newest Kafka timestamp, at the last batch's end
``<query>_last_progress_ms``           gauge: epoch ms of the last progress or idle trigger (alive)
``<query>_lag``                        gauge: records behind the latest offsets, all partitions
``<query>_lag_<topic>_<partition>``    gauge: records behind, per partition
=====================================  =====================================================

:class:`ProgressListener` (a ``StreamingQueryListener``) updates the progress gauges from each
batch's ``StreamingQueryProgress``; the ingest job adds its table counters after every batch.
"""

from __future__ import annotations

import json
import re
import threading
import time
from typing import TYPE_CHECKING, Any

from pyspark.sql.streaming.listener import StreamingQueryListener

from pipelines import logs
from pipelines.session import PROMETHEUS_PATH

if TYPE_CHECKING:
    from pyspark.sql import SparkSession

_log = logs.get("metrics")




def metric_name(*parts: str) -> str:
    """A metric name Prometheus accepts, the way Spark's servlet normalises it (``[^a-zA-Z0-9]`` -> ``_``)."""
    return re.sub(r"[^a-zA-Z0-9]", "_", "_".join(p for p in parts if p))


#: The per-batch counters of ingest and backfill (see the module docstring).
COUNTERS = ("batches", "replayed", "rows_read", "bronze_inserted", "silver_inserted", "quarantined", "duplicates")


class PipelineMetrics:
    """The pipeline's counters and gauges in Spark's metrics system (one set per SparkContext)."""

    _by_context: dict[str, PipelineMetrics] = {}
    _lock = threading.Lock()

    def __init__(self, spark: SparkSession) -> None:
        self._sc = spark.sparkContext
        self._accumulators: dict[str, Any] = {}
        self._lock_values = threading.Lock()

    @classmethod
    def of(cls, spark: SparkSession) -> PipelineMetrics:
        """The set for ``spark``'s SparkContext (registered once: Spark's registry refuses a name twice)."""
        key = spark.sparkContext.applicationId
        with cls._lock:
            if key not in cls._by_context:
                cls._by_context[key] = cls(spark)
            return cls._by_context[key]

    def _acc(self, name: str) -> Any:
        acc = self._accumulators.get(name)
        if acc is None:
            jvm = self._sc._jvm
            assert jvm is not None
            jsc = self._sc._jsc.sc()
            acc = jsc.longAccumulator(name)
            java_map = jvm.java.util.HashMap()
            java_map.put(name, acc)
            scala_map = jvm.org.apache.spark.api.python.PythonUtils.toScalaMap(java_map)
            # The Scala object's method (the class of the same name has no static forwarder).
            source = getattr(getattr(jvm.org.apache.spark.metrics.source, "LongAccumulatorSource$"), "MODULE$")
            source.register(jsc, scala_map)
            self._accumulators[name] = acc
        return acc

    def add(self, name: str, value: int) -> None:
        """Add to a counter."""
        with self._lock_values:
            self._acc(name).add(int(value))

    def set(self, name: str, value: int) -> None:
        """Set a gauge."""
        with self._lock_values:
            self._acc(name).setValue(int(value))

    def declare(self, query: str) -> None:
        """Register ``query``'s counters at 0.

        A scrape before the first batch sees them, and a registration problem shows at the job's
        start, not inside a batch.
        """
        for name in COUNTERS:
            self.add(metric_name(query, name), 0)

    def record_batch(self, query: str, res: Any) -> None:
        """Add one batch's table counters (an ingest ``BatchResult``) under ``query``."""
        if res.replayed:
            self.add(metric_name(query, "replayed"), 1)
            return
        self.add(metric_name(query, "batches"), 1)
        self.add(metric_name(query, "rows_read"), res.rows_read)
        self.add(metric_name(query, "bronze_inserted"), res.bronze_inserted or 0)
        self.add(metric_name(query, "silver_inserted"), res.silver_inserted or 0)
        self.add(metric_name(query, "quarantined"), res.quarantined or 0)
        self.add(metric_name(query, "duplicates"), res.duplicates_in_batch + (res.duplicates_in_table or 0))
        if res.lag_s is not None:
            self.set(metric_name(query, "freshness_ms"), round(res.lag_s * 1000))



def kafka_lag(progress_sources: list[Any]) -> dict[tuple[str, int], int]:
    """(topic, partition) -> records behind ``latestOffset`` after this batch, from a progress' sources."""
    lag: dict[tuple[str, int], int] = {}
    for src in progress_sources:
        end, latest = _offsets(getattr(src, "endOffset", None)), _offsets(getattr(src, "latestOffset", None))
        for (topic, part), last in latest.items():
            if (topic, part) in end:
                lag[(topic, part)] = max(0, last - end[(topic, part)])
    return lag


def _offsets(text: Any) -> dict[tuple[str, int], int]:
    """A Kafka source offset JSON (``{"topic": {"0": 12}}``) as a flat map; anything else: empty."""
    try:
        data = json.loads(text) if isinstance(text, str) else None
    except ValueError:
        return {}
    out: dict[tuple[str, int], int] = {}
    if isinstance(data, dict):
        for topic, parts in data.items():
            if isinstance(parts, dict):
                for p, off in parts.items():
                    if str(p).lstrip("-").isdigit() and isinstance(off, int):
                        out[(str(topic), int(p))] = off
    return out


class ProgressListener(StreamingQueryListener):
    """Records every progress event of the named queries as gauges, and logs failures.

    Spark calls it on its listener bus for every query of the session; ``queries`` limits it to
    this job's (the tests' shared session runs several jobs).
    """

    def __init__(self, metrics: PipelineMetrics, queries: set[str]) -> None:
        self.metrics = metrics
        self.queries = queries

    def onQueryStarted(self, event: Any) -> None:  # noqa: N802 (Spark's name)
        """Logged at DEBUG."""
        _log.debug(f"[metrics] query {event.name} started (id {event.id}, run {event.runId})")

    def onQueryProgress(self, event: Any) -> None:  # noqa: N802
        """Update the query's progress gauges."""
        p = event.progress
        if p.name not in self.queries:
            return
        try:
            m, q = self.metrics, p.name
            m.set(metric_name(q, "last_batch_id"), p.batchId)
            m.set(metric_name(q, "last_batch_rows"), p.numInputRows)
            m.set(metric_name(q, "last_batch_duration_ms"), int((p.durationMs or {}).get("triggerExecution", 0)))
            m.set(metric_name(q, "last_progress_ms"), int(time.time() * 1000))
            lag = kafka_lag(list(p.sources or []))
            if lag:
                m.set(metric_name(q, "lag"), sum(lag.values()))
                for (topic, part), behind in lag.items():
                    m.set(metric_name(q, "lag", topic, str(part)), behind)
            _log.debug(f"[metrics] {q} batch {p.batchId}: {p.numInputRows} rows, lag {sum(lag.values())}")
        except Exception as e:  # a metrics failure must never fail the query (Spark logs listener errors)
            _log.warning(f"[metrics] could not record the progress of {p.name}: {e}")

    def onQueryIdle(self, event: Any) -> None:  # noqa: N802
        """An idle trigger (nothing new in the source): the query is alive, lag unchanged."""
        if getattr(event, "name", None) in self.queries:
            try:
                self.metrics.set(metric_name(event.name, "last_progress_ms"), int(time.time() * 1000))
            except Exception as e:
                _log.warning(f"[metrics] could not record an idle trigger of {event.name}: {e}")

    def onQueryTerminated(self, event: Any) -> None:  # noqa: N802
        """Logged at DEBUG (the job reports a failure itself)."""
        _log.debug(f"[metrics] query {event.id} terminated: {event.exception or 'stopped'}")


class Listening:
    """:class:`ProgressListener` registered for ``queries`` until :meth:`stop`; logs the endpoint URL."""

    def __init__(self, spark: SparkSession, *queries: str, counters: bool = False) -> None:
        self.spark = spark
        self.metrics = PipelineMetrics.of(spark)
        if counters:
            for q in queries:
                self.metrics.declare(q)
        self.listener = ProgressListener(self.metrics, set(queries))
        spark.streams.addListener(self.listener)
        url = ui_url(spark)
        if url:
            _log.info(f"[metrics] Spark UI {url} | Prometheus {url}{PROMETHEUS_PATH}")

    def stop(self) -> None:
        """Remove the listener (the counters stay registered with the SparkContext)."""
        try:
            self.spark.streams.removeListener(self.listener)
        except Exception as e:  # a stopped session: nothing left to listen to
            _log.debug(f"[metrics] listener not removed: {e}")


def ui_url(spark: SparkSession) -> str | None:
    """The driver's UI address (None with ``spark.ui.enabled=false``)."""
    return spark.sparkContext.uiWebUrl
