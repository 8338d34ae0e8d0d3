"""The `typecheck` compile stage: every field, operator, literal and reference against the
vocabulary and the request-context table, with "did you mean"; literals normalised.

Rule 1: a test is checked once and its typed form (`TypedTest`) recorded for lowering.
Rule 2: obligations and templates are checked against the stage they are written in
(`STAGE_OBLIGATIONS`) and the fields a template may read.
"""

from __future__ import annotations

import dataclasses
import datetime as dt
from collections.abc import Callable, Collection, Iterable, Iterator
from typing import Any, Protocol

from gateway.errors import Location, describe_value, did_you_mean
from gateway.policy.absence import check_absence, walk_tests
from gateway.policy.ast import AnyOf, Condition, FieldRef, Not, ObligationsSpec, ProblemSpec, Test
from gateway.policy.codes import REF, SHAPE, TYPE, UNREACHABLE
from gateway.policy.compilation import Compilation, TypedTest
from gateway.policy.language import CONTEXT_FIELDS, METHODS, OPERATORS
from gateway.policy.parse import UnparsedOperand, parse_time
from gateway.policy.templates import template_fields
from gateway.policy.times import interval_of
from gateway.policy.vocabulary import Vocabulary
from gateway.source import format_path

__all__ = [
    "resolve_field_type",
    "typecheck",
]


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

    def __init__(self, c: Compilation, test: Test) -> None:
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


def _typecheck_test(c: Compilation, test: Test) -> TypedTest | None:
    ftype = _field_type(c, test)
    if ftype is None or not _operator_applies(c, test, ftype):
        return None
    lit = _Literal(c, test)
    raw = test.operand
    if isinstance(raw, UnparsedOperand):
        lit.fail(SHAPE, "operand must be a value, a list, or `{field: path}`", test.path)
        return None
    if isinstance(raw, FieldRef):
        return _typecheck_ref(c, test, ftype, raw)
    check = _OPERAND_CHECKS[OPERATORS[test.op].operand]
    operand = check(lit, test, ftype, _element_type(ftype), raw)
    if operand is _NO_OPERAND or not lit.ok:
        return None
    text = f"{test.field} {test.op} {_render_operand(raw)}"
    return TypedTest(test, ftype, operand, None, None, text)


def _field_type(c: Compilation, test: Test) -> str | None:
    """The type of the field a test reads, or None after reporting an unknown field."""
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
    return ftype


def _operator_applies(c: Compilation, test: Test, ftype: str) -> bool:
    """Whether the test's operator applies to the field's type (reported when not)."""
    if ftype in OPERATORS[test.op].field_types:
        return True
    hint = None
    if ftype.startswith("list:") and test.op in ("eq", "in"):
        hint = "for a list field use `contains` or `contains_any`"
    elif test.op in ("contains", "contains_any", "contains_all") and not ftype.startswith("list:"):
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
    return False


#: What an operand check returns when the operand is unusable (already reported).
_NO_OPERAND: Any = object()


def _bool_operand(lit: _Literal, test: Test, ftype: str, base: str, raw: object) -> Any:
    if type(raw) is not bool:
        lit.fail(TYPE, f"`{test.op}` takes true or false", test.path)
        return _NO_OPERAND
    return raw


def _scalar_operand(lit: _Literal, test: Test, ftype: str, base: str, raw: object) -> Any:
    if raw is None and test.op in ("eq", "ne"):
        return None
    operand = lit.value(raw, base, test.path)
    if lit.ok and base == "region" and test.op in ("eq", "ne") and raw in lit.c.vocabulary.groups:
        lit.fail(
            TYPE,
            f"`{test.op}` compares exact codes and `{raw}` is a group",
            test.path,
            f"write `in: [{raw}]` to test membership",
        )
    return operand


def _list_operand(lit: _Literal, test: Test, ftype: str, base: str, raw: object) -> Any:
    if not isinstance(raw, list):
        lit.fail(
            TYPE,
            f"`{test.op}` takes a list, got {describe_value(raw)}",
            test.path,
            f"write `{test.op}: [{_render_operand(raw)}]`",
        )
        return _NO_OPERAND
    if not raw:
        never = test.op in ("in", "contains_any")
        verdict = "can never hold" if never else "always holds"
        lit.fail(
            UNREACHABLE,
            f"`{test.op}: []` {verdict}",
            test.path,
            "list at least one value, or remove the test",
        )
        return _NO_OPERAND
    values = [lit.value(v, base, (*test.path, i)) for i, v in enumerate(raw)]
    return _normalise_set(lit.c.vocabulary, base, values, ftype, test.op) if lit.ok else None


