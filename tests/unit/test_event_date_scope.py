"""The event_date MERGE scope: one small range per distinct date, not one lower bound."""

from __future__ import annotations

import datetime as dt

from pipelines.jobs import ingest
from pipelines.jobs.ingest import event_date_scope

D = dt.date(2026, 11, 20)


def test_a_straggler_adds_its_own_range_not_every_day_since():
    pred = event_date_scope([D, D, D - dt.timedelta(days=300)], 1)
    assert pred == ("(t.event_date BETWEEN DATE'2026-01-23' AND DATE'2026-01-25') OR "
                    "(t.event_date BETWEEN DATE'2026-11-19' AND DATE'2026-11-21')")


def test_overlapping_and_adjacent_ranges_merge_and_slack_zero_is_one_day():
    assert event_date_scope([D, D + dt.timedelta(days=2), D + dt.timedelta(days=4)], 1) == \
        "(t.event_date BETWEEN DATE'2026-11-19' AND DATE'2026-11-25')"
    assert event_date_scope([D], 0) == "(t.event_date = DATE'2026-11-20')"
    assert event_date_scope([], 1) == "false"


def test_too_many_ranges_are_joined_across_the_smallest_gaps(monkeypatch):
    monkeypatch.setattr(ingest, "MAX_SCOPE_RANGES", 3)
    days = [D + dt.timedelta(days=k) for k in (0, 10, 12 + 10, 100, 200)]  # gaps 10, 12, 78, 100
    pred = event_date_scope(days, 0)
    assert pred.count("BETWEEN") + pred.count(" = ") == 3
    # Every date is still inside the restriction (wider is correct; narrower would not be).
    assert "BETWEEN DATE'2026-11-20' AND DATE'2026-12-12'" in pred
    assert "DATE'2027-02-28'" in pred and "DATE'2027-06-08'" in pred
