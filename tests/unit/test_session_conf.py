"""What a session and a spark-submit get: nothing on the executors that only the driver's machine has."""

from __future__ import annotations

import zipfile
from pathlib import Path

from pipelines.config import load_config
from pipelines.local.cluster import package_zip
from pipelines.session import is_local_master, session_conf, submit_command

REPO = Path(__file__).resolve().parents[2]


def test_executor_options_name_no_driver_local_path():
    cfg = load_config(REPO / "conf" / "local.yaml", environ={})
    conf = session_conf(cfg)
    assert "-Dlog4j2.configurationFile=file:" in conf["spark.driver.extraJavaOptions"]
    executor = conf["spark.executor.extraJavaOptions"]
    assert "-Duser.timezone=UTC" in executor
    assert str(REPO) not in executor and "log4j" not in executor


def test_submit_ships_the_package_to_a_cluster(tmp_path):
    cfg = load_config(REPO / "conf" / "local.yaml", environ={"PIPELINES__SPARK__MASTER": "spark://127.0.0.1:7077"})
    assert not is_local_master(cfg.spark.master) and is_local_master("local[2]")
    z = package_zip(tmp_path / "p.zip")
    names = zipfile.ZipFile(z).namelist()
    assert "pipelines/__init__.py" in names and "pipelines/jobs/ingest.py" in names
    assert not any("__pycache__" in n or n.endswith(".pyc") for n in names)
    cmd = submit_command(cfg, "pipelines/jobs/ingest.py", ["--available-now"], "conf/local.yaml", py_files=z,
                         extra={"spark.cores.max": "2"})
    assert cmd[0].endswith("/bin/spark-submit")
    assert cmd[cmd.index("--master") + 1] == "spark://127.0.0.1:7077"
    assert cmd[cmd.index("--py-files") + 1] == str(z) and "spark.cores.max=2" in cmd
    assert cmd[-4:] == ["pipelines/jobs/ingest.py", "--conf", "conf/local.yaml", "--available-now"]
