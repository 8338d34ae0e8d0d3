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

from collections.abc import Callable, Mapping, Sequence
from typing import Any, TypeVar

from gateway.policy.codegen import generate_key_reader, positions_of
from gateway.policy.compile import (
    CompiledProblem,
    CompiledRule,
    CompileResult,
    fields_read,
    lower_problem,
)
from gateway.policy.decision import (
    EMPTY_OBLIGATIONS,
    AuditObligation,
    Decision,
    DecisionError,
    ImageMark,
    LegalBasis,
    MaskAction,
    Obligations,
    Problem,
    Remedy,
    Routing,
    SinkSuppression,
    Waiver,
)
from gateway.policy.language import STAGES
from gateway.policy.predicates import ABSENT, EvalError, EvalState, parse_interval
from gateway.policy.vocabulary import Vocabulary, region_in

__all__ = ["PolicySet"]

_T = TypeVar("_T")

#: One candidate rule in a plan: the rule, its residual predicate, whether it has an
#: effective window, what a match does (`_DENY`, `_KEEP`, `_SHADOW`) and its position.
_Entry = tuple[CompiledRule, Any, bool, int, int]
#: Runs one stage chunk's checks in sequence (see `_generate_chunk`); False when a check
#: raised and the chunk must be rerun by the general loop.
_ChunkRunner = Callable[[Any, EvalState, Any, list[Any], list[Any], list[str]], bool]
#: A lookup's plan: its non-audit candidates in stage chunks (each with its generated
#: runner, None when a rule has exceptions), and its audit positions.
_Plan = tuple[tuple[tuple[int, tuple[_Entry, ...], "_ChunkRunner | None"], ...], tuple[int, ...]]
#: Reads the values some templates render, as a memo key part (None: do not memoise).
_KeyReader = Callable[[Mapping[str, Any], EvalState], "tuple[Any, ...] | None"]

_new_state = object.__new__
_RESIDENCY = STAGES.index("residency")
_AUDIT = STAGES.index("audit")
_MASK_RANK = {"redact": 3, "hash": 2, "keep_last": 1}
_NO_AUDIT = AuditObligation()
_DENY, _KEEP, _SHADOW = 0, 1, 2

# Outcomes recorded for explanations.
MATCHED = "matched"
NOT_MATCHED = "not_matched"
ERROR = "error"
INACTIVE = "inactive"
WAIVED = "waived"


