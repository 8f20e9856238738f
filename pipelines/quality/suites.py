"""Expectation suites per table, from ``conf/expectations/<table>.yaml``, as Great Expectations objects.

One file per table::

    suite: silver_events            # optional; default "<table>"
    expectations:
      - type: expect_column_values_to_be_between
        kwargs: {column: amount, min_value: 0, max_value: 1000000}
        policy: quarantine          # quarantine | warn | fail
        severity: critical          # optional: critical | warning | info (GX's own field)
        description: amount within a sane range
        name: amount_range          # optional; default "<type>:<column>"; in reason codes and records

GX builds each entry into its pydantic expectation class, which rejects unknown kwargs; an
unknown *type* GX would only fail to look up. The loader fails on both, naming the file, the
entry (its position and type) and the closest valid name, before anything runs.

``quarantine`` is to route the failing rows away from silver, so it needs a row-level
predicate: the loader accepts it only for the types :data:`ROW_LEVEL_TYPES` lists. The ingest
job checks ``silver.yaml`` on every batch (:mod:`pipelines.quality.batch`).
"""

from __future__ import annotations

import dataclasses
import difflib
import functools
import re
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from pipelines.config import read_yaml_mapping
from pipelines.errors import ConfigError

POLICIES = ("quarantine", "warn", "fail")
SEVERITIES = ("critical", "warning", "info")
ENTRY_KEYS = ("type", "kwargs", "policy", "severity", "description", "name")
_NAME = re.compile(r"^[A-Za-z0-9_.:#-]{1,100}$")
# Fields of GX's expectation models that are not kwargs of an expectation (GX sets them, or
# they are entry keys here).
_NOT_KWARGS = frozenset({"id", "meta", "rendered_content", "batch_id", "severity", "description"})

# Expectation types decided row by row: the batch path routes their failing rows to quarantine
# with a Spark predicate (pipelines.quality.rules). Others can only warn or fail.
ROW_LEVEL_TYPES = frozenset({
    "expect_column_values_to_not_be_null",
    "expect_column_values_to_be_between",
    "expect_column_values_to_be_in_set",
    "expect_column_values_to_not_be_in_set",
    "expect_column_values_to_match_regex",
    "expect_column_values_to_not_match_regex",
    "expect_column_value_lengths_to_be_between",
})


@dataclass(frozen=True)
class Rule:
    """One expectation of a suite with our policy."""

    name: str  # unique in the suite: the entry's `name`, else "<type>:<column>" ("<type>#<n>" without a column)
    type: str
    kwargs: dict[str, Any]
    policy: str
    severity: str | None
    description: str | None

    @property
    def row_level(self) -> bool:
        """Decided row by row: failing rows can be routed (quarantine)."""
        return self.type in ROW_LEVEL_TYPES


@dataclass(frozen=True)
class Suite:
    """The expectations of one table, and the GX ``ExpectationSuite`` built from them."""

    table: str
    name: str
    rules: tuple[Rule, ...]
    source: str
    gx_suite: Any  # great_expectations.core.ExpectationSuite


def load_suites(folder: str | Path) -> dict[str, Suite]:
    """Every ``<table>.yaml`` in ``folder`` -> its :class:`Suite` (none if the folder is absent)."""
    folder = Path(folder)
    if not folder.is_dir():
        return {}
    return {p.stem: load_suite(p) for p in sorted(folder.glob("*.yaml"))}


def load_suite(path: str | Path) -> Suite:
    """Load and check one suite file; every error names the file and the entry."""
    path = Path(path)
    data = read_yaml_mapping(path, "a mapping with 'expectations'")
    unknown = sorted(set(data) - {"suite", "expectations"})
    if unknown:
        raise ConfigError(f"{path}: unknown key {unknown[0]!r}{closest(unknown[0], ['suite', 'expectations'])}")
    entries = data.get("expectations") or []
    if not isinstance(entries, list):
        raise ConfigError(f"{path}: 'expectations' must be a list of entries")
    table = path.stem
    name = str(data.get("suite") or table)
    rules: list[Rule] = []
    expectations = []
    for i, entry in enumerate(entries, start=1):
        rule, expectation = _rule(path, i, entry)
        if any(r.name == rule.name for r in rules):
            if isinstance(entry, dict) and "name" in entry:
                raise ConfigError(f"{path}: expectations[{i}] ({rule.type}): name {rule.name!r} is used twice")
            rule = dataclasses.replace(rule, name=f"{rule.name}#{i}")
        rules.append(rule)
        expectations.append(expectation)
    import great_expectations as gx

    # Built unbound (no GX context): the context that runs or stores it is the caller's.
    return Suite(table=table, name=name, rules=tuple(rules), source=str(path),
                 gx_suite=gx.ExpectationSuite(name=name, expectations=expectations))


