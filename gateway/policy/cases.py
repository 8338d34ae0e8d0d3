"""Data-driven policy cases: `*.cases.yaml` files of contexts and expected decisions.

A case file::

    kind: cases
    version: 1
    defaults:
      context: {...}          # deep-merged under every case's context
    cases:
      - name: crimea is embargoed
        id: S18               # optional stable id
        context: {caller: {region: UA-43}}
        want:
          effect: deny        # exact
          status: 451         # exact
          stage: sanctions    # exact (null for an allow)
          rules: [...]        # exact set of matched enforced rules
          rules_include: [...]
          dry_run: [...]      # exact set
          legal_basis: [{regime: SANCTIONS-EU, ref: "Reg. (EU) No 692/2014"}]  # each present
          problem: {type: legal}          # subset of the problem
          remedy_mentions: parental-verified
          obligations: {...}  # subset of the obligations' JSON form (lists compare whole)
          errors: [context_type_error]    # exact list of error codes

Rule 1: a broken case file (bad YAML, unknown keys, a context that does not match the
context JSON Schema) is reported as diagnostics and never run; the CLI exits 1 for it.
Rule 2: contexts are JSON data: YAML dates become RFC 3339 strings before evaluation.
"""

from __future__ import annotations

import datetime as dt
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from functools import cache
from pathlib import Path
from typing import Any

from gateway.errors import Diagnostic, Location, describe_value, did_you_mean
from gateway.policy.decision import Decision
from gateway.policy.json_schemas import context_json_schema
from gateway.policy.policyset import PolicySet
from gateway.source import DataPath, LoadedDocument, format_path, load_yaml

__all__ = [
    "Case",
    "CaseFile",
    "CaseResult",
    "check_case",
    "context_diagnostics",
    "load_case_file",
    "merge_context",
    "run_cases",
    "to_json_data",
]

#: A case file whose structure is wrong: unknown or missing keys, values of the wrong kind.
SHAPE = "case_schema_error"
CONTEXT = "case_context_error"

_CASE_KEYS = ("name", "id", "note", "context", "want", "meta")
_WANT_KEYS = (
    "effect",
    "status",
    "stage",
    "rules",
    "rules_include",
    "dry_run",
    "legal_basis",
    "problem",
    "remedy_mentions",
    "obligations",
    "errors",
)


@dataclass(frozen=True, slots=True)
class Case:
    """One case: a context and what the decision must look like."""

    name: str
    id: str | None
    context: Mapping[str, Any]
    want: Mapping[str, Any]
    location: Location
    note: str | None = None
    meta: Mapping[str, Any] = field(default_factory=dict)

    @property
    def label(self) -> str:
        """`id: name` when an id is set, else the name."""
        return f"{self.id}: {self.name}" if self.id else self.name


@dataclass(frozen=True, slots=True)
class CaseFile:
    """A loaded case file: its cases, or the diagnostics that make it unusable."""

    path: str
    cases: tuple[Case, ...]
    diagnostics: tuple[Diagnostic, ...]

    @property
    def ok(self) -> bool:
        """True when the file loaded without errors."""
        return not any(d.severity == "error" for d in self.diagnostics)


@dataclass(frozen=True, slots=True)
class CaseResult:
    """The outcome of one case."""

    case: Case
    decision: Decision
    failures: tuple[str, ...]

    @property
    def passed(self) -> bool:
        """True when every expectation held."""
        return not self.failures


def to_json_data(value: Any) -> Any:
    """Turn YAML-decoded data into JSON data (dates become RFC 3339 strings)."""
    if isinstance(value, dict):
        return {str(k): to_json_data(v) for k, v in value.items()}
    if isinstance(value, list):
        return [to_json_data(v) for v in value]
    if isinstance(value, dt.datetime):
        aware = value if value.tzinfo is not None else value.replace(tzinfo=dt.UTC)
        return aware.isoformat().replace("+00:00", "Z")
    if isinstance(value, dt.date):
        return value.isoformat()
    return value


