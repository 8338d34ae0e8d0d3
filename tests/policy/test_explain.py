"""Explanations: the rule and condition that decided, with the value read, as text and JSON."""

from __future__ import annotations

from collections.abc import Callable

from gateway.policy import PolicySet
from tests.policy.conftest import context

Build = Callable[..., PolicySet]

PACK = """\
kind: pack
id: demo
stage: lawful_basis
regime: GDPR
rules:
  - id: grant
    stage: licence
    effect: allow
    when: {licence: {exists: true}}
  - id: kids
    description: children need a parent
    effect: deny
    when:
      subject.age: {lt: 16}
      any:
        - subject.region: {in: [DE]}
        - caller.region: {in: [DE]}
    basis: [{ref: "Art. 8(1)"}]
"""


def test_fails_mode_text(compile_packs: Build) -> None:
    ps = compile_packs(demo=PACK)
    d = ps.evaluate(context(subject={"age": 15}), explain=True)
    root = ps.files[0].rsplit("/", 1)[0]
    text = d.explanation.text("fails").replace(root + "/", "")
    assert text == (
        "decision: deny 451 at stage `lawful_basis` (rules: kids)\n"
        "demo.yaml:6: rule `grant` (licence, allow): matched\n"
        '  demo.yaml:9:30: `licence exists true` was true (`{"id": "L1", "model": "m1", '
        '"commercial_use": "allowed"}`)\n'
        "demo.yaml:10: rule `kids` (lawful_basis, deny): matched\n"
        "  demo.yaml:14:7: `all` was true\n"
        "    demo.yaml:14:25: `subject.age lt 16` was true (`15`)\n"
        "    demo.yaml:16:9: `any` was true\n"
        "      demo.yaml:16:32: `subject.region in [DE]` was false (`null`)\n"
        '      demo.yaml:17:31: `caller.region in [DE]` was true (`"DE"`)'
    )


def test_default_deny_shows_why_no_allow_matched(compile_packs: Build) -> None:
    ps = compile_packs(demo=PACK)
    d = ps.evaluate(context(licence=None), explain=True)
    assert d.stage == "default"
    rules = {r.rule: r for r in d.explanation.selected("fails")}
    # The index ruled the rule out before it ran; its condition is still shown.
    assert rules["grant"].outcome == "skipped"
    assert rules["grant"].conditions[0].result is False


def test_json_form_and_full_mode(compile_packs: Build) -> None:
    ps = compile_packs(demo=PACK)
    d = ps.evaluate(context(subject={"age": "x"}), explain=True)
    body = d.explanation.to_json()
    kids = next(r for r in body["rules"] if r["rule"] == "kids")
    assert kids["outcome"] == "error"
    failed = [
        c
        for c in kids["conditions"]
        if c["result"] is None and c["condition"] not in ("all", "any", "not")
    ]
    assert failed and "subject.age" in failed[0]["error"]
    assert len(d.explanation.selected("full")) == 2