def _rule(path: Path, i: int, entry: Any) -> tuple[Rule, Any]:
    """Entry ``i`` of the file, checked: the rule and its GX expectation object."""
    where = f"{path}: expectations[{i}]"
    if not isinstance(entry, dict):
        raise ConfigError(f"{where}: expected a mapping with 'type', 'kwargs' and 'policy'")
    for key in entry:
        if key not in ENTRY_KEYS:
            raise ConfigError(f"{where}: unknown key {key!r}{closest(str(key), ENTRY_KEYS)}")
    etype = entry.get("type")
    if not isinstance(etype, str) or not etype:
        raise ConfigError(f"{where}: 'type' is missing (a GX expectation type,"
                          " e.g. expect_column_values_to_be_between)")
    where = f"{where} ({etype})"
    known = _registered_types()
    if etype not in known:
        raise ConfigError(f"{where}: unknown expectation type{closest(etype, known)}")
    kwargs = entry.get("kwargs") or {}
    if not isinstance(kwargs, dict):
        raise ConfigError(f"{where}: 'kwargs' must be a mapping")
    policy = entry.get("policy")
    if policy not in POLICIES:
        raise ConfigError(f"{where}: 'policy' must be one of {', '.join(POLICIES)}, got {policy!r}")
    if policy == "quarantine" and etype not in ROW_LEVEL_TYPES:
        raise ConfigError(
            f"{where}: policy 'quarantine' needs a row-level expectation (one of {', '.join(sorted(ROW_LEVEL_TYPES))});"
            f" {etype} is decided over the whole batch or table, so it can only be 'warn' or 'fail'")
    severity = entry.get("severity")
    if severity is not None and severity not in SEVERITIES:
        raise ConfigError(f"{where}: 'severity' must be one of {', '.join(SEVERITIES)}, got {severity!r}")
    description = entry.get("description")
    expectation = _gx_expectation(where, etype, kwargs, severity, description)  # kwargs checked by GX's model
    column = kwargs.get("column")
    name = entry.get("name") or (f"{etype}:{column}" if column else f"{etype}#{i}")
    if not isinstance(name, str) or not _NAME.match(name):
        raise ConfigError(f"{where}: 'name' must be 1 to 100 letters, digits or _ . : # -, got {name!r}")
    return Rule(name, etype, dict(kwargs), policy, severity,
                None if description is None else str(description)), expectation


def _gx_expectation(where: str, etype: str, kwargs: dict[str, Any], severity: str | None,
                    description: Any) -> Any:
    from great_expectations.expectations.registry import get_expectation_impl

    cls: Any = get_expectation_impl(etype)
    fields = sorted(set(cls.__fields__) - _NOT_KWARGS)
    for key in kwargs:
        if key in ("severity", "description"):
            raise ConfigError(f"{where}: {key!r} belongs to the entry, next to 'policy', not in 'kwargs'")
        if key not in fields:
            raise ConfigError(f"{where}: unknown kwarg {key!r}{closest(str(key), fields)}")
    ours: dict[str, Any] = {k: v for k, v in (("severity", severity), ("description", description)) if v is not None}
    try:
        return cls(**kwargs, **ours)
    except Exception as e:  # pydantic's ValidationError: a missing or mistyped kwarg
        raise ConfigError(f"{where}: invalid kwargs: {_validation_message(e)}") from e



@functools.cache
def _registered_types() -> list[str]:
    from great_expectations.expectations.registry import list_registered_expectation_implementations

    return sorted(list_registered_expectation_implementations())


def closest(name: str, options: Any) -> str:
    """`` (did you mean 'x'?)`` for the option closest to ``name``, or an empty string."""
    match = difflib.get_close_matches(name, list(options), n=1, cutoff=0.5)
    return f" (did you mean {match[0]!r}?)" if match else ""


def _validation_message(e: Exception) -> str:
    """Pydantic's error without its first line (the model name): "field; problem"."""
    lines = [ln.strip() for ln in str(e).splitlines() if ln.strip()]
    return "; ".join(lines[1:3]) if len(lines) > 1 else (lines[0] if lines else type(e).__name__)
