"""An independent, plain-Python reading of the event contract, for ``verify`` to judge the Spark parser.

The Spark parser (``pipelines.domain.transforms``) decides, for every Kafka record, whether it is
valid, which reason codes it fails with, its message ID and its typed values. If ``verify`` reused
that code to compute what the tables *should* hold, a bug in the parser would be reproduced on both
sides and never show. This module therefore reads the contract again from scratch, with nothing but
``json``, ``decimal`` and ``datetime`` (no Spark, nothing from ``transforms``): a parser bug then
shows up as a discrepancy between the two readings.

The contract, in short (every code that applies is reported; codes are a sorted set):

1. The value: ``None`` -> ``NULL_VALUE``; not UTF-8 -> ``INVALID_UTF8``; not strict JSON (``NaN`` /
   ``Infinity`` literals and duplicate object keys at any level count as not JSON) -> ``NOT_JSON``;
   JSON but not an object -> ``NOT_OBJECT``.
2. The message ID (a JSON member, the record key, or the first header of that name): missing ->
   ``MISSING_ID``; a JSON member that is not a string -> ``WRONG_TYPE:<id>``; key/header bytes that
   are not UTF-8 -> ``INVALID_UTF8``; blank after stripping ASCII whitespace -> ``EMPTY_ID``;
   surrounding whitespace under ``id_whitespace: reject`` -> ``ID_WHITESPACE``; longer than
   ``id_max_length`` code points (after stripping) -> ``ID_TOO_LONG``.
3. Each data field: missing or ``null`` -> ``MISSING_FIELD:<f>`` if required; otherwise
   ``WRONG_TYPE:<f>``, ``INVALID_VALUE:<f>``, ``OUT_OF_RANGE:<f>``, ``BAD_TIMESTAMP:<f>`` or
   ``BAD_DECIMAL:<f>`` by type (decimals are never rounded: too many digits is an error).
4. ``event_date``: the UTC date of the event-time field when that field is valid.

JSON-based checks (the ID when it is a JSON member, and every data field) only run when the value
is a JSON object.
"""

from __future__ import annotations

import datetime as dt
import decimal
import json
import math
import re
from collections.abc import Sequence
from dataclasses import dataclass
from decimal import Decimal
from typing import Any

from pipelines.domain.schema import Reason

ID_WHITESPACE = Reason.ID_WHITESPACE
ID_TOO_LONG = Reason.ID_TOO_LONG
OUT_OF_RANGE = Reason.OUT_OF_RANGE

#: ASCII whitespace only: what an ID is stripped of.
ID_WS = " \t\n\r\f\v"
LONG_MIN, LONG_MAX = -(2**63), 2**63 - 1
#: The engine reads a JSON number as a decimal exactly only up to this many digits / this scale.
MAX_DECIMAL_DIGITS = 38

_DECIMAL_TYPE = re.compile(r"decimal\((\d+),\s*(\d+)\)", re.ASCII)
_SIMPLE_TYPES = ("string", "long", "double", "boolean", "timestamp")
# The whole text: date, T or space, hh:mm:ss, an optional fraction (up to 9 digits), a zone.
_TS_FORMAT = re.compile(r"\d{4}-\d{2}-\d{2}[T ]\d{2}:\d{2}:\d{2}(\.\d{1,9})?(?i:z|[+-]\d{2}(:?\d{2})?)", re.ASCII)
_DECIMAL_TEXT = re.compile(r"[+-]?(\d+\.?\d*|\.\d+)", re.ASCII)
# Enough precision for any decimal(38, s) value, so quantize never fails for a value that fits.
_DECIMAL_CTX = decimal.Context(prec=100)


@dataclass(frozen=True)
class Decoded:
    """What the contract says about one Kafka record.

    Attributes:
        message_id: The message ID, or None when the record has no usable ID (missing, wrong type,
            not UTF-8, empty, surrounding whitespace under ``reject``, too long). Set whenever the ID
            itself is fine, even if other checks fail.
        values: Data field name -> typed value (``str``, ``int``, ``float``, ``bool``, naive UTC
            ``datetime`` or ``Decimal``), or None when the field is absent or fails its check. Every
            data field has an entry.
        event_date: The UTC date of the event-time field when it is valid, else None.
        reason_codes: Sorted, distinct reason codes; empty means the record is valid.
    """

    message_id: str | None
    values: dict[str, Any]
    event_date: dt.date | None
    reason_codes: tuple[str, ...]

    @property
    def valid(self) -> bool:
        """True when the record passes every check."""
        return not self.reason_codes


class _Num:
    """A JSON number token, kept as its raw text (``is_int``: no fraction and no exponent)."""

    __slots__ = ("text", "is_int")

    def __init__(self, text: str, is_int: bool) -> None:
        self.text = text
        self.is_int = is_int


class _NotJson(ValueError):
    """Raised from the JSON hooks: the text is not strict JSON."""


def _int_token(text: str) -> _Num:
    return _Num(text, True)


def _float_token(text: str) -> _Num:
    return _Num(text, False)


def _reject_constant(name: str) -> Any:
    raise _NotJson(f"non-standard JSON literal {name}")


