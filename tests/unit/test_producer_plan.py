from __future__ import annotations

import datetime as dt
import json
from collections import Counter

from pipelines.tools.producer import CONFLICT, DUPLICATE, MALFORMED_KINDS, VALID, encode, plan_records

NOW = dt.datetime(2026, 11, 26, 12, 0, 0)


def plan(n=3000, seed=1, **kw):
    args = dict(partitions=3, seed=seed, duplicate_fraction=0.05, conflicting_fraction=0.2,
                cross_partition_fraction=0.3, malformed_fraction=0.02, late_fraction=0.05, now=NOW)
    args.update(kw)
    return list(plan_records(n, **args))


def test_same_seed_same_records_other_seed_differs():
    a, b, c = plan(seed=1), plan(seed=1), plan(seed=2)
    assert [(r.value, r.partition, r.kind) for r in a] == [(r.value, r.partition, r.kind) for r in b]
    assert [r.value for r in a] != [r.value for r in c]


def test_every_malformed_kind_appears_and_fractions_hold():
    recs = plan(n=5000)
    kinds = Counter(r.kind for r in recs)
    for kind in MALFORMED_KINDS:
        assert kinds[kind] >= 1, kind
    dups = sum(v for k, v in kinds.items() if k.startswith((DUPLICATE, CONFLICT)))
    assert 0.03 * 5000 < dups < 0.07 * 5000
    assert any(k.endswith("_cross_partition") for k in kinds)
    assert kinds[VALID] > 0.9 * 5000 * 0.9


def test_duplicates_reuse_an_earlier_message_id_and_conflicts_change_payload():
    recs = plan(n=4000)
    first_value = {}
    for r in recs:
        if r.kind == VALID:
            first_value[r.message_id] = r.value
        elif r.kind.startswith(DUPLICATE):
            assert r.message_id in first_value
            assert r.value == first_value[r.message_id]
        elif r.kind.startswith(CONFLICT):
            assert r.message_id in first_value
            assert r.value != first_value[r.message_id]
            assert json.loads(r.value)["message_id"] == r.message_id


def test_valid_events_follow_the_contract():
    recs = [r for r in plan(n=500) if r.kind == VALID]
    for r in recs:
        ev = json.loads(r.value)
        assert ev["message_id"] == r.message_id
        assert ev["event_type"] in ("order_created", "payment_captured", "refund_issued")
        assert ev["event_time"].endswith("Z") or ev["event_time"][-6] in "+-"
        amount = str(ev["amount"])
        assert len(amount.split(".")[-1]) <= 2


def test_encode_keeps_decimal_exact():
    from decimal import Decimal

    assert encode({"amount": Decimal("12.30")}) == b'{"amount":12.30}'
