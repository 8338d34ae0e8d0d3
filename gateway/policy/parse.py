"""Located YAML data -> policy syntax tree, with structural diagnostics.

Rule 1: the parser checks shape only (known keys, types, required fields, operator names);
references to the vocabulary and to context fields are checked by the compiler, which sees
every file at once.
Rule 2: the parser never stops at the first problem: a bad rule is reported and skipped,
the rest of the file is still read, and every diagnostic carries the data path
(`rules[1].when.caller.region`) and the location of the offending value or key.
"""

from __future__ import annotations

import re
from collections.abc import Iterable
from dataclasses import dataclass, field
from typing import Any

from gateway.errors import Diagnostic, describe_value, did_you_mean
from gateway.policy.ast import (
    AbsenceSpec,
    AllOf,
    AnyOf,
    BasisSpec,
    Condition,
    ExceptionSpec,
    FieldRef,
    Not,
    ObligationsSpec,
    PackDoc,
    ProblemSpec,
    RemedySpec,
    RuleSpec,
    SettingsDoc,
    Test,
)
from gateway.policy.codes import SHAPE
from gateway.policy.language import DECLARED_FACTS, EFFECTS, MODES, OPERATORS, PROBLEM_TYPES, STAGES
from gateway.policy.parse_obligations import parse_obligations
from gateway.policy.parse_vocabulary import parse_vocabulary
from gateway.policy.reader import HEADER_NAME, Reader, one_of, parse_time, quoted_list
from gateway.policy.vocabulary import Vocabulary
from gateway.source import DataPath, LoadedDocument, format_path

__all__ = [
    "DOCUMENT_KINDS",
    "ParsedFile",
    "UnparsedOperand",
    "Reader",
    "parse_condition",
    "parse_document",
    "parse_time",
]

DOCUMENT_KINDS: tuple[str, ...] = ("vocabulary", "pack", "settings", "cases")
_RULE_ID = re.compile(r"^[a-z0-9][a-z0-9._-]{0,127}$")


@dataclass(slots=True)
class ParsedFile:
    """What one file contributed: at most one of the document kinds, plus diagnostics."""

    file: str
    kind: str | None = None
    vocabulary: Vocabulary | None = None
    pack: PackDoc | None = None
    settings: SettingsDoc | None = None
    diagnostics: list[Diagnostic] = field(default_factory=list)


def parse_document(doc: LoadedDocument) -> ParsedFile:
    """Parse a loaded vocabulary, pack or settings file (cases are parsed by `cases`)."""
    out = ParsedFile(doc.filename)
    reader = Reader(doc)
    data = doc.data
    if doc.empty:
        reader.error(SHAPE, "file is empty", (), help="start the file with `kind: pack`")
        out.diagnostics = reader.diagnostics
        return out
    if not isinstance(data, dict):
        reader.type_error((), "a mapping", data, "a policy file")
        out.diagnostics = reader.diagnostics
        return out
    if "kind" not in data:
        reader.error(
            SHAPE,
            "missing `kind`",
            (),
            help=f"add `kind:` with one of {quoted_list(DOCUMENT_KINDS)}",
        )
        out.diagnostics = reader.diagnostics
        return out
    kind = reader.string(data["kind"], ("kind",), "document kind", choices=DOCUMENT_KINDS)
    out.kind = kind
    if kind == "vocabulary":
        out.vocabulary = parse_vocabulary(reader, data)
    elif kind == "pack":
        out.pack = _parse_pack(reader, data)
    elif kind == "settings":
        out.settings = _parse_settings(reader, data)
    out.diagnostics = reader.diagnostics
    return out


# --------------------------------------------------------------------------- packs


def _parse_pack(r: Reader, data: dict[str, Any]) -> PackDoc | None:
    r.mapping(
        data,
        (),
        what="pack",
        required=("kind", "id", "rules"),
        optional=("version", "title", "regime", "stage", "description", "sanctions_program"),
    )
    if "version" in data:
        r.integer(data["version"], ("version",), "version", choices=(1,))
    pack_id = (
        r.string(
            data.get("id"),
            ("id",),
            "pack id",
            pattern=_RULE_ID,
            pattern_help="use lowercase letters, digits, `-`, `_` and `.`",
        )
        if "id" in data
        else None
    )
    title = r.optional_string(data, "title", (), "title")
    r.optional_string(data, "description", (), "description")
    regime = r.optional_string(data, "regime", (), "regime")
    program = r.optional_string(data, "sanctions_program", (), "sanctions_program")
    stage = None
    if "stage" in data:
        stage = r.string(data["stage"], ("stage",), "stage", choices=STAGES)
    rules: list[RuleSpec] = []
    raw_rules = r.listing(data.get("rules", []), ("rules",), "rules")
    for i, raw in enumerate(raw_rules):
        rule = _parse_rule(r, raw, ("rules", i), pack_id or "?", regime, stage, i)
        if rule is not None:
            rules.append(rule)
    if pack_id is None:
        return None
    return PackDoc(pack_id, title, regime, tuple(rules), r.doc.filename, r.loc(()), program)