def _unique_object(pairs: list[tuple[str, Any]]) -> dict[str, Any]:
    obj = dict(pairs)
    if len(obj) != len(pairs):
        raise _NotJson("duplicate object key")
    return obj


def _loads_strict(text: str) -> Any:
    """Parse strict JSON; numbers come back as ``_Num``. Raises ``ValueError`` if not strict JSON."""
    try:
        return json.loads(text, parse_int=_int_token, parse_float=_float_token,
                          parse_constant=_reject_constant, object_pairs_hook=_unique_object)
    except RecursionError as e:  # nesting deeper than Python's stack: no engine reads that either
        raise _NotJson("too deeply nested") from e


@dataclass(frozen=True)
class _Field:
    name: str
    kind: str  # one of _SIMPLE_TYPES or "decimal"
    required: bool
    allowed: frozenset[str] | None
    precision: int = 0
    scale: int = 0


def _field_plan(f: Any) -> _Field:
    type_name = str(f.type).strip().lower()
    allowed = None if f.allowed is None else frozenset(f.allowed)
    if type_name in _SIMPLE_TYPES:
        return _Field(f.name, type_name, bool(f.required), allowed)
    m = _DECIMAL_TYPE.fullmatch(type_name)
    if m is None:
        raise ValueError(f"field {f.name!r}: unknown type {f.type!r}")
    p, s = int(m.group(1)), int(m.group(2))
    if not (1 <= p <= MAX_DECIMAL_DIGITS and 0 <= s <= p):
        raise ValueError(f"field {f.name!r}: decimal precision/scale out of range: {f.type!r}")
    return _Field(f.name, "decimal", bool(f.required), allowed, p, s)


class Decoder:
    """The contract of one spec, prepared once for decoding many records (see ``decode``)."""

    def __init__(self, spec: Any) -> None:
        """Read the spec (duck-typed: see ``decode``).

        Raises:
            ValueError: An unknown ``id_source``, ``id_whitespace`` or field type.
        """
        if spec.id_source not in ("field", "key", "header"):
            raise ValueError(f"unknown id_source {spec.id_source!r}")
        if spec.id_whitespace not in ("reject", "trim"):
            raise ValueError(f"unknown id_whitespace {spec.id_whitespace!r}")
        self.id_source: str = spec.id_source
        self.id_name: str = spec.id_name
        self.id_max_length: int = int(spec.id_max_length)
        self.id_trim: bool = spec.id_whitespace == "trim"
        self.event_time_field: str = spec.event_time_field
        self.fields: tuple[_Field, ...] = tuple(
            _field_plan(f) for f in spec.fields if not (self.id_source == "field" and f.name == self.id_name)
        )

    def decode(self, value: bytes | None, key: bytes | None,
               headers: Sequence[tuple[str, bytes | None]] | None) -> Decoded:
        """Decode one record; see the module docstring for the rules."""
        codes: set[str] = set()
        obj: dict[str, Any] | None = None
        if value is None:
            codes.add(Reason.NULL_VALUE)
        else:
            try:
                text = bytes(value).decode("utf-8")
            except UnicodeDecodeError:
                codes.add(Reason.INVALID_UTF8)
            else:
                try:
                    parsed = _loads_strict(text)
                except ValueError:
                    codes.add(Reason.NOT_JSON)
                else:
                    if isinstance(parsed, dict):
                        obj = parsed
                    else:
                        codes.add(Reason.NOT_OBJECT)

        message_id = self._message_id(obj, key, headers, codes)

        values: dict[str, Any] = {}
        for f in self.fields:
            values[f.name] = None if obj is None else self._field(f, obj, codes)

        event_time = values.get(self.event_time_field)
        event_date = event_time.date() if isinstance(event_time, dt.datetime) else None
        return Decoded(message_id, values, event_date, tuple(sorted(codes)))

    # ---- message ID ------------------------------------------------------------------------------
    def _message_id(self, obj: dict[str, Any] | None, key: bytes | None,
                    headers: Sequence[tuple[str, bytes | None]] | None, codes: set[str]) -> str | None:
        if self.id_source == "field":
            if obj is None:
                return None
            raw = obj.get(self.id_name)
            if raw is None:
                codes.add(Reason.MISSING_ID)
                return None
            if not isinstance(raw, str):
                codes.add(f"{Reason.WRONG_TYPE}:{self.id_name}")
                return None
            return self._id_text(raw, codes)

        data: bytes | None
        if self.id_source == "key":
            data = key
        else:
            data = next((v for name, v in (headers or ()) if name == self.id_name), None)
        if data is None:
            codes.add(Reason.MISSING_ID)
            return None
        try:
            s = bytes(data).decode("utf-8")
        except UnicodeDecodeError:
            codes.add(Reason.INVALID_UTF8)
            return None
        return self._id_text(s, codes)

    def _id_text(self, s: str, codes: set[str]) -> str | None:
        stripped = s.strip(ID_WS)
        if stripped == "":
            codes.add(Reason.EMPTY_ID)
            return None
        ok = True
        if not self.id_trim and s != stripped:
            codes.add(ID_WHITESPACE)
            ok = False
        if len(stripped) > self.id_max_length:
            codes.add(ID_TOO_LONG)
            ok = False
        if not ok:
            return None
        return stripped if self.id_trim else s

    # ---- data fields -----------------------------------------------------------------------------
    def _field(self, f: _Field, obj: dict[str, Any], codes: set[str]) -> Any:
        raw = obj.get(f.name)
        if raw is None:
            if f.required:
                codes.add(f"{Reason.MISSING_FIELD}:{f.name}")
            return None
        code, typed = _CHECKS[f.kind](f, raw)
        if code is not None:
            codes.add(f"{code}:{f.name}")
            return None
        return typed


