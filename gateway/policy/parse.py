"""Located YAML data -> policy syntax tree, with structural diagnostics.

Rule 1: the parser checks shape only (known keys, types, required fields, operator names);
references to the vocabulary and to context fields are checked by the compiler, which sees
every file at once.
Rule 2: the parser never stops at the first problem: a bad rule is reported and skipped,
the rest of the file is still read, and every diagnostic carries the data path
(`rules[1].when.caller.region`) and the location of the offending value or key.
"""

from __future__ import annotations

import datetime as dt
import re
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field
from typing import Any

from gateway.errors import Diagnostic, Location, describe_value, did_you_mean
from gateway.policy.ast import (
    AbsenceSpec,
    AllOf,
    AnyOf,
    AuditSpec,
    BasisSpec,
    Condition,
    ExceptionSpec,
    FieldRef,
    HeaderSpec,
    ImageMarkSpec,
    MaskSpec,
    Not,
    ObligationsSpec,
    PackDoc,
    ProblemSpec,
    RemedySpec,
    RouteSpec,
    RuleSpec,
    SettingsDoc,
    SinkSpec,
    Test,
)
from gateway.policy.language import (
    DECLARED_FACTS,
    EFFECTS,
    IMAGE_MARK_SCHEMES,
    MASK_METHODS,
    MODES,
    OPERATORS,
    PROBLEM_TYPES,
    STAGES,
)
from gateway.policy.vocabulary import RegimeInfo, Vocabulary, build_groups
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

SCHEMA = "policy_schema_error"
TYPE = "policy_type_error"

_RULE_ID = re.compile(r"^[a-z0-9][a-z0-9._-]{0,127}$")
_COUNTRY = re.compile(r"^[A-Z]{2}$")
_SUBDIVISION = re.compile(r"^[A-Z]{2}-[A-Z0-9]{1,3}$")
_HEADER_NAME = re.compile(r"^[A-Za-z0-9!#$%&'*+.^_`|~-]+$")
_NAME = re.compile(r"^[A-Za-z0-9][A-Za-z0-9_.:-]*$")


@dataclass(slots=True)
class ParsedFile:
    """What one file contributed: at most one of the document kinds, plus diagnostics."""

    file: str
    kind: str | None = None
    vocabulary: Vocabulary | None = None
    pack: PackDoc | None = None
    settings: SettingsDoc | None = None
    diagnostics: list[Diagnostic] = field(default_factory=list)


