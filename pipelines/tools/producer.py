"""A seeded load generator: demo events with duplicates, late events and malformed records.

It uses the real Kafka client (librdkafka via confluent-kafka) as an idempotent producer
(``enable.idempotence=true``, ``acks=all``) and writes a *ledger*: one JSON line per record
the broker acknowledged, with its partition, offset, kind and expected outcome. ``verify
--ledger`` checks the tables against it.

The schedule (which record is a duplicate, which is malformed, the payloads) depends only
on the seed and the counts, so two runs with the same arguments send the same records.
"""

from __future__ import annotations

import datetime as dt
import hashlib
import json
import random
import time
from collections import Counter, deque
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from decimal import Decimal
from pathlib import Path
from typing import Any

import simplejson

from pipelines.domain.schema import Reason
from pipelines.errors import BrokerError

EVENT_TYPES = ("order_created", "payment_captured", "refund_issued")
CURRENCIES = ("USD", "EUR", "GBP", "JPY", "CHF")

# kind -> the reason code (prefix) quarantine must record for it.
MALFORMED_KINDS: dict[str, str] = {
    "not_json": Reason.NOT_JSON,
    "json_array": Reason.NOT_OBJECT,
    "json_scalar": Reason.NOT_OBJECT,
    "missing_id": Reason.MISSING_ID,
    "empty_id": Reason.EMPTY_ID,
    "null_id": Reason.MISSING_ID,
    "wrong_type_id": Reason.WRONG_TYPE,
    "wrong_type_amount": Reason.WRONG_TYPE,
    "bad_decimal": Reason.BAD_DECIMAL,
    "too_many_decimals": Reason.BAD_DECIMAL,
    "bad_timestamp": Reason.BAD_TIMESTAMP,
    "timestamp_without_zone": Reason.BAD_TIMESTAMP,
    "missing_field": Reason.MISSING_FIELD,
    "unknown_event_type": Reason.INVALID_VALUE,
    "invalid_utf8": Reason.INVALID_UTF8,
    "null_value": Reason.NULL_VALUE,
    # Valid under the event contract, but failing a quarantine rule of the default expectation
    # suite (conf/expectations/silver.yaml): the demo shows quality routing too.
    "negative_amount": Reason.EXPECTATION,
    "unknown_currency": Reason.EXPECTATION,
}

VALID, DUPLICATE, CONFLICT = "valid", "duplicate", "conflict"


@dataclass
class ProduceStats:
    """What ``produce`` sent (acknowledged by the broker)."""

    topic: str = ""
    sent: int = 0
    unique_valid: int = 0
    duplicates: int = 0
    conflicting: int = 0
    cross_partition: int = 0
    late: int = 0
    malformed: Counter[str] = field(default_factory=Counter)
    seconds: float = 0.0
    ledger: str | None = None

    @property
    def malformed_total(self) -> int:
        """All malformed records."""
        return sum(self.malformed.values())

    def as_dict(self) -> dict[str, Any]:
        """Plain dict."""
        return {
            "topic": self.topic, "sent": self.sent, "unique_valid": self.unique_valid,
            "duplicates": self.duplicates, "conflicting": self.conflicting,
            "cross_partition": self.cross_partition, "late": self.late,
            "malformed": dict(self.malformed), "malformed_total": self.malformed_total,
            "seconds": round(self.seconds, 2), "ledger": self.ledger,
        }


@dataclass(frozen=True)
class Record:
    """One record to send, with what the ledger says about it."""

    value: bytes | None
    key: bytes | None
    partition: int
    kind: str
    message_id: str | None
    expected_reason: str | None = None
    late: bool = False


