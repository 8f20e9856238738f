"""The one SparkSession factory: base, Delta, connector jars, conf file, UTC.

Precedence of Spark properties (later wins): built-in defaults below, ``spark.defaults_file``
(``conf/spark-defaults.conf``), ``spark.conf`` in the YAML config, then ``extra`` passed by
the caller (tests use it for a small, UI-less session).

Under ``spark-submit`` the JVM already exists: pass the jars with ``--jars`` or
``--packages`` (``python -m pipelines spark-args`` prints them) and this factory only adds
SQL-level settings.

Example:
    >>> from pipelines.config import load_config
    >>> spark = build_session(load_config("conf/local.yaml"))  # doctest: +SKIP

"""

from __future__ import annotations

import os
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import TYPE_CHECKING

from pipelines import logs
from pipelines.config import Config
from pipelines.errors import ConfigError
from pipelines.local import jars

if TYPE_CHECKING:
    from pyspark.sql import SparkSession

DELTA_EXTENSION = "io.delta.sql.DeltaSparkSessionExtension"
DELTA_CATALOG = "org.apache.spark.sql.delta.catalog.DeltaCatalog"

BASE_CONF: dict[str, str] = {
    "spark.sql.session.timeZone": "UTC",
    "spark.sql.extensions": DELTA_EXTENSION,
    "spark.sql.catalog.spark_catalog": DELTA_CATALOG,
    # A leftover txnVersion must never silently skip a later write in this session.
    "spark.databricks.delta.write.txnVersion.autoReset.enabled": "true",
    "spark.ui.showConsoleProgress": "false",
}


#: Metrics the way Spark users scrape them (:mod:`pipelines.metrics`): Spark's Prometheus servlet
#: on the driver's UI, the executors' metrics, the streaming queries' gauges, and a namespace that
#: does not change with the application id. Defaults: ``spark.conf`` can override each.
#: Where Spark's Prometheus servlet answers on the driver's UI.
PROMETHEUS_PATH = "/metrics/prometheus"

METRICS_CONF: dict[str, str] = {
    "spark.metrics.conf.*.sink.prometheusServlet.class": "org.apache.spark.metrics.sink.PrometheusServlet",
    "spark.metrics.conf.*.sink.prometheusServlet.path": PROMETHEUS_PATH,
    "spark.metrics.namespace": "pipelines",
    "spark.ui.prometheus.enabled": "true",
    "spark.sql.streaming.metricsEnabled": "true",
}


def read_properties_file(path: Path) -> dict[str, str]:
    """Parse a Spark ``spark-defaults.conf``: ``key value`` (or ``key=value``) per line, ``#`` comments."""
    out: dict[str, str] = {}
    for n, line in enumerate(path.read_text().splitlines(), start=1):
        line = line.strip()
        if not line or line.startswith("#"):
            continue
        parts = line.split(None, 1) if "=" not in line.split(None, 1)[0] else line.split("=", 1)
        if len(parts) != 2 or not parts[1].strip():
            raise ConfigError(f"{path}:{n}: expected 'key value', got {line!r}")
        out[parts[0].strip()] = parts[1].strip()
    return out


