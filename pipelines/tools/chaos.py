"""Fault-injection harness: kill the ingest driver anywhere, restart the broker, reset the checkpoint.

The ingest job runs as a separate process (``python -m pipelines ingest``, which starts its own
Spark driver JVM) while a producer thread keeps sending events with duplicates and malformed
records. Each round does one seeded action, then starts the job again as an operator would:

- ``kill``: SIGKILL the driver's process group at a random moment;
- ``fault:<point>``: start the job with ``PIPELINES_FAULT_POINT=<point>`` so it SIGKILLs itself
  at that point of a batch (after bronze, after quarantine, after silver, after audit);
- ``broker-kill`` / ``broker-restart``: SIGKILL or cleanly restart the Kafka broker while the job runs;
- ``checkpoint-reset``: once, delete the checkpoint and restart from earliest.

With gold (the default when ``gold.tables`` are declared), the gold job runs beside it as its own
driver process, with its own seeded action per round: killed at the round's end (``gold:kill``),
made to SIGKILL itself 50-500 ms into a batch's first table or right after its MERGE
(``gold:fault:<point>``), and once its checkpoint is deleted before the round
(``gold:checkpoint-reset``).

With backfills (the default), a third driver process backfills a window of recent offsets
(``backfill --offsets``) that the stream is ingesting at the same time, in small chunks, with its
own seeded action per round: none, run (killed at the round's end if not finished), or SIGKILLed
at a random moment. A later round resumes a killed backfill (the same offsets: the same run,
which skips its finished chunks), and every backfill still unfinished is resumed before the
final check, as an operator would.

At the end the producer is stopped, the jobs catch up (``--available-now``: ingest, then gold),
and ``verify --ledger`` reconciles everything, gold included (every gold group against its
recomputation from silver). The schedule depends only on ``seed``.
"""

from __future__ import annotations

import json
import os
import random
import re
import shutil
import signal
import subprocess
import sys
import threading
import time
from collections import Counter
from dataclasses import dataclass, field
from pathlib import Path

from pipelines import faults, logs, paths
from pipelines.config import Config
from pipelines.local.kafka import LocalKafka

_log = logs.get("chaos")

KILL, BROKER_KILL, BROKER_RESTART, CHECKPOINT_RESET = "kill", "broker-kill", "broker-restart", "checkpoint-reset"
_CRASH_LINE = re.compile(r"\[fault\] injected crash at (?P<point>\w+) in batch \d+"
                         r"(?: \(table version at start (?P<before>-?\d+), at kill (?P<after>-?\d+)\))?")