_RULE_KEYS = (
    "description",
    "stage",
    "mode",
    "status",
    "applies_to",
    "when",
    "basis",
    "problem",
    "obligations",
    "effective_from",
    "effective_until",
    "exceptions",
    "when_absent",
)


def _parse_rule(
    r: Reader,
    raw: object,
    path: DataPath,
    pack: str,
    regime: str | None,
    default_stage: str | None,
    index: int,
) -> RuleSpec | None:
    data = r.mapping(raw, path, what="rule", required=("id", "effect"), optional=_RULE_KEYS)
    if data is None:
        return None
    before = len(r.diagnostics)
    rule_id = (
        r.string(
            data.get("id"),
            (*path, "id"),
            "rule id",
            pattern=_RULE_ID,
            pattern_help="use lowercase letters, digits, `-`, `_` and `.`",
        )
        if "id" in data
        else None
    )
    effect = (
        r.string(data["effect"], (*path, "effect"), "effect", choices=EFFECTS)
        if "effect" in data
        else None
    )
    stage = default_stage
    if "stage" in data:
        stage = r.string(data["stage"], (*path, "stage"), "stage", choices=STAGES)
    elif default_stage is None:
        r.error(
            SHAPE,
            "rule is missing `stage`",
            path,
            help=f"set `stage:` on the rule or the pack; one of {quoted_list(STAGES)}",
        )
    mode = "enforce"
    if "mode" in data:
        mode = r.string(data["mode"], (*path, "mode"), "mode", choices=MODES) or "enforce"
    status = None
    if "status" in data:
        status = r.integer(data["status"], (*path, "status"), "status", choices=(451, 403))
    when = None
    if "when" in data:
        when = parse_condition(r, data["when"], (*path, "when"))
    basis = tuple(_parse_basis(r, data.get("basis", []), (*path, "basis"), regime))
    problem = None
    if "problem" in data:
        problem = _parse_problem(r, data["problem"], (*path, "problem"))
    obligations = ObligationsSpec()
    if "obligations" in data:
        obligations = parse_obligations(r, data["obligations"], (*path, "obligations"))
    eff_from = (
        r.time(data["effective_from"], (*path, "effective_from"), "effective_from")
        if data.get("effective_from") is not None
        else None
    )
    eff_until = (
        r.time(data["effective_until"], (*path, "effective_until"), "effective_until")
        if data.get("effective_until") is not None
        else None
    )
    exceptions = tuple(_parse_exceptions(r, data.get("exceptions", []), (*path, "exceptions")))
    when_absent = tuple(_parse_absence(r, data.get("when_absent", {}), (*path, "when_absent")))
    description = r.optional_string(data, "description", path, "description")
    applies_to = r.optional_string(data, "applies_to", path, "applies_to")
    if len(r.diagnostics) != before or rule_id is None or effect is None or stage is None:
        return None
    return RuleSpec(
        id=rule_id,
        pack=pack,
        stage=stage,
        effect=effect,
        mode=mode,
        status=status,
        description=description,
        applies_to=applies_to,
        when=when,
        basis=basis,
        problem=problem,
        obligations=obligations,
        effective_from=eff_from,
        effective_until=eff_until,
        exceptions=exceptions,
        location=r.loc(path),
        path=format_path(path),
        index=index,
        when_absent=when_absent,
    )


_ABSENCE_HELP = (
    "write `ask` (refuse and ask for the header) or `{not_applicable: <why absence does not "
    "bring the rule into play>}`"
)


