"""Gold table declarations: validation errors name the key and file; the transforms compute exactly."""

from __future__ import annotations

import datetime as dt
from decimal import Decimal

import pytest

from pipelines.config import load_config
from pipelines.domain import gold as G
from pipelines.domain import schema as S
from pipelines.domain.schema import EventSpec
from pipelines.errors import ConfigError
from pipelines.paths import REPO_ROOT

CONF = REPO_ROOT / "conf" / "local.yaml"


def config(**table):
    base = {"name": "t", "group_by": ["currency"],
            "aggregates": [{"name": "total", "fn": "sum", "column": "amount", "type": "decimal(24,2)"}]}
    base.update(table)
    return load_config(CONF, environ={}).with_overrides(gold={"tables": [base]})


def specs(cfg):
    return G.gold_specs(cfg, S.silver_schema(EventSpec.from_config(cfg.events)))


def test_the_default_tables_are_valid():
    cfg = load_config(CONF, environ={})
    names = [s.name for s in specs(cfg)]
    assert names == ["revenue_per_minute", "customer_totals"]
    assert specs(cfg)[0].keys == ("window_start", "window_end", "currency")
    assert specs(cfg)[0].prunes_by_event_date and not specs(cfg)[1].prunes_by_event_date


@pytest.mark.parametrize(("table", "key", "says"), [
    ({"group_by": ["nope"]}, "gold.tables[0].group_by[0]", "silver has no column 'nope'"),
    ({"window": {"column": "currency", "size": "1 minute"}}, "gold.tables[0].window.column", "not a timestamp"),
    ({"window": {"column": "event_time", "size": "a while"}}, "gold.tables[0].window.size", "not an interval"),
    ({"aggregates": [{"name": "x", "fn": "sum", "column": "currency"}]}, "gold.tables[0].aggregates[0].column",
     "cannot sum currency"),
    ({"aggregates": [{"name": "x", "fn": "sum", "column": "amount", "type": "double"}]},
     "gold.tables[0].aggregates[0].type", "decimal and integer only"),
    ({"aggregates": [{"name": "x", "fn": "max"}]}, "gold.tables[0].aggregates[0].column", "needs a column"),
    ({"aggregates": [{"name": "x", "fn": "expr", "expr": "1"}]}, "gold.tables[0].aggregates", "at least one"),
    ({"aggregates": [{"name": "currency", "fn": "count"}]}, "gold.tables[0].aggregates[0].name", "unique"),
    ({"aggregates": [{"name": "n", "fn": "count", "type": "timestamp"}]}, "gold.tables[0].aggregates[0].type",
     "a count is a number"),
    ({"group_by": []}, "gold.tables[0].group_by", "needs keys"),
    ({"window": {"column": "event_time", "size": "0 minutes"}}, "gold.tables[0].window.size", "not an interval"),
    ({"aggregates": [{"name": "_g_present", "fn": "count"}]}, "gold.tables[0].aggregates[0].name", "not starting"),
    ({"aggregates": [{"name": "x", "fn": "sum", "column": "amount", "type": "decimal(24,1)"}]},
     "gold.tables[0].aggregates[0].type", "would round or truncate amount"),
    ({"aggregates": [{"name": "x", "fn": "max", "column": "amount", "type": "bigint"}]},
     "gold.tables[0].aggregates[0].type", "would round or truncate amount"),
    ({"path": "silver"}, "gold.tables[0].path", "already the location of tables.silver"),
])
def test_bad_declarations_name_the_key_and_the_file(table, key, says):
    with pytest.raises(ConfigError) as e:
        specs(config(**table))
    assert key in e.value.message and says in e.value.message
    assert "local.yaml" in e.value.message


def test_unknown_keys_are_refused_by_the_loader():
    with pytest.raises(ConfigError, match=r"unknown key 'gold.tables.0.aggregates.0.colum'"):
        config(aggregates=[{"name": "x", "fn": "sum", "colum": "amount"}])


def test_sql_is_analysed_by_spark_and_floats_are_refused(spark):
    cfg = config(aggregates=[{"name": "x", "fn": "count", "where": "no_such_column = 1"}])
    silver = S.silver_schema(EventSpec.from_config(cfg.events))
    with pytest.raises(ConfigError, match=r"gold.tables\[0\].aggregates\[0\].where: .*no_such_column"):
        G.check_sql(spark, specs(cfg), silver, cfg.sources)
    cfg = config(aggregates=[{"name": "n", "fn": "count"}, {"name": "half", "fn": "expr", "expr": "n / 2"}])
    with pytest.raises(ConfigError, match="half would be floating point"):
        G.check_sql(spark, specs(cfg), silver, cfg.sources)
    cfg = config(aggregates=[{"name": "n", "fn": "count"}, {"name": "m", "fn": "expr", "expr": "later + 1"},
                             {"name": "later", "fn": "expr", "expr": "n * 2"}])
    with pytest.raises(ConfigError, match=r"gold.tables\[0\].aggregates: .*later"):
        G.check_sql(spark, specs(cfg), silver, cfg.sources)


def test_the_default_tables_compute_exact_decimals_per_window(spark):
    cfg = load_config(CONF, environ={})
    revenue, customers = specs(cfg)
    t = dt.datetime(2026, 12, 1, 10, 0, 0)
    rows = [  # (event_type, customer_id, amount, currency, event_time)
        ("payment_captured", "c1", Decimal("0.10"), "EUR", t),
        ("payment_captured", "c1", Decimal("0.20"), "EUR", t + dt.timedelta(seconds=59, microseconds=999999)),
        ("refund_issued", "c2", Decimal("0.05"), "EUR", t + dt.timedelta(seconds=30)),
        ("order_created", "c2", Decimal("99.99"), "EUR", t + dt.timedelta(minutes=1)),  # next window
        ("order_created", "c3", Decimal("1.00"), "USD", t),
    ]
    df = spark.createDataFrame(rows, "event_type string, customer_id string, amount decimal(18,2), "
                                     "currency string, event_time timestamp")
    got = {(r.window_start, r.currency): (r.captured_amount, r.refunded_amount, r.net_amount, r.event_count)
           for r in df.transform(G.aggregate(revenue)).collect()}
    m = dt.timedelta(minutes=1)
    assert got == {
        (t, "EUR"): (Decimal("0.30"), Decimal("0.05"), Decimal("0.25"), 3),
        (t + m, "EUR"): (Decimal("0.00"), Decimal("0.00"), Decimal("0.00"), 1),  # a sum of no rows is 0
        (t, "USD"): (Decimal("0.00"), Decimal("0.00"), Decimal("0.00"), 1),
    }
    out = df.transform(G.aggregate(revenue))
    assert dict(out.dtypes)["net_amount"] == "decimal(24,2)" and dict(out.dtypes)["event_count"] == "bigint"
    c2 = df.transform(G.aggregate(customers)).filter("customer_id = 'c2'").first()
    assert (c2.orders, c2.captured_amount, c2.refunded_amount) == (1, Decimal("0.00"), Decimal("0.05"))
    assert (c2.first_event_time, c2.last_event_time) == (t + dt.timedelta(seconds=30), t + m)
    keys = df.transform(G.touched_keys(revenue)).collect()
    assert sorted((r.window_start, r.currency) for r in keys) == sorted(got)