class Reader:
    """Typed, located accessors over a `LoadedDocument` that collect diagnostics."""

    def __init__(self, doc: LoadedDocument) -> None:
        self.doc = doc
        self.diagnostics: list[Diagnostic] = []

    def loc(self, path: DataPath) -> Location:
        """Location of the value at `path`."""
        return self.doc.location(path)

    def error(
        self,
        code: str,
        message: str,
        path: DataPath,
        *,
        help: str | None = None,
        at_key: bool = False,
        severity: str = "error",
    ) -> None:
        """Record a diagnostic at `path`."""
        self.diagnostics.append(
            self.doc.diagnostic(code, message, path, help=help, at_key=at_key, severity=severity)
        )

    def type_error(
        self, path: DataPath, expected: str, value: object, what: str | None = None
    ) -> None:
        """Record a wrong-type diagnostic (with YAML 1.1 help where it applies)."""
        self.diagnostics.append(self.doc.type_error(path, expected, value, what=what, code=TYPE))

    def mapping(
        self,
        value: object,
        path: DataPath,
        *,
        what: str,
        required: Iterable[str] = (),
        optional: Iterable[str] = (),
    ) -> dict[str, Any] | None:
        """Check `value` is a mapping with only known keys and all required ones."""
        if not isinstance(value, dict):
            self.type_error(path, "a mapping", value, what)
            return None
        req = tuple(required)
        known = (*req, *optional)
        for key in value:
            if key not in known:
                self.error(
                    SCHEMA,
                    f"unknown key `{key}` in {what}",
                    (*path, key),
                    help=did_you_mean(key, known) or _expected_keys(known),
                    at_key=True,
                )
        for key in req:
            if key not in value:
                self.error(SCHEMA, f"{what} is missing `{key}`", path)
        return value

    def string(
        self,
        value: object,
        path: DataPath,
        what: str,
        *,
        choices: Iterable[str] = (),
        pattern: re.Pattern[str] | None = None,
        pattern_help: str | None = None,
    ) -> str | None:
        """Check `value` is a non-empty string (one of `choices` when given)."""
        if not isinstance(value, str):
            self.type_error(path, "a string", value, what)
            return None
        if not value.strip():
            self.error(SCHEMA, f"{what} must not be empty", path)
            return None
        options = tuple(choices)
        if options and value not in options:
            self.error(
                SCHEMA,
                f"unknown {what} `{value}`",
                path,
                help=did_you_mean(value, options) or _one_of(options),
            )
            return None
        if pattern is not None and not pattern.match(value):
            self.error(SCHEMA, f"invalid {what} `{value}`", path, help=pattern_help)
            return None
        return value

    def optional_string(
        self, data: Mapping[str, Any], key: str, path: DataPath, what: str
    ) -> str | None:
        """Read an optional string member."""
        if key not in data or data[key] is None:
            return None
        return self.string(data[key], (*path, key), what)

    def integer(
        self,
        value: object,
        path: DataPath,
        what: str,
        *,
        minimum: int | None = None,
        choices: Iterable[int] = (),
    ) -> int | None:
        """Check `value` is an integer (not a boolean), optionally bounded or enumerated."""
        if not isinstance(value, int) or isinstance(value, bool):
            self.type_error(path, "an integer", value, what)
            return None
        options = tuple(choices)
        if options and value not in options:
            self.error(SCHEMA, f"{what} must be one of {_list(options)}, got `{value}`", path)
            return None
        if minimum is not None and value < minimum:
            self.error(SCHEMA, f"{what} must be at least {minimum}, got `{value}`", path)
            return None
        return value

    def boolean(self, value: object, path: DataPath, what: str) -> bool | None:
        """Check `value` is a boolean."""
        if not isinstance(value, bool):
            self.type_error(path, "a boolean", value, what)
            return None
        return value

    def time(self, value: object, path: DataPath, what: str) -> dt.date | dt.datetime | None:
        """Read a date (`2025-02-02`) or an RFC 3339 date-time."""
        parsed = parse_time(value)
        if parsed is None:
            self.error(
                TYPE,
                f"{what} must be a date (YYYY-MM-DD) or an RFC 3339 time, got {_describe(value)}",
                path,
            )
        return parsed

    def date(self, value: object, path: DataPath, what: str) -> dt.date | None:
        """Read a calendar date."""
        parsed = parse_time(value)
        if parsed is None or isinstance(parsed, dt.datetime):
            self.error(TYPE, f"{what} must be a date (YYYY-MM-DD), got {_describe(value)}", path)
            return None
        return parsed

    def string_list(
        self, value: object, path: DataPath, what: str, *, allow_empty: bool = True
    ) -> list[str]:
        """Read a list of strings (a single string is not accepted: write `[x]`)."""
        if not isinstance(value, list):
            self.type_error(path, "a list", value, what)
            return []
        out: list[str] = []
        for i, item in enumerate(value):
            text = self.string(item, (*path, i), what + " entry")
            if text is not None:
                out.append(text)
        if not value and not allow_empty:
            self.error(SCHEMA, f"{what} must not be empty", path)
        return out

    def listing(self, value: object, path: DataPath, what: str) -> list[Any]:
        """Check `value` is a list."""
        if not isinstance(value, list):
            self.type_error(path, "a list", value, what)
            return []
        return value


def parse_time(value: object) -> dt.date | dt.datetime | None:
    """Parse a date or RFC 3339 date-time (YAML-decoded or string); naive means UTC."""
    if isinstance(value, dt.datetime):
        return value if value.tzinfo is not None else value.replace(tzinfo=dt.UTC)
    if isinstance(value, dt.date):
        return value
    if not isinstance(value, str) or not 10 <= len(value) <= 40:
        return None
    try:
        if len(value) == 10:
            return dt.date.fromisoformat(value)
        parsed = dt.datetime.fromisoformat(value)
    except ValueError:
        return None
    return parsed if parsed.tzinfo is not None else parsed.replace(tzinfo=dt.UTC)


