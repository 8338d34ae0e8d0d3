"""Parsed documents -> an immutable, indexed `PolicySet`, through a named stage table.

Stages (`COMPILE_STAGES`, in order; a stage that reports errors stops the pipeline, since
later stages rely on its results):

1. `collect`    exactly one vocabulary, at most one settings document, the packs
2. `identify`   rule ids unique across packs (a conflict names both places)
3. `typecheck`  every field, operator, literal and reference against the vocabulary and the
                request-context table, with "did you mean"; literals normalised
4. `check`      per-rule consistency: obligations allowed in the rule's stage, statuses,
                effective windows, legal bases, conditions that can never hold
5. `lower`      conditions -> closures; templates, obligations and problems prepared
6. `index`      per rule, one top-level equality/membership test becomes an index guard
7. `freeze`     the `PolicySet` with its revision (hash of the canonical sources)
"""

from __future__ import annotations

import dataclasses
import datetime as dt
from collections.abc import Callable, Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

from gateway.errors import Diagnostic, Location, describe_value, did_you_mean, has_errors
from gateway.policy.ast import (
    AllOf,
    AnyOf,
    Condition,
    FieldRef,
    Not,
    ObligationsSpec,
    PackDoc,
    ProblemSpec,
    RuleSpec,
    SettingsDoc,
    Test,
)
from gateway.policy.codegen import (
    CodeBuilder,
    TypedLeaf,
    fast_template,
    generate_candidates,
    generate_predicate,
    leaf_source,
    positions_of,
)
from gateway.policy.decision import LegalBasis, MaskAction, Problem, Remedy
from gateway.policy.language import (
    CONTEXT_FIELDS,
    DECLARED_FACTS,
    METHODS,
    OPERATORS,
    STAGE_OBLIGATIONS,
    STAGES,
    declared_fact_of,
)
from gateway.policy.parse import ParsedFile, UnparsedOperand, parse_time
from gateway.policy.predicates import (
    ABSENT,
    PRESENT,
    Getter,
    Predicate,
    Template,
    compile_template,
    interval_of,
    make_getter,
    make_key_function,
    make_predicate,
    template_fields,
)
from gateway.policy.vocabulary import Vocabulary, region_in
from gateway.source import LoadedDocument, format_path

__all__ = [
    "COMPILE_STAGES",
    "fields_read",
    "LOOKUP_GROUPS",
    "CNode",
    "CompiledRule",
    "CompileResult",
    "IndexGuard",
    "compile_documents",
    "resolve_field_type",
]

REF = "policy_ref_error"
TYPE = "policy_type_error"
SCHEMA = "policy_schema_error"
CONFLICT = "policy_conflict"
UNREACHABLE = "policy_unreachable"
ABSENCE = "policy_absence_implicit"
BLOCKING_STATUTE = "policy_blocking_statute"

_DEFAULT_STATUS = {"licence": 403}

#: Stages whose index lookups are generated together, evaluated in this order. The audit
#: stage rides with the first group because it runs on every decision.
LOOKUP_GROUPS: tuple[tuple[str, ...], ...] = (
    ("sanctions", "audit"),
    ("licence",),
    ("lawful_basis", "residency", "minimisation", "output"),
)
_INDEXABLE_OPS = frozenset({"eq", "in", "contains", "contains_any"})


# --------------------------------------------------------------------------- compiled forms


@dataclass(frozen=True, slots=True)
class IndexGuard:
    """A top-level condition a rule cannot match without, as index entries.

    Each alternative is `(field, type, keys)`; the guard holds exactly when the context
    value of some alternative's field yields one of its keys. A single test has one
    alternative; an `any` of indexable tests has one per test.
    """

    alternatives: tuple[tuple[str, str, frozenset[Any]], ...]

    @property
    def size(self) -> int:
        """Total number of keys (smaller guards make better index entries)."""
        return sum(len(keys) for _f, _t, keys in self.alternatives)


@dataclass(frozen=True, slots=True)
class CNode:
    """A compiled condition node: the closure plus what explanations show."""

    kind: str  # test | all | any | not
    text: str
    location: Location
    fn: Predicate
    children: tuple[CNode, ...] = ()
    getter: Getter | None = None
    guard: IndexGuard | None = None
    leaf: TypedLeaf | None = None


@dataclass(frozen=True, slots=True)
class CompiledException:
    """A lowered rule exception."""

    until: dt.datetime  # exclusive end (the day after `until`)
    until_text: str
    ticket: str
    test: Predicate | None


@dataclass(frozen=True, slots=True)
class CompiledBasis:
    """A legal basis whose ref may be a template."""

    regime: str
    ref: Template
    url: str | None

    static: LegalBasis | None = None  # the rendered basis when `ref` names no field

    def render(self, ctx: Mapping[str, Any], st: Any) -> LegalBasis:
        """Render the basis for one context."""
        if self.static is not None:
            return self.static
        return LegalBasis(self.regime, self.ref.render(ctx, st), self.url)


@dataclass(frozen=True, slots=True)
class CompiledProblem:
    """The problem a deny rule reports, with templates ready."""

    type: str
    title: str
    detail: Template
    remedy_text: Template | None
    remedy_header: str | None
    remedy_value: str | None
    demanding_party: str | None
    applies_to: str | None
    jurisdiction: str | None
    #: The rendered problem when no text names a field (most denials).
    static: Problem | None = None
    #: Declared facts the rule asks for when absent: (fact, header, reader).
    asks: tuple[tuple[str, str, Getter], ...] = ()
    #: What the rule is about, for the problem that asks for a missing fact.
    about: str | None = None


@dataclass(frozen=True, slots=True)
class CompiledObligations:
    """Obligations with region sets expanded and templates prepared."""

    mask: tuple[tuple[tuple[str, ...], tuple[str, ...], MaskAction], ...] = ()
    route: tuple[frozenset[str], frozenset[str]] | None = None
    headers: tuple[tuple[str, Template], ...] = ()
    image_marks: tuple[tuple[str, str | None, tuple[tuple[str, Template], ...]], ...] = ()
    sinks: tuple[frozenset[str], bool] | None = None
    retention_days: int | None = None
    storage_region: frozenset[str] | None = None

    #: True when the rule sets no obligation (computed once; see `_lower_obligations`).
    empty: bool = True


