"""Templates are type-checked: lists render comma-separated, objects are refused at check
time with a located diagnostic, and a case that gets evaluation errors fails unless it
expects them."""

from __future__ import annotations

from pathlib import Path

from gateway.policy import load_policy_set
from gateway.policy.cases import check_case, load_case_file
from tests.policy.conftest import PackWriter, context

_PACK = """
kind: pack
version: 1
id: p
regime: LICENCE
stage: licence
rules:
  - id: excluded
    effect: deny
    when: {{caller.established_in: {{in: {{field: licence.licensee_domicile_excluded}}}}}}
    basis: [{{ref: "${{licence.id}}: licensee domicile {field} excluded"}}]
  - id: grant
    effect: allow
"""


def test_a_list_renders_comma_separated(write_packs: PackWriter) -> None:
    root = write_packs(main=_PACK.format(field="${licence.licensee_domicile_excluded}"))
    policy_set = load_policy_set([root]).policy_set
    assert policy_set is not None
    ctx = context(licence={"id": "LIC-X", "licensee_domicile_excluded": ["EU", "GB"]})
    decision = policy_set.evaluate(ctx)
    assert decision.errors == ()
    assert [b.ref for b in decision.legal_basis] == ["LIC-X: licensee domicile EU, GB excluded"]


def test_an_object_in_a_template_is_refused_where_it_is_written(write_packs: PackWriter) -> None:
    root = write_packs(main=_PACK.format(field="${licence}"))
    result = load_policy_set([root])
    assert result.policy_set is None
    (diag,) = [d for d in result.diagnostics if d.severity == "error"]
    assert diag.code == "policy_type_error"
    assert "`licence` is an object" in diag.message
    assert diag.location is not None and diag.location.line > 0
    assert diag.help


def test_a_case_with_unexpected_evaluation_errors_fails(
    write_packs: PackWriter, tmp_path: Path
) -> None:
    root = write_packs(main=_PACK.format(field="${subject.age}"))
    policy_set = load_policy_set([root]).policy_set
    assert policy_set is not None
    cases = tmp_path / "x.cases.yaml"
    cases.write_text(
        """
kind: cases
version: 1
defaults:
  context:
    now: "2026-11-28T10:00:00Z"
    caller: {established_in: DE}
    licence: {id: LIC-X, model: m1, licensee_domicile_excluded: [EU]}
    request: {model: m1, method: predict}
cases:
  - name: refused, but only because the basis cannot render
    context: {}
    want: {effect: deny}
  - name: the same, expecting the error
    context: {}
    want: {effect: deny, errors: [template_value_missing]}
""",
        encoding="utf-8",
    )
    loaded = load_case_file(cases)
    assert loaded.ok, [d.text() for d in loaded.diagnostics]
    silent, expected = (check_case(policy_set, case) for case in loaded.cases)
    assert not silent.passed
    assert any("evaluation errors" in f for f in silent.failures)
    assert expected.passed, expected.failures


def test_an_empty_obligations_key_gets_a_readable_help_line(write_packs: PackWriter) -> None:
    root = write_packs(
        main="""
        kind: pack
        version: 1
        id: p
        regime: GDPR
        rules:
          - id: r
            stage: output
            effect: obligate
            when: {request.gpc: true}
            basis: [{ref: "Art. 5(1)(c)"}]
            obligations:
        """
    )
    result = load_policy_set([root])
    (diag,) = [d for d in result.diagnostics if d.severity == "error"]
    assert diag.message == "obligations must be a mapping, got null"
    assert diag.help is not None
    assert 'quote it: ""' not in diag.help
    assert "`{}`" in diag.help


def test_a_boolean_against_the_end_user_reference_suggests_exists(write_packs: PackWriter) -> None:
    root = write_packs(
        main="""
        kind: pack
        version: 1
        id: p
        regime: GDPR
        rules:
          - id: needs-end-user
            stage: lawful_basis
            effect: deny
            when_absent: {request.end_user: ask}
            when: {request.end_user: true}
            basis: [{ref: "Art. 5(1)(c)"}]
        """
    )
    result = load_policy_set([root])
    (diag,) = [d for d in result.diagnostics if d.severity == "error"]
    assert diag.code == "policy_type_error"
    assert diag.help is not None
    assert "`request.end_user: {exists: true}`" in diag.help
    assert 'quote it: "true"' not in diag.help
