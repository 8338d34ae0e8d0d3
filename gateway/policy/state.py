"""What one evaluation reads once: the clock and the context's sections (`EvalState`), the
error a strict read raises (`EvalError`), and the shapes of getters and predicates.

Rule 1: sections (`caller`, `subject`, `request`, `licence`, `model`) are read and
type-checked once per evaluation; a wrong type raises `EvalError`, which the evaluator
turns into a deny (fail closed).
"""

from __future__ import annotations

from collections.abc import Callable, Mapping, Sequence
from typing import Any

from gateway.policy.times import Interval
from gateway.policy.vocabulary import Vocabulary

__all__ = [
    "ABSENT",
    "PRESENT",
    "EvalError",
    "EvalState",
    "Getter",
    "Predicate",
]

Getter = Callable[[Mapping[str, Any], "EvalState"], Any]
Predicate = Callable[[Mapping[str, Any], "EvalState"], bool]


class _Marker:
    __slots__ = ("name",)

    def __init__(self, name: str) -> None:
        self.name = name

    def __repr__(self) -> str:
        return self.name


#: Index keys for `exists: true` / `exists: false` guards.
PRESENT: Any = _Marker("PRESENT")
ABSENT: Any = _Marker("ABSENT")


class EvalError(Exception):
    """A rule could not be evaluated on this context (wrong type, unreadable field)."""

    def __init__(self, code: str, message: str) -> None:
        super().__init__(message)
        self.code = code
        self.message = message


_EMPTY: Mapping[str, Any] = {}


class EvalState:
    """Per-evaluation facts computed once: the clock and the context's sections.

    `c`, `s`, `r`, `l`, `m`, `f` are the `caller`, `subject`, `request`, `licence`, `model`
    and `caller.flags` mappings (an empty mapping when absent); `load_sections` raises
    `EvalError` when one is present but not an object. It also reads the facts most rules
    test: `pd` and `consents` (validated lists of strings), `has_pd`, and `presumed` (the
    presumed subject region, unchecked: a test checks the type where it reads it).
    """

    __slots__ = (
        "now",
        "vocabulary",
        "c",
        "s",
        "r",
        "l",
        "m",
        "f",
        "purpose",
        "pd",
        "consents",
        "has_pd",
        "presumed",
    )

    def __init__(self, now: Interval, vocabulary: Vocabulary) -> None:
        self.now = now
        self.vocabulary = vocabulary
        self.c = self.s = self.r = self.l = self.m = self.f = _EMPTY
        #: The attributes of the declared purpose; None when undeclared or unknown.
        self.purpose: Mapping[str, bool] | None = None
        self.pd: Sequence[str] = ()
        self.consents: Sequence[str] = ()
        self.has_pd = False
        self.presumed: Any = None

    @classmethod
    def read(cls, now: Interval, vocabulary: Vocabulary, ctx: Mapping[str, Any]) -> EvalState:
        """`EvalState(now, vocabulary)` then `load_sections(ctx)`, without the defaults
        `load_sections` overwrites anyway (the evaluator's hot path)."""
        st = cls.__new__(cls)
        st.now = now
        st.vocabulary = vocabulary
        st.load_sections(ctx)
        return st

    def load_sections(self, ctx: Mapping[str, Any]) -> None:
        """Read the context's sections once (type-checked)."""
        # Hot path: locals instead of attribute reads, and the common cases (a dict or
        # null section, a null list) inline; `_section` and `_strings` do the rest.
        get = ctx.get
        c = get("caller")
        if c.__class__ is not dict:
            c = _section(c, "caller")
        s = get("subject")
        if s.__class__ is not dict:
            s = _section(s, "subject")
        r = get("request")
        if r.__class__ is not dict:
            r = _section(r, "request")
        lic = get("licence")
        if lic.__class__ is not dict:
            lic = _section(lic, "licence")
        m = get("model")
        if m.__class__ is not dict:
            m = _section(m, "model")
        f = c.get("flags")
        if f.__class__ is not dict:
            f = _section(f, "caller.flags")
        self.c = c
        self.s = s
        self.r = r
        self.l = lic
        self.m = m
        self.f = f
        purpose = r.get("purpose")
        self.purpose = attributes = (
            self.vocabulary.purposes.get(purpose) if purpose.__class__ is str else None
        )
        pd = r.get("personal_data")
        self.pd = pd = () if pd is None else _strings(pd, "request.personal_data")
        consents = r.get("consents")
        self.consents = () if consents is None else _strings(consents, "request.consents")
        self.has_pd = bool(pd) or (
            attributes is not None and attributes.get("personal_data", False) is True
        )
        presumed = s.get("region")
        self.presumed = presumed if presumed is not None else c.get("region")


def _strings(value: Any, name: str) -> Sequence[str]:
    if value is None:
        return ()
    if value.__class__ is not list:
        raise EvalError("context_type_error", f"`{name}` must be a list")
    for item in value:
        if item.__class__ is not str:
            raise EvalError("context_type_error", f"`{name}` must hold strings")
    return value


def _section(value: Any, name: str) -> Mapping[str, Any]:
    if value is None:
        return _EMPTY
    if value.__class__ is dict or isinstance(value, Mapping):
        return value
    raise EvalError("context_type_error", f"`{name}` must be an object")
