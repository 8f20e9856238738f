"""Row-level rules: the Python reading (what verify uses) and the loader's checks of each rule.

The Spark predicates are exercised against these same rules by the integration tests, where
verify compares the job's routing with this reading record by record.
"""

from __future__ import annotations

import datetime as dt
import re
from decimal import Decimal

import pytest
from pyspark.sql import types as T

from pipelines.errors import ConfigError
from pipelines.paths import REPO_ROOT
from pipelines.quality.rules import row_checks
from pipelines.quality.suites import load_suite

TYPES = {
    "message_id": T.StringType(), "amount": T.DecimalType(18, 2), "currency": T.StringType(),
    "event_type": T.StringType(), "order_id": T.StringType(), "customer_id": T.StringType(),
    "event_time": T.TimestampType(), "kafka_timestamp": T.TimestampType(),
}
UTC = dt.UTC


def checks(tmp_path, body: str):
    path = tmp_path / "silver.yaml"
    path.write_text("expectations:\n" + body)
    return row_checks(load_suite(path), TYPES)


def row(**over):
    base = {"message_id": "m", "amount": Decimal("10.00"), "currency": "EUR", "event_type": "order_created",
            "order_id": "o-1", "event_time": dt.datetime(2026, 11, 26, 10, tzinfo=UTC),
            "kafka_timestamp": dt.datetime(2026, 11, 26, 10, 0, 5)}
    base.update(over)
    return base


def test_the_default_suite_reads_as_documented():
    got = {c.rule.name: c for c in row_checks(load_suite(REPO_ROOT / "conf/expectations/silver.yaml"), TYPES)}
    amount = got["expect_column_values_to_be_between:amount"]
    assert not amount.fails(row()) and not amount.fails(row(amount=Decimal("0"))) and not amount.fails(row(amount=None))
    assert amount.fails(row(amount=Decimal("-0.01"))) and amount.fails(row(amount=Decimal("1000000.01")))
    assert got["expect_column_values_to_be_in_set:currency"].fails(row(currency="XXX"))
    assert not got["expect_column_values_to_be_in_set:currency"].fails(row(currency="JPY"))
    assert got["expect_column_value_lengths_to_be_between:order_id"].fails(row(order_id=""))
    when = got["expect_column_values_to_be_between:event_time"]
    # now() is the record's Kafka timestamp: a day after it is the limit, whatever the wall clock says
    assert not when.fails(row(event_time=dt.datetime(2026, 11, 27, 10, 0, 5, tzinfo=UTC)))
    assert when.fails(row(event_time=dt.datetime(2026, 11, 27, 10, 0, 6, tzinfo=UTC)))
    assert when.fails(row(event_time=dt.datetime(1999, 12, 31, 23, 59, 59, tzinfo=UTC)))
    refund = got["refund_amount_bound"]
    assert refund.rule.policy == "warn" and refund.code == "EXPECTATION:refund_amount_bound"
    assert not refund.fails(row(event_type="refund_issued", amount=Decimal("95000.00")))
    assert refund.fails(row(event_type="refund_issued", amount=Decimal("95000.01")))
    assert not refund.fails(row(event_type="order_created", amount=Decimal("95000.01")))  # row_condition


def test_strict_bounds_sets_regex_and_not_null(tmp_path):
    got = checks(tmp_path, """\
  - {type: expect_column_values_to_be_between, policy: quarantine,
     kwargs: {column: amount, min_value: 0, max_value: 5, strict_min: true, strict_max: true}}
  - {type: expect_column_values_to_not_be_in_set, policy: quarantine, kwargs: {column: currency, value_set: [XXX]}}
  - {type: expect_column_values_to_match_regex, policy: quarantine, kwargs: {column: order_id, regex: "^o-[0-9]+$"}}
  - {type: expect_column_values_to_not_match_regex, policy: warn, kwargs: {column: message_id, regex: "test"}}
  - {type: expect_column_values_to_not_be_null, policy: warn, kwargs: {column: currency}}
""")
    between, not_in, regex, not_regex, not_null = got
    assert between.fails(row(amount=Decimal("0"))) and between.fails(row(amount=Decimal("5")))
    assert not between.fails(row(amount=Decimal("4.99")))
    assert not_in.fails(row(currency="XXX")) and not not_in.fails(row(currency="EUR"))
    assert regex.fails(row(order_id="x-1")) and not regex.fails(row(order_id="o-12"))
    assert not_regex.fails(row(message_id="a-test-1")) and not not_regex.fails(row(message_id="m"))
    assert not_null.fails(row(currency=None)) and not not_null.fails(row())
    assert between.code == "EXPECTATION:expect_column_values_to_be_between:amount"


