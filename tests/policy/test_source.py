"""Strict, located YAML loading (gateway/source.py)."""

from __future__ import annotations

import datetime as dt
from pathlib import Path

import pytest

from gateway.source import SourceLimits, load_yaml


def texts(source: str, **kw: object) -> list[str]:
    return [d.text() for d in load_yaml(source, "t.yaml", **kw).diagnostics]  # type: ignore[arg-type]


def test_plain_data_and_locations() -> None:
    doc = load_yaml("a: 1\nb:\n  - x\n  - {c: true}\n", "t.yaml")
    assert doc.ok and doc.data == {"a": 1, "b": ["x", {"c": True}]}
    assert str(doc.location(("b", 1, "c"))) == "t.yaml:4:9"
    assert str(doc.key_location(("b",))) == "t.yaml:2:1"
    # A path that does not exist falls back to its nearest ancestor.
    assert str(doc.location(("b", 7))) == "t.yaml:3:3"


def test_duplicate_key_points_at_the_second_with_the_first_line() -> None:
    assert texts("a: 1\nb: 2\na: 3\n") == [
        "t.yaml:3:1: yaml_duplicate_key: duplicate key `a`\n"
        "  help: `a` is first set at line 1; keep one"
    ]


def test_norway_as_a_key_is_refused_with_the_quote_fix() -> None:
    assert texts("NO: 1\n") == [
        "t.yaml:1:1: yaml_key_type: mapping key must be a string, got boolean `false`\n"
        '  help: YAML 1.1 reads NO as false; quote it: "NO"'
    ]


@pytest.mark.parametrize(
    ("raw", "value", "help"),
    [
        ("NO", False, 'YAML 1.1 reads NO as false; quote it: "NO"'),
        ("yes", True, 'YAML 1.1 reads yes as true; quote it: "yes"'),
        ("1.10", 1.1, 'YAML 1.1 reads 1.10 as the number 1.1; quote it: "1.10"'),
        (
            "2025-02-02",
            dt.date(2025, 2, 2),
            'YAML 1.1 reads 2025-02-02 as a date; quote it: "2025-02-02"',
        ),
        ("1:30", 90, 'YAML 1.1 reads 1:30 as the number 90; quote it: "1:30"'),
        ("~", None, 'YAML 1.1 reads ~ as null; quote it: "~"'),
    ],
)
def test_yaml11_retyping_in_a_string_slot(raw: str, value: object, help: str) -> None:
    doc = load_yaml(f"region: {raw}\n", "t.yaml")
    assert doc.data == {"region": value}
    diag = doc.type_error(("region",), "a string", doc.data["region"])
    assert diag.help == help
    assert str(diag.location) == "t.yaml:1:9"


def test_quoted_values_get_no_yaml11_help() -> None:
    doc = load_yaml('region: "NO"\nn: "5"\n', "t.yaml")
    assert doc.data == {"region": "NO", "n": "5"}
    assert doc.type_error(("n",), "an integer", "5").help is None


def test_alias_bomb_is_refused_cheaply() -> None:
    lines = ["a: &a [x, x, x, x, x, x, x, x, x, x]"]
    for i in range(1, 9):
        prev, cur = chr(96 + i), chr(97 + i)
        lines.append(f"{cur}: &{cur} [" + ", ".join([f"*{prev}"] * 10) + "]")
    found = texts("\n".join(lines) + "\n")
    assert len(found) == 1 and "yaml_alias_expansion" in found[0]


def test_small_alias_use_is_fine_and_locations_follow_the_anchor() -> None:
    doc = load_yaml("x: &p {a: 1}\ny: *p\n", "t.yaml")
    assert doc.ok and doc.data == {"x": {"a": 1}, "y": {"a": 1}}


def test_recursive_alias() -> None:
    assert "yaml_recursive_alias" in texts("a: &a [*a]\n")[0]


@pytest.mark.parametrize(
    ("source", "code"),
    [
        ("a: [1, 2\n", "yaml_syntax_error"),
        ("a: !!python/object:os.system x\n", "yaml_tag_error"),
        ("a: !custom x\n", "yaml_tag_error"),
        ("<<: {a: 1}\n", "yaml_merge_key"),
        ("a: .nan\n", "yaml_value_error"),
        ("a: 1\n---\nb: 2\n", "yaml_multiple_documents"),
        ("? [a, b]\n: 1\n", "yaml_key_type"),
    ],
)
def test_refused_constructs(source: str, code: str) -> None:
    found = texts(source)
    assert found and all(code in t for t in found), found


def test_syntax_error_is_located() -> None:
    assert texts("a:\n  b: [1\n")[0].startswith("t.yaml:3:1: yaml_syntax_error:")


def test_size_limit_and_encoding(tmp_path: Path) -> None:
    assert "yaml_too_large" in texts("a: 1\n", limits=SourceLimits(max_bytes=3))[0]
    bad = tmp_path / "bad.yaml"
    bad.write_bytes(b"a: \xff\n")
    assert "yaml_encoding_error" in load_yaml(bad).diagnostics[0].text()


def test_missing_file_is_a_diagnostic(tmp_path: Path) -> None:
    doc = load_yaml(tmp_path / "nope.yaml")
    assert doc.data is None and doc.diagnostics[0].code == "io_error"


def test_empty_document() -> None:
    doc = load_yaml("# only a comment\n", "t.yaml")
    assert doc.ok and doc.empty and doc.data is None


def test_timestamps_become_utc() -> None:
    doc = load_yaml("t: 2026-11-28T11:00:00+01:00\n", "t.yaml")
    assert doc.data["t"] == dt.datetime(2026, 11, 28, 10, 0, tzinfo=dt.UTC)


def test_deep_nesting_is_refused() -> None:
    assert "yaml_too_deep" in texts("a: " + "[" * 80 + "]" * 80 + "\n")[0]