def merge_context(base: Mapping[str, Any], override: Mapping[str, Any]) -> dict[str, Any]:
    """Deep-merge `override` over `base` (mappings merge, anything else replaces)."""
    out = dict(base)
    for key, value in override.items():
        if isinstance(value, Mapping) and isinstance(out.get(key), Mapping):
            out[key] = merge_context(out[key], value)
        else:
            out[key] = value
    return out


@cache
def _context_validator() -> Any:
    import jsonschema

    schema = context_json_schema()
    cls = jsonschema.validators.validator_for(schema)
    return cls(schema)


def context_diagnostics(
    context: object, origin: str = "<context>", locate: Any = None
) -> list[Diagnostic]:
    """Validate a context against the context JSON Schema.

    `locate(path) -> (Location, DataPath)` maps an error path to a source location.
    """
    out: list[Diagnostic] = []
    for error in sorted(_context_validator().iter_errors(context), key=lambda e: list(e.path)):
        path: DataPath = tuple(error.path)
        loc, shown = locate(path) if locate else (Location(origin), path)
        message = error.message.replace("\n", " ")
        if len(message) > 160:
            message = message[:157] + "..."
        help = None
        if isinstance(error.instance, bool) and error.validator == "type":
            help = 'YAML 1.1 reads NO, yes, off ... as booleans; quote region codes like "NO"'
        out.append(Diagnostic(CONTEXT, f"context {message}", loc, format_path(shown), help))
    return out


def load_case_file(path: Path | str) -> CaseFile:
    """Load and validate one case file (no evaluation)."""
    doc = load_yaml(Path(path), str(path))
    diags = list(doc.diagnostics)
    if not doc.ok:
        return CaseFile(str(path), (), tuple(diags))
    cases = _parse_cases(doc, diags)
    return CaseFile(str(path), tuple(cases), tuple(diags))


def _parse_cases(doc: LoadedDocument, diags: list[Diagnostic]) -> list[Case]:
    data = doc.data
    if not isinstance(data, dict):
        diags.append(doc.diagnostic(SHAPE, "a case file must be a mapping", ()))
        return []
    for key in data:
        if key not in ("kind", "version", "description", "defaults", "cases"):
            diags.append(
                doc.diagnostic(
                    SHAPE,
                    f"unknown key `{key}` in case file",
                    (key,),
                    at_key=True,
                    help=did_you_mean(key, ("kind", "defaults", "cases")),
                )
            )
    if data.get("kind") != "cases":
        diags.append(doc.diagnostic(SHAPE, "a case file needs `kind: cases`", ("kind",)))
    defaults: dict[str, Any] = {}
    raw_defaults = data.get("defaults", {})
    if not isinstance(raw_defaults, dict) or set(raw_defaults) - {"context"}:
        diags.append(doc.diagnostic(SHAPE, "`defaults` holds only `context`", ("defaults",)))
    elif not isinstance(raw_defaults.get("context", {}), dict):
        diags.append(
            doc.type_error(
                ("defaults", "context"), "a mapping", raw_defaults.get("context"), code=SHAPE
            )
        )
    else:
        defaults = to_json_data(raw_defaults.get("context", {}))
    raw_cases = data.get("cases")
    if not isinstance(raw_cases, list) or not raw_cases:
        diags.append(doc.diagnostic(SHAPE, "`cases` must be a non-empty list", ("cases",)))
        return []
    cases: list[Case] = []
    seen: dict[str, int] = {}
    for i, raw in enumerate(raw_cases):
        case = _parse_case(doc, raw, ("cases", i), defaults, diags)
        if case is None:
            continue
        if case.label in seen:
            diags.append(
                doc.diagnostic(
                    SHAPE,
                    f"duplicate case `{case.label}`",
                    ("cases", i),
                    help=f"first used by case {seen[case.label]}",
                )
            )
        seen[case.label] = i
        cases.append(case)
    return cases