@dataclass
class ChaosReport:
    """The result table of a chaos run."""

    rounds: int = 0
    actions: Counter[str] = field(default_factory=Counter)
    produced: dict = field(default_factory=dict)
    verify: dict = field(default_factory=dict)
    faults_fired: Counter[str] = field(default_factory=Counter)
    #: ``during_silver_merge`` kills that landed before the MERGE's commit (table version unchanged).
    merge_kills_inside_commit: int = 0
    bug_restarts: int = 0
    seconds: float = 0.0
    silver_merge_scope: str = "table"
    #: The gold job's actions (empty: gold not run).
    gold_actions: Counter[str] = field(default_factory=Counter)
    #: Exit code of the gold job's final catch-up run (None: timed out; 0 without gold).
    gold_catch_up_rc: int | None = 0
    #: The backfill process's actions (empty: no backfills) and what came of them.
    backfill_actions: Counter[str] = field(default_factory=Counter)
    backfill_outcomes: Counter[str] = field(default_factory=Counter)
    #: Backfills killed during the rounds and resumed at the end, and how many of those failed.
    backfills_resumed_at_end: int = 0
    backfill_resume_failures: int = 0

    @property
    def ok(self) -> bool:
        """True when verify found nothing missing or duplicated (gold included) and gold caught up."""
        return bool(self.verify.get("ok")) and self.gold_catch_up_rc == 0 and not self.backfill_resume_failures

    def table(self) -> str:
        """A readable summary."""
        totals = self.verify.get("totals", {})
        checks = {c["name"]: c["count"] for c in self.verify.get("checks", [])}
        rows = [
            ("rounds", self.rounds),
            ("silver merge scope", self.silver_merge_scope),
            *[(f"actions: {k}", v) for k, v in sorted(self.actions.items())],
            *[(f"fired: {p}", self.faults_fired[p]) for p in faults.POINTS if p in self.faults_fired
              or f"fault:{p}" in self.actions],
            *[(f"fired: {p}", self.faults_fired[p]) for p in faults.GOLD_POINTS if p in self.faults_fired
              or f"gold:fault:{p}" in self.gold_actions],
            ("kills inside the silver MERGE commit", self.merge_kills_inside_commit),
            ("SPARK-55271 restarts", self.bug_restarts),
            ("events produced", self.produced.get("sent", 0)),
            ("duplicates injected", self.produced.get("duplicates", 0)),
            ("malformed injected", self.produced.get("malformed_total", 0)),
            *[(f"gold actions: {k}", v) for k, v in sorted(self.gold_actions.items())],
            ("silver rows", totals.get("silver_rows", 0)),
            ("missing (silver)", checks.get("silver: missing message_ids", "?")),
            ("duplicated (silver)", checks.get("silver: duplicated message_ids", "?")),
            ("missing (bronze)", checks.get("bronze: missing records", "?")),
            ("duplicated (bronze)", checks.get("bronze: duplicated records", "?")),
            *([("gold catch-up exit code", "timeout" if self.gold_catch_up_rc is None else self.gold_catch_up_rc),
               ("gold groups compared", totals.get("gold_groups", "?")),
               ("gold mismatches", sum(v for k, v in checks.items() if k.startswith("gold ") and "differ" in k)
                if any(k.startswith("gold ") for k in checks) else "?")] if self.gold_actions else []),
            *[(f"backfill actions: {k}", v) for k, v in sorted(self.backfill_actions.items())],
            *[(f"backfills {k}", v) for k, v in sorted(self.backfill_outcomes.items())],
            *([("backfills resumed at the end", self.backfills_resumed_at_end),
               ("backfill resumes that failed", self.backfill_resume_failures)] if self.backfill_actions else []),
            ("seconds", round(self.seconds)),
            ("result", "PASS" if self.ok else "FAIL"),
        ]
        failed = [c for c in self.verify.get("checks", []) if not c.get("ok", True)]
        rows += [(f"failed check: {c['name']}",
                  f"{c['count']}" + (f" (e.g. {c['samples'][0]})" if c["samples"] else "")) for c in failed]
        if "error" in self.verify:
            rows.append(("verify error", self.verify["error"].strip().splitlines()[-1][:200]))
        width = max(len(k) for k, _ in rows)
        return "\n".join(f"{k.ljust(width)}  {v}" for k, v in rows)


def schedule(rounds: int, seed: int, broker_restarts: int, checkpoint_reset: bool) -> list[str]:
    """The seeded list of actions, one per round."""
    rng = random.Random(seed)
    actions = [BROKER_KILL if i % 2 == 0 else BROKER_RESTART for i in range(broker_restarts)]
    if checkpoint_reset:
        actions.append(CHECKPOINT_RESET)
    while len(actions) < rounds:
        actions.append(rng.choice([KILL, KILL, *[f"fault:{p}" for p in faults.POINTS]]))
    rng.shuffle(actions)
    return actions[:rounds]


GOLD_KILL, GOLD_CHECKPOINT_RESET = "gold:kill", "gold:checkpoint-reset"


def gold_schedule(rounds: int, seed: int, checkpoint_reset: bool) -> list[str]:
    """The gold job's seeded actions, one per round."""
    rng = random.Random(seed + 7)
    actions = [GOLD_CHECKPOINT_RESET] if checkpoint_reset and rounds > 1 else []
    while len(actions) < rounds:
        actions.append(rng.choice([GOLD_KILL, *[f"gold:fault:{p}" for p in faults.GOLD_POINTS]]))
    rng.shuffle(actions)
    return actions[:rounds]


