"""The jobs on a real Spark standalone cluster (loopback): a worker, then the driver, SIGKILLed mid-stream."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest

pytestmark = [pytest.mark.cluster, pytest.mark.slow]
REPO = Path(__file__).resolve().parents[2]


def test_ingest_and_gold_on_a_standalone_cluster_survive_a_lost_worker_and_driver(tmp_path):
    env = {**os.environ, "PIPELINES__APP__DATA_DIR": str(tmp_path / "data")}
    (tmp_path / "data").mkdir()
    cmd = [sys.executable, "-m", "pipelines", "cluster-demo", "--events", "4000", "--seconds", "25",
           "--max-offsets", "400", "--timeout", "600"]
    res = subprocess.run(cmd, cwd=REPO, env=env, capture_output=True, text=True, timeout=850)
    assert res.returncode == 0, res.stdout[-4000:] + res.stderr[-4000:]
    table = dict(line.rsplit(None, 1) for line in res.stdout.splitlines() if line and "  " in line)
    assert table["result"] == "PASS" and table["verify"] == "OK"
    assert table["master"].startswith("spark://127.0.0.1:")
    # Both workers ran an executor; one was SIGKILLed with it, and the job went on with the other.
    assert int(table["executors before the worker kill"]) == 2
    assert int(table["workers alive after the kill"]) == 1
    assert int(table["batches on the remaining worker"]) >= 2
    # The driver was SIGKILLed too, and its restart from the checkpoint finished the topic.
    assert table["catch-up run exit code"] == "0" and table["gold run exit code"] == "0"
    assert int(table["events produced"]) == 4000
    assert int(table["silver rows"]) > 3300 and int(table["bronze rows"]) == 4000
    # The jobs were submitted to the cluster with the package shipped, not run in local mode.
    assert "--master spark://127.0.0.1:" in res.stderr and "--py-files" in res.stderr  # its progress log