def _parse_case(
    doc: LoadedDocument,
    raw: object,
    path: DataPath,
    defaults: Mapping[str, Any],
    diags: list[Diagnostic],
) -> Case | None:
    if not isinstance(raw, dict):
        diags.append(doc.type_error(path, "a mapping", raw, what="a case", code=SHAPE))
        return None
    before = len(diags)
    for key in raw:
        if key not in _CASE_KEYS:
            diags.append(
                doc.diagnostic(
                    SHAPE,
                    f"unknown key `{key}` in case",
                    (*path, key),
                    at_key=True,
                    help=did_you_mean(key, _CASE_KEYS),
                )
            )
    for key in ("name", "context", "want"):
        if key not in raw:
            diags.append(doc.diagnostic(SHAPE, f"case is missing `{key}`", path))
    name = raw.get("name")
    if "name" in raw and not isinstance(name, str):
        diags.append(doc.type_error((*path, "name"), "a string", name, code=SHAPE))
    case_id = raw.get("id")
    if case_id is not None and not isinstance(case_id, str):
        diags.append(doc.type_error((*path, "id"), "a string", case_id, code=SHAPE))
    context = raw.get("context")
    if "context" in raw and not isinstance(context, dict):
        diags.append(doc.type_error((*path, "context"), "a mapping", context, code=SHAPE))
    want = raw.get("want")
    if "want" in raw:
        _check_want(doc, want, (*path, "want"), diags)
    if len(diags) != before:
        return None
    assert isinstance(context, dict) and isinstance(want, dict) and isinstance(name, str)
    merged = merge_context(defaults, to_json_data(context))

    def locate(err_path: DataPath) -> tuple[Location, DataPath]:
        full = (*path, "context", *err_path)
        if doc.node(full) is None:
            return (
                doc.location(("defaults", "context", *err_path))
                if doc.node(("defaults", "context", *err_path))
                else doc.location(full),
                full,
            )
        return doc.location(full), full

    context_errors = context_diagnostics(merged, doc.filename, locate)
    if context_errors:
        diags.extend(context_errors)
        return None
    meta = raw.get("meta") or {}
    return Case(
        name,
        case_id,
        merged,
        to_json_data(want),
        doc.location(path),
        raw.get("note"),
        meta if isinstance(meta, dict) else {},
    )


def _check_want(doc: LoadedDocument, want: object, path: DataPath, diags: list[Diagnostic]) -> None:
    if not isinstance(want, dict):
        diags.append(doc.type_error(path, "a mapping", want, code=SHAPE))
        return
    for key, value in want.items():
        sub = (*path, key)
        if key not in _WANT_KEYS:
            diags.append(
                doc.diagnostic(
                    SHAPE,
                    f"unknown expectation `{key}`",
                    sub,
                    at_key=True,
                    help=did_you_mean(key, _WANT_KEYS),
                )
            )
        elif key == "effect" and value not in ("allow", "deny"):
            diags.append(
                doc.diagnostic(
                    SHAPE, f"effect must be `allow` or `deny`, got {describe_value(value)}", sub
                )
            )
        elif key == "status" and value not in (200, 403, 451):
            diags.append(
                doc.diagnostic(
                    SHAPE, f"status must be 200, 403 or 451, got {describe_value(value)}", sub
                )
            )
        elif key in ("rules", "rules_include", "dry_run", "errors") and not (
            isinstance(value, list) and all(isinstance(v, str) for v in value)
        ):
            diags.append(doc.type_error(sub, "a list of strings", value, code=SHAPE))
        elif key == "legal_basis" and not (
            isinstance(value, list)
            and all(
                isinstance(v, dict)
                and isinstance(v.get("regime"), str)
                and isinstance(v.get("ref"), str)
                for v in value
            )
        ):
            diags.append(doc.diagnostic(SHAPE, "legal_basis must list {regime, ref} mappings", sub))
        elif key in ("problem", "obligations") and not isinstance(value, dict):
            diags.append(doc.type_error(sub, "a mapping", value, code=SHAPE))