_Result = tuple[str | None, Any]


def _check_string(f: _Field, raw: Any) -> _Result:
    if not isinstance(raw, str):
        return Reason.WRONG_TYPE, None
    if f.allowed is not None and raw not in f.allowed:
        return Reason.INVALID_VALUE, None
    return None, raw


def _check_long(f: _Field, raw: Any) -> _Result:
    if not (isinstance(raw, _Num) and raw.is_int):
        return Reason.WRONG_TYPE, None
    if len(raw.text.lstrip("-")) > 19:  # no leading zeros in JSON: more than 19 digits is out of range
        return Reason.WRONG_TYPE, None
    n = int(raw.text)
    if not LONG_MIN <= n <= LONG_MAX:
        return Reason.WRONG_TYPE, None
    return None, n


def _check_double(f: _Field, raw: Any) -> _Result:
    if not isinstance(raw, _Num):
        return Reason.WRONG_TYPE, None
    x = float(raw.text)
    if not math.isfinite(x):
        return OUT_OF_RANGE, None
    return None, x


def _check_boolean(f: _Field, raw: Any) -> _Result:
    if not isinstance(raw, bool):
        return Reason.WRONG_TYPE, None
    return None, raw


def _check_timestamp(f: _Field, raw: Any) -> _Result:
    if not isinstance(raw, str):
        return Reason.WRONG_TYPE, None
    if not _TS_FORMAT.fullmatch(raw):
        return Reason.BAD_TIMESTAMP, None
    text = raw[:-1] + "+00:00" if raw[-1] in "zZ" else raw
    try:
        ts = dt.datetime.fromisoformat(text)
        if ts.tzinfo is None:  # unreachable given the zone check; kept so a naive value can never pass
            return Reason.BAD_TIMESTAMP, None
        utc = ts.astimezone(dt.UTC).replace(tzinfo=None)
        if not dt.datetime(1, 1, 2) <= utc < dt.datetime(9999, 12, 31):  # a day of margin at both ends
            return Reason.BAD_TIMESTAMP, None
        return None, utc
    except (ValueError, OverflowError):
        return Reason.BAD_TIMESTAMP, None


def _check_decimal(f: _Field, raw: Any) -> _Result:
    if isinstance(raw, str):
        text = raw.strip(" ")
    elif isinstance(raw, _Num):
        text = raw.text
        if "e" in text or "E" in text:
            return Reason.BAD_DECIMAL, None
        digits_tuple = Decimal(text).as_tuple()
        exponent = digits_tuple.exponent  # always an int: a JSON number token is finite
        if (not isinstance(exponent, int) or len(digits_tuple.digits) > MAX_DECIMAL_DIGITS
                or -exponent > MAX_DECIMAL_DIGITS):
            return Reason.BAD_DECIMAL, None
    else:
        return Reason.WRONG_TYPE, None
    m = _DECIMAL_TEXT.fullmatch(text)
    if m is None:
        return Reason.BAD_DECIMAL, None
    int_part, _, frac_part = m.group(1).partition(".")
    if len(int_part.lstrip("0")) > f.precision - f.scale or len(frac_part.rstrip("0")) > f.scale:
        return Reason.BAD_DECIMAL, None
    return None, Decimal(text).quantize(Decimal(1).scaleb(-f.scale), context=_DECIMAL_CTX)


_CHECKS = {
    "string": _check_string,
    "long": _check_long,
    "double": _check_double,
    "boolean": _check_boolean,
    "timestamp": _check_timestamp,
    "decimal": _check_decimal,
}


def decode(value: bytes | None, key: bytes | None, headers: Sequence[tuple[str, bytes | None]] | None,
           spec: Any) -> Decoded:
    """Decode one Kafka record against the event contract.

    For many records, build a ``Decoder(spec)`` once and call its ``decode``.

    Args:
        value: The record value (None for a tombstone).
        key: The record key.
        headers: The record headers as (name, value) pairs, in order.
        spec: Duck-typed contract: ``id_source`` ("field", "key" or "header"), ``id_name``,
            ``event_time_field``, ``fields`` (items with ``name``, ``type``, ``required``,
            ``allowed``), ``id_max_length`` and ``id_whitespace`` ("reject" or "trim").

    Returns:
        The message ID, typed values, event date and reason codes of the record.

    Raises:
        ValueError: The spec is malformed (unknown ID source, whitespace policy or field type).
    """
    return Decoder(spec).decode(value, key, headers)