class PolicySet:
    """An immutable, compiled set of policy packs.

    Build it with `gateway.policy.load_policy_set`; share it freely between requests and
    threads (evaluation never mutates it, apart from bounded memo caches of pure results).
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
        self._text_keys: tuple[tuple[_KeyReader, _KeyReader], ...] = tuple(
            _text_keys(r, self.vocabulary) for r in self._rules
        )
        #: Per position: a reader of every value an allow's bases and obligations render
        #: for this rule, or None when its obligations read more (sinks: never memoised).
        self._allow_keys: tuple[_KeyReader | None, ...] = tuple(
            _allow_key(r, self.vocabulary) for r in self._rules
        )
        #: Positions of rules with masking obligations (their merge reads `st.pd`).
        self._masking: frozenset[int] = frozenset(r.pos for r in self._rules if r.obligations.mask)
        #: Per position: the rule's deduplicated legal bases when none is a template.
        self._static_bases: tuple[tuple[LegalBasis, ...] | None, ...] = tuple(
            _static_bases(r) for r in self._rules
        )
        #: Enforced, untimed, unwaivable non-deny rules their index entry decides alone.
        self._plain_keeps: frozenset[int] = frozenset(
            r.pos
            for r in self._rules
            if r.rest is None and not r.timed and not r.exceptions and r.enforced and not r.denies
        )
        #: Candidate mask -> its plan (see `_plan_for`); bounded, rebuilt on demand.
        self._plans: dict[int, _Plan] = {}
        #: Chunk positions -> its generated runner (shared by the plans that hold it).
        self._runners: dict[tuple[int, ...], _ChunkRunner | None] = {}
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
        self._cache: dict[Any, Any] = {}
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

    def _plan_for(self, mask: int) -> _Plan:
        """Group the candidate rules of one lookup by stage, audit rules apart (memoised)."""
        chunks: list[tuple[int, list[_Entry]]] = []
        audit: list[int] = []
        for pos in positions_of(mask):
            rule = self._rules[pos]
            if rule.stage_index == _AUDIT:
                audit.append(pos)
                continue
            kind = (_DENY if rule.denies else _KEEP) if rule.enforced else _SHADOW
            entry = (rule, rule.rest, rule.timed, kind, pos)
            if chunks and chunks[-1][0] == rule.stage_index:
                chunks[-1][1].append(entry)
            else:
                chunks.append((rule.stage_index, [entry]))
        plan = (
            tuple((stage, tuple(entries), self._runner_for(entries)) for stage, entries in chunks),
            tuple(audit),
        )
        if len(self._plans) > 4096:  # contexts can produce many masks; keep memory bounded
            self._plans.clear()
        self._plans[mask] = plan
        return plan

    def _runner_for(self, entries: Sequence[_Entry]) -> _ChunkRunner | None:
        key = tuple(entry[4] for entry in entries)
        if key in self._runners:
            return self._runners[key]
        if len(self._runners) > 4096:
            self._runners.clear()
        runner = self._runners[key] = _generate_chunk(entries)
        return runner

    @staticmethod
    def _rollback(
        entries: Sequence[_Entry],
        denies: list[CompiledRule],
        matched: list[CompiledRule],
        dry: list[str],
    ) -> None:
        """Undo what a chunk runner added before one of its checks raised."""
        mine = {entry[0].pos for entry in entries}
        ids = {entry[0].id for entry in entries}
        denies[:] = [r for r in denies if r.pos not in mine]
        matched[:] = [r for r in matched if r.pos not in mine]
        dry[:] = [i for i in dry if i not in ids]

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
            from gateway.policy.explain import summary_explanation

            decision = decision._replace(explanation=summary_explanation(decision))
        return decision

    def _failure(
        self,
        code: str,
        message: str,
        stage: str | None,
        rule: str | None,
        status: int | None = None,
        explanation: Any = None,
    ) -> Decision:
        return Decision(
            effect="deny",
            status=status or self._default_status,
            stage=stage,
            rules=(),
            dry_run=(),
            legal_basis=(),
            problem=Problem(
                type="licence" if (status or self._default_status) == 403 else "legal",
                title="Policy evaluation error",
                detail=f"the request could not be evaluated ({code}); it is refused",
            ),
            obligations=EMPTY_OBLIGATIONS,
            errors=(DecisionError(code, message, rule),),
            policy_revision=self.revision,
            explanation=explanation,
        )

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
                return self._failure(exc.code, exc.message, None, None)
            plan = plans.get(mask)
            if plan is None:
                plan = self._plan_for(mask)
            chunks, audit_part = plan
            if audit_part:
                audit_positions = audit_part
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
                            return self._failure(exc.code, exc.message, STAGES[_RESIDENCY], None)
                        if route_denial:
                            stage = _RESIDENCY
                            break
                    stage = rule_stage
                if runner is not None and outcomes is None:
                    if runner(ctx, st, at, denies, matched, dry):
                        continue
                    # A check raised: rerun the chunk below, which records the error.
                    self._rollback(entries, denies, matched, dry)
                for rule, rest, timed, kind, pos in entries:
                    if timed and (
                        (rule.start is not None and at < rule.start)
                        or (rule.end is not None and at >= rule.end)
                    ):
                        if outcomes is not None:
                            outcomes[pos] = INACTIVE
                        continue
                    try:
                        hit = rest is None or rest(ctx, st)
                        if (
                            hit
                            and rule.exceptions
                            and not self._waive(rule, ctx, st, at, waivers, outcomes)
                        ):
                            continue
                    except Exception as exc:  # SECURITY: fail closed, unexpected errors too
                        self._errored(rule, exc, denies, dry, errors, outcomes)
                        continue
                    if outcomes is not None:
                        outcomes[pos] = MATCHED if hit else NOT_MATCHED
                    if hit:
                        if kind == _DENY:
                            denies.append(rule)
                        elif kind == _KEEP:
                            matched.append(rule)
                        else:
                            dry.append(rule.id)
            if denies or route_denial:
                break
        if not (denies or route_denial or route_checked):
            try:
                routing, route_denial = self._route(ctx, matched)
            except EvalError as exc:
                return self._failure(exc.code, exc.message, STAGES[_RESIDENCY], None)
            if route_denial:
                stage = _RESIDENCY
        last_stage = stage if (denies or route_denial) else _AUDIT - 1
        audit_hits: list[CompiledRule] = []
        if audit_positions:
            audit_denies: list[CompiledRule] = []
            rules = self._rules
            for pos in audit_positions:
                rule = rules[pos]
                if pos in self._plain_keeps:  # matched by its index entry alone
                    if outcomes is not None:
                        outcomes[pos] = MATCHED
                    audit_hits.append(rule)
                    continue
                self._run(
                    rule,
                    ctx,
                    st,
                    at,
                    audit_denies,
                    audit_hits,
                    dry,
                    errors,
                    waivers,
                    outcomes,
                )
            audit, audit_errors = self._audit(audit_hits)
            errors.extend(audit_errors)
        else:
            audit = _NO_AUDIT
        if len(dry) > 1:
            dry.sort(key=self._positions.__getitem__)
        if denies or route_denial or errors:
            decision = self._deny(
                ctx, st, denies, matched, audit_hits, dry, errors, waivers, audit, route_denial
            )
        else:
            decision = self._allow(ctx, st, matched, audit_hits, dry, waivers, audit, routing)
        if explain:
            from gateway.policy.explain import build_explanation

            explanation = build_explanation(self, decision, ctx, st, outcomes or {}, last_stage)
            decision = decision._replace(explanation=explanation)
        return decision

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

    # ------------------------------------------------------------------ routing

    def _route(
        self, ctx: Mapping[str, Any], matched: Sequence[CompiledRule]
    ) -> tuple[Routing | None, bool]:
        routes = [r.obligations.route for r in matched if r.obligations.route is not None]
        if not routes:  # most requests: nothing to route
            return None, False
        if len(routes) == 1:
            regions, mechanisms = routes[0]
        else:
            regions = routes[0][0]
            for other, _mechs in routes[1:]:
                regions = self._intersect(regions, other)
            mechanisms = frozenset().union(*(m for _r, m in routes))
        candidates, eligible = _eligible_backends(ctx.get("backends"), routes)
        key = ("routing", regions, mechanisms)
        shown = self._cache.get(key)
        if shown is None:
            shown = self._cache[key] = (tuple(self._compress(regions)), tuple(sorted(mechanisms)))
        routing = Routing(shown[0], eligible, shown[1])
        if candidates:
            denied = not eligible
        else:  # no candidate list: only an empty region intersection without a fallback
            denied = not regions and not all(m for _r, m in routes)
        return routing, denied

    def _intersect(self, a: frozenset[str], b: frozenset[str]) -> frozenset[str]:
        key = ("intersect", a, b)
        hit = self._cache.get(key)
        if hit is None:
            hit = self._remember(key, self.vocabulary.intersect(a, b))
        return hit

    def _compress(self, regions: frozenset[str]) -> list[str]:
        key = ("compress", regions)
        hit = self._cache.get(key)
        if hit is None:
            hit = self._remember(key, self.vocabulary.compress(regions))
        return hit

    # ------------------------------------------------------------------ outcomes

    def _audit(self, hits: Sequence[CompiledRule]) -> tuple[AuditObligation, list[DecisionError]]:
        if not hits:
            return _NO_AUDIT, []
        # The merge depends only on which audit rules matched: memoise it.
        key = ("audit", *[r.pos for r in hits])
        found = self._cache.get(key)
        if found is None:
            found = self._remember(key, self._merge_audit(hits))
        audit, errors = found
        return audit, list(errors)

    def _merge_audit(
        self, hits: Sequence[CompiledRule]
    ) -> tuple[AuditObligation, tuple[DecisionError, ...]]:
        retention: int | None = None
        storage: frozenset[str] | None = None
        for rule in hits:
            ob = rule.obligations
            if ob.retention_days is not None:
                retention = max(retention or 0, ob.retention_days)
            if ob.storage_region is not None:
                storage = (
                    ob.storage_region
                    if storage is None
                    else self._intersect(storage, ob.storage_region)
                )
        region = None
        errors: list[DecisionError] = []
        if storage is not None:
            names = self._compress(storage)
            if len(names) == 1:
                region = names[0]
            else:
                errors.append(
                    DecisionError(
                        "audit_storage_conflict",
                        "audit rules require incompatible storage regions",
                        hits[-1].id,
                    )
                )
        return AuditObligation(retention, region), tuple(errors)

    def _bases(
        self,
        ctx: Mapping[str, Any],
        st: EvalState,
        rules: Sequence[CompiledRule],
        errors: list[DecisionError],
    ) -> tuple[LegalBasis, ...]:
        if len(rules) == 1:
            static = self._static_bases[rules[0].pos]
            if static is not None:
                return static
        # The bases depend only on the rules and the values their templates read.
        key = self._memo_key("bases", rules, ctx, st, 0)
        if key is None:
            return self._render_bases(ctx, st, rules, errors)
        found = self._cache.get(key)
        if found is None:
            mine: list[DecisionError] = []
            found = self._render_bases(ctx, st, rules, mine)
            if mine:
                errors.extend(mine)
                return found
            self._remember(key, found)
        return found

    def _render_bases(
        self,
        ctx: Mapping[str, Any],
        st: EvalState,
        rules: Sequence[CompiledRule],
        errors: list[DecisionError],
    ) -> tuple[LegalBasis, ...]:
        seen: dict[tuple[str, str], LegalBasis] = {}
        for rule in rules:
            for basis in rule.basis:
                rendered = basis.static
                if rendered is None:
                    try:
                        rendered = basis.render(ctx, st)
                    except EvalError as exc:
                        errors.append(DecisionError(exc.code, exc.message, rule.id))
                        continue
                seen.setdefault((rendered.regime, rendered.ref), rendered)
        return tuple(seen.values())

    def _deny(
        self,
        ctx: Mapping[str, Any],
        st: EvalState,
        denies: Sequence[CompiledRule],
        matched: Sequence[CompiledRule],
        audit_hits: Sequence[CompiledRule],
        dry: list[str],
        errors: list[DecisionError],
        waivers: list[Waiver],
        audit: AuditObligation,
        route_denial: bool,
    ) -> Decision:
        tail_key: tuple[Any, ...] | None = None
        if denies and not errors:
            # The common denial is a function of the deny rules, the audit rules that
            # matched (rule ids, audit duties) and the values its texts read: memoise
            # the whole decision on exactly those, shadow hits and waivers aside.
            texts_key = self._memo_key("texts", denies, ctx, st, 1)
            if texts_key is not None:
                tail_key = (
                    ("denial", texts_key, tuple([r.pos for r in audit_hits]))
                    if audit_hits
                    else ("denial", texts_key)
                )
                known: Decision | None = self._cache.get(tail_key)
                if known is not None:
                    if dry or waivers:
                        return known._replace(dry_run=tuple(dry), waivers=tuple(waivers))
                    return known
        if denies:
            deciding = list(denies)
            stage = STAGES[deciding[0].stage_index]
        elif route_denial:
            deciding = [r for r in matched if r.obligations.route is not None]
            stage = STAGES[_RESIDENCY]
        else:  # only audit-stage errors
            deciding = []
            stage = STAGES[_AUDIT]
        if errors:
            failed = {e.rule for e in errors}
            real = [r for r in deciding if r.denies and r.id not in failed]
        elif denies:
            # Without errors only matched deny rules reach `denies` (an erroring rule
            # always adds an error): the common denial skips the filter.
            real = deciding
        else:
            real = [r for r in deciding if r.denies]
        status = (
            real[0].status if real else (deciding[0].status if deciding else self._default_status)
        )
        if route_denial and not denies:
            status = 451
        if audit_hits:
            rule_ids = tuple(dict.fromkeys(r.id for r in (*deciding, *audit_hits)))
        elif len(deciding) == 1:
            rule_ids = self._ids[deciding[0].pos]
        else:
            rule_ids = tuple(r.id for r in deciding)
        obligations = EMPTY_OBLIGATIONS if audit is _NO_AUDIT else self._audit_only(audit)
        if denies and not errors:
            # The common denial: its texts depend only on the deciding rules and the
            # values their templates read, so they are memoised on exactly those.
            key = self._memo_key("texts", deciding, ctx, st, 1)
            texts = self._cache.get(key) if key is not None else None
            if texts is None:
                render_errors: list[DecisionError] = []
                bases = self._bases(ctx, st, deciding, render_errors)
                if not render_errors:
                    first = real[0]
                    assert first.problem is not None
                    problem = first.problem.static or _render_problem(first.problem, ctx, st)
                    if key is not None:
                        self._remember(key, (bases, problem))
            else:
                bases, problem = texts
                render_errors = []
            if not render_errors:
                decision = Decision(
                    "deny",
                    status,
                    stage,
                    rule_ids,
                    (),
                    bases,
                    problem,
                    obligations,
                    (),
                    self.revision,
                    (),
                )
                if tail_key is not None:
                    self._remember(tail_key, decision)
                if dry or waivers:
                    return decision._replace(dry_run=tuple(dry), waivers=tuple(waivers))
                return decision
        render_errors = []
        bases = self._bases(ctx, st, deciding, render_errors)
        if errors or render_errors:
            all_errors = (*errors, *render_errors)
            problem = Problem(
                type="licence" if status == 403 else "legal",
                title="Policy evaluation error",
                detail=f"the request could not be evaluated ({all_errors[0].code}); it is refused",
            )
        elif route_denial:
            problem = self._route_problem(ctx, deciding)
            all_errors = ()
        else:
            first = real[0]
            assert first.problem is not None
            problem = first.problem.static or _render_problem(first.problem, ctx, st)
            all_errors = ()
        # Positional arguments: this runs for every denial.
        return Decision(
            "deny",
            status,
            stage,
            rule_ids,
            tuple(dry),
            bases,
            problem,
            obligations,
            tuple(all_errors),
            self.revision,
            tuple(waivers),
        )

    def _audit_only(self, audit: AuditObligation) -> Obligations:
        """The obligations of a denial: its audit duties alone (memoised)."""
        key = ("audit-only", audit)
        found = self._cache.get(key)
        if found is None:
            found = self._remember(key, Obligations(audit=audit))
        return found

    def _remember(self, key: Any, value: _T) -> _T:
        """Store a memoised result; the memo is emptied when it grows past its bound."""
        if len(self._cache) > 4096:
            self._cache.clear()
        self._cache[key] = value
        return value

    def _memo_key(
        self,
        tag: str,
        rules: Sequence[CompiledRule],
        ctx: Mapping[str, Any],
        st: EvalState,
        first_reader: int,
    ) -> tuple[Any, ...] | None:
        """Memo key from the values the rules' templates read, or None when not memoisable.

        Reader 0 reads a rule's legal-basis fields; reader 1 also its problem text, used for
        the first (deciding) rule of a denial.
        """
        readers = self._text_keys
        if len(rules) == 1:
            pos = rules[0].pos
            values = readers[pos][first_reader](ctx, st)
            return None if values is None else (tag, pos, values)
        parts: list[Any] = []
        for i, rule in enumerate(rules):
            values = readers[rule.pos][0 if i else first_reader](ctx, st)
            if values is None:
                return None
            parts.extend(values)
        return (tag, tuple(r.pos for r in rules), tuple(parts))

    def _route_problem(self, ctx: Mapping[str, Any], rules: Sequence[CompiledRule]) -> Problem:
        regions = rules[0].obligations.route[0] if rules[0].obligations.route else frozenset()
        for rule in rules[1:]:
            if rule.obligations.route is not None:
                regions = self._intersect(regions, rule.obligations.route[0])
        allowed = ", ".join(self._compress(regions)) or "none"
        request = ctx.get("request")
        model = request.get("model") if isinstance(request, Mapping) else None
        regime = rules[0].basis[0].regime if rules and rules[0].basis else None
        info = self.vocabulary.regimes.get(regime) if regime else None
        return Problem(
            type="legal",
            title="Unavailable For Legal Reasons",
            detail=f"no backend serving model `{model}` lies in the regions this personal "
            f"data may be processed in ({allowed}), and none has a transfer mechanism "
            "that would allow it",
            remedy=None,
            demanding_party=info.demanding_party if info else None,
            applies_to="personal data that must stay in the listed regions",
            jurisdiction=info.jurisdiction if info else None,
        )

    def _allow(
        self,
        ctx: Mapping[str, Any],
        st: EvalState,
        matched: Sequence[CompiledRule],
        audit_hits: Sequence[CompiledRule],
        dry: list[str],
        waivers: list[Waiver],
        audit: AuditObligation,
        routing: Routing | None,
    ) -> Decision:
        allowed = False
        for rule in matched:
            if rule.allows:
                allowed = True
                break
        everything = (*matched, *audit_hits) if audit_hits else matched
        if not allowed and self._default_effect == "deny":
            errors: list[DecisionError] = []
            spec = self._default_problem
            problem = spec.static or _render_problem(spec, ctx, st)
            obligations = EMPTY_OBLIGATIONS if audit is _NO_AUDIT else Obligations(audit=audit)
            return Decision(
                "deny",
                self._default_status,
                "default",
                tuple(r.id for r in everything),
                tuple(dry),
                self._bases(ctx, st, matched, errors),
                problem,
                obligations,
                tuple(errors),
                self.revision,
                tuple(waivers),
            )
        # An allow's rule ids, bases and obligations depend only on the matching rules,
        # the audit duties, the routing, the personal data found (when a rule masks) and
        # the values their templates read: memoised on exactly those.
        key = self._allow_key(ctx, st, everything, audit, routing)
        found = self._cache.get(key) if key is not None else None
        if found is None:
            errors = []
            try:
                obligations = self._merge(ctx, st, matched, audit, routing)
            except EvalError as exc:
                return self._failure(exc.code, exc.message, None, getattr(exc, "rule", None))
            bases = self._bases(ctx, st, everything, errors)
            if errors:
                return self._failure(errors[0].code, errors[0].message, None, errors[0].rule)
            found = (tuple(r.id for r in everything), bases, obligations)
            if key is not None:
                self._remember(key, found)
        # Positional arguments: this runs for every allow.
        return Decision(
            "allow",
            200,
            None,
            found[0],
            tuple(dry),
            found[1],
            None,
            found[2],
            (),
            self.revision,
            tuple(waivers),
        )

    def _allow_key(
        self,
        ctx: Mapping[str, Any],
        st: EvalState,
        everything: Sequence[CompiledRule],
        audit: AuditObligation,
        routing: Routing | None,
    ) -> tuple[Any, ...] | None:
        """Memo key for an allow's rule ids, bases and obligations (None: not memoisable)."""
        readers = self._allow_keys
        masking = self._masking
        positions = []
        values: list[Any] = []
        reads_pd = False
        for rule in everything:
            pos = rule.pos
            reader = readers[pos]
            if reader is None:
                return None
            read = reader(ctx, st)
            if read is None:
                return None
            positions.append(pos)
            if read:
                values.extend(read)
            if pos in masking:
                reads_pd = True
        return (
            "allow",
            tuple(positions),
            audit,
            routing,
            frozenset(st.pd) if reads_pd else None,
            tuple(values),
        )

    def _merge(
        self,
        ctx: Mapping[str, Any],
        st: EvalState,
        matched: Sequence[CompiledRule],
        audit: AuditObligation,
        routing: Routing | None,
    ) -> Obligations:
        if routing is None and audit is _NO_AUDIT:
            for rule in matched:
                if not rule.obligations.empty:
                    break
            else:
                return EMPTY_OBLIGATIONS
        mask: dict[str, MaskAction] = {}
        mask_paths: dict[str, MaskAction] = {}
        headers: dict[tuple[str, str], None] = {}
        marks: dict[ImageMark, None] = {}
        sink_categories: set[str] = set()
        sale_or_share = False
        found: frozenset[str] | None = None
        any_sinks = False
        for rule in matched:
            ob = rule.obligations
            if ob.empty:
                continue
            try:
                if ob.mask:
                    if found is None:
                        found = frozenset(st.pd)  # validated by `load_sections`
                    for categories, paths, action in ob.mask:
                        for cat in categories:
                            if cat in found:
                                mask[cat] = _stronger(mask.get(cat), action)
                        for path in paths:
                            mask_paths[path] = _stronger(mask_paths.get(path), action)
                for name, template in ob.headers:
                    headers[(name, template.render(ctx, st))] = None
                for scheme, value, fields in ob.image_marks:
                    rendered = tuple((k, t.render(ctx, st)) for k, t in fields)
                    marks[ImageMark(scheme, value, rendered)] = None
            except EvalError as exc:
                exc.rule = rule.id  # type: ignore[attr-defined]
                raise
            if ob.sinks is not None:
                any_sinks = True
                sink_categories |= ob.sinks[0]
                sale_or_share = sale_or_share or ob.sinks[1]
        suppression = None
        if any_sinks:
            suppression = SinkSuppression(
                tuple(sorted(sink_categories)),
                sale_or_share,
                _suppressed_sinks(ctx.get("sinks"), sink_categories, sale_or_share),
            )
        if not (mask or mask_paths or headers or marks or suppression or routing) and (
            audit is _NO_AUDIT
        ):
            return EMPTY_OBLIGATIONS
        return Obligations(
            mask=dict(sorted(mask.items())),
            mask_paths=dict(sorted(mask_paths.items())),
            routing=routing,
            headers=tuple(headers),
            image_marks=tuple(marks),
            suppress_sinks=suppression,
            audit=audit,
        )


