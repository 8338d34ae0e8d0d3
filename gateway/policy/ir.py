"""The compiled form of a policy set: rules with lowered conditions, prepared problems and
obligations, index guards, and the result of one compilation.

Everything here is immutable once `compile.compile_documents` returns; the evaluator reads
it on every request.
"""

from __future__ import annotations

import datetime as dt
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from typing import Any

from gateway.errors import Diagnostic, Location
from gateway.policy.ast import RuleSpec, SettingsDoc
from gateway.policy.codegen import TypedLeaf
from gateway.policy.decision import LegalBasis, MaskAction, Problem
from gateway.policy.state import Getter, Predicate
from gateway.policy.templates import Template
from gateway.policy.vocabulary import Vocabulary

__all__ = [
    "CNode",
    "CompileResult",
    "CompiledBasis",
    "CompiledException",
    "CompiledObligations",
    "CompiledProblem",
    "CompiledRule",
    "IndexGuard",
]


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
    """Everything `compile_documents` produced (`load_policy_set` builds a `PolicySet` of it)."""

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
