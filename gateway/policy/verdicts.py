"""The decision of one request from the rules that matched: a denial with its deciding
rules, legal bases and problem, or an allow with its merged obligations.

Rule 1: a denial's texts and an allow's obligations depend only on the matching rules and
the context values their templates read; both are memoised on exactly those (generated key
readers, `codegen.generate_key_reader`), so a repeated request renders nothing.
Rule 2: a rule, a template or a merge that cannot be evaluated turns the decision into a
deny naming the error (fail closed).
"""

from __future__ import annotations

from collections.abc import Callable, Mapping, Sequence
from typing import Any

from gateway.policy.codegen import generate_key_reader
from gateway.policy.decision import (
    EMPTY_OBLIGATIONS,
    AuditObligation,
    Decision,
    DecisionError,
    LegalBasis,
    Obligations,
    Problem,
    Remedy,
    Routing,
    Waiver,
)
from gateway.policy.ir import CompiledProblem, CompiledRule
from gateway.policy.language import STAGES
from gateway.policy.obligations import NO_AUDIT, ObligationMerger
from gateway.policy.state import ABSENT, EvalError, EvalState
from gateway.policy.vocabulary import Vocabulary

__all__ = [
    "DecisionBuilder",
    "KeyReader",
    "allow_key_reader",
    "static_bases",
    "text_key_readers",
]

#: Reads the values some templates render, as a memo key part (None: do not memoise).
KeyReader = Callable[[Mapping[str, Any], EvalState], "tuple[Any, ...] | None"]

_RESIDENCY = STAGES.index("residency")
_AUDIT = STAGES.index("audit")


class DecisionBuilder(ObligationMerger):
    """The denial and allow steps of `PolicySet` (a base class: its state is the policy
    set's)."""

    __slots__ = ()
    revision: str
    _ids: tuple[tuple[str], ...]
    _text_keys: tuple[tuple[KeyReader, KeyReader], ...]
    _allow_keys: tuple[KeyReader | None, ...]
    _masking: frozenset[int]
    _static_bases: tuple[tuple[LegalBasis, ...] | None, ...]
    _default_effect: str
    _default_status: int
    _default_problem: CompiledProblem

    def _failure(
        self,
        code: str,
        message: str,
        stage: str | None,
        rule: str | None,
        status: int | None = None,
        explanation: Any = None,
    ) -> Decision:
        """A denial because the request could not be evaluated (fail closed)."""
        return Decision(
            effect="deny",
            status=status or self._default_status,
            stage=stage,
            rules=(),
            dry_run=(),
            legal_basis=(),
            problem=_error_problem(status or self._default_status, code),
            obligations=EMPTY_OBLIGATIONS,
            errors=(DecisionError(code, message, rule),),
            policy_revision=self.revision,
            explanation=explanation,
        )

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
            self._cache.remember(key, found)
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
        deciding, stage = _deciding(denies, matched, route_denial)
        real = _real_denials(deciding, denies, errors)
        status = (
            real[0].status if real else (deciding[0].status if deciding else self._default_status)
        )
        if route_denial and not denies:
            status = 451
        head = (status, stage, self._denial_rule_ids(deciding, audit_hits))
        obligations = EMPTY_OBLIGATIONS if audit is NO_AUDIT else self._audit_only(audit)
        if denies and not errors:
            decision = self._common_denial(ctx, st, deciding, real[0], head, obligations)
            if decision is not None:
                if tail_key is not None:
                    self._cache.remember(tail_key, decision)
                if dry or waivers:
                    return decision._replace(dry_run=tuple(dry), waivers=tuple(waivers))
                return decision
        render_errors: list[DecisionError] = []
        bases = self._bases(ctx, st, deciding, render_errors)
        if errors or render_errors:
            all_errors = (*errors, *render_errors)
            problem = _error_problem(status, all_errors[0].code)
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
            head[2],
            tuple(dry),
            bases,
            problem,
            obligations,
            tuple(all_errors),
            self.revision,
            tuple(waivers),
        )

    def _denial_rule_ids(
        self, deciding: Sequence[CompiledRule], audit_hits: Sequence[CompiledRule]
    ) -> tuple[str, ...]:
        """A denial's rule ids: the deciding rules, then the audit rules that matched."""
        if audit_hits:
            return tuple(dict.fromkeys(r.id for r in (*deciding, *audit_hits)))
        if len(deciding) == 1:
            return self._ids[deciding[0].pos]
        return tuple(r.id for r in deciding)

    def _common_denial(
        self,
        ctx: Mapping[str, Any],
        st: EvalState,
        deciding: Sequence[CompiledRule],
        first: CompiledRule,
        head: tuple[int, str, tuple[str, ...]],
        obligations: Obligations,
    ) -> Decision | None:
        """A denial by matched deny rules with no errors (None when a text fails to render).

        Its texts depend only on the deciding rules and the values their templates read, so
        they are memoised on exactly those.
        """
        key = self._memo_key("texts", deciding, ctx, st, 1)
        texts = self._cache.get(key) if key is not None else None
        if texts is None:
            render_errors: list[DecisionError] = []
            bases = self._bases(ctx, st, deciding, render_errors)
            if render_errors:
                return None
            assert first.problem is not None
            problem = first.problem.static or _render_problem(first.problem, ctx, st)
            if key is not None:
                self._cache.remember(key, (bases, problem))
        else:
            bases, problem = texts
        status, stage, rule_ids = head
        return Decision(
            "deny", status, stage, rule_ids, (), bases, problem, obligations, (), self.revision, ()
        )

    def _audit_only(self, audit: AuditObligation) -> Obligations:
        """The obligations of a denial: its audit duties alone (memoised)."""
        key = ("audit-only", audit)
        found: Obligations | None = self._cache.get(key)
        if found is None:
            found = self._cache.remember(key, Obligations(audit=audit))
        return found

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
            obligations = EMPTY_OBLIGATIONS if audit is NO_AUDIT else Obligations(audit=audit)
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
                self._cache.remember(key, found)
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