@dataclass(frozen=True, slots=True)
class CompiledRule:
    """One rule ready to evaluate."""

    spec: RuleSpec
    pos: int
    stage_index: int
    node: CNode | None
    rest: Predicate | None  # the condition without its index guard (None: nothing left)
    guard: IndexGuard | None
    start: dt.datetime | None
    end: dt.datetime | None  # exclusive
    exceptions: tuple[CompiledException, ...]
    basis: tuple[CompiledBasis, ...]
    status: int
    problem: CompiledProblem | None
    obligations: CompiledObligations
    id: str = ""
    allows: bool = False
    #: True when the rule has an effective window (checked before its condition).
    timed: bool = False
    enforced: bool = True
    denies: bool = False


@dataclass
class CompileResult:
    """Everything `compile_documents` produced (the policy set is built by `evaluate`)."""

    vocabulary: Vocabulary | None = None
    settings: SettingsDoc | None = None
    rules: tuple[CompiledRule, ...] = ()
    index: tuple[tuple[str, Callable[..., tuple[Any, ...]], dict[Any, tuple[int, ...]]], ...] = ()
    always: tuple[int, ...] = ()
    #: One generated index lookup per `LOOKUP_GROUPS` entry: the candidate bit mask.
    masks: tuple[Callable[..., int], ...] = ()
    #: The same lookups as sorted positions (the form tests and tools read).
    lookups: tuple[Callable[..., list[int]], ...] = ()
    diagnostics: list[Diagnostic] = field(default_factory=list)


# --------------------------------------------------------------------------- typed tests


@dataclass(frozen=True, slots=True)
class _Typed:
    test: Test
    ftype: str
    operand: Any
    ref: str | None
    ref_type: str | None
    text: str


class _Compiler:
    """State shared by the compile stages."""

    def __init__(
        self,
        files: Sequence[tuple[LoadedDocument, ParsedFile]],
        emitted: frozenset[str] | None = None,
    ) -> None:
        self.files = files
        #: Categories some detector emits (None: not checked).
        self.emitted = emitted
        self.docs = {doc.filename: doc for doc, _ in files}
        self.diags: list[Diagnostic] = []
        self.vocab: Vocabulary | None = None
        self.settings: SettingsDoc | None = None
        self.packs: list[PackDoc] = []
        self.rules: list[RuleSpec] = []
        self.typed: dict[int, _Typed] = {}  # id(Test) -> typed form
        self.compiled: list[CompiledRule] = []
        self.result = CompileResult()

    def error(
        self,
        code: str,
        message: str,
        location: Location | None,
        path: str | None,
        help: str | None = None,
        severity: str = "error",
    ) -> None:
        self.diags.append(
            Diagnostic(
                code, message, location, path, help, "warning" if severity == "warning" else "error"
            )
        )

    @property
    def vocabulary(self) -> Vocabulary:
        assert self.vocab is not None
        return self.vocab


# --------------------------------------------------------------------------- stage 1


def _collect(c: _Compiler) -> None:
    vocab_files: list[ParsedFile] = []
    for _doc, parsed in c.files:
        if parsed.vocabulary is not None:
            vocab_files.append(parsed)
        if parsed.settings is not None:
            if c.settings is not None:
                c.error(
                    CONFLICT,
                    "more than one settings document",
                    parsed.settings.location,
                    None,
                    f"settings are already defined in {c.settings.file}",
                )
            else:
                c.settings = parsed.settings
        if parsed.pack is not None:
            c.packs.append(parsed.pack)
    if not vocab_files:
        first = c.files[0][0].filename if c.files else "<policies>"
        c.error(
            SCHEMA,
            "no vocabulary found",
            Location(first) if c.files else None,
            None,
            "add a file with `kind: vocabulary` (policies/vocabulary.yaml)",
        )
        return
    if len(vocab_files) > 1:
        for extra in vocab_files[1:]:
            c.error(
                CONFLICT,
                "more than one vocabulary",
                Location(extra.file, 1, 1),
                None,
                f"the vocabulary is already defined in {vocab_files[0].file}",
            )
        return
    c.vocab = vocab_files[0].vocabulary
    declared = c.settings.sanctions_programs if c.settings is not None else None
    shipped = {p.sanctions_program for p in c.packs if p.sanctions_program is not None}
    if declared is not None and c.settings is not None:
        for program in declared:
            if program not in shipped:
                c.error(
                    REF,
                    f"no pack implements sanctions programme `{program}`",
                    c.settings.operator_location,
                    "operator.sanctions_programs",
                    did_you_mean(program, sorted(shipped)) or f"packs implement {sorted(shipped)}",
                )
    for pack in c.packs:
        # The operator applies exactly the sanctions programmes it declares.
        if declared is not None and pack.sanctions_program not in (None, *declared):
            continue
        c.rules.extend(pack.rules)
    if c.settings is not None and c.settings.established_in is not None:
        vocab = c.vocabulary
        if not vocab.is_region_term(c.settings.established_in):
            c.error(
                REF,
                f"unknown region `{c.settings.established_in}` (not in {vocab.file})",
                c.settings.operator_location,
                "operator.established_in",
                did_you_mean(c.settings.established_in, vocab.region_terms()),
            )
        else:
            _blocking_statute(c)


#: US programmes listed in the annex of the EU Blocking Statute (Council Regulation (EC)
#: No 2271/96 as amended by Delegated Regulation (EU) 2018/1100).
_BLOCKED_US_MEASURES = ("31 CFR Part 515", "31 CFR Part 560")


def _blocking_statute(c: _Compiler) -> None:
    settings = c.settings
    assert settings is not None and settings.established_in is not None
    if settings.us_nexus is not None:
        return  # recorded: a US person or an authorised operator
    if not region_in(settings.established_in, c.vocabulary.expand(["EU"])):
        return
    cited = sorted(
        {
            measure
            for rule in c.rules
            if rule.pack in {p.id for p in c.packs if (p.sanctions_program or "").startswith("US")}
            for basis in rule.basis
            for measure in _BLOCKED_US_MEASURES
            if measure in basis.ref
        }
    )
    if cited:
        c.error(
            BLOCKING_STATUTE,
            f"the operator is established in {settings.established_in} (EU) and applies US "
            f"measures listed in the annex of the EU Blocking Statute ({', '.join(cited)})",
            settings.operator_location,
            "operator.sanctions_programs",
            "Regulation (EC) No 2271/96 may forbid complying with them unless the operator has a "
            "US nexus (US person, US-owned or controlled, US-origin items, USD clearing) or an "
            "authorisation under its Art. 5; record which in `operator.us_nexus`, or drop the "
            "programme",
            severity="warning",
        )


# --------------------------------------------------------------------------- stage 2