def check_case(policy_set: PolicySet, case: Case) -> CaseResult:
    """Evaluate one case (with an explanation) and compare against its expectations."""
    decision = policy_set.evaluate(case.context, explain=True)
    return CaseResult(case, decision, tuple(compare(decision, case.want)))


def compare(decision: Decision, want: Mapping[str, Any]) -> Iterable[str]:
    """Yield one message per unmet expectation."""
    got = decision.to_json()
    yield from _compare_outcome(want, got)
    yield from _compare_errors(want, got)
    yield from _compare_texts(want, got)
    if "obligations" in want:
        yield from _subset("obligations", want["obligations"], got["obligations"])


def _compare_outcome(want: Mapping[str, Any], got: Mapping[str, Any]) -> Iterable[str]:
    """Effect, status, stage and the rules that decided."""
    for key in ("effect", "status", "stage"):
        if key in want and want[key] != got[key]:
            yield f"{key}: want `{want[key]}`, got `{got[key]}`"
    for key in ("rules", "dry_run"):
        if key in want and sorted(want[key]) != sorted(got[key]):
            yield f"{key}: want {sorted(want[key])}, got {sorted(got[key])}"
    if "rules_include" in want:
        missing = [r for r in want["rules_include"] if r not in got["rules"]]
        if missing:
            yield f"rules: missing {missing}, got {got['rules']}"


def _compare_errors(want: Mapping[str, Any], got: Mapping[str, Any]) -> Iterable[str]:
    """Evaluation errors: expected exactly, and never silently."""
    codes = [e["code"] for e in got["errors"]]
    if "errors" in want:
        if codes != want["errors"]:
            yield f"errors: want {want['errors']}, got {codes}"
    elif codes:
        # An erroring rule denies by failing closed: a case that only checks the effect
        # would pass for the wrong reason, so errors must be expected explicitly.
        where = ", ".join(f"{e['code']} in `{e['rule']}`" for e in got["errors"])
        yield f"errors: the decision has evaluation errors ({where}); add `errors:` to expect them"


def _compare_texts(want: Mapping[str, Any], got: Mapping[str, Any]) -> Iterable[str]:
    """Legal bases, the problem, and what its remedy mentions."""
    for basis in want.get("legal_basis", []):
        if not any(all(b.get(k) == v for k, v in basis.items()) for b in got["legal_basis"]):
            refs = [f"{b['regime']} {b['ref']}" for b in got["legal_basis"]]
            yield f"legal_basis: missing `{basis['regime']} {basis['ref']}`, got {refs}"
    if "problem" in want:
        if got["problem"] is None:
            yield "problem: want a problem, got none"
        else:
            yield from _subset("problem", want["problem"], got["problem"])
    if "remedy_mentions" in want:
        token = want["remedy_mentions"]
        problem = got["problem"] or {}
        remedy = problem.get("remedy") or {}
        texts = [problem.get("detail") or "", *(str(v) for v in remedy.values() if v)]
        if not any(token in text for text in texts):
            yield f"problem: neither detail nor remedy mentions `{token}`"


def _subset(path: str, want: Any, got: Any) -> Iterable[str]:
    if isinstance(want, Mapping):
        if not isinstance(got, Mapping):
            yield f"{path}: want a mapping, got `{got}`"
            return
        for key, value in want.items():
            if key not in got:
                yield f"{path}.{key}: missing (got keys {sorted(got)})"
            else:
                yield from _subset(f"{path}.{key}", value, got[key])
    elif want != got:
        yield f"{path}: want `{want}`, got `{got}`"


def run_cases(policy_set: PolicySet, files: Sequence[CaseFile]) -> list[CaseResult]:
    """Run every case of the given (loaded, valid) case files."""
    return [check_case(policy_set, case) for f in files if f.ok for case in f.cases]