def _deciding(
    denies: Sequence[CompiledRule], matched: Sequence[CompiledRule], route_denial: bool
) -> tuple[Sequence[CompiledRule], str]:
    """The rules a denial names as deciding it, and its stage."""
    if denies:
        return list(denies), STAGES[denies[0].stage_index]
    if route_denial:
        return [r for r in matched if r.obligations.route is not None], STAGES[_RESIDENCY]
    return [], STAGES[_AUDIT]  # only audit-stage errors


def _real_denials(
    deciding: Sequence[CompiledRule], denies: Sequence[CompiledRule], errors: list[DecisionError]
) -> Sequence[CompiledRule]:
    """The deciding rules that deny by matching (not by failing to evaluate)."""
    if errors:
        failed = {e.rule for e in errors}
        return [r for r in deciding if r.denies and r.id not in failed]
    if denies:
        # Without errors only matched deny rules reach `denies` (an erroring rule always
        # adds an error): the common denial skips the filter.
        return deciding
    return [r for r in deciding if r.denies]


def _error_problem(status: int, code: str) -> Problem:
    """The problem of a decision refused because something could not be evaluated."""
    return Problem(
        type="licence" if status == 403 else "legal",
        title="Policy evaluation error",
        detail=f"the request could not be evaluated ({code}); it is refused",
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


def text_key_readers(rule: CompiledRule, vocabulary: Vocabulary) -> tuple[KeyReader, KeyReader]:
    """Readers of the values a denial by `rule` renders: its legal bases; bases and problem."""
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


def allow_key_reader(rule: CompiledRule, vocabulary: Vocabulary) -> KeyReader | None:
    """A reader of every value an allow by `rule` renders (None: sinks, never memoised)."""
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


def static_bases(rule: CompiledRule) -> tuple[LegalBasis, ...] | None:
    """The rule's deduplicated legal bases when none is a template (None otherwise)."""
    seen: dict[tuple[str, str], LegalBasis] = {}
    for basis in rule.basis:
        if basis.static is None:
            return None
        seen.setdefault((basis.static.regime, basis.static.ref), basis.static)
    return tuple(seen.values())