def _identify(c: _Compiler) -> None:
    seen_packs: dict[str, PackDoc] = {}
    for pack in c.packs:
        if pack.id in seen_packs:
            first = seen_packs[pack.id]
            c.error(
                CONFLICT,
                f"duplicate pack id `{pack.id}`",
                pack.location,
                "id",
                f"first used in {first.file}",
            )
        else:
            seen_packs[pack.id] = pack
    seen: dict[str, RuleSpec] = {}
    for rule in c.rules:
        if rule.id in seen:
            first_rule = seen[rule.id]
            c.error(
                CONFLICT,
                f"duplicate rule id `{rule.id}`",
                rule.location,
                rule.path,
                f"first defined at {first_rule.location}",
            )
        else:
            seen[rule.id] = rule


# --------------------------------------------------------------------------- stage 3


def resolve_field_type(name: str, vocabulary: Vocabulary) -> str | None:
    """The type of a context field a rule may name, or None if unknown."""
    known = CONTEXT_FIELDS.get(name)
    if known is not None:
        return known.type
    if name.startswith("purpose."):
        attribute = name[len("purpose.") :]
        return "boolean" if attribute in vocabulary.purpose_attributes else None
    if name.startswith("caller.flags."):
        return vocabulary.tenant_flags.get(name[len("caller.flags.") :])
    return None


def _field_names(vocabulary: Vocabulary) -> list[str]:
    names = list(CONTEXT_FIELDS)
    names += [f"purpose.{a}" for a in vocabulary.purpose_attributes]
    names += [f"caller.flags.{f}" for f in vocabulary.tenant_flags]
    return names


def _domain(base: str, vocabulary: Vocabulary) -> tuple[str, Iterable[str]] | None:
    table: dict[str, tuple[str, Iterable[str]]] = {
        "region": ("region", vocabulary.region_terms()),
        "purpose": ("purpose", vocabulary.purposes),
        "lawful_basis": ("lawful basis", vocabulary.lawful_bases),
        "deployment_context": ("deployment context", vocabulary.deployment_contexts),
        "method": ("method", METHODS),
        "model_kind": ("model kind", vocabulary.model_kinds),
        "model_output": ("model output", vocabulary.model_outputs),
        "licence_kind": ("licence kind", vocabulary.licence_kinds),
        "commercial_use": ("commercial use", ("allowed", "prohibited")),
        "consent": ("consent token", vocabulary.consents),
        "personal_data": ("personal-data category", vocabulary.personal_data),
    }
    return table.get(base)


def _element_type(ftype: str) -> str:
    return ftype.split(":", 1)[1] if ftype.startswith("list:") else ftype


def _python_kind(base: str) -> str:
    if base in ("integer", "boolean", "time"):
        return base
    return "string"


class _Literal:
    """Checks one literal against a field type, reporting with YAML 1.1 help."""

    def __init__(self, c: _Compiler, test: Test) -> None:
        self.c = c
        self.test = test
        self.doc = c.docs.get(test.location.file)
        self.ok = True

    def fail(
        self, code: str, message: str, path: tuple[str | int, ...], help: str | None = None
    ) -> None:
        self.ok = False
        loc = self.doc.location(path) if self.doc else self.test.location
        self.c.error(code, message, loc, format_path(path), help)

    def value(self, raw: object, base: str, path: tuple[str | int, ...]) -> Any:
        kind = _python_kind(base)
        slot = self.test.field.rsplit(".", 1)[-1] if base != "region" else "region"
        if kind == "time":
            parsed = parse_time(raw)
            if parsed is None:
                self.fail(
                    TYPE,
                    f"`{self.test.field}` compares times: expected a date "
                    "(YYYY-MM-DD) or an RFC 3339 time",
                    path,
                )
                return None
            return interval_of(parsed)
        expected = {"integer": int, "boolean": bool, "string": str}[kind]
        if type(raw) is not expected:
            word = {"integer": "an integer", "boolean": "a boolean", "string": "a string"}[kind]
            if self.doc is not None:
                diag = self.doc.type_error(path, word, raw, what=slot, code=TYPE)
                if kind == "string" and isinstance(raw, bool) and base == "string":
                    # Quoting `true` would compare with the text "true": what was meant is
                    # almost always whether the field is set.
                    diag = dataclasses.replace(
                        diag,
                        help=f"to test whether `{self.test.field}` is set, write "
                        f"`{self.test.field}: {{exists: {'true' if raw else 'false'}}}`",
                    )
                self.ok = False
                self.c.diags.append(diag)
            else:
                self.fail(TYPE, f"{slot} must be {word}", path)
            return None
        domain = _domain(base, self.c.vocabulary)
        if domain is not None and isinstance(raw, str):
            name, options = domain
            options = list(options)
            if raw not in options:
                where = f" (not in {self.c.vocabulary.file})" if base != "method" else ""
                self.fail(REF, f"unknown {name} `{raw}`{where}", path, did_you_mean(raw, options))
                return None
        return raw