@pytest.mark.parametrize(("entry", "message"), [
    ("{type: expect_column_values_to_be_between, policy: quarantine, kwargs: {column: amout, min_value: 0}}",
     "column 'amout' is not a column of the silver table"),
    ("{type: expect_column_values_to_be_in_set, policy: quarantine, kwargs: {column: amount, value_set: [1, ten]}}",
     "'ten' is not a decimal(18,2) value"),
    ("{type: expect_column_values_to_be_between, policy: quarantine,"
     " kwargs: {column: event_time, max_value: {$PARAMETER: 'yesterday()'}}}",
     "suite parameter 'yesterday()' is not supported"),
    ("{type: expect_column_values_to_be_between, policy: quarantine,"
     " kwargs: {column: amount, max_value: {$PARAMETER: 'now()'}}}",
     "now() only applies to the values of a timestamp column"),
    ("{type: expect_column_values_to_be_between, policy: quarantine,"
     " kwargs: {column: amount, max_value: 5, row_condition: 'event_type == \"x\"', condition_parser: spark}}",
     "row_condition must be GX's structured form"),
    ("{type: expect_column_values_to_match_regex, policy: quarantine, kwargs: {column: order_id, regex: '('}}",
     "does not compile"),
])
def test_a_rule_the_batch_path_cannot_evaluate_fails_at_load_naming_file_and_rule(tmp_path, entry, message):
    with pytest.raises(ConfigError) as err:
        checks(tmp_path, f"  - {entry}\n")
    text = str(err.value)
    assert message in text and str(tmp_path / "silver.yaml") in text


def test_regex_and_length_rules_need_text_and_constants_are_read_strictly(tmp_path):
    for body, message in (
        ("  - {type: expect_column_values_to_match_regex, policy: quarantine, kwargs: {column: amount, regex: x}}\n",
         "expect_column_values_to_match_regex applies to text; amount is decimal(18,2)"),
        ("  - {type: expect_column_values_to_be_in_set, policy: quarantine, kwargs: {column: currency, "
         "value_set: [EUR, NO]}}\n", "False is not a string value"),
    ):
        with pytest.raises(ConfigError, match=re.escape(message)):
            checks(tmp_path, body)
    big, = checks(tmp_path, "  - {type: expect_column_values_to_be_between, policy: quarantine, "
                            "kwargs: {column: amount, max_value: 1e6}}\n")
    assert big.hi == Decimal("1000000") and big.hi.as_tuple().exponent == 0  # no negative-scale literal


def _spec():
    from pipelines.config import load_config
    from pipelines.domain.schema import EventSpec

    return EventSpec.from_config(load_config(REPO_ROOT / "conf" / "local.yaml", environ={}).events)


def test_the_routing_fingerprint_follows_what_decides_routing(tmp_path):
    from pipelines.quality.batch import BatchQuality

    def fingerprint(kind, policy, description, values):
        path = tmp_path / "silver.yaml"
        path.write_text(f"expectations:\n  - {{type: expect_column_values_to_{kind}, policy: {policy}, name: cur,"
                        f" description: {description}, kwargs: {{column: currency, value_set: [{values}]}}}}\n")
        return BatchQuality(load_suite(path), _spec()).fingerprint

    base = fingerprint("be_in_set", "quarantine", "a", "EUR, USD")
    assert fingerprint("be_in_set", "quarantine", "b", "USD, EUR") == base  # wording, order: same routing
    assert fingerprint("be_in_set", "warn", "a", "EUR, USD") != base  # no longer routes
    assert fingerprint("not_be_in_set", "quarantine", "a", "EUR, USD") != base  # same name and kwargs, other type


def test_an_aggregate_rule_on_an_unknown_column_fails_at_load(tmp_path):
    from pipelines.quality.batch import BatchQuality

    path = tmp_path / "silver.yaml"
    path.write_text("expectations:\n  - {type: expect_column_max_to_be_between, policy: fail,"
                    " kwargs: {column: amout, max_value: 5}}\n")
    with pytest.raises(ConfigError, match=r"'amout' is not a column of the silver table \(did you mean 'amount'"):
        BatchQuality(load_suite(path), _spec())
