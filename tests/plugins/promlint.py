"""The rules of `promtool check metrics`, for machines without the Prometheus package.

A port of the checks in client_golang's `prometheus/testutil/promlint` (which `promtool check
metrics` runs; https://github.com/prometheus/client_golang/tree/main/prometheus/testutil/promlint):
help text, `_total` on counters only, base units, no abbreviated units, no type in the name,
no `:` in names, snake_case names and labels, `le`/`quantile` reserved for histograms and
summaries. Messages are promtool's own, so a failure reads the same with either linter;
tests/gateway/test_metrics.py checks both agree where promtool is installed.
"""

from __future__ import annotations

import re
from dataclasses import dataclass, field

from prometheus_client.parser import text_string_to_metric_families

#: Base unit -> the names that should be written in it (promlint's `units`).
_UNITS = {
    "amperes": ("amps",),
    "bytes": ("kilobytes", "megabytes", "gigabytes", "terabytes", "petabytes", "kibibytes",
              "mebibytes", "gibibytes", "tebibytes", "pebibytes"),
    "celsius": ("fahrenheit",),
    "meters": ("kilometers", "miles", "feet", "inches", "centimeters", "millimeters"),
    "seconds": ("minutes", "hours", "days", "weeks", "milliseconds", "microseconds",
                "nanoseconds"),
}  # fmt: skip
_ABBREVIATIONS = ("s", "ms", "us", "ns", "sec", "b", "kb", "mb", "gb", "tb", "pb", "m", "h", "d")
_TYPE_NAMES = ("counter", "gauge", "histogram", "summary", "untyped")
_CAMEL = re.compile(r"[a-z][A-Z]")


@dataclass
class _Family:
    name: str
    type: str = "untyped"
    help: str | None = None
    labels: set[str] = field(default_factory=set)


def _families(text: str) -> dict[str, _Family]:
    families: dict[str, _Family] = {}
    for line in text.splitlines():
        parts = line.split(None, 3)
        if len(parts) >= 3 and parts[0] == "#" and parts[1] in ("HELP", "TYPE"):
            family = families.setdefault(parts[2], _Family(parts[2]))
            rest = parts[3] if len(parts) > 3 else ""
            if parts[1] == "HELP":
                family.help = rest
            else:
                family.type = rest.strip()
    for parsed in text_string_to_metric_families(text):
        family = families.get(parsed.name) or families.get(parsed.name + "_total")
        if family is None:
            family = families.setdefault(parsed.name, _Family(parsed.name))
        for sample in parsed.samples:
            family.labels.update(sample.labels)
    return families


def lint(text: str) -> list[str]:
    """Every problem promlint reports for the exposition `text`, as `name: message`."""
    problems: list[str] = []
    for name, family in sorted(_families(text).items()):

        def report(message: str, name: str = name) -> None:
            problems.append(f"{name} {message}")

        if not family.help:
            report("no help text")
        tokens = name.split("_")
        for base, others in _UNITS.items():
            for unit in others:
                if unit in tokens:
                    report(f'use base unit "{base}" instead of "{unit}"')
        if family.type == "counter" and not name.endswith("_total"):
            report('counter metrics should have "_total" suffix')
        if family.type != "counter" and name.endswith("_total"):
            report('non-counter metrics should not have "_total" suffix')
        if family.type != "histogram" and "le" in family.labels:
            report('non-histogram metrics should not have "le" label')
        if family.type != "summary" and "quantile" in family.labels:
            report('non-summary metrics should not have "quantile" label')
        # promlint looks for `_<word>_` and a `_<word>` suffix: the first word never counts.
        for type_name in _TYPE_NAMES:
            if type_name in tokens[1:]:
                report(f"metric name should not include type '{type_name}'")
        for token in tokens[1:]:
            if token in _ABBREVIATIONS:
                report("metric names should not contain abbreviated units")
                break
        if ":" in name:
            report("metric names should not contain ':'")
        if _CAMEL.search(name):
            report("metric names should be written in 'snake_case' not 'camelCase'")
        if any(_CAMEL.search(label) for label in family.labels):
            report("label names should be written in 'snake_case' not 'camelCase'")
    return problems
