"""The shipped scheduling examples name commands and options that exist (no Spark: the CLI parser only)."""

from __future__ import annotations

import ast
import re
import shlex

import pytest

from pipelines.cli import _parser
from pipelines.jobs.backfill import parse_time, range_arguments
from pipelines.paths import REPO_ROOT

SCHEDULE = REPO_ROOT / "conf" / "schedule"


def cli_commands() -> list[list[str]]:
    """Every `python -m pipelines ...` invocation in the cron and systemd examples, as argv."""
    out = []
    cron = (SCHEDULE / "crontab.example").read_text()
    for line in cron.splitlines():
        if "$PIPELINES" in line and not line.startswith("#"):
            cmd = line.split("$PIPELINES", 1)[1].split(">>")[0]
            cmd = re.sub(r'"\$\(date [^)]*\)"', "2026-12-01", cmd)
            out.append(["--conf", "conf/local.yaml", *shlex.split(cmd)])
    for name in ("lakehouse-ingest.service",):
        for line in (SCHEDULE / name).read_text().splitlines():
            if line.startswith("Exec"):
                out.append(shlex.split(line.split("-m pipelines", 1)[1]))
    return out


def test_the_examples_have_the_runs_a_scheduler_needs():
    cmds = cli_commands()
    assert [c[2:4] for c in cmds[:3]] == [["ingest", "--available-now"], ["gold", "--available-now"],
                                          ["backfill", "--from"]]
    assert ["maintain"] in [c[2:3] for c in cmds]
    assert len(cmds) == 7


@pytest.mark.parametrize("argv", cli_commands(), ids=lambda a: " ".join(a[2:4]))
def test_each_scheduled_command_parses(argv):
    args = _parser().parse_args(argv)
    assert args.conf == "conf/local.yaml"
    if args.command == "backfill":
        assert range_arguments(args)["start"] == parse_time("2026-12-01")


def test_the_airflow_example_runs_the_job_files_that_exist():
    tree = ast.parse((SCHEDULE / "airflow_dag.example.py").read_text())
    apps = [kw.value for node in ast.walk(tree) if isinstance(node, ast.Call)
            for kw in node.keywords if kw.arg == "application"]
    # f"{ROOT}/pipelines/jobs/x.py": the constant part after ROOT
    files = sorted({"".join(v.value for v in a.values if isinstance(v, ast.Constant)).lstrip("/")
                    for a in apps if isinstance(a, ast.JoinedStr)})
    assert files == ["pipelines/jobs/backfill.py", "pipelines/jobs/gold.py", "pipelines/jobs/ingest.py"]
    assert all((REPO_ROOT / f).is_file() for f in files)
    submit = (SCHEDULE / "spark-submit-backfill.sh").read_text()
    assert "submit pipelines/jobs/backfill.py" in submit and (REPO_ROOT / "pipelines/jobs/backfill.py").is_file()