def parse_document(doc: LoadedDocument) -> ParsedFile:
    """Parse a loaded vocabulary, pack or settings file (cases are parsed by `cases`)."""
    out = ParsedFile(doc.filename)
    reader = Reader(doc)
    data = doc.data
    if doc.empty:
        reader.error(SCHEMA, "file is empty", (), help="start the file with `kind: pack`")
        out.diagnostics = reader.diagnostics
        return out
    if not isinstance(data, dict):
        reader.type_error((), "a mapping", data, "a policy file")
        out.diagnostics = reader.diagnostics
        return out
    if "kind" not in data:
        reader.error(
            SCHEMA, "missing `kind`", (), help=f"add `kind:` with one of {_list(DOCUMENT_KINDS)}"
        )
        out.diagnostics = reader.diagnostics
        return out
    kind = reader.string(data["kind"], ("kind",), "document kind", choices=DOCUMENT_KINDS)
    out.kind = kind
    if kind == "vocabulary":
        out.vocabulary = _parse_vocabulary(reader, data)
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
            SCHEMA,
            "rule is missing `stage`",
            path,
            help=f"set `stage:` on the rule or the pack; one of {_list(STAGES)}",
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
        obligations = _parse_obligations(r, data["obligations"], (*path, "obligations"))
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
                SCHEMA,
                f"`{fact}` is not a declared fact",
                sub,
                help=did_you_mean(str(fact), DECLARED_FACTS) or _one_of(DECLARED_FACTS),
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
            SCHEMA,
            f"cannot read what the absence of `{fact}` means ({_describe(meaning)})",
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
        r.error(SCHEMA, "empty condition", path, help="omit `when` for a rule that always applies")
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
            SCHEMA,
            f"a list cannot be compared with `{field_path}` directly",
            path,
            help="write `{in: [...]}` (or `{contains_any: [...]}` for a list field)",
        )
        return []
    if not isinstance(value, dict):
        return [Test(field_path, "eq", value, r.loc(path), path)]
    if not value:
        r.error(
            SCHEMA, f"no operator for `{field_path}`", path, help=f"use one of {_list(OPERATORS)}"
        )
        return []
    tests: list[Test] = []
    for op, operand in value.items():
        sub = (*path, op)
        if op not in OPERATORS:
            if op == "field" and len(value) == 1:
                r.error(
                    SCHEMA,
                    f"`{field_path}` needs an operator before a field reference",
                    sub,
                    at_key=True,
                    help="write `{eq: {field: other.path}}`",
                )
            else:
                r.error(
                    SCHEMA,
                    f"unknown operator `{op}`",
                    sub,
                    at_key=True,
                    help=did_you_mean(op, OPERATORS) or _one_of(OPERATORS),
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
                SCHEMA,
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
            if header is not None and not _HEADER_NAME.match(header):
                r.error(SCHEMA, f"invalid header name `{header}`", (*sub, "header"))
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


_OBLIGATION_KEYS = ("mask", "route", "headers", "image_marks", "suppress_sinks", "audit")


def _parse_obligations(r: Reader, raw: object, path: DataPath) -> ObligationsSpec:
    data = r.mapping(raw, path, what="obligations", optional=_OBLIGATION_KEYS)
    if data is None:
        return ObligationsSpec()
    masks: list[MaskSpec] = []
    if "mask" in data:
        sub = (*path, "mask")
        items = data["mask"] if isinstance(data["mask"], list) else [data["mask"]]
        base = sub if not isinstance(data["mask"], list) else None
        for i, item in enumerate(items):
            ipath = base if base is not None else (*sub, i)
            spec = _parse_mask(r, item, ipath)
            if spec is not None:
                masks.append(spec)
    route = _parse_route(r, data["route"], (*path, "route")) if "route" in data else None
    headers: list[HeaderSpec] = []
    if "headers" in data:
        sub = (*path, "headers")
        hd = r.mapping(
            data["headers"],
            sub,
            what="headers",
            optional=tuple(data["headers"]) if isinstance(data["headers"], dict) else (),
        )
        for name, value in (hd or {}).items():
            if not _HEADER_NAME.match(name):
                r.error(SCHEMA, f"invalid header name `{name}`", (*sub, name), at_key=True)
                continue
            text = r.string(value, (*sub, name), f"header `{name}`")
            if text is not None:
                headers.append(
                    HeaderSpec(name, text, r.loc((*sub, name)), format_path((*sub, name)))
                )
    marks: list[ImageMarkSpec] = []
    if "image_marks" in data:
        sub = (*path, "image_marks")
        for i, item in enumerate(r.listing(data["image_marks"], sub, "image_marks")):
            mark = _parse_mark(r, item, (*sub, i))
            if mark is not None:
                marks.append(mark)
    sinks = None
    if "suppress_sinks" in data:
        sub = (*path, "suppress_sinks")
        sd = r.mapping(
            data["suppress_sinks"],
            sub,
            what="suppress_sinks",
            optional=("categories", "sale_or_share"),
        )
        if sd is not None:
            cats = r.string_list(sd.get("categories", []), (*sub, "categories"), "categories")
            sale = r.boolean(
                sd.get("sale_or_share", False), (*sub, "sale_or_share"), "sale_or_share"
            )
            if not cats and not sale:
                r.error(SCHEMA, "suppress_sinks names no categories and not sale_or_share", sub)
            sinks = SinkSpec(tuple(cats), bool(sale), r.loc(sub), format_path(sub))
    audit = None
    if "audit" in data:
        sub = (*path, "audit")
        ad = r.mapping(
            data["audit"], sub, what="audit", optional=("retention_days", "storage_region")
        )
        if ad is not None:
            days = (
                r.integer(
                    ad["retention_days"], (*sub, "retention_days"), "retention_days", minimum=1
                )
                if "retention_days" in ad
                else None
            )
            region = r.optional_string(ad, "storage_region", sub, "storage_region")
            if "retention_days" not in ad and "storage_region" not in ad:
                r.error(SCHEMA, "audit sets neither retention_days nor storage_region", sub)
            audit = AuditSpec(days, region, r.loc(sub), format_path(sub))
    return ObligationsSpec(tuple(masks), route, tuple(headers), tuple(marks), sinks, audit)


def _parse_mask(r: Reader, raw: object, path: DataPath) -> MaskSpec | None:
    data = r.mapping(
        raw, path, what="mask", required=("method",), optional=("categories", "paths", "keep")
    )
    if data is None:
        return None
    method = (
        r.string(data.get("method"), (*path, "method"), "mask method", choices=MASK_METHODS)
        if "method" in data
        else None
    )
    cats = r.string_list(data.get("categories", []), (*path, "categories"), "categories")
    paths = r.string_list(data.get("paths", []), (*path, "paths"), "paths")
    if not cats and not paths:
        r.error(SCHEMA, "mask names no categories and no paths", path)
        return None
    keep = None
    if method == "keep_last":
        if "keep" not in data:
            r.error(SCHEMA, "`keep_last` needs `keep` (how many characters stay visible)", path)
            return None
        keep = r.integer(data["keep"], (*path, "keep"), "keep", minimum=1)
    elif "keep" in data:
        r.error(
            SCHEMA,
            f"`keep` only applies to `keep_last`, not `{method}`",
            (*path, "keep"),
            at_key=True,
        )
    if method is None:
        return None
    return MaskSpec(tuple(cats), tuple(paths), method, keep, r.loc(path), format_path(path))


def _parse_route(r: Reader, raw: object, path: DataPath) -> RouteSpec | None:
    data = r.mapping(raw, path, what="route", required=("regions",), optional=("or_mechanisms",))
    if data is None:
        return None
    regions = r.string_list(
        data.get("regions", []), (*path, "regions"), "region", allow_empty=False
    )
    mechanisms = r.string_list(
        data.get("or_mechanisms", []), (*path, "or_mechanisms"), "transfer mechanism"
    )
    return RouteSpec(tuple(regions), tuple(mechanisms), r.loc(path), format_path(path))


def _parse_mark(r: Reader, raw: object, path: DataPath) -> ImageMarkSpec | None:
    data = r.mapping(
        raw, path, what="image mark", required=("scheme",), optional=("value", "fields")
    )
    if data is None:
        return None
    scheme = (
        r.string(
            data.get("scheme"), (*path, "scheme"), "image mark scheme", choices=IMAGE_MARK_SCHEMES
        )
        if "scheme" in data
        else None
    )
    value = r.optional_string(data, "value", path, "value")
    fields: list[tuple[str, str]] = []
    if "fields" in data:
        sub = (*path, "fields")
        fd = r.mapping(
            data["fields"],
            sub,
            what="fields",
            optional=tuple(data["fields"]) if isinstance(data["fields"], dict) else (),
        )
        for key, val in (fd or {}).items():
            text = r.string(val, (*sub, key), f"field `{key}`")
            if text is not None:
                fields.append((key, text))
    if scheme is None:
        return None
    return ImageMarkSpec(scheme, value, tuple(fields), r.loc(path), format_path(path))


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


# --------------------------------------------------------------------------- vocabulary

_VOCAB_SETS = (
    "lawful_bases",
    "consents",
    "deployment_contexts",
    "transfer_mechanisms",
    "sink_categories",
    "model_kinds",
    "model_outputs",
    "licence_kinds",
)
_FLAG_TYPES = ("boolean", "string", "integer")


def _parse_vocabulary(r: Reader, data: dict[str, Any]) -> Vocabulary | None:
    r.mapping(
        data,
        (),
        what="vocabulary",
        required=("kind", "regions", "purposes", "personal_data", "regimes"),
        optional=("version", "purpose_attributes", "tenant_flags", *_VOCAB_SETS),
    )
    before = len(r.diagnostics)
    countries, subdivisions, groups, order = _parse_regions(r, data.get("regions"))
    attributes = _described_names(
        r, data.get("purpose_attributes", {}), ("purpose_attributes",), "purpose attribute"
    )
    purposes: dict[str, dict[str, bool]] = {}
    praw = r.mapping(
        data.get("purposes"),
        ("purposes",),
        what="purposes",
        optional=tuple(data.get("purposes") or ())
        if isinstance(data.get("purposes"), dict)
        else (),
    )
    for name, attrs in (praw or {}).items():
        sub: DataPath = ("purposes", name)
        if not _NAME.match(name):
            r.error(SCHEMA, f"invalid purpose name `{name}`", sub, at_key=True)
        if attrs is None:
            purposes[name] = {}
            continue
        ad = r.mapping(attrs, sub, what=f"purpose `{name}`", optional=tuple(attributes))
        purposes[name] = {}
        for attr, flag in (ad or {}).items():
            if attr in attributes:
                value = r.boolean(flag, (*sub, attr), attr)
                if value is not None:
                    purposes[name][attr] = value
    pd = _described_names(
        r, data.get("personal_data"), ("personal_data",), "personal-data category"
    )
    regimes: dict[str, RegimeInfo] = {}
    rraw = r.mapping(
        data.get("regimes"),
        ("regimes",),
        what="regimes",
        optional=tuple(data.get("regimes") or ()) if isinstance(data.get("regimes"), dict) else (),
    )
    for rid, info in (rraw or {}).items():
        sub = ("regimes", rid)
        idata = r.mapping(
            info,
            sub,
            what=f"regime `{rid}`",
            required=("name",),
            optional=("url", "demanding_party", "jurisdiction"),
        )
        if idata is None:
            continue
        regimes[rid] = RegimeInfo(
            rid,
            r.string(idata.get("name"), (*sub, "name"), "name") or rid,
            r.optional_string(idata, "url", sub, "url"),
            r.optional_string(idata, "demanding_party", sub, "demanding_party"),
            r.optional_string(idata, "jurisdiction", sub, "jurisdiction"),
        )
    sets: dict[str, frozenset[str]] = {}
    for key in _VOCAB_SETS:
        sets[key] = frozenset(_described_names(r, data.get(key, []), (key,), key[:-1]))
    flags: dict[str, str] = {}
    fraw = data.get("tenant_flags", {})
    fd = r.mapping(
        fraw,
        ("tenant_flags",),
        what="tenant_flags",
        optional=tuple(fraw) if isinstance(fraw, dict) else (),
    )
    for name, spec in (fd or {}).items():
        sub = ("tenant_flags", name)
        sd = r.mapping(
            spec, sub, what=f"tenant flag `{name}`", required=("type",), optional=("description",)
        )
        if sd is not None and "type" in sd:
            ftype = r.string(sd["type"], (*sub, "type"), "flag type", choices=_FLAG_TYPES)
            if ftype is not None:
                flags[name] = ftype
    if len(r.diagnostics) != before:
        return None
    return Vocabulary(
        countries=frozenset(countries),
        subdivisions=subdivisions,
        groups=groups,
        purposes=purposes,
        purpose_attributes=attributes,
        personal_data=pd,
        regimes=regimes,
        lawful_bases=sets["lawful_bases"],
        consents=sets["consents"],
        deployment_contexts=sets["deployment_contexts"],
        transfer_mechanisms=sets["transfer_mechanisms"],
        sink_categories=sets["sink_categories"],
        model_kinds=sets["model_kinds"],
        model_outputs=sets["model_outputs"],
        licence_kinds=sets["licence_kinds"],
        tenant_flags=flags,
        file=r.doc.filename,
        _group_order=order,
    )


def _described_names(r: Reader, raw: object, path: DataPath, what: str) -> dict[str, str]:
    """Read either a list of names or a mapping of name -> description."""
    out: dict[str, str] = {}
    if isinstance(raw, list):
        for i, item in enumerate(raw):
            name = r.string(item, (*path, i), what)
            if name is not None:
                out[name] = ""
        return out
    if not isinstance(raw, dict):
        r.type_error(path, "a list or a mapping", raw, what + "s")
        return out
    for name, desc in raw.items():
        if desc is not None and not isinstance(desc, str):
            r.type_error((*path, name), "a description string", desc, name)
        out[name] = desc or ""
    return out


def _parse_regions(
    r: Reader,
    raw: object,
) -> tuple[set[str], dict[str, str], dict[str, frozenset[str]], tuple[str, ...]]:
    path: DataPath = ("regions",)
    data = r.mapping(
        raw, path, what="regions", required=("countries",), optional=("subdivisions", "groups")
    )
    if data is None:
        return set(), {}, {}, ()
    countries: set[str] = set()
    for i, code in enumerate(
        r.listing(data.get("countries", []), (*path, "countries"), "countries")
    ):
        text = r.string(
            code,
            (*path, "countries", i),
            "country code",
            pattern=_COUNTRY,
            pattern_help="use ISO 3166-1 alpha-2 codes such as `DE`",
        )
        if text is not None:
            countries.add(text)
    subdivisions: dict[str, str] = {}
    for code, name in _described_names(
        r, data.get("subdivisions", {}), (*path, "subdivisions"), "subdivision"
    ).items():
        sub = (*path, "subdivisions", code)
        if not _SUBDIVISION.match(code):
            r.error(
                SCHEMA,
                f"invalid subdivision code `{code}`",
                sub,
                at_key=True,
                help="use ISO 3166-2 codes such as `US-CA`",
            )
        elif code[:2] not in countries:
            r.error(
                "policy_ref_error",
                f"subdivision `{code}` names unknown country `{code[:2]}`",
                sub,
                at_key=True,
            )
        subdivisions[code] = name
    raw_groups: dict[str, list[str]] = {}
    graw = data.get("groups", {})
    gd = r.mapping(
        graw,
        (*path, "groups"),
        what="groups",
        optional=tuple(graw) if isinstance(graw, dict) else (),
    )
    for name, members in (gd or {}).items():
        sub = (*path, "groups", name)
        if name in countries or name in subdivisions:
            r.error(SCHEMA, f"group `{name}` shadows a region code", sub, at_key=True)
        raw_groups[name] = r.string_list(members, sub, "group member", allow_empty=False)
    known = countries | set(subdivisions) | set(raw_groups)
    for name, members in raw_groups.items():
        for i, member in enumerate(members):
            if member not in known:
                r.error(
                    "policy_ref_error",
                    f"unknown region `{member}` in group `{name}`",
                    (*path, "groups", name, i),
                    help=did_you_mean(member, sorted(known)),
                )
    groups, order, cycles = build_groups(raw_groups)
    for name, chain in cycles:
        r.error(
            SCHEMA,
            f"region group `{name}` contains itself ({chain})",
            (*path, "groups", name),
            at_key=True,
        )
    return countries, subdivisions, groups, order


def _list(options: Iterable[object]) -> str:
    return ", ".join(f"`{o}`" for o in options)


def _one_of(options: Iterable[object]) -> str:
    return f"use one of {_list(options)}"


def _expected_keys(known: Iterable[str]) -> str | None:
    keys = tuple(known)
    return f"expected one of {_list(keys)}" if keys else None


def _describe(value: object) -> str:
    return describe_value(value)
