"""Evaluate a compiled policy set on one request context (pure, no I/O).

The decision table (docs/policy-language.md has the long form):

| situation                                                  | effect | status          |
|------------------------------------------------------------|--------|-----------------|
| an enforced deny rule matches in stage S (first such S)     | deny   | the rule's      |
| an enforced rule of stage S raises an error (fail closed)   | deny   | the rule's      |
| the context itself is unreadable (`now`, an indexed field)  | deny   | default status  |
| residency: allowed regions intersect to nothing, or no      | deny   | 451             |
|   candidate backend lies in them                            |        |                 |
| no deny; at least one enforced allow rule matched           | allow  | 200             |
| no deny; no allow matched; settings default is `deny`       | deny   | default (403)   |
| no deny; no allow matched; settings default is `allow`      | allow  | 200             |

Stages run in order (sanctions, licence, lawful_basis, residency, minimisation, output); the
first stage with a deny decides and later stages are not evaluated. The `audit` stage runs
on every decision. Dry-run rules are evaluated and reported, never enforced (a dry-run rule
that errors is reported as matched). A rule outside its effective window, or waived by a
current exception, does not match.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Any

from gateway.policy.absence import fields_read
from gateway.policy.decision import (
    AuditObligation,
    Decision,
    DecisionError,
    LegalBasis,
    Routing,
    Waiver,
)
from gateway.policy.ir import CompiledProblem, CompiledRule, CompileResult
from gateway.policy.language import STAGES
from gateway.policy.lower import lower_problem
from gateway.policy.memo import BoundedMemo
from gateway.policy.obligations import NO_AUDIT
from gateway.policy.plans import ChunkRunner, Plan, build_plan, rollback
from gateway.policy.state import EvalError, EvalState
from gateway.policy.times import parse_interval
from gateway.policy.verdicts import (
    DecisionBuilder,
    KeyReader,
    allow_key_reader,
    static_bases,
    text_key_readers,
)
from gateway.policy.vocabulary import Vocabulary

__all__ = ["Evaluator"]


_new_state = object.__new__
_RESIDENCY = STAGES.index("residency")
_AUDIT = STAGES.index("audit")

# Outcomes recorded for explanations.
MATCHED = "matched"
NOT_MATCHED = "not_matched"
ERROR = "error"
INACTIVE = "inactive"
WAIVED = "waived"


class _Refusal(Exception):
    """Raised out of the stage loop with the decision that refuses an unreadable context."""

    def __init__(self, decision: Decision) -> None:
        super().__init__(decision.errors[0].code)
        self.decision = decision


class Evaluator(DecisionBuilder):
    """The evaluation engine of a compiled policy set: `PolicySet` with explanations left
    to its subclass (`gateway.policy.policyset`), so that this module never imports
    `explain`.

    Evaluation never mutates it, apart from bounded memos of pure results.
    """

    __slots__ = (
        "revision",
        "vocabulary",
        "files",
        "_rules",
        "_index",
        "_always",
        "_default_effect",
        "_default_status",
        "_default_problem",
        "_cache",
        "_positions",
        "_lookups",
        "_masks",
        "_ids",
        "_text_keys",
        "_allow_keys",
        "_masking",
        "_static_bases",
        "_plain_keeps",
        "_plans",
        "_runners",
        "operator",
        "_inject_operator",
    )

    def __init__(self, compiled: CompileResult, revision: str, files: Sequence[str]) -> None:
        assert compiled.vocabulary is not None
        self.revision: str = revision
        self.vocabulary: Vocabulary = compiled.vocabulary
        self.files: tuple[str, ...] = tuple(files)
        self._rules: tuple[CompiledRule, ...] = compiled.rules
        self._index = compiled.index
        self._always: frozenset[int] = frozenset(compiled.always)
        self._positions: dict[str, int] = {r.id: r.pos for r in self._rules}
        self._lookups = compiled.lookups
        self._masks = compiled.masks
        self._ids: tuple[tuple[str], ...] = tuple((r.id,) for r in self._rules)
        #: Per position: generated readers of the values a denial's texts read, as memo
        #: key parts (basis templates only, basis and problem templates).
        self._text_keys: tuple[tuple[KeyReader, KeyReader], ...] = tuple(
            text_key_readers(r, self.vocabulary) for r in self._rules
        )
        #: Per position: a reader of every value an allow's bases and obligations render
        #: for this rule, or None when its obligations read more (sinks: never memoised).
        self._allow_keys: tuple[KeyReader | None, ...] = tuple(
            allow_key_reader(r, self.vocabulary) for r in self._rules
        )
        #: Positions of rules with masking obligations (their merge reads `st.pd`).
        self._masking: frozenset[int] = frozenset(r.pos for r in self._rules if r.obligations.mask)
        #: Per position: the rule's deduplicated legal bases when none is a template.
        self._static_bases: tuple[tuple[LegalBasis, ...] | None, ...] = tuple(
            static_bases(r) for r in self._rules
        )
        #: Enforced, untimed, unwaivable non-deny rules their index entry decides alone.
        self._plain_keeps: frozenset[int] = frozenset(
            r.pos
            for r in self._rules
            if r.rest is None and not r.timed and not r.exceptions and r.enforced and not r.denies
        )
        #: Candidate mask -> its plan (see `_plan_for`); bounded, rebuilt on demand.
        self._plans: BoundedMemo[int, Plan] = BoundedMemo()
        #: Chunk positions -> its generated runner (shared by the plans that hold it).
        self._runners: BoundedMemo[tuple[int, ...], ChunkRunner | None] = BoundedMemo()
        settings = compiled.settings
        self._default_effect = settings.default_effect if settings else "deny"
        self._default_status = settings.default_status if settings else 403
        spec = settings.default_problem if settings else None
        self._default_problem: CompiledProblem = lower_problem(
            self.vocabulary,
            spec,
            self._default_status,
            "no rule allows this request",
            "requests no rule of the policy set allows",
            None,
        )
        self._cache: BoundedMemo[Any, Any] = BoundedMemo()
        #: The operator's declarations from the settings, the `operator` section of every
        #: context that does not bring its own (None: nothing declared).
        self.operator: Mapping[str, Any] | None = None
        if settings is not None and (
            settings.established_in is not None or settings.sanctions_programs is not None
        ):
            self.operator = {
                "established_in": settings.established_in,
                "sanctions_programs": list(settings.sanctions_programs or ()),
            }
        #: Only a set whose rules read `operator.*` pays for adding the section.
        self._inject_operator = self.operator is not None and any(
            name.startswith("operator.") for r in self._rules for name in fields_read(r.spec)
        )

    # ------------------------------------------------------------------ introspection

    @property
    def rules(self) -> tuple[CompiledRule, ...]:
        """Compiled rules in evaluation order."""
        return self._rules

    @property
    def rule_ids(self) -> tuple[str, ...]:
        """Rule ids in evaluation order."""
        return tuple(r.id for r in self._rules)

    @property
    def audit_rule_ids(self) -> frozenset[str]:
        """Ids of the audit-stage rules (record keeping; they never decide a request)."""
        return frozenset(r.id for r in self._rules if r.stage_index == _AUDIT)

    @property
    def default_effect(self) -> str:
        """What happens when no rule allows a request (`deny` unless settings say `allow`)."""
        return self._default_effect

    def candidates(self, context: Mapping[str, Any], state: EvalState) -> list[int]:
        """Positions of the rules the index cannot rule out, in evaluation order.

        This is the reference form of the generated lookup the evaluator uses.
        """
        found = set(self._always)
        for _name, keys_of, table in self._index:
            for key in keys_of(context, state):
                hit = table.get(key)
                if hit:
                    found.update(hit)
        return sorted(found)

    def _plan_for(self, mask: int) -> Plan:
        """The plan of one lookup's candidate mask (memoised)."""
        return self._plans.remember(mask, build_plan(self._rules, mask, self._runners))

    # ------------------------------------------------------------------ evaluation

    def evaluate(self, context: Mapping[str, Any], *, explain: bool = False) -> Decision:
        """Decide one request context. Pure and fast; never raises (fails closed)."""
        try:
            decision = self._decide(context, explain)
        except Exception as exc:  # SECURITY: an engine bug must never turn into an allow
            decision = self._failure(
                "policy_internal_error", f"{type(exc).__name__}: {exc}", None, None
            )
        if explain and decision.explanation is None:
            decision = decision._replace(explanation=self._summary_explanation(decision))
        return decision

    def _explanation(
        self,
        decision: Decision,
        ctx: Mapping[str, Any],
        st: EvalState,
        outcomes: Mapping[int, str],
        last_stage: int,
    ) -> Any:
        """The explanation of one decision from each rule's outcome (None here: `PolicySet`
        builds it)."""
        return None

    def _summary_explanation(self, decision: Decision) -> Any:
        """The explanation of a decision made before any rule ran (None here: `PolicySet`
        builds it)."""
        return None

    def _decide(self, ctx: Any, explain: bool) -> Decision:
        # `ctx` is typed loosely on purpose: callers may pass anything and must get a deny.
        if ctx.__class__ is not dict and not isinstance(ctx, Mapping):
            return self._failure("context_invalid", "the context must be an object", None, None)
        if self._inject_operator and "operator" not in ctx:
            ctx = {**ctx, "operator": self.operator}
        raw_now = ctx.get("now")
        now = parse_interval(raw_now) if type(raw_now) is str and len(raw_now) > 10 else None
        if now is None:
            return self._failure(
                "context_invalid_now", "`now` must be an RFC 3339 date-time string", None, None
            )
        # `EvalState.read` inlined: one call fewer on every evaluation.
        st = _new_state(EvalState)
        st.now = now
        st.vocabulary = self.vocabulary
        try:
            st.load_sections(ctx)
        except EvalError as exc:
            return self._failure(exc.code, exc.message, None, None)
        at = now[0]
        outcomes: dict[int, str] | None = {} if explain else None
        denies: list[CompiledRule] = []
        matched: list[CompiledRule] = []
        dry: list[str] = []
        errors: list[DecisionError] = []
        waivers: list[Waiver] = []
        try:
            stage, routing, route_denial, route_checked, audit_positions = self._run_stages(
                ctx, st, at, denies, matched, dry, errors, waivers, outcomes
            )
        except _Refusal as refusal:
            return refusal.decision
        if not (denies or route_denial or route_checked):
            try:
                routing, route_denial = self._route(ctx, matched)
            except EvalError as exc:
                return self._failure(exc.code, exc.message, STAGES[_RESIDENCY], None)
            if route_denial:
                stage = _RESIDENCY
        last_stage = stage if (denies or route_denial) else _AUDIT - 1
        audit_hits, audit = (
            self._run_audit(audit_positions, ctx, st, at, dry, errors, waivers, outcomes)
            if audit_positions
            else ([], NO_AUDIT)
        )
        if len(dry) > 1:
            dry.sort(key=self._positions.__getitem__)
        decision = (
            self._deny(
                ctx, st, denies, matched, audit_hits, dry, errors, waivers, audit, route_denial
            )
            if denies or route_denial or errors
            else self._allow(ctx, st, matched, audit_hits, dry, waivers, audit, routing)
        )
        if explain:
            explanation = self._explanation(decision, ctx, st, outcomes or {}, last_stage)
            decision = decision._replace(explanation=explanation)
        return decision

    def _run_stages(
        self,
        ctx: Mapping[str, Any],
        st: EvalState,
        at: Any,
        denies: list[CompiledRule],
        matched: list[CompiledRule],
        dry: list[str],
        errors: list[DecisionError],
        waivers: list[Waiver],
        outcomes: dict[int, str] | None,
    ) -> tuple[int, Routing | None, bool, bool, Sequence[int]]:
        """Run the candidate rules stage by stage until a stage denies, routing once the
        residency stage is done.

        Returns the last stage run, the routing, whether routing denied, whether it ran, and
        the audit candidates. Raises `_Refusal` when the context cannot be read.
        """
        routing: Routing | None = None
        route_denial = False
        route_checked = False
        audit_positions: Sequence[int] = ()
        stage = 0
        plans = self._plans
        for lookup in self._masks:
            try:
                mask = lookup(ctx, st)
            except EvalError as exc:  # an indexed field is unreadable: a context error
                raise _Refusal(self._failure(exc.code, exc.message, None, None)) from None
            chunks, audit_part = plans.get(mask) or self._plan_for(mask)
            audit_positions = audit_part or audit_positions
            for rule_stage, entries, runner in chunks:
                if rule_stage != stage:
                    # Leaving `stage`: stop at a deny, and route once residency is done.
                    if denies:
                        break
                    if rule_stage > _RESIDENCY and not route_checked:
                        route_checked = True
                        try:
                            routing, route_denial = self._route(ctx, matched)
                        except EvalError as exc:
                            failure = self._failure(exc.code, exc.message, STAGES[_RESIDENCY], None)
                            raise _Refusal(failure) from None
                        if route_denial:
                            stage = _RESIDENCY
                            break
                    stage = rule_stage
                if runner is not None and outcomes is None:
                    if runner(ctx, st, at, denies, matched, dry):
                        continue
                    # A check raised: rerun the chunk below, which records the error.
                    rollback(entries, denies, matched, dry)
                for entry in entries:
                    self._run(
                        entry[0], ctx, st, at, denies, matched, dry, errors, waivers, outcomes
                    )
            if denies or route_denial:
                break
        return stage, routing, route_denial, route_checked, audit_positions

    def _run_audit(
        self,
        positions: Sequence[int],
        ctx: Mapping[str, Any],
        st: EvalState,
        at: Any,
        dry: list[str],
        errors: list[DecisionError],
        waivers: list[Waiver],
        outcomes: dict[int, str] | None,
    ) -> tuple[list[CompiledRule], AuditObligation]:
        """Run the audit-stage candidates (every decision has its record keeping): the
        audit rules that matched and their merged duties."""
        hits: list[CompiledRule] = []
        denies: list[CompiledRule] = []
        rules = self._rules
        for pos in positions:
            rule = rules[pos]
            if pos in self._plain_keeps:  # matched by its index entry alone
                if outcomes is not None:
                    outcomes[pos] = MATCHED
                hits.append(rule)
                continue
            self._run(rule, ctx, st, at, denies, hits, dry, errors, waivers, outcomes)
        audit, audit_errors = self._audit(hits)
        errors.extend(audit_errors)
        return hits, audit

    def _waive(
        self,
        rule: CompiledRule,
        ctx: Mapping[str, Any],
        st: EvalState,
        at: Any,
        waivers: list[Waiver],
        outcomes: dict[int, str] | None,
    ) -> bool:
        """Apply a rule's exceptions; returns whether the rule still matches."""
        for exc in rule.exceptions:
            if at < exc.until and (exc.test is None or exc.test(ctx, st)):
                waivers.append(Waiver(rule.id, exc.ticket, exc.until_text))
                if outcomes is not None:
                    outcomes[rule.pos] = WAIVED
                return False
        return True

    def _run(
        self,
        rule: CompiledRule,
        ctx: Mapping[str, Any],
        st: EvalState,
        at: Any,
        denies: list[CompiledRule],
        matched: list[CompiledRule],
        dry: list[str],
        errors: list[DecisionError],
        waivers: list[Waiver],
        outcomes: dict[int, str] | None,
    ) -> None:
        """Evaluate one rule (the general path, which records outcomes and errors) and add
        it to the list its kind and mode name."""
        if (rule.start is not None and at < rule.start) or (
            rule.end is not None and at >= rule.end
        ):
            if outcomes is not None:
                outcomes[rule.pos] = INACTIVE
            return
        try:
            hit = rule.rest is None or rule.rest(ctx, st)
            if hit and rule.exceptions and not self._waive(rule, ctx, st, at, waivers, outcomes):
                return
        except Exception as exc:  # SECURITY: fail closed, unexpected errors too
            self._errored(rule, exc, denies, dry, errors, outcomes)
            return
        if outcomes is not None:
            outcomes[rule.pos] = MATCHED if hit else NOT_MATCHED
        if not hit:
            return
        if not rule.enforced:
            dry.append(rule.id)
        elif rule.denies:
            denies.append(rule)
        else:
            matched.append(rule)

    @staticmethod
    def _errored(
        rule: CompiledRule,
        exc: Exception,
        denies: list[CompiledRule],
        dry: list[str],
        errors: list[DecisionError],
        outcomes: dict[int, str] | None,
    ) -> None:
        """A rule that could not be evaluated denies (or, in dry run, would have denied)."""
        if isinstance(exc, EvalError):
            code, message = exc.code, exc.message
        else:  # an engine bug: named by its type, never turned into an allow
            code, message = "policy_eval_error", f"{type(exc).__name__}: {exc}"
        if outcomes is not None:
            outcomes[rule.pos] = ERROR
        if rule.spec.mode != "enforce":
            dry.append(rule.id)  # a shadow rule that errors would have denied
            return
        errors.append(DecisionError(code, message, rule.id))
        denies.append(rule)