def session_conf(cfg: Config, extra: Mapping[str, str] | None = None) -> dict[str, str]:
    """All Spark properties the session gets (pure: no JVM), useful for ``spark-submit --conf``."""
    conf = {**BASE_CONF, **METRICS_CONF}
    defaults = Path(cfg.path(cfg.spark.defaults_file)) if cfg.spark.defaults_file else None
    if defaults is not None:
        if not defaults.exists():
            raise ConfigError(f"spark.defaults_file {defaults} does not exist (from {', '.join(cfg.sources)})")
        conf.update(read_properties_file(defaults))
    conf.update(cfg.spark.conf)
    if extra:
        conf.update({k: str(v) for k, v in extra.items()})
    # These are not negotiable: the exactly-once design assumes UTC and Delta.
    conf["spark.sql.session.timeZone"] = "UTC"
    conf["spark.sql.extensions"] = _with_delta_extension(conf.get("spark.sql.extensions", ""))
    conf["spark.sql.catalog.spark_catalog"] = DELTA_CATALOG
    java_opts = {"spark.driver.extraJavaOptions": ["-Duser.timezone=UTC"],
                 "spark.executor.extraJavaOptions": ["-Duser.timezone=UTC"]}
    if cfg.spark.log4j_file:
        log4j = Path(cfg.path(cfg.spark.log4j_file))
        if not log4j.exists():
            raise ConfigError(f"spark.log4j_file {log4j} does not exist (from {', '.join(cfg.sources)})")
        # The driver's only: on a cluster the path does not exist on the executors' machines (they
        # log with their workers' own log4j2 configuration; local mode has no separate executors).
        java_opts["spark.driver.extraJavaOptions"].append(f"-Dlog4j2.configurationFile=file:{log4j}")
    for key, opts in java_opts.items():
        conf[key] = " ".join([conf[key], *opts] if conf.get(key) else opts)
    if cfg.spark.use_local_jars:
        local = [str(j) for j in jars.spark_jars(cfg.jars_dir)]
        conf["spark.jars"] = ",".join([*filter(None, conf.get("spark.jars", "").split(",")), *local])
    return conf


def _with_delta_extension(value: str) -> str:
    names = [v.strip() for v in value.split(",") if v.strip()]
    if DELTA_EXTENSION not in names:
        names.append(DELTA_EXTENSION)
    return ",".join(names)


def build_session(cfg: Config, extra: Mapping[str, str] | None = None, master: str | None = None) -> SparkSession:
    """Build (or reuse) the SparkSession for ``cfg``.

    Args:
        cfg: The loaded configuration.
        extra: Spark properties that win over everything in ``cfg``.
        master: Overrides ``spark.master`` (e.g. ``local[2]`` in tests).

    Returns:
        A SparkSession with Delta, the Kafka connector and UTC.

    Raises:
        DependencyError: Java or the jars are missing (with the command that fixes it).

    """
    jars.check_java()
    from pyspark.sql import SparkSession

    logs.ensure()  # a notebook that configured nothing still sees the jobs' progress lines

    conf = session_conf(cfg, extra)
    os.environ.setdefault("PYSPARK_PYTHON", _python())
    builder = SparkSession.builder.appName(cfg.spark.app_name)
    loopback = {}
    if not _inside_spark_submit():
        builder = builder.master(master or cfg.spark.master)
        loopback = loopback_env(master or cfg.spark.master)
    for key, value in conf.items():
        builder = builder.config(key, value)
    os.environ.update(loopback)  # read by the JVM pyspark launches now; not left for later sessions
    try:
        spark = builder.getOrCreate()
    finally:
        for key in loopback:
            os.environ.pop(key, None)
    spark.sparkContext.setLogLevel("WARN")
    if not is_local_master(spark.sparkContext.master or "local"):
        check_executors(spark)
    return spark


#: How long a job on a cluster waits for its first executor before it says so.
EXECUTOR_WAIT_S = 180.0


