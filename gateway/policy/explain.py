"""Explanations: for one decision, each rule that matched or failed, and the condition and
value that decided, as text and JSON.

Rule 1: explanations are built only when asked (`evaluate(..., explain=True)`); the
decision itself always comes from the fast path, and the explanation reports that path's
outcome for each rule (`matched`, `not_matched`, `error`, `inactive` outside its effective
window, `waived` by an exception, `skipped` when the index ruled the rule out).
Rule 2: conditions are re-evaluated for display with three-valued logic (true, false,
error), every leaf shown with the value it read.

Text form (mode `fails` shows the rules that matched, erred or were waived, plus the allow
rules when nothing allowed; `full` shows every rule of the stages that ran)::

    decision: deny 451 at stage `sanctions` (rules: sanctions-us-iran)
    policies/sanctions/us.yaml:40: rule `sanctions-us-iran` (sanctions, deny): matched
      policies/sanctions/us.yaml:44:11: `caller.region in [IR]` was true (`"IR"`)
"""

from __future__ import annotations

import json
from collections.abc import Mapping
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any, Literal

from gateway.errors import Location
from gateway.policy.predicates import EvalError, EvalState
from gateway.policy.schema import STAGES

if TYPE_CHECKING:
    from gateway.policy.compile import CNode
    from gateway.policy.decision import Decision
    from gateway.policy.evaluate import PolicySet

__all__ = [
    "ConditionTrace",
    "Explanation",
    "RuleTrace",
    "build_explanation",
    "summary_explanation",
]

ExplainMode = Literal["fails", "full"]


@dataclass(frozen=True, slots=True)
class ConditionTrace:
    """One condition as evaluated: its text, result (None = error), and the value read."""

    text: str
    result: bool | None
    value: Any
    location: Location
    depth: int
    error: str | None = None

    def to_json(self) -> dict[str, Any]:
        """JSON form of the condition trace."""
        return {
            "condition": self.text,
            "result": self.result,
            "value": None if self.value is _NO_VALUE else self.value,
            "location": str(self.location),
            "depth": self.depth,
            "error": self.error,
        }


@dataclass(frozen=True, slots=True)
class RuleTrace:
    """One rule's outcome and the conditions behind it."""

    rule: str
    pack: str
    stage: str
    effect: str
    mode: str
    outcome: str
    location: Location
    conditions: tuple[ConditionTrace, ...]
    description: str | None

    def to_json(self) -> dict[str, Any]:
        """JSON form of the rule trace."""
        return {
            "rule": self.rule,
            "pack": self.pack,
            "stage": self.stage,
            "effect": self.effect,
            "mode": self.mode,
            "outcome": self.outcome,
            "location": str(self.location),
            "description": self.description,
            "conditions": [c.to_json() for c in self.conditions],
        }


@dataclass(frozen=True, slots=True)
class Explanation:
    """Why a decision came out as it did."""

    summary: str
    default_deny: bool
    rules: tuple[RuleTrace, ...]

    def to_json(self) -> dict[str, Any]:
        """JSON form: the summary line and every rule trace."""
        return {"summary": self.summary, "rules": [r.to_json() for r in self.rules]}

    def selected(self, mode: ExplainMode = "fails") -> list[RuleTrace]:
        """The rule traces a mode shows."""
        if mode == "full":
            return list(self.rules)
        return [
            r
            for r in self.rules
            if r.outcome in ("matched", "error", "waived")
            or (self.default_deny and r.effect == "allow")
        ]

    def text(self, mode: ExplainMode = "fails") -> str:
        """Render as text lines (`file:line: rule ...`, conditions indented below)."""
        lines = [self.summary]
        for rule in self.selected(mode):
            where = f"{rule.location.file}:{rule.location.line}"
            lines.append(
                f"{where}: rule `{rule.rule}` ({rule.stage}, {rule.effect}"
                f"{', dry-run' if rule.mode != 'enforce' else ''}): {rule.outcome}"
            )
            for cond in rule.conditions:
                pad = "  " * (cond.depth + 1)
                if cond.result is None:
                    verdict = f"failed: {cond.error}"
                else:
                    verdict = "was true" if cond.result else "was false"
                shown = f" (`{_short(cond.value)}`)" if cond.value is not _NO_VALUE else ""
                lines.append(f"{pad}{cond.location}: `{cond.text}` {verdict}{shown}")
        return "\n".join(lines)


