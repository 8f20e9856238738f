"""retry_on_conflict: a write Delta refused for a concurrent commit runs again; nothing else does (no JVM)."""

from __future__ import annotations

import pytest
from delta.exceptions import ConcurrentAppendException, MetadataChangedException

from pipelines.io import writers


@pytest.fixture(autouse=True)
def no_waiting(monkeypatch):
    monkeypatch.setattr(writers, "CONFLICT_BASE_S", 0.0)


def flaky(failures: list[BaseException]):
    calls = []

    def write():
        calls.append(1)
        if failures:
            raise failures.pop(0)
        return "committed"

    return write, calls


def test_a_refused_commit_is_tried_again_until_it_wins():
    write, calls = flaky([ConcurrentAppendException("[DELTA_CONCURRENT_APPEND] Files were added"),
                          RuntimeError("io.delta.exceptions.ConcurrentAppendException: files were added (py4j)")])
    seen = []
    before = writers.conflict_retries_total
    assert writers.retry_on_conflict(write, on_retry=lambda n, e: seen.append(n)) == "committed"
    assert len(calls) == 3 and seen == [1, 2] and writers.conflict_retries_total == before + 2


def test_other_errors_are_not_retried():
    for error in (RuntimeError("the silver write failed"), MetadataChangedException("[DELTA_METADATA_CHANGED]")):
        write, calls = flaky([error])
        with pytest.raises(type(error)):
            writers.retry_on_conflict(write)
        assert len(calls) == 1


def test_the_last_refusal_is_raised_after_the_attempts():
    write, calls = flaky([ConcurrentAppendException("lost") for _ in range(5)])
    with pytest.raises(ConcurrentAppendException, match="lost"):
        writers.retry_on_conflict(write, retries=3)
    assert len(calls) == 3