def _parse_absence(r: Reader, raw: object, path: DataPath) -> Iterable[AbsenceSpec]:
    if not isinstance(raw, dict):
        r.type_error(path, "a mapping of declared facts", raw, "when_absent")
        return
    for fact, meaning in raw.items():
        sub = (*path, fact)
        if fact not in DECLARED_FACTS:
            r.error(
                SHAPE,
                f"`{fact}` is not a declared fact",
                sub,
                help=did_you_mean(str(fact), DECLARED_FACTS) or one_of(DECLARED_FACTS),
                at_key=True,
            )
            continue
        if meaning == "ask":
            yield AbsenceSpec(fact, "ask", None, r.loc(sub), format_path(sub))
            continue
        if isinstance(meaning, dict) and set(meaning) == {"not_applicable"}:
            reason = r.string(
                meaning["not_applicable"], (*sub, "not_applicable"), "not_applicable reason"
            )
            if reason is not None:
                yield AbsenceSpec(fact, "not_applicable", reason, r.loc(sub), format_path(sub))
            continue
        r.error(
            SHAPE,
            f"cannot read what the absence of `{fact}` means ({describe_value(meaning)})",
            sub,
            help=_ABSENCE_HELP,
        )


_COMBINATORS = ("all", "any", "not")


def parse_condition(r: Reader, raw: object, path: DataPath) -> Condition | None:
    """Parse a `when` condition: a mapping of field tests and `all`/`any`/`not`."""
    if not isinstance(raw, dict):
        r.type_error(path, "a mapping of conditions", raw, "a condition")
        return None
    if not raw:
        r.error(SHAPE, "empty condition", path, help="omit `when` for a rule that always applies")
        return None
    items: list[Condition] = []
    for key, value in raw.items():
        sub = (*path, key)
        if key in ("all", "any"):
            parts = r.listing(value, sub, f"`{key}`")
            children = [parse_condition(r, v, (*sub, i)) for i, v in enumerate(parts)]
            if any(c is None for c in children):
                continue
            kids = tuple(c for c in children if c is not None)
            loc = r.loc(sub)
            items.append(AllOf(kids, loc) if key == "all" else AnyOf(kids, loc))
        elif key == "not":
            child = parse_condition(r, value, sub)
            if child is not None:
                items.append(Not(child, r.loc(sub)))
        else:
            items.extend(_parse_tests(r, key, value, sub))
    if len(items) == 1:
        return items[0]
    return AllOf(tuple(items), r.loc(path))


def _parse_tests(r: Reader, field_path: str, value: object, path: DataPath) -> list[Test]:
    if isinstance(value, list):
        r.error(
            SHAPE,
            f"a list cannot be compared with `{field_path}` directly",
            path,
            help="write `{in: [...]}` (or `{contains_any: [...]}` for a list field)",
        )
        return []
    if not isinstance(value, dict):
        return [Test(field_path, "eq", value, r.loc(path), path)]
    if not value:
        r.error(
            SHAPE,
            f"no operator for `{field_path}`",
            path,
            help=f"use one of {quoted_list(OPERATORS)}",
        )
        return []
    tests: list[Test] = []
    for op, operand in value.items():
        sub = (*path, op)
        if op not in OPERATORS:
            if op == "field" and len(value) == 1:
                r.error(
                    SHAPE,
                    f"`{field_path}` needs an operator before a field reference",
                    sub,
                    at_key=True,
                    help="write `{eq: {field: other.path}}`",
                )
            else:
                r.error(
                    SHAPE,
                    f"unknown operator `{op}`",
                    sub,
                    at_key=True,
                    help=did_you_mean(op, OPERATORS) or one_of(OPERATORS),
                )
            continue
        tests.append(Test(field_path, op, _operand(r, operand, sub), r.loc(sub), sub))
    return tests


def _operand(r: Reader, raw: object, path: DataPath) -> object:
    if isinstance(raw, dict):
        if set(raw) == {"field"} and isinstance(raw["field"], str):
            return FieldRef(raw["field"], r.loc((*path, "field")))
        return UnparsedOperand(raw)
    return raw


@dataclass(frozen=True, slots=True)
class UnparsedOperand:
    """A mapping operand that is not `{field: path}`; the compiler reports it in context."""

    raw: dict[str, Any]