def _iso(ts: dt.datetime, rng: random.Random) -> str:
    if rng.random() < 0.5:
        return ts.strftime("%Y-%m-%dT%H:%M:%S.%f")[:-3] + "Z"
    offset = dt.timedelta(hours=rng.choice((-5, 1, 2, 9)))
    local = ts + offset
    sign = "+" if offset >= dt.timedelta(0) else "-"
    hours = abs(int(offset.total_seconds() // 3600))
    return local.strftime("%Y-%m-%dT%H:%M:%S") + f"{sign}{hours:02d}:00"


def _event(rng: random.Random, message_id: str, now: dt.datetime, late: bool) -> dict[str, Any]:
    when = now - (dt.timedelta(hours=rng.uniform(1, 48)) if late else dt.timedelta(seconds=rng.uniform(0, 2)))
    cents = rng.randint(1, 99_999_99)
    ev: dict[str, Any] = {
        "message_id": message_id,
        "event_type": rng.choice(EVENT_TYPES),
        "order_id": f"o-{rng.randint(1, 10**7):08d}",
        "customer_id": f"c-{rng.randint(1, 10**5):06d}",
        "amount": (Decimal(cents) / 100).quantize(Decimal("0.01")),
        "currency": rng.choice(CURRENCIES),
        "event_time": _iso(when, rng),
    }
    if rng.random() < 0.2:
        ev["channel"] = rng.choice(("web", "app", "pos"))  # unknown extra field: kept in payload
    return ev


def encode(ev: dict[str, Any], rng: random.Random | None = None) -> bytes:
    """JSON-encode an event; a Decimal amount becomes an exact JSON number (or, sometimes, a numeric string).

    simplejson writes a ``Decimal`` as the number it is (``12.30``, never a binary float).
    """
    as_string = rng is not None and rng.random() < 0.1
    out = {k: (str(v) if isinstance(v, Decimal) and as_string else v) for k, v in ev.items()}
    return _ENCODER.encode(out).encode()


_ENCODER = simplejson.JSONEncoder(use_decimal=True, separators=(",", ":"))


def _malformed(kind: str, rng: random.Random, base: dict[str, Any]) -> bytes | None:
    ev = dict(base)
    if kind == "not_json":
        return b'{"message_id": "' + base["message_id"].encode() + b'", amount: 12'
    if kind == "json_array":
        return json.dumps([base["message_id"], 1, 2]).encode()
    if kind == "json_scalar":
        return b'"just a string"'
    if kind == "missing_id":
        ev.pop("message_id")
    elif kind == "empty_id":
        ev["message_id"] = ""
    elif kind == "null_id":
        ev["message_id"] = None
    elif kind == "wrong_type_id":
        ev["message_id"] = rng.randint(1, 10**9)
    elif kind == "wrong_type_amount":
        ev["amount"] = {"value": "12.50"}
    elif kind == "bad_decimal":
        ev["amount"] = "12,50 EUR"
    elif kind == "too_many_decimals":
        ev["amount"] = "12.505"
    elif kind == "bad_timestamp":
        ev["event_time"] = "yesterday at noon"
    elif kind == "timestamp_without_zone":
        ev["event_time"] = "2026-11-26T10:00:00"
    elif kind == "missing_field":
        ev.pop(rng.choice(("order_id", "customer_id", "currency", "amount", "event_time", "event_type")))
    elif kind == "negative_amount":
        ev["amount"] = -ev["amount"]
    elif kind == "unknown_currency":
        ev["currency"] = "XXX"
    elif kind == "unknown_event_type":
        ev["event_type"] = "order_teleported"
    elif kind == "invalid_utf8":
        return b"\xff\xfe" + encode(ev)[2:]
    elif kind == "null_value":
        return None
    return encode(ev)


def plan_records(
    n: int,
    *,
    partitions: int,
    seed: int,
    duplicate_fraction: float,
    conflicting_fraction: float,
    cross_partition_fraction: float,
    malformed_fraction: float,
    late_fraction: float,
    id_prefix: str | None = None,
    now: dt.datetime | None = None,
) -> Iterator[Record]:
    """Yield ``n`` records following a seeded schedule (a generator; pure, no I/O).

    Every malformed kind appears at least once when ``n`` allows (the first ones are one of
    each), so a demo run exercises all quarantine reasons.
    """
    rng = random.Random(seed)
    now = now or dt.datetime.now(dt.UTC).replace(tzinfo=None)
    prefix = id_prefix or f"s{seed}"
    recent: deque[tuple[dict[str, Any], int, bytes]] = deque(maxlen=5000)
    kinds = list(MALFORMED_KINDS)
    forced = list(kinds) if malformed_fraction > 0 else []
    valid_count = 0

    def partition_of(key: str) -> int:
        return int.from_bytes(hashlib.md5(key.encode()).digest()[:4], "big") % partitions

    for i in range(n):
        r = rng.random()
        if forced and (i % 7 == 3):
            kind = forced.pop(0)
            r = 2.0
        else:
            kind = ""
        if r < malformed_fraction or kind:
            kind = kind or rng.choice(kinds)
            base = _event(rng, f"{prefix}-bad-{i:09d}", now, late=False)
            value = _malformed(kind, rng, base)
            mid = base["message_id"] if kind in ("wrong_type_amount", "bad_decimal", "too_many_decimals",
                                                  "bad_timestamp", "timestamp_without_zone",
                                                  "missing_field", "unknown_event_type") else None
            yield Record(value, base["order_id"].encode(), partition_of(base["order_id"]), kind, mid,
                         MALFORMED_KINDS[kind])
        elif recent and r < malformed_fraction + duplicate_fraction:
            ev, part, value = recent[rng.randrange(len(recent))]
            kind = DUPLICATE
            if rng.random() < conflicting_fraction:
                ev = dict(ev, amount=(Decimal(rng.randint(1, 99_999_99)) / 100).quantize(Decimal("0.01")))
                value = encode(ev)
                kind = CONFLICT
            if partitions > 1 and rng.random() < cross_partition_fraction:
                part = (part + 1 + rng.randrange(partitions - 1)) % partitions
                kind += "_cross_partition"
            yield Record(value, ev["order_id"].encode(), part, kind, ev["message_id"])
        else:
            late = rng.random() < late_fraction
            ev = _event(rng, f"{prefix}-{valid_count:09d}", now, late)
            valid_count += 1
            value = encode(ev, rng)
            part = partition_of(ev["order_id"])
            recent.append((ev, part, value))
            yield Record(value, ev["order_id"].encode(), part, VALID, ev["message_id"], late=late)


def produce(
    bootstrap_servers: str,
    topic: str,
    n: int,
    *,
    partitions: int = 3,
    rate: float = 0.0,
    seed: int = 42,
    duplicate_fraction: float = 0.05,
    conflicting_fraction: float = 0.1,
    cross_partition_fraction: float = 0.3,
    malformed_fraction: float = 0.01,
    late_fraction: float = 0.02,
    ledger_path: Path | None = None,
    id_prefix: str | None = None,
    progress: bool = True,
    timeout_s: float = 600.0,
    on_progress: Callable[[int], None] | None = None,
    log_level: int = 3,
) -> ProduceStats:
    """Send ``n`` records to ``topic`` and return what the broker acknowledged.

    Raises:
        BrokerError: The broker is unreachable or a record could not be delivered.

    """
    from confluent_kafka import KafkaError, Producer

    from pipelines.local.kafka import ensure_topic

    ensure_topic(bootstrap_servers, topic, partitions)
    producer = Producer({
        "bootstrap.servers": bootstrap_servers,
        "enable.idempotence": True,
        "acks": "all",
        "linger.ms": 20,
        "compression.type": "lz4",
        "message.timeout.ms": int(timeout_s * 1000),
        "queue.buffering.max.messages": 200_000,
        # 3 = errors only: transient "coordinator load in progress" retries are not news.
        "log_level": log_level,
    })
    stats = ProduceStats(topic=topic, ledger=str(ledger_path) if ledger_path else None)
    errors: list[str] = []
    ledger = None
    if ledger_path is not None:
        ledger_path.parent.mkdir(parents=True, exist_ok=True)
        ledger = open(ledger_path, "a")  # noqa: SIM115 - closed below

    def delivered(rec: Record) -> Callable[[Any, Any], None]:
        def cb(err: KafkaError | None, msg: Any) -> None:
            if err is not None:
                errors.append(str(err))
                return
            stats.sent += 1
            if rec.kind == VALID:
                stats.unique_valid += 1
                stats.late += int(rec.late)
            elif rec.kind.startswith((DUPLICATE, CONFLICT)):
                stats.duplicates += 1
                stats.conflicting += int(rec.kind.startswith(CONFLICT))
                stats.cross_partition += int(rec.kind.endswith("_cross_partition"))
            else:
                stats.malformed[rec.kind] += 1
            if ledger is not None:
                ledger.write(json.dumps({
                    "topic": msg.topic(), "partition": msg.partition(), "offset": msg.offset(),
                    "kind": rec.kind, "message_id": rec.message_id, "expected_reason": rec.expected_reason,
                    "value_sha256": hashlib.sha256(rec.value or b"").hexdigest(),
                }) + "\n")
        return cb

    t0 = time.monotonic()
    from pipelines.tools.console import Bar

    bar = Bar(f"produce {topic}", n, enabled=progress)
    try:
        for i, rec in enumerate(plan_records(
            n, partitions=partitions, seed=seed, duplicate_fraction=duplicate_fraction,
            conflicting_fraction=conflicting_fraction, cross_partition_fraction=cross_partition_fraction,
            malformed_fraction=malformed_fraction, late_fraction=late_fraction, id_prefix=id_prefix,
        )):
            if rate > 0:
                ahead = (i / rate) - (time.monotonic() - t0)
                if ahead > 0:
                    time.sleep(ahead)
            while True:
                try:
                    producer.produce(topic, value=rec.value, key=rec.key, partition=rec.partition,
                                     on_delivery=delivered(rec))
                    break
                except BufferError:
                    producer.poll(0.1)
                if time.monotonic() - t0 > timeout_s:
                    raise BrokerError(f"producing to {topic} timed out after {timeout_s:.0f}s")
            producer.poll(0)
            if errors:
                raise BrokerError(f"delivery to {topic} failed: {errors[0]}")
            if i % 1000 == 999:
                bar.update(1000)
                if on_progress:
                    on_progress(i + 1)
        remaining = producer.flush(timeout_s)
        bar.update(n % 1000)
        if remaining:
            raise BrokerError(f"{remaining} records to {topic} were not acknowledged within {timeout_s:.0f}s",
                              hint="is the broker up? `python -m pipelines kafka status`")
        if errors:
            raise BrokerError(f"delivery to {topic} failed: {errors[0]}")
    finally:
        bar.close()
        if ledger is not None:
            ledger.close()
    stats.seconds = time.monotonic() - t0
    return stats


def send_events(bootstrap_servers: str, topic: str, events: list[dict[str, Any]], partitions: int = 3) -> None:
    """Send hand-written events as JSON (keyed by ``message_id``), e.g. a correction from a notebook.

    Raises:
        BrokerError: the broker did not acknowledge every event within 30 s.
    """
    from confluent_kafka import Producer

    from pipelines.errors import BrokerError
    from pipelines.local.kafka import ensure_topic

    ensure_topic(bootstrap_servers, topic, partitions)
    producer = Producer({"bootstrap.servers": bootstrap_servers, "enable.idempotence": True, "acks": "all"})
    for ev in events:
        producer.produce(topic, key=str(ev.get("message_id", "")).encode(), value=json.dumps(ev).encode())
    left = producer.flush(30)
    if left:
        raise BrokerError(f"{left} of {len(events)} events were not acknowledged by {bootstrap_servers}")
