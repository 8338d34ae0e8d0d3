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
from gateway.policy.language import DECLARED_FACTS, STAGES
from gateway.policy.state import EvalError, EvalState
from gateway.policy.times import parse_interval

if TYPE_CHECKING:
    from gateway.policy.decision import Decision
    from gateway.policy.evaluate import Evaluator
    from gateway.policy.ir import CNode

__all__ = [
    "ConditionTrace",
    "Explanation",
    "RuleTrace",
    "build_explanation",
    "explain_rule",
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
    #: `from ... until ...` when the rule has an effective window, else None.
    effective: str | None = None

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
            "effective": self.effective,
            "conditions": [c.to_json() for c in self.conditions],
        }

    def heading(self) -> str:
        """`file:line: rule `id` (stage, effect[, dry-run]): outcome[, effective ...]`."""
        where = f"{self.location.file}:{self.location.line}"
        dated = (
            f" (effective {self.effective})"
            if self.effective and (self.outcome == "inactive" or self.mode != "enforce")
            else ""
        )
        return (
            f"{where}: rule `{self.rule}` ({self.stage}, {self.effect}"
            f"{', dry-run' if self.mode != 'enforce' else ''}): {self.outcome}{dated}"
        )

    def condition_lines(self) -> list[str]:
        """Each condition with its verdict and the value it read, indented by depth."""
        lines = []
        for cond in self.conditions:
            pad = "  " * (cond.depth + 1)
            if cond.result is None:
                verdict = f"failed: {cond.error}"
            else:
                verdict = "was true" if cond.result else "was false"
            shown = f" (`{_short(cond.value)}`)" if cond.value is not _NO_VALUE else ""
            lines.append(f"{pad}{cond.location}: `{cond.text}` {verdict}{shown}")
        return lines


@dataclass(frozen=True, slots=True)
class Explanation:
    """Why a decision came out as it did."""

    summary: str
    default_deny: bool
    rules: tuple[RuleTrace, ...]
    #: The routing step: one line per candidate backend, eligible or not and why.
    routing: tuple[str, ...] = ()

    def to_json(self, mode: ExplainMode = "full") -> dict[str, Any]:
        """JSON form: the summary line, the routing step and the rule traces `mode` shows."""
        return {
            "summary": self.summary,
            "routing": list(self.routing),
            "rules": [r.to_json() for r in self.selected(mode)],
        }

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
        if self.routing:
            lines.append("routing:")
            lines.extend(f"  {line}" for line in self.routing)
        for rule in self.selected(mode):
            lines.append(rule.heading())
            lines.extend(rule.condition_lines())
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
    policy_set: Evaluator,
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
        traces.append(_rule_trace(rule, ctx, st, outcomes.get(rule.pos, "skipped")))
    audit_ids = {r.id for r in policy_set.rules if r.spec.stage == "audit"}
    summary = _summary(decision, audit_ids)
    routing = tuple(_routing_lines(policy_set, decision, ctx))
    return Explanation(summary, decision.stage == "default", tuple(traces), routing)


def _rule_trace(rule: Any, ctx: Mapping[str, Any], st: EvalState, outcome: str) -> RuleTrace:
    conditions: list[ConditionTrace] = []
    if rule.node is not None:
        _trace(rule.node, ctx, st, 0, conditions)
    spec = rule.spec
    effective = None
    if spec.effective_from is not None or spec.effective_until is not None:
        start = spec.effective_from.isoformat() if spec.effective_from else "the start"
        end = spec.effective_until.isoformat() if spec.effective_until else "further notice"
        effective = f"from {start} until {end}"
    return RuleTrace(
        rule.id,
        spec.pack,
        spec.stage,
        spec.effect,
        spec.mode,
        outcome,
        spec.location,
        tuple(conditions),
        spec.description,
        effective,
    )


def _routing_lines(policy_set: Evaluator, decision: Decision, ctx: Mapping[str, Any]) -> list[str]:
    """Each candidate backend, eligible or not, and why (the residency step)."""
    routing = decision.obligations.routing
    backends = ctx.get("backends")
    route_rules = [r.id for r in policy_set.rules if r.obligations.route is not None]
    ruling = [r for r in decision.rules if r in route_rules]
    if routing is None and not (decision.stage == "residency" and ruling):
        return []
    if not isinstance(backends, list):
        return ["no candidate backends in the context"]
    allowed = list(routing.allowed_regions) if routing else []
    mechanisms = list(routing.mechanisms) if routing else []
    eligible = set(routing.backends) if routing else set()
    lines = [
        f"constraints from {', '.join(ruling) or 'the routing rules'}: regions "
        f"{', '.join(allowed) or 'none'}"
        + (f", or a backend holding {', '.join(mechanisms)}" if mechanisms else "")
    ]
    for backend in backends:
        if not isinstance(backend, Mapping):
            continue
        held = [m for m in backend.get("transfer_mechanisms") or () if m in mechanisms]
        region = backend.get("region")
        if backend.get("id") in eligible:
            why = f"region {region} is allowed" if not held else f"holds {', '.join(held)}"
            lines.append(f"backend `{backend.get('id')}` eligible: {why}")
        else:
            lines.append(
                f"backend `{backend.get('id')}` not eligible: region {region} is outside "
                f"{', '.join(allowed) or 'every allowed region'}"
                + (f" and it holds none of {', '.join(mechanisms)}" if mechanisms else "")
            )
    return lines


