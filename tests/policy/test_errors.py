"""Diagnostics: one type, text and JSON forms, sorted and capped (gateway/errors.py)."""

from __future__ import annotations

from gateway.errors import (
    Diagnostic,
    DiagnosticError,
    Location,
    describe_value,
    did_you_mean,
    format_diagnostics,
    sort_diagnostics,
)


def test_text_form_with_help() -> None:
    d = Diagnostic(
        "policy_schema_error",
        "unknown effect `alow`",
        Location("gdpr.yaml", 5, 13),
        "rules[0].effect",
        "did you mean `allow`?",
    )
    assert d.text() == (
        "gdpr.yaml:5:13: policy_schema_error: unknown effect `alow`\n  help: did you mean `allow`?"
    )


def test_json_form_has_a_fixed_shape() -> None:
    d = Diagnostic("x_error", "bad", Location("f.yaml", 2, 3), "a.b")
    assert d.to_json() == {
        "code": "x_error",
        "message": "bad",
        "severity": "error",
        "file": "f.yaml",
        "line": 2,
        "col": 3,
        "path": "a.b",
        "help": None,
    }
    assert Diagnostic("x", "y").to_json()["file"] is None


def test_sorted_by_location_deduplicated_and_capped() -> None:
    diags = [Diagnostic("e", f"m{i}", Location("b.yaml", 20 - i, 1)) for i in range(12)]
    diags.append(Diagnostic("e", "first", Location("a.yaml", 9, 1)))
    diags.append(diags[0])
    ordered = sort_diagnostics(diags)
    assert len(ordered) == 13 and ordered[0].message == "first"
    lines = format_diagnostics(diags).splitlines()
    assert len(lines) == 11 and lines[-1] == "... and 3 more diagnostics"
    assert lines[1].startswith("b.yaml:9:1:")


def test_warning_is_marked() -> None:
    assert Diagnostic("w", "m", severity="warning").text().endswith("(warning)")


def test_did_you_mean() -> None:
    assert did_you_mean("marketting", ["marketing", "research"]) == "did you mean `marketing`?"
    assert did_you_mean("EU", ["eu"]) == "did you mean `eu`?"
    assert did_you_mean("zzz", ["marketing"]) is None
    assert did_you_mean(5, ["marketing"]) is None


def test_describe_value() -> None:
    assert describe_value(False) == "boolean `false`"
    assert describe_value(1.1) == "number `1.1`"
    assert describe_value([1]) == "list"
    assert describe_value(None) == "null"


def test_diagnostic_error_carries_sorted_diagnostics() -> None:
    err = DiagnosticError(
        [Diagnostic("b", "2", Location("z")), Diagnostic("a", "1", Location("a"))]
    )
    assert [d.code for d in err.diagnostics()] == ["a", "b"]
    assert str(err).startswith("a: a: 1")