def _render_problem(spec: CompiledProblem, ctx: Mapping[str, Any], st: EvalState) -> Problem:
    remedy = None
    if spec.asks:
        missing = [header for _fact, header, read in spec.asks if _absent(read, ctx, st)]
        if missing:
            # The rule holds only because a declaration is missing: ask for it.
            named = ", ".join(missing)
            return Problem(
                type=spec.type,
                title=spec.title,
                detail=f"{named} was not declared; without it this request may fall under the "
                f"rule: {spec.about or spec.title}. It is refused until the header is sent",
                remedy=Remedy(
                    f"declare {named} (send the header with the request)", missing[0], None
                ),
                demanding_party=spec.demanding_party,
                applies_to=spec.applies_to,
                jurisdiction=spec.jurisdiction,
            )
    if spec.remedy_text is not None:
        remedy = Remedy(
            spec.remedy_text.render(ctx, st, null="unknown"), spec.remedy_header, spec.remedy_value
        )
    return Problem(
        type=spec.type,
        title=spec.title,
        detail=spec.detail.render(ctx, st, null="unknown"),
        remedy=remedy,
        demanding_party=spec.demanding_party,
        applies_to=spec.applies_to,
        jurisdiction=spec.jurisdiction,
    )


def _absent(read: Any, ctx: Mapping[str, Any], st: EvalState) -> bool:
    try:
        value = read(ctx, st)
    except EvalError:
        return True
    return value is None or value is ABSENT


