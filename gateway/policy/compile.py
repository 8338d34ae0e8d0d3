"""Parsed documents -> an immutable, indexed `PolicySet`, through a named stage table.

Stages (`COMPILE_STAGES`, in order; a stage that reports errors stops the pipeline, since
later stages rely on its results):

1. `collect`    exactly one vocabulary, at most one settings document, the packs
2. `identify`   rule ids unique across packs (a conflict names both places)
3. `typecheck`  every field, operator, literal and reference against the vocabulary and the
                request-context table, with "did you mean"; literals normalised
                (`typecheck.py`, with the `when_absent` check in `absence.py`)
4. `check`      per-rule consistency: obligations allowed in the rule's stage, statuses,
                effective windows, legal bases, conditions that can never hold
5. `lower`      conditions -> closures; templates, obligations and problems prepared
                (`lower.py`)
6. `index`      per rule, one top-level equality/membership test becomes an index guard
                (`index.py`)
7. `freeze`     the `PolicySet` with its revision (hash of the canonical sources)

The compiled form is in `ir.py`; the state the stages share is in `compilation.py`.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable, Iterator, Sequence
from typing import TypeVar

from gateway.errors import Location, did_you_mean, has_errors
from gateway.policy.codes import BLOCKING_STATUTE, CONFLICT, REF, SHAPE, UNREACHABLE
from gateway.policy.compilation import Compilation
from gateway.policy.index import index
from gateway.policy.ir import CompileResult
from gateway.policy.language import STAGE_OBLIGATIONS, STAGES
from gateway.policy.lower import lower
from gateway.policy.parse import ParsedFile
from gateway.policy.times import interval_of
from gateway.policy.typecheck import typecheck
from gateway.policy.vocabulary import region_in
from gateway.source import LoadedDocument

__all__ = ["COMPILE_STAGES", "compile_documents"]

_T = TypeVar("_T")


# --------------------------------------------------------------------------- collect


def _collect(c: Compilation) -> None:
    vocab_files = _collect_documents(c)
    if not _one_vocabulary(c, vocab_files):
        return
    c.vocab = vocab_files[0].vocabulary
    _collect_rules(c)
    if c.settings is not None and c.settings.established_in is not None:
        _check_establishment(c)


def _collect_documents(c: Compilation) -> list[ParsedFile]:
    """Take the settings (one at most) and the packs; return the files with a vocabulary."""
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
    return vocab_files


def _one_vocabulary(c: Compilation, vocab_files: list[ParsedFile]) -> bool:
    """Exactly one vocabulary, or an error."""
    if not vocab_files:
        first = c.files[0][0].filename if c.files else "<policies>"
        c.error(
            SHAPE,
            "no vocabulary found",
            Location(first) if c.files else None,
            None,
            "add a file with `kind: vocabulary` (policies/vocabulary.yaml)",
        )
        return False
    for extra in vocab_files[1:]:
        c.error(
            CONFLICT,
            "more than one vocabulary",
            Location(extra.file, 1, 1),
            None,
            f"the vocabulary is already defined in {vocab_files[0].file}",
        )
    return len(vocab_files) == 1


def _collect_rules(c: Compilation) -> None:
    """The rules of every pack, but of the sanctions programmes the operator declares."""
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


def _check_establishment(c: Compilation) -> None:
    """The operator's region is a vocabulary term; then the EU Blocking Statute check."""
    settings = c.settings
    assert settings is not None and settings.established_in is not None
    vocab = c.vocabulary
    if not vocab.is_region_term(settings.established_in):
        c.error(
            REF,
            f"unknown region `{settings.established_in}` (not in {vocab.file})",
            settings.operator_location,
            "operator.established_in",
            did_you_mean(settings.established_in, vocab.region_terms()),
        )
    else:
        _blocking_statute(c)


#: US programmes listed in the annex of the EU Blocking Statute (Council Regulation (EC)
#: No 2271/96 as amended by Delegated Regulation (EU) 2018/1100).
_BLOCKED_US_MEASURES = ("31 CFR Part 515", "31 CFR Part 560")


