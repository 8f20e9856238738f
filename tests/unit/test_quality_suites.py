"""Expectation suite files -> GX suites; every mistake named with its file, entry and closest name."""

from __future__ import annotations

import re

import pytest

from pipelines.errors import ConfigError
from pipelines.quality.suites import ROW_LEVEL_TYPES, load_suite, load_suites

GOOD = """\
suite: silver_events
expectations:
  - type: expect_column_values_to_be_between
    kwargs: {column: amount, min_value: 0, max_value: 1000000}
    policy: quarantine
    severity: critical
    description: amount within a sane range
  - type: expect_column_values_to_be_in_set
    kwargs: {column: currency, value_set: [EUR, USD]}
    policy: warn
  - type: expect_table_row_count_to_be_between
    kwargs: {min_value: 1}
    policy: fail
"""


def write(tmp_path, text, name="silver.yaml"):
    path = tmp_path / name
    path.write_text(text)
    return path


def test_a_suite_file_builds_real_gx_expectations(tmp_path):
    suite = load_suite(write(tmp_path, GOOD))
    assert (suite.table, suite.name) == ("silver", "silver_events")
    assert [(r.name, r.policy, r.row_level) for r in suite.rules] == [
        ("expect_column_values_to_be_between:amount", "quarantine", True),
        ("expect_column_values_to_be_in_set:currency", "warn", True),
        ("expect_table_row_count_to_be_between#3", "fail", False),
    ]
    gx = suite.gx_suite.expectations
    assert [type(e).__name__ for e in gx] == ["ExpectColumnValuesToBeBetween", "ExpectColumnValuesToBeInSet",
                                              "ExpectTableRowCountToBeBetween"]
    assert (gx[0].column, gx[0].min_value, gx[0].max_value) == ("amount", 0, 1000000)
    assert str(gx[0].severity.value) == "critical" and gx[0].description == "amount within a sane range"
    assert suite.gx_suite.name == "silver_events"


def test_every_folder_file_is_a_table_suite(tmp_path):
    write(tmp_path, GOOD, "silver.yaml")
    write(tmp_path, "expectations: []\n", "gold_revenue.yaml")
    assert sorted(load_suites(tmp_path)) == ["gold_revenue", "silver"]
    assert load_suites(tmp_path / "absent") == {}


@pytest.mark.parametrize(("entry", "expected"), [
    ("{type: expect_column_values_to_be_betwen, kwargs: {column: a}, policy: warn}",
     "expectations[1] (expect_column_values_to_be_betwen): unknown expectation type "
     "(did you mean 'expect_column_values_to_be_between'?)"),
    ("{type: expect_column_values_to_be_between, kwargs: {column: a, max_valu: 3}, policy: warn}",
     "expectations[1] (expect_column_values_to_be_between): unknown kwarg 'max_valu' (did you mean 'max_value'?)"),
    ("{type: expect_column_values_to_be_in_set, kwargs: {}, policy: warn}",
     "expectations[1] (expect_column_values_to_be_in_set): invalid kwargs: column; field required"),
    ("{type: expect_column_values_to_be_between, kwargs: {column: a, severity: critical}, policy: warn}",
     "'severity' belongs to the entry, next to 'policy', not in 'kwargs'"),
    ("{type: expect_column_values_to_be_between, kwargs: {column: a}, polcy: warn}",
     "expectations[1]: unknown key 'polcy' (did you mean 'policy'?)"),
    ("{type: expect_column_values_to_be_between, kwargs: {column: a}, policy: drop}",
     "'policy' must be one of quarantine, warn, fail, got 'drop'"),
    ("{type: expect_column_values_to_be_between, kwargs: {column: a}, policy: warn, severity: high}",
     "'severity' must be one of critical, warning, info, got 'high'"),
    ("{type: expect_table_row_count_to_be_between, kwargs: {min_value: 1}, policy: quarantine}",
     "expect_table_row_count_to_be_between is decided over the whole batch or table, "
     "so it can only be 'warn' or 'fail'"),
])
def test_a_mistake_names_the_file_the_entry_and_the_closest_name(tmp_path, entry, expected):
    path = write(tmp_path, "expectations:\n  - {type: expect_column_values_to_not_be_null, kwargs: {column: id}, "
                           f"policy: fail}}\n  - {entry}\n")
    with pytest.raises(ConfigError) as e:
        load_suite(path)
    msg = str(e.value)
    assert msg.startswith(f"{path}: expectations[2]")
    assert expected.replace("expectations[1]", "expectations[2]") in msg


def test_unknown_top_level_key_and_bad_yaml(tmp_path):
    with pytest.raises(ConfigError, match=r"unknown key 'expectation' \(did you mean 'expectations'\?\)"):
        load_suite(write(tmp_path, "expectation: []\n"))
    with pytest.raises(ConfigError, match="invalid YAML"):
        load_suite(write(tmp_path, "expectations: [\n"))


def test_row_level_types_are_registered_gx_types():
    from great_expectations.expectations.registry import list_registered_expectation_implementations

    assert ROW_LEVEL_TYPES <= set(list_registered_expectation_implementations())


def test_two_rules_on_one_column_get_distinct_names(tmp_path):
    suite = load_suite(write(tmp_path, """expectations:
  - {type: expect_column_values_to_not_be_null, kwargs: {column: id}, policy: fail}
  - {type: expect_column_values_to_not_be_null, kwargs: {column: id, mostly: 0.9}, policy: warn}
"""))
    assert [r.name for r in suite.rules] == ["expect_column_values_to_not_be_null:id",
                                             "expect_column_values_to_not_be_null:id#2"]
    assert [e.mostly for e in suite.gx_suite.expectations] == [1.0, 0.9]


def test_an_entry_may_name_its_rule_once(tmp_path):
    suite = load_suite(write(tmp_path, """expectations:
  - {type: expect_column_values_to_not_be_null, kwargs: {column: id}, policy: fail, name: id_present}
"""))
    assert [r.name for r in suite.rules] == ["id_present"]
    for body, message in (
        ("  - {type: expect_column_values_to_not_be_null, kwargs: {column: id}, policy: fail, name: a}\n"
         "  - {type: expect_column_values_to_not_be_null, kwargs: {column: x}, policy: fail, name: a}\n",
         "expectations[2] (expect_column_values_to_not_be_null): name 'a' is used twice"),
        ("  - {type: expect_column_values_to_not_be_null, kwargs: {column: id}, policy: fail, name: 'a b'}\n",
         "'name' must be 1 to 100 letters"),
    ):
        with pytest.raises(ConfigError, match=re.escape(message)):
            load_suite(write(tmp_path, "expectations:\n" + body))