def _typecheck_test(c: _Compiler, test: Test) -> _Typed | None:
    vocab = c.vocabulary
    ftype = resolve_field_type(test.field, vocab)
    if ftype is None:
        doc = c.docs.get(test.location.file)
        field_path = test.path if test.path[-1] == test.field else test.path[:-1]
        loc = doc.key_location(field_path) if doc else test.location
        c.error(
            REF,
            f"unknown field `{test.field}`",
            loc,
            format_path(field_path),
            did_you_mean(test.field, _field_names(vocab))
            or "see the request context in docs/policy-language.md",
        )
        return None
    spec = OPERATORS[test.op]
    if ftype not in spec.field_types:
        hint = None
        if ftype.startswith("list:") and test.op in ("eq", "in"):
            hint = "for a list field use `contains` or `contains_any`"
        elif test.op in ("contains", "contains_any", "contains_all") and not ftype.startswith(
            "list:"
        ):
            hint = "for a single value use `eq` or `in`"
        elif test.op in ("lt", "le", "gt", "ge", "between"):
            hint = "ordering applies to integers and times only"
        c.error(
            TYPE,
            f"operator `{test.op}` does not apply to `{test.field}` ({ftype})",
            test.location,
            format_path(test.path),
            hint,
        )
        return None
    lit = _Literal(c, test)
    raw = test.operand
    base = _element_type(ftype)
    if isinstance(raw, UnparsedOperand):
        lit.fail(SCHEMA, "operand must be a value, a list, or `{field: path}`", test.path)
        return None
    if isinstance(raw, FieldRef):
        return _typecheck_ref(c, test, ftype, raw)
    text_operand = _render_operand(raw)
    operand: Any = None
    if spec.operand == "bool":
        if type(raw) is not bool:
            lit.fail(TYPE, f"`{test.op}` takes true or false", test.path)
            return None
        operand = raw
    elif spec.operand == "scalar":
        if raw is None and test.op in ("eq", "ne"):
            operand = None
        else:
            operand = lit.value(raw, base, test.path)
            if lit.ok and base == "region" and test.op in ("eq", "ne") and raw in vocab.groups:
                lit.fail(
                    TYPE,
                    f"`{test.op}` compares exact codes and `{raw}` is a group",
                    test.path,
                    f"write `in: [{raw}]` to test membership",
                )
    elif spec.operand in ("list", "elements"):
        if not isinstance(raw, list):
            lit.fail(
                TYPE,
                f"`{test.op}` takes a list, got {_describe(raw)}",
                test.path,
                f"write `{test.op}: [{_render_operand(raw)}]`",
            )
            return None
        if not raw:
            never = test.op in ("in", "contains_any")
            verdict = "can never hold" if never else "always holds"
            lit.fail(
                UNREACHABLE,
                f"`{test.op}: []` {verdict}",
                test.path,
                "list at least one value, or remove the test",
            )
            return None
        values = [lit.value(v, base, (*test.path, i)) for i, v in enumerate(raw)]
        if lit.ok:
            operand = _normalise_set(vocab, base, values, ftype, test.op)
    elif spec.operand == "element":
        value = lit.value(raw, base, test.path)
        if lit.ok:
            operand = _normalise_set(vocab, base, [value], ftype, test.op)
    elif spec.operand == "pair":
        if not isinstance(raw, list) or len(raw) != 2:
            lit.fail(TYPE, "`between` takes a pair `[lo, hi]`", test.path)
            return None
        lo = lit.value(raw[0], base, (*test.path, 0))
        hi = lit.value(raw[1], base, (*test.path, 1))
        if lit.ok:
            if (base == "time" and lo[0] >= hi[1]) or (base != "time" and lo > hi):
                lit.fail(
                    UNREACHABLE,
                    "`between` bounds are reversed: this can never hold",
                    test.path,
                    "write the earlier bound first",
                )
            operand = (lo, hi)
    if not lit.ok:
        return None
    text = f"{test.field} {test.op} {text_operand}"
    return _Typed(test, ftype, operand, None, None, text)


def _normalise_set(vocab: Vocabulary, base: str, values: list[Any], ftype: str, op: str) -> Any:
    if base == "region":
        if ftype == "list:region":
            return tuple(vocab.expand([v]) for v in values)
        return vocab.expand(values)
    return frozenset(values)


def _typecheck_ref(c: _Compiler, test: Test, ftype: str, ref: FieldRef) -> _Typed | None:
    vocab = c.vocabulary
    ref_type = resolve_field_type(ref.path, vocab)
    if ref_type is None:
        c.error(
            REF,
            f"unknown field `{ref.path}`",
            ref.location,
            format_path((*test.path, "field")),
            did_you_mean(ref.path, _field_names(vocab)),
        )
        return None
    spec = OPERATORS[test.op]
    base = _element_type(ftype)
    if spec.operand in ("list", "elements"):
        wanted = f"list:{base}" if not ftype.startswith("list:") else ftype
        ok = ref_type == wanted or (ref_type == "list:string" and wanted.startswith("list:"))
    elif spec.operand == "scalar":
        ok = (
            _element_type(ref_type) == base
            and not ref_type.startswith("list:")
            or (
                {_python_kind(base), _python_kind(ref_type)} == {"string"}
                and "region" not in (base, ref_type)
            )
        )
    else:
        ok = False
    if not ok:
        c.error(
            TYPE,
            f"`{test.field}` ({ftype}) cannot be compared with `{ref.path}` "
            f"({ref_type}) by `{test.op}`",
            ref.location,
            format_path(test.path),
        )
        return None
    text = f"{test.field} {test.op} field {ref.path}"
    return _Typed(test, ftype, None, ref.path, ref_type, text)


def _render_operand(raw: object) -> str:
    if isinstance(raw, list):
        return "[" + ", ".join(_render_operand(v) for v in raw) + "]"
    if raw is None:
        return "null"
    if isinstance(raw, bool):
        return "true" if raw else "false"
    if isinstance(raw, dt.datetime):
        return raw.isoformat().replace("+00:00", "Z")
    if isinstance(raw, dt.date):
        return raw.isoformat()
    return str(raw)


def _describe(raw: object) -> str:
    return describe_value(raw)


def _walk_tests(cond: Condition | None) -> Iterable[Test]:
    if cond is None:
        return
    if isinstance(cond, Test):
        yield cond
    elif isinstance(cond, Not):
        yield from _walk_tests(cond.item)
    else:
        for item in cond.items:
            yield from _walk_tests(item)


def fields_read(rule: RuleSpec) -> frozenset[str]:
    """Every context field a rule reads: in tests, field operands and templates."""
    names: set[str] = set()
    for cond in (rule.when, *(e.when for e in rule.exceptions)):
        for test in _walk_tests(cond):
            names.add(test.field)
            if isinstance(test.operand, FieldRef):
                names.add(test.operand.path)
    texts = [b.ref for b in rule.basis] + [h.value for h in rule.obligations.headers]
    if rule.problem is not None:
        texts += [rule.problem.detail or "", rule.problem.title or ""]
        texts += [rule.problem.remedy.text] if rule.problem.remedy else []
    for text in texts:
        names.update(template_fields(text))
    return frozenset(names)


def declared_facts_read(cond: Condition | None) -> frozenset[str]:
    """The declared facts a condition reads, directly or through a derived field."""
    facts = {declared_fact_of(t.field) for t in _walk_tests(cond)}
    return frozenset(f for f in facts if f is not None)