def _blocking_statute(c: Compilation) -> None:
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


# --------------------------------------------------------------------------- identify


def _identify(c: Compilation) -> None:
    for pack, first in _repeated(c.packs, lambda p: p.id):
        c.error(
            CONFLICT,
            f"duplicate pack id `{pack.id}`",
            pack.location,
            "id",
            f"first used in {first.file}",
        )
    for rule, first_rule in _repeated(c.rules, lambda r: r.id):
        c.error(
            CONFLICT,
            f"duplicate rule id `{rule.id}`",
            rule.location,
            rule.path,
            f"first defined at {first_rule.location}",
        )


def _repeated(items: Iterable[_T], key: Callable[[_T], str]) -> Iterator[tuple[_T, _T]]:
    """Each item whose key an earlier item already has, with that first item."""
    first: dict[str, _T] = {}
    for item in items:
        seen = first.setdefault(key(item), item)
        if seen is not item:
            yield item, seen


# --------------------------------------------------------------------------- check


def _check(c: Compilation) -> None:
    for rule in c.rules:
        kinds = rule.obligations.kinds()
        allowed = STAGE_OBLIGATIONS[rule.stage]
        for kind in sorted(kinds - allowed):
            where = [s for s in STAGES if kind in STAGE_OBLIGATIONS[s]]
            c.error(
                SHAPE,
                f"`{kind}` obligations do not belong in stage `{rule.stage}`",
                rule.location,
                rule.path + ".obligations",
                f"move the rule to stage `{where[0]}`" if where else None,
            )
        if rule.effect == "deny" and kinds:
            c.error(
                SHAPE,
                "a deny rule's obligations would never apply",
                rule.location,
                rule.path + ".obligations",
                "move them to an `obligate` rule",
            )
        if rule.effect != "deny" and (rule.status is not None or rule.problem is not None):
            c.error(
                SHAPE,
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
                SHAPE,
                "the rule answers `X-AIGC-Explicit-Label: applied` without drawing the label",
                rule.location,
                rule.path + ".obligations",
                "add `image_marks: [{scheme: cn_aigc_explicit_label}]`: the header may only "
                "say what the gateway did",
            )
        if rule.effect == "obligate" and not kinds:
            c.error(
                SHAPE,
                "an `obligate` rule sets no obligations",
                rule.location,
                rule.path,
                "add `obligations:` or change the effect",
            )
        if rule.stage == "audit" and rule.effect != "obligate":
            c.error(
                SHAPE,
                "rules in stage `audit` must have effect `obligate`",
                rule.location,
                rule.path,
                "audit rules only set record-keeping obligations",
            )
        if rule.effect in ("deny", "obligate") and not rule.basis:
            c.error(
                SHAPE,
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
                    SHAPE,
                    "an exception without `when` switches the whole rule off",
                    exc.location,
                    exc.path,
                    "add `when:` or use `effective_until`",
                    severity="warning",
                )


# --------------------------------------------------------------------------- the pipeline


def _freeze(c: Compilation) -> None:
    c.result.vocabulary = c.vocab
    c.result.settings = c.settings


#: The compile pipeline as data: (name, stage, needs a clean input). Each stage reads and
#: extends the shared compiler state. A stage that needs a clean input runs only when no
#: earlier stage reported an error; the checking stages run together, so one run reports
#: duplicate ids, reference errors and consistency errors at once.
COMPILE_STAGES: tuple[tuple[str, Callable[[Compilation], None], bool], ...] = (
    ("collect", _collect, True),
    ("identify", _identify, True),
    ("typecheck", typecheck, False),
    ("check", _check, False),
    ("lower", lower, True),
    ("index", index, True),
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
    c = Compilation(files, emitted)
    for name, stage, needs_clean_input in COMPILE_STAGES:
        if needs_clean_input and has_errors(c.diags):
            break
        stage(c)
        if name == stop_after:
            break
    c.result.diagnostics = c.diags
    return c.result