def _text_keys(rule: CompiledRule, vocabulary: Vocabulary) -> tuple[_KeyReader, _KeyReader]:
    bases = [
        part[0]
        for basis in rule.basis
        if basis.static is None
        for part in basis.ref.parts
        if part.__class__ is tuple
    ]
    texts = list(bases)
    if rule.problem is not None and rule.problem.static is None:
        for template in (rule.problem.detail, rule.problem.remedy_text):
            if template is not None:
                texts.extend(p[0] for p in template.parts if p.__class__ is tuple)
        texts.extend(fact for fact, _header, _read in rule.problem.asks)
    return generate_key_reader(vocabulary, bases), generate_key_reader(vocabulary, texts)


def _generate_chunk(entries: Sequence[_Entry]) -> _ChunkRunner | None:
    """Generate a function running one chunk's checks in sequence, with the outcome of
    each match written out, instead of the general loop's per-entry dispatch.

    Same order and results as the loop in `_decide` when nothing raises; any exception
    makes it return False (the loop then reruns the chunk and records the error). Rules
    with exceptions keep the general loop (None).
    """
    if any(entry[0].exceptions for entry in entries):
        return None
    constants: dict[str, Any] = {}

    def const(value: Any) -> str:
        name = f"K{len(constants)}"
        constants[name] = value
        return name

    lines = ["def chunk(ctx, st, at, denies, matched, dry):", "    try:"]
    for rule, rest, timed, kind, _pos in entries:
        tests = []
        if timed:
            if rule.start is not None:
                tests.append(f"not (at < {const(rule.start)})")
            if rule.end is not None:
                tests.append(f"not (at >= {const(rule.end)})")
        if rest is not None:
            tests.append(f"{const(rest)}(ctx, st)")
        if kind == _DENY:
            action = f"denies.append({const(rule)})"
        elif kind == _KEEP:
            action = f"matched.append({const(rule)})"
        else:
            action = f"dry.append({const(rule.id)})"
        if tests:
            lines.append(f"        if {' and '.join(tests)}:")
            lines.append(f"            {action}")
        else:
            lines.append(f"        {action}")
    lines += ["    except Exception:", "        return False", "    return True"]
    source = "\n".join(lines) + "\n"
    # SECURITY: rules, predicates and times are bound constants; the source holds only
    # names chosen here.
    exec(compile(source, "<policy:chunk>", "exec"), constants)
    runner: _ChunkRunner = constants["chunk"]
    runner.__doc__ = source
    return runner