def _absence(c: _Compiler) -> None:
    """Check each rule's `when_absent` and rewrite the conditions of the facts it asks for.

    A deny rule that asks for fact F holds whenever it could hold for some value of an
    absent F: a test on F (or on a field derived from F) counts as holding where it would
    make the rule match (as `F absent or test`; under `not`, as `F present and test`).
    """
    for i, rule in enumerate(c.rules):
        reads = declared_facts_read(rule.when)
        stated = {a.fact: a for a in rule.when_absent}
        can_deny = rule.effect == "deny" or rule.obligations.route is not None
        if rule.when_absent and not can_deny:
            c.error(
                SCHEMA,
                "`when_absent` only applies to deny rules and routing rules",
                rule.when_absent[0].location,
                rule.when_absent[0].path,
                "remove it: only a refusal can be evaded by leaving a header out",
            )
            continue
        for absence in rule.when_absent:
            if absence.fact not in reads:
                c.error(
                    REF,
                    f"rule does not read `{absence.fact}`",
                    absence.location,
                    absence.path,
                    "remove the entry, or test the fact in `when`",
                )
        if can_deny:
            what = "deny" if rule.effect == "deny" else "routing"
            for fact in sorted(reads - stated.keys()):
                header = DECLARED_FACTS[fact]
                c.error(
                    ABSENCE,
                    f"{what} rule `{rule.id}` reads `{fact}` ({header}) but does not say what "
                    "its absence means",
                    rule.location,
                    rule.path,
                    f"add `when_absent: {{{fact}: ask}}` to refuse and ask for {header}, or "
                    f"`{{{fact}: {{not_applicable: <why>}}}}`",
                    severity="warning",
                )
        asks = {a.fact: a for a in rule.when_absent if a.mode == "ask"}
        if asks and rule.when is not None:
            c.rules[i] = dataclasses.replace(rule, when=_assume_absent(rule.when, asks, True))


def _holds_on_null(test: Test) -> bool:
    """Whether a test holds when its field is null (see the null semantics of the docs)."""
    if isinstance(test.operand, FieldRef):
        return False
    if test.op in ("not_in", "contains_none"):
        return True
    if test.op in ("ne", "eq"):
        return (test.operand is None) == (test.op == "eq")
    if test.op in ("exists", "empty"):
        return test.operand is (test.op == "empty")
    return False


def _assume_absent(cond: Condition, asks: Mapping[str, Any], positive: bool) -> Condition:
    if isinstance(cond, Test):
        fact = declared_fact_of(cond.field)
        absence = asks.get(fact) if fact is not None else None
        if absence is None or fact is None:
            return cond
        # A test on the fact itself that already says what absence needs is kept as it is
        # (fewer nodes on the hot path); derived fields may not be null when the fact is.
        if cond.field == fact and _holds_on_null(cond) == positive:
            return cond
        where = (absence.location, tuple(str(absence.path).split(".")))
        if positive:
            return AnyOf((Test(fact, "exists", False, *where), cond), cond.location)
        return AllOf((Test(fact, "exists", True, *where), cond), cond.location)
    if isinstance(cond, Not):
        return Not(_assume_absent(cond.item, asks, not positive), cond.location)
    items = tuple(_assume_absent(item, asks, positive) for item in cond.items)
    if isinstance(cond, AnyOf):
        return AnyOf(items, cond.location)
    return AllOf(items, cond.location)


def _typecheck(c: _Compiler) -> None:
    vocab = c.vocabulary
    _absence(c)
    for rule in c.rules:
        conditions = [rule.when, *(e.when for e in rule.exceptions)]
        for cond in conditions:
            for test in _walk_tests(cond):
                typed = _typecheck_test(c, test)
                if typed is not None:
                    c.typed[id(test)] = typed
            _check_empty_combinators(c, cond)
        for basis in rule.basis:
            if basis.regime not in vocab.regimes:
                c.error(
                    REF,
                    f"unknown regime `{basis.regime}` (not in {vocab.file})",
                    basis.location,
                    basis.path,
                    did_you_mean(basis.regime, vocab.regimes),
                )
            _check_template(c, basis.ref, basis.location, basis.path + ".ref")
        if rule.problem is not None:
            _check_problem_templates(c, rule.problem, rule.path + ".problem")
        _typecheck_obligations(c, rule.obligations)
    if c.settings is not None and c.settings.default_problem is not None:
        _check_problem_templates(c, c.settings.default_problem, "default.problem")


def _check_empty_combinators(c: _Compiler, cond: Condition | None) -> None:
    if cond is None or isinstance(cond, Test):
        return
    if isinstance(cond, Not):
        _check_empty_combinators(c, cond.item)
        return
    if isinstance(cond, AnyOf) and not cond.items:
        c.error(
            UNREACHABLE,
            "`any: []` can never hold",
            cond.location,
            None,
            "list at least one condition",
        )
    for item in cond.items:
        _check_empty_combinators(c, item)


def _check_problem_templates(c: _Compiler, problem: ProblemSpec, path: str) -> None:
    for text in (problem.detail, problem.title, problem.remedy.text if problem.remedy else None):
        if text is not None:
            _check_template(c, text, problem.location, path)


def _check_template(c: _Compiler, text: str, location: Location, path: str) -> None:
    for name in template_fields(text):
        ftype = resolve_field_type(name, c.vocabulary)
        if ftype is None:
            c.error(
                REF,
                f"unknown field `{name}` in template",
                location,
                path,
                did_you_mean(name, _field_names(c.vocabulary)),
            )
        elif ftype == "object":
            # Lists render comma-separated; an object has no text form.
            c.error(
                TYPE,
                f"template field `{name}` is an object and cannot be rendered",
                location,
                path,
                f"name one of its fields, e.g. `${{{name}.id}}`",
            )


def _typecheck_obligations(c: _Compiler, ob: ObligationsSpec) -> None:
    vocab = c.vocabulary
    for mask in ob.mask:
        for cat in mask.categories:
            if cat not in vocab.personal_data:
                c.error(
                    REF,
                    f"unknown personal-data category `{cat}` (not in {vocab.file})",
                    mask.location,
                    mask.path,
                    did_you_mean(cat, vocab.personal_data),
                )
            elif c.emitted is not None and cat not in c.emitted:
                c.error(
                    REF,
                    f"no detector emits personal-data category `{cat}`: masking it would "
                    "never happen",
                    mask.location,
                    mask.path,
                    "add a detector for it (gateway/privacy/detectors.py) or remove the "
                    "category from the rule",
                )
    if ob.route is not None:
        for region in ob.route.regions:
            if not vocab.is_region_term(region):
                c.error(
                    REF,
                    f"unknown region `{region}` (not in {vocab.file})",
                    ob.route.location,
                    ob.route.path,
                    did_you_mean(region, vocab.region_terms()),
                )
        for mech in ob.route.mechanisms:
            if mech not in vocab.transfer_mechanisms:
                c.error(
                    REF,
                    f"unknown transfer mechanism `{mech}` (not in {vocab.file})",
                    ob.route.location,
                    ob.route.path,
                    did_you_mean(mech, vocab.transfer_mechanisms),
                )
    for header in ob.headers:
        _check_template(c, header.value, header.location, header.path)
    for mark in ob.image_marks:
        for _key, value in mark.fields:
            _check_template(c, value, mark.location, mark.path)
    if ob.suppress_sinks is not None:
        for cat in ob.suppress_sinks.categories:
            if cat not in vocab.sink_categories:
                c.error(
                    REF,
                    f"unknown sink category `{cat}` (not in {vocab.file})",
                    ob.suppress_sinks.location,
                    ob.suppress_sinks.path,
                    did_you_mean(cat, vocab.sink_categories),
                )
    if ob.audit is not None and ob.audit.storage_region is not None:
        if not vocab.is_region_term(ob.audit.storage_region):
            c.error(
                REF,
                f"unknown region `{ob.audit.storage_region}` (not in {vocab.file})",
                ob.audit.location,
                ob.audit.path,
                did_you_mean(ob.audit.storage_region, vocab.region_terms()),
            )


