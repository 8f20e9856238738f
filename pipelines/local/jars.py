"""JVM provisioning: Java checks and the jars resolved from Maven Central.

``provision()`` runs ``mvn dependency:copy-dependencies`` on the two POMs shipped in
``pipelines/local/maven/`` into ``<jars_dir>/spark`` and ``<jars_dir>/kafka``. After that
nothing downloads at run time: Spark gets the local jars through ``spark.jars``.

Jars that the pyspark wheel already ships (scala-library, jackson, parquet, hadoop-client,
slf4j, log4j, ...) are removed from the Spark folder after resolution, so the only copy
of each library on Spark's classpath is Spark's own.
"""

from __future__ import annotations

import hashlib
import os
import re
import shutil
import subprocess
from pathlib import Path

from pipelines import paths
from pipelines.errors import DependencyError

MIN_JAVA = 17
SETUP_HINT = "run `make setup` (or `python -m pipelines jars`) to resolve them from Maven Central"
_STAMP = ".provisioned"
# Spark ships jcl-over-slf4j, which provides the same classes as commons-logging.
_ALSO_PROVIDED_BY_SPARK = {"commons-logging"}
_VERSIONED_JAR = re.compile(r"^(?P<artifact>.+?)-(?P<version>\d+(?:\.\d+)+[^-]*(?:-[\w.]+)?)\.jar$")


def java_executable() -> str:
    """The ``java`` to use: ``$JAVA_HOME/bin/java`` if set, else the one on PATH."""
    home = os.environ.get("JAVA_HOME")
    if home and (Path(home) / "bin" / "java").exists():
        return str(Path(home) / "bin" / "java")
    found = shutil.which("java")
    if not found:
        raise DependencyError(
            "Java was not found (no JAVA_HOME, no `java` on PATH)",
            hint=f"install Java {MIN_JAVA}+ (Debian: apt-get install openjdk-17-jdk-headless) and/or set JAVA_HOME",
        )
    return found


def java_major_version(java: str | None = None) -> int:
    """Major version of ``java`` (e.g. 17), from ``java -version``."""
    exe = java or java_executable()
    try:
        out = subprocess.run([exe, "-version"], capture_output=True, text=True, timeout=60)
    except OSError as e:
        raise DependencyError(f"could not run {exe}: {e}", hint="check JAVA_HOME") from e
    return parse_java_version(out.stderr + out.stdout)


def parse_java_version(text: str) -> int:
    """Parse the major version from ``java -version`` output (handles ``1.8.0_x`` and ``17.0.x``)."""
    m = re.search(r'version "(\d+)(?:\.(\d+))?', text)
    if not m:
        raise DependencyError(f"could not read the Java version from: {text.strip()[:200]!r}")
    major = int(m.group(1))
    if major == 1 and m.group(2):
        major = int(m.group(2))
    return major


def check_java(java: str | None = None) -> str:
    """Return the java executable, or raise if it is missing or older than 17."""
    exe = java or java_executable()
    major = java_major_version(exe)
    if major < MIN_JAVA:
        raise DependencyError(
            f"{exe} is Java {major}; Spark 4 and Kafka 4 need Java {MIN_JAVA} or newer",
            hint="install openjdk-17 and point JAVA_HOME at it",
        )
    return exe


def spark_jars_dir(jars_dir: Path) -> Path:
    """Folder of the Delta + Kafka connector jars."""
    return jars_dir / paths.SPARK_JARS_SUBDIR


def kafka_jars_dir(jars_dir: Path) -> Path:
    """Folder of the Kafka broker jars."""
    return jars_dir / paths.KAFKA_JARS_SUBDIR


def spark_jars(jars_dir: Path) -> list[Path]:
    """The jars to put on ``spark.jars``; raises a clear error if they were never provisioned."""
    folder = spark_jars_dir(jars_dir)
    jars = sorted(folder.glob("*.jar"))
    names = " ".join(j.name for j in jars)
    if "delta-spark" not in names or "spark-sql-kafka" not in names:
        raise DependencyError(f"Delta / Kafka connector jars are missing in {folder}", hint=SETUP_HINT)
    return jars