def _allow_key(rule: CompiledRule, vocabulary: Vocabulary) -> _KeyReader | None:
    ob = rule.obligations
    if ob.sinks is not None:  # the suppressed sinks come from the context's sink list
        return None
    paths = [
        part[0]
        for basis in rule.basis
        if basis.static is None
        for part in basis.ref.parts
        if part.__class__ is tuple
    ]
    templates = [template for _name, template in ob.headers]
    templates.extend(t for _scheme, _value, fields in ob.image_marks for _k, t in fields)
    for template in templates:
        paths.extend(p[0] for p in template.parts if p.__class__ is tuple)
    return generate_key_reader(vocabulary, paths)


def _static_bases(rule: CompiledRule) -> tuple[LegalBasis, ...] | None:
    seen: dict[tuple[str, str], LegalBasis] = {}
    for basis in rule.basis:
        if basis.static is None:
            return None
        seen.setdefault((basis.static.regime, basis.static.ref), basis.static)
    return tuple(seen.values())


def _stronger(current: MaskAction | None, new: MaskAction) -> MaskAction:
    if current is None:
        return new
    a, b = _MASK_RANK[current.method], _MASK_RANK[new.method]
    if a != b:
        return current if a > b else new
    if current.keep is not None and new.keep is not None and new.keep < current.keep:
        return new
    return current