# --------------------------------------------------------------------------- stage 4


def _check(c: _Compiler) -> None:
    for rule in c.rules:
        kinds = rule.obligations.kinds()
        allowed = STAGE_OBLIGATIONS[rule.stage]
        for kind in sorted(kinds - allowed):
            where = [s for s in STAGES if kind in STAGE_OBLIGATIONS[s]]
            c.error(
                SCHEMA,
                f"`{kind}` obligations do not belong in stage `{rule.stage}`",
                rule.location,
                rule.path + ".obligations",
                f"move the rule to stage `{where[0]}`" if where else None,
            )
        if rule.effect == "deny" and kinds:
            c.error(
                SCHEMA,
                "a deny rule's obligations would never apply",
                rule.location,
                rule.path + ".obligations",
                "move them to an `obligate` rule",
            )
        if rule.effect != "deny" and (rule.status is not None or rule.problem is not None):
            c.error(
                SCHEMA,
                f"`status` and `problem` only apply to deny rules, not `{rule.effect}`",
                rule.location,
                rule.path,
            )
        says_applied = any(
            h.name.lower() == "x-aigc-explicit-label" and h.value.strip().lower() == "applied"
            for h in rule.obligations.headers
        )
        if says_applied and not any(
            m.scheme == "cn_aigc_explicit_label" for m in rule.obligations.image_marks
        ):
            c.error(
                SCHEMA,
                "the rule answers `X-AIGC-Explicit-Label: applied` without drawing the label",
                rule.location,
                rule.path + ".obligations",
                "add `image_marks: [{scheme: cn_aigc_explicit_label}]`: the header may only "
                "say what the gateway did",
            )
        if rule.effect == "obligate" and not kinds:
            c.error(
                SCHEMA,
                "an `obligate` rule sets no obligations",
                rule.location,
                rule.path,
                "add `obligations:` or change the effect",
            )
        if rule.stage == "audit" and rule.effect != "obligate":
            c.error(
                SCHEMA,
                "rules in stage `audit` must have effect `obligate`",
                rule.location,
                rule.path,
                "audit rules only set record-keeping obligations",
            )
        if rule.effect in ("deny", "obligate") and not rule.basis:
            c.error(
                SCHEMA,
                f"a `{rule.effect}` rule must cite its legal basis",
                rule.location,
                rule.path,
                "add `basis: [{regime: ..., ref: ...}]`",
            )
        if rule.effective_from is not None and rule.effective_until is not None:
            start = interval_of(rule.effective_from)[0]
            end = interval_of(rule.effective_until)[1]
            if start >= end:
                c.error(
                    UNREACHABLE,
                    "effective_from is after effective_until: the rule never applies",
                    rule.location,
                    rule.path + ".effective_from",
                )
        for exc in rule.exceptions:
            if exc.when is None and rule.effect != "allow":
                c.error(
                    SCHEMA,
                    "an exception without `when` switches the whole rule off",
                    exc.location,
                    exc.path,
                    "add `when:` or use `effective_until`",
                    severity="warning",
                )


# --------------------------------------------------------------------------- stage 5


def _and(fns: Sequence[Predicate]) -> Predicate | None:
    if not fns:
        return None
    if len(fns) == 1:
        return fns[0]
    if len(fns) == 2:
        a, b = fns
        return lambda ctx, st: a(ctx, st) and b(ctx, st)
    if len(fns) == 3:
        a, b, d = fns
        return lambda ctx, st: a(ctx, st) and b(ctx, st) and d(ctx, st)
    head = _and(fns[:3])
    tail = _and(fns[3:])
    assert head is not None and tail is not None
    return lambda ctx, st: head(ctx, st) and tail(ctx, st)


def _or(fns: Sequence[Predicate]) -> Predicate:
    if not fns:
        return lambda ctx, st: False
    if len(fns) == 1:
        return fns[0]
    if len(fns) == 2:
        a, b = fns
        return lambda ctx, st: a(ctx, st) or b(ctx, st)
    head = _or(fns[:2])
    tail = _or(fns[2:])
    return lambda ctx, st: head(ctx, st) or tail(ctx, st)


def _lower_condition(c: _Compiler, cond: Condition) -> CNode:
    vocab = c.vocabulary
    if isinstance(cond, Test):
        typed = c.typed[id(cond)]
        get = make_getter(typed.test.field, vocab)
        ref_get = make_getter(typed.ref, vocab) if typed.ref else None
        fn = make_predicate(
            typed.ftype, cond.op, get, typed.operand, cond.field, vocab, ref_get, typed.ref_type
        )
        leaf = TypedLeaf(cond.field, typed.ftype, cond.op, typed.operand, typed.ref, typed.ref_type)
        return CNode("test", typed.text, cond.location, fn, (), get, _guard_of(typed, vocab), leaf)
    if isinstance(cond, Not):
        child = _lower_condition(c, cond.item)
        inner = child.fn
        return CNode("not", "not", cond.location, lambda ctx, st: not inner(ctx, st), (child,))
    children = tuple(_lower_condition(c, item) for item in cond.items)
    if isinstance(cond, AllOf):
        fn = _and([ch.fn for ch in children]) or (lambda ctx, st: True)
        return CNode("all", "all", cond.location, fn, children)
    guard = None
    if children and all(ch.guard is not None for ch in children):
        guard = IndexGuard(tuple(alt for ch in children for alt in ch.guard.alternatives))  # type: ignore[union-attr]
    return CNode(
        "any", "any", cond.location, _or([ch.fn for ch in children]), children, None, guard
    )