def _parse_basis(r: Reader, raw: object, path: DataPath, regime: str | None) -> Iterable[BasisSpec]:
    for i, item in enumerate(r.listing(raw, path, "basis")):
        sub = (*path, i)
        data = r.mapping(
            item, sub, what="basis entry", required=("ref",), optional=("regime", "url")
        )
        if data is None:
            continue
        reg = r.optional_string(data, "regime", sub, "regime") or regime
        if reg is None:
            r.error(
                SHAPE,
                "basis entry is missing `regime`",
                sub,
                help="set `regime:` on the entry or on the pack",
            )
            continue
        ref = r.string(data.get("ref"), (*sub, "ref"), "ref") if "ref" in data else None
        url = r.optional_string(data, "url", sub, "url")
        if ref is not None:
            yield BasisSpec(reg, ref, url, r.loc(sub), format_path(sub))


def _parse_problem(r: Reader, raw: object, path: DataPath) -> ProblemSpec | None:
    data = r.mapping(raw, path, what="problem", optional=("type", "title", "detail", "remedy"))
    if data is None:
        return None
    ptype = None
    if "type" in data:
        ptype = r.string(data["type"], (*path, "type"), "problem type", choices=PROBLEM_TYPES)
    remedy = None
    if "remedy" in data:
        sub = (*path, "remedy")
        rd = r.mapping(
            data["remedy"], sub, what="remedy", required=("text",), optional=("header", "value")
        )
        if rd is not None:
            text = r.string(rd.get("text"), (*sub, "text"), "remedy text") if "text" in rd else None
            header = r.optional_string(rd, "header", sub, "remedy header")
            if header is not None and not HEADER_NAME.match(header):
                r.error(SHAPE, f"invalid header name `{header}`", (*sub, "header"))
            value = r.optional_string(rd, "value", sub, "remedy value")
            if text is not None:
                remedy = RemedySpec(text, header, value, r.loc(sub))
    return ProblemSpec(
        ptype,
        r.optional_string(data, "title", path, "title"),
        r.optional_string(data, "detail", path, "detail"),
        remedy,
        r.loc(path),
    )


def _parse_exceptions(r: Reader, raw: object, path: DataPath) -> Iterable[ExceptionSpec]:
    for i, item in enumerate(r.listing(raw, path, "exceptions")):
        sub = (*path, i)
        data = r.mapping(
            item, sub, what="exception", required=("until", "ticket"), optional=("when", "reason")
        )
        if data is None:
            continue
        until = r.date(data["until"], (*sub, "until"), "until") if "until" in data else None
        ticket = r.string(data["ticket"], (*sub, "ticket"), "ticket") if "ticket" in data else None
        when = parse_condition(r, data["when"], (*sub, "when")) if "when" in data else None
        reason = r.optional_string(data, "reason", sub, "reason")
        if until is not None and ticket is not None:
            yield ExceptionSpec(when, until, ticket, reason, r.loc(sub), format_path(sub))


# --------------------------------------------------------------------------- settings


def _parse_settings(r: Reader, data: dict[str, Any]) -> SettingsDoc | None:
    r.mapping(
        data, (), what="settings", required=("kind", "default"), optional=("version", "operator")
    )
    established_in: str | None = None
    us_nexus: str | None = None
    programs: tuple[str, ...] | None = None
    operator_location = None
    if "operator" in data:
        od = r.mapping(
            data["operator"],
            ("operator",),
            what="operator",
            optional=("established_in", "sanctions_programs", "us_nexus"),
        )
        if od is not None:
            operator_location = r.loc(("operator",))
            established_in = r.optional_string(
                od, "established_in", ("operator",), "established_in"
            )
            us_nexus = r.optional_string(od, "us_nexus", ("operator",), "us_nexus")
            if "sanctions_programs" in od:
                programs = tuple(
                    r.string_list(
                        od["sanctions_programs"],
                        ("operator", "sanctions_programs"),
                        "sanctions programme",
                    )
                    or ()
                )
    if "default" not in data:
        return None
    path: DataPath = ("default",)
    dd = r.mapping(
        data["default"], path, what="default", required=("effect",), optional=("status", "problem")
    )
    if dd is None:
        return None
    effect = (
        r.string(dd.get("effect"), (*path, "effect"), "default effect", choices=("allow", "deny"))
        if "effect" in dd
        else None
    )
    status = 403
    if "status" in dd:
        status = r.integer(dd["status"], (*path, "status"), "status", choices=(451, 403)) or 403
    problem = _parse_problem(r, dd["problem"], (*path, "problem")) if "problem" in dd else None
    if effect is None:
        return None
    return SettingsDoc(
        effect,
        status,
        problem,
        r.doc.filename,
        r.loc(()),
        established_in,
        programs,
        operator_location,
        us_nexus,
    )