class _NoValue:
    def __repr__(self) -> str:
        return "<no value>"


_NO_VALUE: Any = _NoValue()


def _short(value: Any) -> str:
    text = json.dumps(value, ensure_ascii=False, default=str)
    return text if len(text) <= 80 else text[:77] + "..."


def _display(value: Any) -> Any:
    if isinstance(value, tuple) and len(value) == 2 and hasattr(value[0], "isoformat"):
        return value[0].isoformat().replace("+00:00", "Z")
    if isinstance(value, (str, int, float, bool)) or value is None:
        return value
    if isinstance(value, list):
        return [_display(v) for v in value]
    if isinstance(value, Mapping):
        return {str(k): _display(v) for k, v in value.items()}
    return str(value)


def _trace(
    node: CNode, ctx: Mapping[str, Any], st: EvalState, depth: int, out: list[ConditionTrace]
) -> bool | None:
    if node.kind == "test":
        value: Any = _NO_VALUE
        try:
            if node.getter is not None:
                value = _display(node.getter(ctx, st))
            result: bool | None = bool(node.fn(ctx, st))
            error = None
        except EvalError as exc:
            result, error = None, exc.message
        except Exception as exc:  # explanations must never fail the caller
            result, error = None, f"{type(exc).__name__}: {exc}"
        out.append(ConditionTrace(node.text, result, value, node.location, depth, error))
        return result
    header_at = len(out)
    out.append(ConditionTrace(node.kind, None, _NO_VALUE, node.location, depth))
    results = [_trace(child, ctx, st, depth + 1, out) for child in node.children]
    combined: bool | None
    if node.kind == "not":
        combined = None if results[0] is None else not results[0]
    elif node.kind == "all":
        combined = False if False in results else (None if None in results else True)
    else:
        combined = True if True in results else (None if None in results else False)
    out[header_at] = ConditionTrace(
        node.kind,
        combined,
        _NO_VALUE,
        node.location,
        depth,
        None if combined is not None else "a sub-condition failed",
    )
    return combined


def build_explanation(
    policy_set: PolicySet,
    decision: Decision,
    ctx: Mapping[str, Any],
    st: EvalState,
    outcomes: Mapping[int, str],
    last_stage: int,
) -> Explanation:
    """Trace every rule of the stages that ran (and the audit stage) for one decision."""
    audit = STAGES.index("audit")
    traces: list[RuleTrace] = []
    for rule in policy_set.rules:
        if rule.stage_index > last_stage and rule.stage_index != audit:
            continue
        conditions: list[ConditionTrace] = []
        if rule.node is not None:
            _trace(rule.node, ctx, st, 0, conditions)
        outcome = outcomes.get(rule.pos, "skipped")
        traces.append(
            RuleTrace(
                rule.id,
                rule.spec.pack,
                rule.spec.stage,
                rule.spec.effect,
                rule.spec.mode,
                outcome,
                rule.spec.location,
                tuple(conditions),
                rule.spec.description,
            )
        )
    summary = _summary(decision)
    return Explanation(summary, decision.stage == "default", tuple(traces))


def _summary(decision: Decision) -> str:
    if decision.effect == "allow":
        return f"decision: allow 200 (rules: {', '.join(decision.rules) or 'none'})"
    summary = (
        f"decision: deny {decision.status} at stage `{decision.stage}` "
        f"(rules: {', '.join(decision.rules) or 'none'})"
    )
    if decision.errors:
        summary += "; errors: " + ", ".join(
            f"{e.code} ({e.message})" if e.rule is None else f"{e.code} in `{e.rule}`"
            for e in decision.errors
        )
    return summary


def summary_explanation(decision: Decision) -> Explanation:
    """An explanation without rule traces, for decisions made before any rule ran
    (an unreadable context)."""
    return Explanation(_summary(decision), False, ())