def _guard_of(typed: _Typed, vocab: Vocabulary | None = None) -> IndexGuard | None:
    op = typed.test.op
    if op == "exists" and not typed.ftype.startswith("list:"):
        marker = PRESENT if typed.operand else ABSENT
        return IndexGuard(((typed.test.field, typed.ftype, frozenset([marker])),))
    if typed.ref is not None or op not in _INDEXABLE_OPS or typed.ftype in ("time", "object"):
        return None
    name, ftype = typed.test.field, typed.ftype
    if (
        op == "eq"
        and name.startswith("purpose.")
        and type(typed.operand) is bool
        and vocab is not None
    ):
        # `purpose.X: true` holds exactly for the declared purposes whose attribute X is
        # true, so it shares the `request.purpose` table instead of adding one per attribute.
        attribute = name[len("purpose.") :]
        want = typed.operand
        if attribute == "known":
            chosen = frozenset(vocab.purposes) if want else frozenset()
        else:
            chosen = frozenset(
                p for p, attrs in vocab.purposes.items() if attrs.get(attribute, False) is want
            )
        if not chosen:
            return None
        return IndexGuard((("request.purpose", "purpose", chosen),))
    if op == "eq":
        if typed.operand is None:
            return None
        return IndexGuard(((name, ftype, frozenset([typed.operand])),))
    if ftype == "list:region":
        keys: frozenset[Any] = frozenset().union(*typed.operand)
        return IndexGuard(((name, ftype, keys),))
    return IndexGuard(((name, ftype, frozenset(typed.operand)),))


def _window(value: dt.date | dt.datetime | None, end: bool) -> dt.datetime | None:
    if value is None:
        return None
    iv = interval_of(value)
    return iv[1] if end else iv[0]


def _lower(c: _Compiler) -> None:
    vocab = c.vocabulary
    for pos, rule in enumerate(_ordered_rules(c.rules)):
        node = _lower_condition(c, rule.when) if rule.when is not None else None
        exceptions = []
        for exc in rule.exceptions:
            exc_node = _lower_condition(c, exc.when) if exc.when is not None else None
            exceptions.append(
                CompiledException(
                    interval_of(exc.until)[1],
                    exc.until.isoformat(),
                    exc.ticket,
                    exc_node.fn if exc_node else None,
                )
            )
        basis = tuple(_lower_basis(vocab, b.regime, b.ref, b.url) for b in rule.basis)
        status = rule.status or _DEFAULT_STATUS.get(rule.stage, 451)
        problem = None
        if rule.effect == "deny":
            problem = _lower_problem(c, rule.problem, status, rule)
            # List facts (consents) are never null in a gateway context: their own remedy
            # names the header, and a list would make the denial's memo key unhashable.
            asks = tuple(
                (a.fact, DECLARED_FACTS[a.fact], make_getter(a.fact, vocab))
                for a in rule.when_absent
                if a.mode == "ask" and not CONTEXT_FIELDS[a.fact].type.startswith("list:")
            )
            if asks:
                problem = dataclasses.replace(
                    problem, asks=asks, static=None, about=rule.description
                )
        c.compiled.append(
            CompiledRule(
                spec=rule,
                pos=pos,
                stage_index=STAGES.index(rule.stage),
                node=node,
                rest=None,
                guard=None,
                start=_window(rule.effective_from, False),
                end=_window(rule.effective_until, True),
                exceptions=tuple(exceptions),
                basis=basis,
                status=status,
                problem=problem,
                obligations=_lower_obligations(c, rule.obligations),
                id=rule.id,
                timed=rule.effective_from is not None or rule.effective_until is not None,
                enforced=rule.mode == "enforce",
                denies=rule.effect == "deny",
                allows=rule.effect == "allow",
            )
        )


def _lower_basis(vocab: Vocabulary, regime: str, ref: str, url: str | None) -> CompiledBasis:
    template = fast_template(compile_template(ref, vocab), vocab)
    url = url or (vocab.regimes[regime].url if regime in vocab.regimes else None)
    static = LegalBasis(regime, ref, url) if not template.fields else None
    return CompiledBasis(regime, template, url, static)


def _ordered_rules(rules: Sequence[RuleSpec]) -> list[RuleSpec]:
    """Stage-major order; within a stage, the order of files then of rules in a file."""
    return sorted(rules, key=lambda r: (STAGES.index(r.stage), r.location.file, r.index))


def lower_problem(
    vocab: Vocabulary,
    spec: ProblemSpec | None,
    status: int,
    description: str | None,
    applies_to: str | None,
    regime: str | None,
) -> CompiledProblem:
    """Prepare a problem (from a deny rule or the settings default)."""
    ptype = (spec.type if spec and spec.type else None) or ("licence" if status == 403 else "legal")
    default_title = (
        "Forbidden by the model licence" if ptype == "licence" else "Unavailable For Legal Reasons"
    )
    title = (spec.title if spec and spec.title else None) or default_title
    detail = (spec.detail if spec and spec.detail else None) or description or title
    remedy = spec.remedy if spec else None
    info = vocab.regimes.get(regime) if regime else None
    compiled = CompiledProblem(
        type=ptype,
        title=title,
        detail=fast_template(compile_template(detail, vocab), vocab),
        remedy_text=fast_template(compile_template(remedy.text, vocab), vocab) if remedy else None,
        remedy_header=remedy.header if remedy else None,
        remedy_value=remedy.value if remedy else None,
        demanding_party=info.demanding_party if info else None,
        applies_to=applies_to or description,
        jurisdiction=info.jurisdiction if info else None,
    )
    if not compiled.detail.fields and not (
        compiled.remedy_text is not None and compiled.remedy_text.fields
    ):
        remedy_text = compiled.remedy_text
        static_remedy = (
            Remedy(remedy_text.source, compiled.remedy_header, compiled.remedy_value)
            if remedy_text is not None
            else None
        )
        static = Problem(
            compiled.type,
            compiled.title,
            compiled.detail.source,
            static_remedy,
            compiled.demanding_party,
            compiled.applies_to,
            compiled.jurisdiction,
        )
        compiled = dataclasses.replace(compiled, static=static)
    return compiled


def _lower_problem(
    c: _Compiler, spec: ProblemSpec | None, status: int, rule: RuleSpec
) -> CompiledProblem:
    regime = rule.basis[0].regime if rule.basis else None
    return lower_problem(c.vocabulary, spec, status, rule.description, rule.applies_to, regime)


