"""The compile pipeline, one test per stage of `COMPILE_STAGES`, and the revision."""

from __future__ import annotations

import shutil
from pathlib import Path

from gateway.policy import load_policy_set
from gateway.policy.compile import COMPILE_STAGES
from tests.policy.conftest import POLICIES, VOCABULARY, PackWriter, context

SIMPLE = """
kind: pack
id: simple
stage: sanctions
regime: SANCTIONS-US
rules:
  - id: iran
    effect: deny
    when: {caller.region: {in: [IR]}}
    basis: [{ref: "31 CFR Part 560"}]
"""


def codes(path: Path | list[Path]) -> list[str]:
    paths = path if isinstance(path, list) else [path]
    return [d.code for d in load_policy_set(paths).diagnostics]


def test_stage_table_order() -> None:
    assert [name for name, _fn, _clean in COMPILE_STAGES] == [
        "collect",
        "identify",
        "typecheck",
        "check",
        "lower",
        "index",
        "freeze",
    ]


def test_collect_needs_exactly_one_vocabulary(tmp_path: Path, write_packs: PackWriter) -> None:
    (tmp_path / "p.yaml").write_text(SIMPLE, encoding="utf-8")
    result = load_policy_set([tmp_path / "p.yaml"])
    assert result.policy_set is None and result.diagnostics[0].message == "no vocabulary found"
    root = write_packs(a=SIMPLE)
    shutil.copy(VOCABULARY, root / "second-vocabulary.yaml")
    assert codes(root) == ["policy_conflict"]
    root = write_packs(
        a=SIMPLE,
        s1="kind: settings\ndefault: {effect: deny}\n",
        s2="kind: settings\ndefault: {effect: allow}\n",
    )
    assert "policy_conflict" in codes(root)


def test_identify_rejects_duplicate_ids_across_files(write_packs: PackWriter) -> None:
    root = write_packs(a=SIMPLE, b=SIMPLE)
    diags = load_policy_set([root]).diagnostics
    assert [d.code for d in diags] == ["policy_conflict", "policy_conflict"]
    assert "duplicate pack id" in diags[0].message and "duplicate rule id" in diags[1].message


def test_typecheck_and_check_report_together(write_packs: PackWriter) -> None:
    bad = (
        SIMPLE.replace("[IR]", "[IRR]")
        + """
  - id: no-basis
    effect: deny
    when: {caller.region: {in: [CU]}}
"""
    )
    assert sorted(codes(write_packs(a=bad))) == ["policy_ref_error", "policy_schema_error"]


def test_check_catches_rules_that_can_never_apply(write_packs: PackWriter) -> None:
    window = SIMPLE.replace(
        "effect: deny",
        "effect: deny\n    effective_from: 2026-01-02\n    effective_until: 2026-01-01",
    )
    assert codes(write_packs(a=window)) == ["policy_unreachable"]


def test_lower_and_index_build_fast_predicates(write_packs: PackWriter) -> None:
    ps = load_policy_set([write_packs(a=SIMPLE)]).policy_set
    assert ps is not None
    (rule,) = ps.rules
    assert rule.guard is not None and rule.rest is None  # the whole condition is the guard
    assert ps.evaluate(context(caller={"region": "IR"})).rules == ("iran",)


def test_freeze_revision_ignores_formatting_but_not_meaning(
    tmp_path: Path,
    write_packs: PackWriter,
) -> None:
    first = load_policy_set([write_packs(a=SIMPLE)]).policy_set
    reformatted = "# a comment\n" + SIMPLE.replace(
        "{caller.region: {in: [IR]}}", "\n      caller.region:\n        in: [IR]"
    )
    second = load_policy_set([write_packs(a=reformatted)]).policy_set
    changed = load_policy_set([write_packs(a=SIMPLE.replace("IR]", "IR, CU]"))]).policy_set
    assert first and second and changed
    assert first.revision == second.revision != changed.revision
    # The revision names files relative to the directory given, not where it lives.
    moved = tmp_path / "elsewhere"
    shutil.copytree(tmp_path / "policies", moved)
    relocated = load_policy_set([moved]).policy_set
    assert relocated and relocated.revision == changed.revision


def test_shipped_packs_compile_without_warnings() -> None:
    result = load_policy_set([POLICIES])
    assert result.policy_set is not None and result.diagnostics == ()
    assert len(result.policy_set.rules) >= 50


def test_case_documents_in_policy_files_are_refused(write_packs: PackWriter) -> None:
    root = write_packs(a=SIMPLE, b="kind: cases\ncases: []\n")
    assert codes(root) == ["policy_schema_error"]


def test_a_failed_load_returns_no_set_and_every_diagnostic(write_packs: PackWriter) -> None:
    root = write_packs(
        a=SIMPLE.replace("effect: deny", "effect: dny"),
        b=SIMPLE.replace("id: simple", "id: other")
        .replace("id: iran", "id: x")
        .replace("[IR]", "[NO]"),
    )
    result = load_policy_set([root])
    assert result.policy_set is None and not result.ok
    assert [d.code for d in result.diagnostics] == ["policy_schema_error", "policy_type_error"]