def explain_rule(
    policy_set: Evaluator, decision: Decision, ctx: Mapping[str, Any], rule_id: str
) -> str:
    """Answer "why (not) this rule" for one decision: the rule's outcome, its effective
    window, and every condition with the value it read (also for stages that did not run)."""
    rule = next((r for r in policy_set.rules if r.id == rule_id), None)
    if rule is None:
        return f"no rule `{rule_id}` in the policy set"
    raw_now = ctx.get("now")
    now = parse_interval(raw_now) if isinstance(raw_now, str) else None
    if now is None:
        return f"rule `{rule_id}`: the context has no readable `now`"
    st = EvalState(now, policy_set.vocabulary)
    try:
        st.load_sections(ctx)
    except EvalError as exc:
        return f"rule `{rule_id}`: the context cannot be read ({exc.message})"
    traced = {t.rule: t for t in decision.explanation.rules} if decision.explanation else {}
    known = traced.get(rule_id)
    outcome = known.outcome if known else "not evaluated"
    trace = _rule_trace(rule, ctx, st, outcome)
    audit_ids = {r.id for r in policy_set.rules if r.spec.stage == "audit"}
    lines = [_summary(decision, audit_ids), trace.heading()]
    verdict = _verdict(rule, decision, known, trace, now, raw_now)
    missing = [
        DECLARED_FACTS[a.fact]
        for a in rule.spec.when_absent
        if a.mode == "ask" and _absent(ctx, a.fact)
    ]
    if missing and rule_id in decision.rules:
        verdict += f", because {', '.join(missing)} was not declared (when_absent: ask)"
    lines.append(f"  why: {verdict}")
    lines.extend(trace.condition_lines())
    return "\n".join(lines)


def _verdict(
    rule: Any,
    decision: Decision,
    known: RuleTrace | None,
    trace: RuleTrace,
    now: Any,
    raw_now: object,
) -> str:
    """Why a rule did or did not take part in a decision (`known`: its trace, if it ran)."""
    outcome = trace.outcome
    if rule.id in decision.rules:
        if rule.spec.stage == "audit":
            return "an audit duty: it sets record keeping, it did not decide the request"
        if decision.effect == "deny" and rule.denies:
            return "it decided this request"
        return "it applied to this request"
    if rule.id in decision.dry_run:
        return "it matched in dry-run: reported, never enforced"
    if known is None:
        return f"stage `{rule.spec.stage}` did not run: stage `{decision.stage}` decided first"
    if outcome == "inactive" or not _in_force(rule, now):
        return f"not in force at {raw_now} (effective {trace.effective})"
    if outcome == "waived":
        waiver = next((w for w in decision.waivers if w.rule == rule.id), None)
        return f"waived until {waiver.until} ({waiver.ticket})" if waiver else "waived"
    if outcome in ("not_matched", "skipped"):
        failed = _failed_conjunct(trace.conditions)
        return "its condition did not hold" + (f": `{failed}` was false" if failed else "")
    if outcome == "error":
        return "it could not be evaluated (the request is refused)"
    return outcome


def _summary(decision: Decision, audit_ids: frozenset[str] | set[str] = frozenset()) -> str:
    if decision.effect == "allow":
        return f"decision: allow 200 (rules: {', '.join(decision.rules) or 'none'})"
    # Audit rules set record keeping on every decision; they never decide a denial.
    deciding = [r for r in decision.rules if r not in audit_ids]
    duties = [r for r in decision.rules if r in audit_ids]
    summary = (
        f"decision: deny {decision.status} at stage `{decision.stage}` "
        f"(rules: {', '.join(deciding) or 'none'})"
    )
    if duties:
        summary += f"; audit duties: {', '.join(duties)}"
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


def _absent(ctx: Mapping[str, Any], fact: str) -> bool:
    section, _, name = fact.partition(".")
    holder = ctx.get(section)
    return not isinstance(holder, Mapping) or holder.get(name) is None


def _in_force(rule: Any, now: Any) -> bool:
    start, end = now
    if rule.start is not None and end <= rule.start:
        return False
    return rule.end is None or start < rule.end


def _failed_conjunct(conditions: tuple[ConditionTrace, ...]) -> str | None:
    """The first conjunct of a rule's condition that was false, as the officer wrote it (an
    `any` added for an absent fact is shown by the test it guards)."""
    if not conditions:
        return None
    depth = 1 if conditions[0].text == "all" else 0
    for i, cond in enumerate(conditions):
        if cond.depth != depth or cond.result is not False:
            continue
        if cond.text != "any":
            return cond.text
        children = []
        for later in conditions[i + 1 :]:
            if later.depth <= depth:
                break
            if later.depth == depth + 1 and not later.text.endswith(" exists false"):
                children.append(later.text)
        return " or ".join(children) if children else cond.text
    return None