def _lower_obligations(c: _Compiler, ob: ObligationsSpec) -> CompiledObligations:
    vocab = c.vocabulary
    masks = tuple((m.categories, m.paths, MaskAction(m.method, m.keep)) for m in ob.mask)
    route = None
    if ob.route is not None:
        route = (vocab.expand(ob.route.regions), frozenset(ob.route.mechanisms))
    headers = tuple(
        (h.name, fast_template(compile_template(h.value, vocab), vocab)) for h in ob.headers
    )
    marks = tuple(
        (
            m.scheme,
            m.value,
            tuple((k, fast_template(compile_template(v, vocab), vocab)) for k, v in m.fields),
        )
        for m in ob.image_marks
    )
    sinks = None
    if ob.suppress_sinks is not None:
        sinks = (frozenset(ob.suppress_sinks.categories), ob.suppress_sinks.sale_or_share)
    retention = ob.audit.retention_days if ob.audit else None
    storage = None
    if ob.audit is not None and ob.audit.storage_region is not None:
        storage = vocab.expand([ob.audit.storage_region])
    lowered = CompiledObligations(masks, route, headers, marks, sinks, retention, storage)
    empty = not (masks or route or headers or marks or sinks or retention or storage)
    return dataclasses.replace(lowered, empty=empty)


# --------------------------------------------------------------------------- stage 6


def node_source(b: CodeBuilder, node: CNode) -> str:
    """Python expression for a compiled condition (see `codegen`)."""
    if node.kind == "test":
        assert node.leaf is not None
        return leaf_source(b, node.leaf, node.fn)
    if node.kind == "not":
        return f"(not {node_source(b, node.children[0])})"
    parts = [node_source(b, child) for child in node.children]
    if node.kind == "all":
        return "(" + " and ".join(parts) + ")" if parts else "True"
    return "(" + " or ".join(parts) + ")" if parts else "False"


def _choose_guard(
    vocab: Vocabulary, node: CNode | None, name: str
) -> tuple[IndexGuard | None, Predicate | None]:
    if node is None:
        return None, None
    conjuncts = list(node.children) if node.kind == "all" else [node]
    best: int | None = None
    for i, part in enumerate(conjuncts):
        if part.guard is None:
            continue
        if best is None or part.guard.size < conjuncts[best].guard.size:  # type: ignore[union-attr]
            best = i
    rest = [p for i, p in enumerate(conjuncts) if i != best]
    if not rest:
        return (conjuncts[best].guard if best is not None else None), None
    b = CodeBuilder(vocab)
    fn = generate_predicate(b, " and ".join(node_source(b, p) for p in rest), name)
    return (conjuncts[best].guard if best is not None else None), fn


def _index(c: _Compiler) -> None:
    vocab = c.vocabulary
    tables: dict[str, dict[Any, list[int]]] = {}
    types: dict[str, str] = {}
    always: list[int] = []
    final: list[CompiledRule] = []
    for rule in c.compiled:
        guard, rest = _choose_guard(vocab, rule.node, f"rule_{rule.pos}")
        rebuilt = CompiledRule(
            spec=rule.spec,
            pos=rule.pos,
            stage_index=rule.stage_index,
            node=rule.node,
            rest=rest,
            guard=guard,
            start=rule.start,
            end=rule.end,
            exceptions=rule.exceptions,
            basis=rule.basis,
            status=rule.status,
            problem=rule.problem,
            obligations=rule.obligations,
            id=rule.id,
            timed=rule.timed,
            enforced=rule.enforced,
            denies=rule.denies,
            allows=rule.allows,
        )
        final.append(rebuilt)
        if guard is None:
            always.append(rule.pos)
            continue
        for name, ftype, keys in guard.alternatives:
            types[name] = ftype
            table = tables.setdefault(name, {})
            for key in keys:
                entries = table.setdefault(key, [])
                if rule.pos not in entries:
                    entries.append(rule.pos)
    index = tuple(
        (
            name,
            make_key_function(types[name], make_getter(name, vocab), name),
            {k: tuple(sorted(v)) for k, v in table.items()},
        )
        for name, table in sorted(tables.items())
    )
    c.result.rules = tuple(final)
    c.result.index = index
    c.result.always = tuple(always)
    # One generated lookup per group of stages (`LOOKUP_GROUPS`): a denial in an early
    # group spares the later lookups, and few groups keep the per-call cost low.
    groups: list[Callable[..., int]] = []
    for stages in LOOKUP_GROUPS:
        members = {r.pos for r in final if STAGES[r.stage_index] in stages}
        group_tables = []
        for name, _keys, full in index:
            sub = {k: tuple(p for p in v if p in members) for k, v in full.items()}
            sub = {k: v for k, v in sub.items() if v}
            if sub:
                group_tables.append((name, types[name], sub))
        groups.append(generate_candidates(vocab, group_tables, [p for p in always if p in members]))
    c.result.masks = tuple(groups)
    c.result.lookups = tuple(_positions_lookup(g) for g in groups)


def _positions_lookup(masks: Callable[..., int]) -> Callable[..., list[int]]:
    def lookup(ctx: Mapping[str, Any], st: Any) -> list[int]:
        return positions_of(masks(ctx, st))

    return lookup


# --------------------------------------------------------------------------- table


def _freeze(c: _Compiler) -> None:
    c.result.vocabulary = c.vocab
    c.result.settings = c.settings


#: The compile pipeline as data: (name, stage, needs a clean input). Each stage reads and
#: extends the shared compiler state. A stage that needs a clean input runs only when no
#: earlier stage reported an error; the checking stages run together, so one run reports
#: duplicate ids, reference errors and consistency errors at once.
COMPILE_STAGES: tuple[tuple[str, Callable[[_Compiler], None], bool], ...] = (
    ("collect", _collect, True),
    ("identify", _identify, True),
    ("typecheck", _typecheck, False),
    ("check", _check, False),
    ("lower", _lower, True),
    ("index", _index, True),
    ("freeze", _freeze, True),
)


def compile_documents(
    files: Sequence[tuple[LoadedDocument, ParsedFile]],
    *,
    stop_after: str | None = None,
    emitted: frozenset[str] | None = None,
) -> CompileResult:
    """Run the compile stages over parsed files; diagnostics accumulate in the result.

    `emitted`, when given, is the set of personal-data categories the detectors emit: a
    masking rule naming another category is an error.
    """
    c = _Compiler(files, emitted)
    for name, stage, needs_clean_input in COMPILE_STAGES:
        if needs_clean_input and has_errors(c.diags):
            break
        stage(c)
        if name == stop_after:
            break
    c.result.diagnostics = c.diags
    return c.result