def check_executors(spark: SparkSession) -> None:
    """On a cluster: every executor runs the driver's Python (major.minor) and can import ``pipelines``.

    Raises:
        DependencyError: what differs, and how to ship a matching interpreter or the package.

    """
    import sys
    import time

    from pipelines.errors import DependencyError

    def probe(_: object) -> tuple[tuple[int, int], bool]:
        # Runs on an executor; nested, so it is shipped by value (not imported from this package).
        import importlib.util
        import sys

        return (sys.version_info[0], sys.version_info[1]), importlib.util.find_spec("pipelines") is not None

    sc = spark.sparkContext
    # Wait for executors (a job submitted before any registered would just wait, silently, for
    # resources the cluster may never give).
    def registered() -> int:  # block managers, less the driver's (pyspark's StatusTracker has no executor list)
        return int(sc._jsc.sc().getExecutorMemoryStatus().size()) - 1

    deadline = time.monotonic() + EXECUTOR_WAIT_S
    while registered() < 1 and time.monotonic() < deadline:
        time.sleep(0.5)
    executors = registered()
    if executors < 1:
        raise DependencyError(f"no executor registered with the application within {EXECUTOR_WAIT_S:.0f}s "
                              f"(master {sc.master})",
                              hint="check the master's UI for free workers, cores and memory (spark.executor.cores, "
                                   "spark.executor.memory, spark.cores.max) and the workers' logs")
    n = max(2, 2 * executors, sc.defaultParallelism)
    driver = (sys.version_info[0], sys.version_info[1])
    try:
        found = set(sc.parallelize(range(n), n).map(probe).collect())
    except Exception as e:  # Spark's PYTHON_VERSION_MISMATCH and friends, as a Java stack trace
        text = str(e)
        first = next((ln for ln in text.splitlines() if "Python" in ln or "python" in ln), text.splitlines()[0])
        raise DependencyError(
            f"the executors could not run Python for this job: {first.strip()[:300]}",
            hint=f"give them Python {driver[0]}.{driver[1]} with the job's packages: spark.pyspark.python (or "
                 "PYSPARK_PYTHON) pointing at it on every node, or a packed venv shipped with --archives "
                 "(README: Running on a cluster)") from e
    versions = {v for v, _ in found}
    if versions != {driver}:
        got = ", ".join(f"{a}.{b}" for a, b in sorted(versions))
        raise DependencyError(f"the executors run Python {got}, the driver {driver[0]}.{driver[1]}",
                              hint="point spark.pyspark.python at the same minor version on every node, or ship "
                                   "a packed venv with --archives (README: Running on a cluster)")
    if not all(importable for _, importable in found):
        raise DependencyError("the executors cannot import the pipelines package",
                              hint="ship it with spark-submit --py-files .local/dist/pipelines.zip (`python -m "
                                   "pipelines package` builds it), or install it in the executors' Python")


def _python() -> str:
    import sys

    return sys.executable


def _inside_spark_submit() -> bool:
    # spark-submit sets this for the Python driver it launches.
    return "PYSPARK_GATEWAY_PORT" in os.environ or "SPARK_SUBMIT" in os.environ


def spark_submit_args(cfg: Config) -> list[str]:
    """``--jars``/``--conf`` arguments equivalent to :func:`build_session`, for ``spark-submit``."""
    conf = session_conf(cfg)
    args: list[str] = ["--master", cfg.spark.master]
    jars_value = conf.pop("spark.jars", "")
    if jars_value:
        args += ["--jars", jars_value]
    for key, value in conf.items():
        args += ["--conf", f"{key}={value}"]
    return args


def loopback_env(master: str) -> dict[str, str]:
    """For a local master: bind the driver (and its UI) to 127.0.0.1, unless ``SPARK_LOCAL_IP`` says otherwise.

    Spark binds its UI to ``SPARK_LOCAL_IP`` or, without it, to every interface; a laptop's or
    a shared host's job should not serve its UI (and its metrics) to the network.
    """
    if not is_local_master(master) or os.environ.get("SPARK_LOCAL_IP"):
        return {}
    return {"SPARK_LOCAL_IP": "127.0.0.1"}


def is_local_master(master: str) -> bool:
    """``local``, ``local[N]``, ``local[*]``: no separate executors."""
    return master.startswith("local")


def submit_command(cfg: Config, job: str, job_args: Sequence[str], conf_file: str, *,
                   py_files: Path | None = None, extra: Mapping[str, str] | None = None) -> list[str]:
    """The ``spark-submit`` command line for ``job`` (pyspark's own spark-submit, this config's jars).

    ``py_files``: the package zip for the executors (``--py-files``); ``extra``: more ``--conf``.
    """
    args = list(job_args)
    if "--conf" not in args:
        args = ["--conf", conf_file, *args]
    more = [a for k, v in (extra or {}).items() for a in ("--conf", f"{k}={v}")]
    ship = ["--py-files", str(py_files)] if py_files is not None else []
    return [jars.spark_bin("spark-submit"), *spark_submit_args(cfg), *more, *ship, job, *args]