BACKFILL_NONE, BACKFILL_RUN, BACKFILL_KILL = "backfill:none", "backfill:run", "backfill:kill"


def backfill_schedule(rounds: int, seed: int) -> list[str]:
    """The backfill process's seeded actions, one per round."""
    rng = random.Random(seed + 11)
    return [rng.choice([BACKFILL_NONE, BACKFILL_RUN, BACKFILL_KILL]) for _ in range(rounds)]


def backfill_window(bootstrap: str, topic: str, partitions: int, rng: random.Random) -> dict | None:
    """Offsets to backfill: the newest 1,000-4,000 records of each partition (None: broker unreachable)."""
    from confluent_kafka import Consumer, TopicPartition

    consumer = Consumer({"bootstrap.servers": bootstrap, "group.id": "chaos-backfill-window",
                         "enable.auto.commit": False, "isolation.level": "read_committed", "log_level": 2})
    try:
        window = {}
        for p in range(partitions):
            low, high = consumer.get_watermark_offsets(TopicPartition(topic, p), timeout=5, cached=False)
            window[str(p)] = [max(low, high - rng.randint(1000, 4000)), high]
        return {topic: window}
    except Exception:  # noqa: BLE001 - a broker being restarted this round: no backfill then
        return None
    finally:
        consumer.close()


def _committed_batches(checkpoint: str) -> int:
    commits = Path(checkpoint) / "commits"
    return len([p for p in commits.glob("[0-9]*")]) if commits.exists() else 0


class _Job:
    """One ingest process in its own process group.

    ``command`` replaces ``python -m pipelines ingest`` (it gets ``--conf FILE`` and the extra
    arguments): the seam through which a test runs a deliberately broken job.
    """

    def __init__(self, conf_file: str, env: dict[str, str], log: Path, extra: list[str] | None = None,
                 command: list[str] | None = None, job: str = "ingest") -> None:
        self.log = open(log, "a")  # noqa: SIM115 - closed in wait/kill
        argv = ([*command, "--conf", conf_file] if command
                else [sys.executable, "-m", "pipelines", "--conf", conf_file, job])
        self.proc = subprocess.Popen(
            [*argv, *(extra or [])],
            env=env, stdout=self.log, stderr=subprocess.STDOUT, start_new_session=True, cwd=paths.REPO_ROOT,
        )

    def kill(self) -> None:
        if self.proc.poll() is None:
            os.killpg(self.proc.pid, signal.SIGKILL)
        self.wait(60)

    def wait(self, timeout: float) -> int | None:
        try:
            rc = self.proc.wait(timeout)
        except subprocess.TimeoutExpired:
            return None
        # The driver JVM is in the same group; make sure nothing of it survives.
        try:
            os.killpg(self.proc.pid, signal.SIGKILL)
        except ProcessLookupError:
            pass
        self.log.close()
        return rc


