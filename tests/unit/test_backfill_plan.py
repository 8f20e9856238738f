"""Backfill planning: chunks cover a range exactly, within the size, deterministically (no Spark)."""

from __future__ import annotations

import datetime as dt
import json
import random

import pytest

from pipelines.errors import PipelineError
from pipelines.jobs.backfill import Chunk, RateLimit, parse_offsets, parse_time, plan_chunks, run_id_of


def covered(chunks: list[Chunk]) -> dict[tuple[str, int], list[tuple[int, int]]]:
    out: dict[tuple[str, int], list[tuple[int, int]]] = {}
    for c in chunks:
        for t, parts in c.ranges.items():
            for p, r in parts.items():
                out.setdefault((t, p), []).append(r)
    return out


@pytest.mark.parametrize("seed", range(40))
def test_chunks_cover_each_partition_exactly_in_order_and_within_the_size(seed):
    rng = random.Random(seed)
    ranges = {f"t{k}": {p: (s := rng.randint(0, 1000), s + rng.choice([0, 1, 2, rng.randint(0, 5000)]))
                        for p in range(rng.randint(1, 6))} for k in range(rng.randint(1, 2))}
    size = rng.choice([1, 3, 7, 100, 999, 10_000])
    chunks = plan_chunks(ranges, size)
    total = sum(e - s for parts in ranges.values() for s, e in parts.values())
    assert sum(c.records for c in chunks) == total
    assert all(0 < c.records <= size for c in chunks)
    assert [c.index for c in chunks] == list(range(len(chunks)))
    assert len(chunks) == -(-total // size)  # as few chunks as the size allows
    got = covered(chunks)
    for t, parts in ranges.items():
        for p, (s, e) in parts.items():
            pieces = got.get((t, p), [])
            if e == s:
                assert not pieces
                continue
            # Contiguous, in chunk order, from the first offset to the end.
            assert pieces[0][0] == s and pieces[-1][1] == e
            assert all(a[1] == b[0] for a, b in zip(pieces, pieces[1:], strict=False))
    assert plan_chunks(ranges, size) == chunks  # deterministic: a restarted run finds the same chunks


def test_every_chunk_spans_the_partitions_when_each_has_enough():
    chunks = plan_chunks({"e": {0: (0, 1000), 1: (500, 1500), 2: (0, 1000)}}, 300)
    assert len(chunks) == 10 and all(set(c.ranges["e"]) == {0, 1, 2} for c in chunks)
    assert chunks[0].ranges["e"][1] == (500, 600)


def test_a_bad_size_and_an_empty_range():
    with pytest.raises(ValueError, match="chunk_records"):
        plan_chunks({"e": {0: (0, 10)}}, 0)
    assert plan_chunks({"e": {0: (7, 7)}}, 10) == []


def test_run_id_follows_the_source_the_range_and_the_chunk_size():
    src = {"cluster_id": "c1", "topics": {"e": "id-1"}}
    a = run_id_of({"e": {0: (0, 10), 1: (3, 3)}}, 100, src)
    assert a == run_id_of({"e": {0: (0, 10)}}, 100, src) and a.startswith("backfill-")
    assert a != run_id_of({"e": {0: (0, 11)}}, 100, src)
    # Another chunk size puts other offsets under the same chunk numbers: another run.
    assert a != run_id_of({"e": {0: (0, 10)}}, 50, src)
    # A recreated topic (new id) is another source, even at the same offsets.
    assert a != run_id_of({"e": {0: (0, 10)}}, 100, {"cluster_id": "c1", "topics": {"e": "id-2"}})


def test_offsets_and_times_parse_or_fail_clearly():
    assert parse_offsets('{"e": {"0": [1, 5], "2": [0, 0]}}') == {"e": {0: (1, 5), 2: (0, 0)}}
    for bad in ('{"e": [1, 2]}', "not json", '{"e": {"x": [1, 2]}}', '{"e": {"0": [1]}}'):
        with pytest.raises(PipelineError, match="--offsets is not valid"):
            parse_offsets(bad)
    with pytest.raises(PipelineError, match="end before they start: e/0: 5..2"):
        parse_offsets('{"e": {"0": [5, 2]}}')
    assert parse_time("2026-12-01") == dt.datetime(2026, 12, 1, tzinfo=dt.UTC)
    assert parse_time("2026-12-01T10:00:00Z") == dt.datetime(2026, 12, 1, 10, tzinfo=dt.UTC)
    assert parse_time("2026-12-01T11:00:00+01:00") == dt.datetime(2026, 12, 1, 10, tzinfo=dt.UTC)
    with pytest.raises(PipelineError, match="not an ISO-8601 time"):
        parse_time("yesterday")


def test_file_chunks_group_whole_files_in_order_and_a_large_file_stands_alone():
    from pipelines.jobs.replay import plan_file_chunks

    files = [("a", 40, 1), ("b", 40, 1), ("c", 300, 1), ("d", 10, 1), ("e", 95, 1)]
    works = plan_file_chunks(files, 100)
    assert [[f[0] for f in json.loads(w.spec)] for w in works] == [["a", "b"], ["c"], ["d"], ["e"]]
    assert [w.index for w in works] == [0, 1, 2, 3] and all(w.records is None for w in works)
    assert plan_file_chunks(files, 100) == works  # deterministic: a restarted run finds its chunks
    assert plan_file_chunks([], 100) == []


def test_stored_rows_are_chunked_by_whole_batches():
    from pipelines.jobs.replay import plan_batch_chunks

    groups = [("ingest-1", 0, 300), ("ingest-1", 1, 300), ("ingest-1", 2, 500), ("backfill-x", 0, 1200),
              ("ingest-2", 0, 10)]
    works = plan_batch_chunks(groups, 700)
    assert [json.loads(w.spec) for w in works] == [[["ingest-1", 0], ["ingest-1", 1]], [["ingest-1", 2]],
                                                   [["backfill-x", 0]], [["ingest-2", 0]]]
    assert [w.records for w in works] == [600, 500, 1200, 10]


def test_a_run_id_names_its_kind_parameters_and_chunks():
    from pipelines.jobs.backfill import Work, run_id_for

    works = [Work(0, '[["a", 0]]', 5)]
    rid = run_id_for("quarantine", {"reason": None, "contract": "c1"}, works)
    assert rid.startswith("backfill-") and rid == run_id_for("quarantine", {"contract": "c1", "reason": None}, works)
    assert rid != run_id_for("quarantine", {"reason": None, "contract": "c2"}, works)  # after another rule fix
    assert rid != run_id_for("bronze", {"reason": None, "contract": "c1"}, works)
    assert rid != run_id_for("quarantine", {"reason": None, "contract": "c1"}, [Work(0, '[["a", 1]]', 5)])


def test_rate_limit_pauses_until_the_rows_so_far_are_due():
    now = [100.0]
    slept: list[float] = []

    def sleep(s: float) -> None:
        slept.append(s)
        now[0] += s

    limit = RateLimit(1000.0, clock=lambda: now[0], sleep=sleep)
    now[0] += 2.0                       # a chunk of 5,000 rows took 2 s: due at 5 s
    assert limit.after(5000) == pytest.approx(3.0) and now[0] == pytest.approx(105.0)
    now[0] += 7.0                       # the next 5,000 took 7 s: behind the limit, no pause
    assert limit.after(5000) == 0.0 and slept == [pytest.approx(3.0)]
    now[0] += 1.0                       # 1,000 more in 1 s: 11,000 rows due at 11 s, it is 13 s
    assert limit.after(1000) == 0.0
    unlimited = RateLimit(None, clock=lambda: now[0], sleep=sleep)
    assert unlimited.after(10**9) == 0.0 and len(slept) == 1
    with pytest.raises(PipelineError, match="backfill.max_records_per_second must be > 0"):
        RateLimit(0)