def _eligible_backends(
    raw: object, routes: Sequence[tuple[frozenset[str], frozenset[str]]]
) -> tuple[int, tuple[str, ...]]:
    """Count the candidate backends and list those every route constraint allows."""
    if raw is None:
        return 0, ()
    if raw.__class__ is not list:
        raise EvalError("context_type_error", "`backends` must be a list")
    eligible = []
    for item in raw:
        if item.__class__ is not dict and not isinstance(item, Mapping):
            raise EvalError("context_type_error", "each backend must be an object")
        backend_id = item.get("id")
        region = item.get("region")
        mechs = item.get("transfer_mechanisms") or ()
        if (
            backend_id.__class__ is not str
            or (region is not None and region.__class__ is not str)
            or (mechs and mechs.__class__ is not list)
        ):
            raise EvalError(
                "context_type_error", "a backend has a malformed id, region or mechanisms"
            )
        for mech in mechs:
            if mech.__class__ is not str:
                raise EvalError("context_type_error", f"backend `{backend_id}` has a bad mechanism")
        for allowed, allowed_mechs in routes:
            if region is not None and region_in(region, allowed):
                continue
            if allowed_mechs and any(m in allowed_mechs for m in mechs):
                continue
            break
        else:
            eligible.append(backend_id)
    return len(raw), tuple(eligible)


def _suppressed_sinks(raw: object, categories: set[str], sale_or_share: bool) -> tuple[str, ...]:
    if raw is None:
        return ()
    if type(raw) is not list:
        raise EvalError("context_type_error", "`sinks` must be a list")
    out = []
    for item in raw:
        if not isinstance(item, Mapping) or type(item.get("id")) is not str:
            raise EvalError("context_type_error", "each sink needs a string `id`")
        if item.get("category") in categories or (
            sale_or_share and item.get("is_sale_or_share") is True
        ):
            out.append(item["id"])
    return tuple(out)