def _element_operand(lit: _Literal, test: Test, ftype: str, base: str, raw: object) -> Any:
    value = lit.value(raw, base, test.path)
    return _normalise_set(lit.c.vocabulary, base, [value], ftype, test.op) if lit.ok else None


def _pair_operand(lit: _Literal, test: Test, ftype: str, base: str, raw: object) -> Any:
    if not isinstance(raw, list) or len(raw) != 2:
        lit.fail(TYPE, "`between` takes a pair `[lo, hi]`", test.path)
        return _NO_OPERAND
    lo = lit.value(raw[0], base, (*test.path, 0))
    hi = lit.value(raw[1], base, (*test.path, 1))
    if not lit.ok:
        return None
    if (base == "time" and lo[0] >= hi[1]) or (base != "time" and lo > hi):
        lit.fail(
            UNREACHABLE,
            "`between` bounds are reversed: this can never hold",
            test.path,
            "write the earlier bound first",
        )
    return (lo, hi)


#: Per operand kind (`OperatorSpec.operand`): its check, giving the normalised operand.
_OPERAND_CHECKS: dict[str, Callable[[_Literal, Test, str, str, object], Any]] = {
    "bool": _bool_operand,
    "scalar": _scalar_operand,
    "list": _list_operand,
    "elements": _list_operand,
    "element": _element_operand,
    "pair": _pair_operand,
}


def _normalise_set(vocab: Vocabulary, base: str, values: list[Any], ftype: str, op: str) -> Any:
    if base == "region":
        if ftype == "list:region":
            return tuple(vocab.expand([v]) for v in values)
        return vocab.expand(values)
    return frozenset(values)


def _typecheck_ref(c: Compilation, test: Test, ftype: str, ref: FieldRef) -> TypedTest | None:
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
    return TypedTest(test, ftype, None, ref.path, ref_type, text)


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


def typecheck(c: Compilation) -> None:
    """The `typecheck` stage: every rule's tests, templates and obligations, and the
    `when_absent` check."""
    vocab = c.vocabulary
    check_absence(c)
    for rule in c.rules:
        conditions = [rule.when, *(e.when for e in rule.exceptions)]
        for cond in conditions:
            for test in walk_tests(cond):
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


def _check_empty_combinators(c: Compilation, cond: Condition | None) -> None:
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


def _check_problem_templates(c: Compilation, problem: ProblemSpec, path: str) -> None:
    for text in (problem.detail, problem.title, problem.remedy.text if problem.remedy else None):
        if text is not None:
            _check_template(c, text, problem.location, path)


def _check_template(c: Compilation, text: str, location: Location, path: str) -> None:
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


def _typecheck_obligations(c: Compilation, ob: ObligationsSpec) -> None:
    vocab = c.vocabulary
    for mask in ob.mask:
        for cat in mask.categories:
            if cat not in vocab.personal_data:
                _unknown_names(c, "personal-data category", (cat,), vocab.personal_data, mask)
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
    regions = _RegionTerms(vocab)
    if ob.route is not None:
        route = ob.route
        _unknown_names(c, "region", route.regions, regions, route)
        _unknown_names(c, "transfer mechanism", route.mechanisms, vocab.transfer_mechanisms, route)
    for header in ob.headers:
        _check_template(c, header.value, header.location, header.path)
    for mark in ob.image_marks:
        for _key, value in mark.fields:
            _check_template(c, value, mark.location, mark.path)
    if ob.suppress_sinks is not None:
        sinks = ob.suppress_sinks
        _unknown_names(c, "sink category", sinks.categories, vocab.sink_categories, sinks)
    if ob.audit is not None and ob.audit.storage_region is not None:
        _unknown_names(c, "region", (ob.audit.storage_region,), regions, ob.audit)


class _Located(Protocol):
    """A syntax-tree node that carries where it was written."""

    @property
    def location(self) -> Location: ...

    @property
    def path(self) -> str: ...


class _RegionTerms:
    """The vocabulary's region terms as a container (codes, subdivisions and groups)."""

    def __init__(self, vocab: Vocabulary) -> None:
        self.vocab = vocab

    def __contains__(self, name: object) -> bool:
        return isinstance(name, str) and self.vocab.is_region_term(name)

    def __iter__(self) -> Iterator[str]:
        return iter(self.vocab.region_terms())


def _unknown_names(
    c: Compilation,
    what: str,
    names: Iterable[str],
    known: Collection[str] | _RegionTerms,
    at: _Located,
) -> None:
    """Report each name the vocabulary does not define, with "did you mean"."""
    for name in names:
        if name not in known:
            c.error(
                REF,
                f"unknown {what} `{name}` (not in {c.vocabulary.file})",
                at.location,
                at.path,
                did_you_mean(name, known),
            )