def kafka_classpath(jars_dir: Path) -> str:
    """The broker's classpath (a JVM wildcard); raises if the broker jars are missing."""
    folder = kafka_jars_dir(jars_dir)
    if not any(folder.glob("kafka_2.13-*.jar")):
        raise DependencyError(f"Kafka broker jars are missing in {folder}", hint=SETUP_HINT)
    return str(folder / "*")


def _pyspark_jar_artifacts() -> set[str]:
    import pyspark

    folder = Path(pyspark.__file__).parent / "jars"
    return {artifact_name(j.name) for j in folder.glob("*.jar")}


def artifact_name(jar_file: str) -> str:
    """``jackson-core-2.13.5.jar`` -> ``jackson-core``; ``zstd-jni-1.5.7-3.jar`` -> ``zstd-jni``."""
    m = _VERSIONED_JAR.match(jar_file)
    return m.group("artifact") if m else jar_file.removesuffix(".jar")


def _fingerprint() -> str:
    h = hashlib.sha256()
    for pom in (paths.SPARK_POM, paths.KAFKA_POM):
        h.update(pom.read_bytes())
    return h.hexdigest()[:16]


def is_provisioned(jars_dir: Path) -> bool:
    """True when both folders were resolved from the current POMs."""
    stamp = jars_dir / _STAMP
    if not stamp.exists() or stamp.read_text().strip() != _fingerprint():
        return False
    try:
        spark_jars(jars_dir)
        kafka_classpath(jars_dir)
    except DependencyError:
        return False
    return True


def provision(jars_dir: Path, *, force: bool = False, quiet: bool = True) -> list[Path]:
    """Resolve the Spark and broker jars from Maven Central (no-op when already up to date).

    Returns:
        The jars now in the Spark folder.

    """
    check_java()
    if not force and is_provisioned(jars_dir):
        return spark_jars(jars_dir)
    mvn = shutil.which("mvn")
    if not mvn:
        raise DependencyError(
            "Maven (`mvn`) was not found on PATH; it resolves the Delta, Kafka connector and broker jars",
            hint="install Maven (Debian: apt-get install maven)",
        )
    for pom, sub in ((paths.SPARK_POM, paths.SPARK_JARS_SUBDIR), (paths.KAFKA_POM, paths.KAFKA_JARS_SUBDIR)):
        out = (jars_dir / sub).resolve()
        if out.exists():
            shutil.rmtree(out)
        out.mkdir(parents=True)
        cmd = [mvn, "-B", *(["-q"] if quiet else []), "-f", str(pom), "dependency:copy-dependencies",
               f"-DoutputDirectory={out}", "-DincludeScope=runtime"]
        res = subprocess.run(cmd, capture_output=True, text=True)
        if res.returncode != 0:
            tail = "\n".join((res.stdout + res.stderr).strip().splitlines()[-15:])
            raise DependencyError(
                f"Maven could not resolve {pom.name} (exit {res.returncode}):\n{tail}",
                hint="check network access to Maven Central, then run `make setup` again",
            )
    shipped = _pyspark_jar_artifacts() | _ALSO_PROVIDED_BY_SPARK
    for jar in spark_jars_dir(jars_dir).glob("*.jar"):
        if artifact_name(jar.name) in shipped:
            jar.unlink()
    found = spark_jars(jars_dir)
    kafka_classpath(jars_dir)
    (jars_dir / _STAMP).write_text(_fingerprint() + "\n")
    return found


def spark_bin(name: str) -> str:
    """Pyspark's own launcher script ``bin/<name>`` (``spark-submit``, ``spark-class``)."""
    import pyspark

    return str(Path(pyspark.__file__).parent / "bin" / name)