def run_chaos(
    cfg: Config,
    conf_file: str,
    broker: LocalKafka,
    *,
    rounds: int,
    events: int,
    seed: int,
    broker_restarts: int = 1,
    checkpoint_reset: bool = True,
    round_seconds: tuple[float, float] = (15.0, 35.0),
    work_dir: Path,
    extra_env: dict[str, str] | None = None,
    ingest_command: list[str] | None = None,
    actions: list[str] | None = None,
    gold: bool = True,
    backfill: bool = True,
    out=_log.info,  # noqa: ANN001
) -> ChaosReport:
    """Run the harness; see the module docstring. ``cfg`` must point at ``broker`` and its own data dir."""
    from pipelines.tools.producer import produce

    t0 = time.monotonic()
    rng = random.Random(seed + 1)
    report = ChaosReport(silver_merge_scope=cfg.ingest.silver_merge_scope)
    work_dir.mkdir(parents=True, exist_ok=True)
    topic = cfg.producer.topic
    env = {
        **os.environ,
        "PIPELINES__APP__DATA_DIR": cfg.data_dir,
        "PIPELINES__APP__JARS_DIR": str(cfg.jars_dir),
        "PIPELINES__KAFKA__BOOTSTRAP_SERVERS": broker.bootstrap_servers,
        "PIPELINES__KAFKA__TOPICS": json.dumps([topic]),
        "PIPELINES__KAFKA__MAX_OFFSETS_PER_TRIGGER": str(cfg.kafka.max_offsets_per_trigger or 5000),
        "PIPELINES__INGEST__TRIGGER_INTERVAL": "1 second",
        "PIPELINES__GOLD__TRIGGER_INTERVAL": "1 second",
        "PYTHONUNBUFFERED": "1",  # progress lines reach the log before a SIGKILL
        "PIPELINES_LOG_LEVEL": "INFO", "PIPELINES_LOG_JSON": "0",  # the harness reads the jobs' plain lines
        **(extra_env or {}),
    }
    ledger = Path(cfg.data_dir) / paths.LEDGER_SUBDIR / topic / f"chaos-seed{seed}.jsonl"
    produced: dict = {}
    rate = events / max(1.0, rounds * sum(round_seconds) / 2)

    def producer() -> None:
        stats = produce(broker.bootstrap_servers, topic, events, partitions=cfg.producer.partitions, rate=rate,
                        seed=seed, ledger_path=ledger, id_prefix=f"chaos{seed}", progress=False,
                        timeout_s=900, log_level=2)  # broker restarts are the point: no connect errors
        produced.update(stats.as_dict())

    prod = threading.Thread(target=producer, daemon=True)
    prod.start()
    log = work_dir / "ingest.log"
    plan = actions or schedule(rounds, seed, broker_restarts, checkpoint_reset)
    gold = gold and bool(cfg.gold.tables)
    gold_plan = gold_schedule(len(plan), seed, checkpoint_reset) if gold else []
    gold_log = work_dir / "gold.log"
    backfill_plan = backfill_schedule(len(plan), seed) if backfill else []
    backfill_log = work_dir / "backfill.log"
    killed_backfills: list[str] = []  # --offsets of backfills killed before they finished

    def start_backfill(offsets: str) -> _Job:
        return _Job(conf_file, {**env, "PIPELINES__BACKFILL__PROGRESS": "false"}, backfill_log,
                    ["--offsets", offsets, "--chunk-records", "2000"], job="backfill")

    for i, action in enumerate(plan):
        report.rounds += 1
        report.actions[action] += 1
        gold_job = None
        if gold:
            gold_action = gold_plan[i]
            report.gold_actions[gold_action] += 1
            out(f"[chaos] round {i + 1}/{len(plan)}: {action}; gold: {gold_action}")
            gold_env = dict(env)
            if gold_action.startswith("gold:fault:"):
                gold_env[faults.POINT_ENV] = gold_action.split(":", 2)[2]
                # The first batch with silver changes this process runs (its rounds are short:
                # two driver JVMs share the machine, and a start may build the tables first).
                gold_env[faults.MIN_BATCH_ENV] = str(_committed_batches(cfg.gold_checkpoint_path))
            if gold_action == GOLD_CHECKPOINT_RESET:
                shutil.rmtree(cfg.gold_checkpoint_path, ignore_errors=True)
            gold_job = _Job(conf_file, gold_env, gold_log, job="gold")
        else:
            out(f"[chaos] round {i + 1}/{len(plan)}: {action}")
        job_env = dict(env)
        if action.startswith("fault:"):
            job_env[faults.POINT_ENV] = action.split(":", 1)[1]
            # Crash in a batch after the next one or two, so faults land at varied batches,
            # not always in the first batch after a restart.
            job_env[faults.MIN_BATCH_ENV] = str(_committed_batches(cfg.checkpoint_path) + rng.randint(0, 2))
        if action == CHECKPOINT_RESET:
            shutil.rmtree(cfg.checkpoint_path, ignore_errors=True)
        job = _Job(conf_file, job_env, log, command=ingest_command)
        wait_s = rng.uniform(*round_seconds)
        backfill_job, backfill_offsets, backfill_kill_at = None, None, None
        if backfill_plan and backfill_plan[i] != BACKFILL_NONE:
            report.backfill_actions[backfill_plan[i]] += 1
            if killed_backfills and rng.random() < 0.5:
                backfill_offsets = killed_backfills.pop(0)  # resume a killed one: the same run
                report.backfill_outcomes["resumed in a round"] += 1
            else:
                window = backfill_window(broker.bootstrap_servers, topic, cfg.producer.partitions, rng)
                backfill_offsets = json.dumps(window) if window else None
            if backfill_offsets is not None:
                out(f"[chaos] backfill {backfill_plan[i]}: {backfill_offsets}")
                backfill_job = start_backfill(backfill_offsets)
                if backfill_plan[i] == BACKFILL_KILL:
                    backfill_kill_at = time.monotonic() + rng.uniform(3, wait_s)
                    threading.Timer(max(0.0, backfill_kill_at - time.monotonic()), backfill_job.kill).start()
            else:
                report.backfill_outcomes["skipped (broker down)"] += 1
        if action.startswith("fault:"):
            if job.wait(wait_s + 60) is None:  # the point was not reached (no data): kill instead
                job.kill()
        elif action in (BROKER_KILL, BROKER_RESTART):
            time.sleep(wait_s / 2)
            if action == BROKER_KILL:
                broker.kill()
            else:
                broker.stop()
            time.sleep(2)
            broker.start()
            time.sleep(wait_s / 2)
            job.kill()
        else:
            time.sleep(wait_s)
            job.kill()
        if gold_job is not None:  # a gold fault may have fired already; otherwise this is the kill
            gold_job.kill()
        if backfill_job is not None and backfill_offsets is not None:
            rc = backfill_job.proc.poll()
            if rc is None:
                backfill_job.kill()
                rc = -9
            outcome = {0: "finished", -9: "killed"}.get(rc, f"exit {rc}")
            report.backfill_outcomes[outcome] += 1
            if rc != 0:  # killed, or refused (e.g. the broker went away): resumed later
                killed_backfills.append(backfill_offsets)
    prod.join(timeout=900)
    for offsets in killed_backfills:  # an operator resumes what was killed
        report.backfills_resumed_at_end += 1
        out(f"[chaos] resuming the killed backfill {offsets}")
        resume = start_backfill(offsets)
        if resume.wait(1800) != 0:
            report.backfill_resume_failures += 1
            out(f"[chaos] resuming the backfill failed; see {backfill_log}")
            resume.kill()
    out("[chaos] producer done; catching up (available-now) ...")
    final = _Job(conf_file, env, log, ["--available-now"], command=ingest_command)
    rc = final.wait(1800)
    if rc != 0:
        out(f"[chaos] the catch-up run failed (exit {rc}); see {log}")
        final.kill()
    if gold:
        gold_final = _Job(conf_file, env, gold_log, ["--available-now"], job="gold")
        report.gold_catch_up_rc = gold_final.wait(1800)
        if report.gold_catch_up_rc != 0:
            out(f"[chaos] the gold catch-up run failed (exit {report.gold_catch_up_rc}); see {gold_log}")
            gold_final.kill()
    from pipelines.tools.verify import verify_subprocess

    report.verify = verify_subprocess(conf_file, env)
    report.produced = produced
    text = "".join(f.read_text(errors="replace") for f in (log, gold_log, backfill_log) if f.exists())
    for m in _CRASH_LINE.finditer(text):
        report.faults_fired[m["point"]] += 1
        if m["point"] == faults.DURING_SILVER and m["before"] is not None and m["before"] == m["after"]:
            report.merge_kills_inside_commit += 1
    report.bug_restarts = text.count("SPARK-55271")
    report.seconds = time.monotonic() - t0
    return report
