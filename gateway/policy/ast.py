"""The policy syntax tree: conditions, rules and documents as the parser builds them.

Every node carries the `Location` it was written at, so every later stage (reference
checks, explanations, golden diagnostics) can point at the source. The tables the tree is
checked against (stages, context fields, operators) are in `language.py`.
"""

from __future__ import annotations

import datetime as dt
from dataclasses import dataclass
from typing import Literal

from gateway.errors import Location

__all__ = [
    "AbsenceSpec",
    "AllOf",
    "AnyOf",
    "AuditSpec",
    "BasisSpec",
    "Condition",
    "ExceptionSpec",
    "FieldRef",
    "HeaderSpec",
    "ImageMarkSpec",
    "MaskSpec",
    "Not",
    "ObligationsSpec",
    "PackDoc",
    "ProblemSpec",
    "RemedySpec",
    "RouteSpec",
    "RuleSpec",
    "SettingsDoc",
    "SinkSuppressionSpec",
    "Test",
]

# --------------------------------------------------------------------------- conditions


@dataclass(frozen=True, slots=True)
class FieldRef:
    """An operand that reads another context field instead of a literal."""

    path: str
    location: Location


@dataclass(frozen=True, slots=True)
class Test:
    """A leaf condition: `field op operand`."""

    field: str
    op: str
    operand: object  # a literal (str, int, bool, None, date, list) or a FieldRef
    location: Location
    path: tuple[str | int, ...]  # data path in the source document, for diagnostics


@dataclass(frozen=True, slots=True)
class AllOf:
    """All sub-conditions hold (an empty `all` holds)."""

    items: tuple[Condition, ...]
    location: Location


@dataclass(frozen=True, slots=True)
class AnyOf:
    """At least one sub-condition holds (an empty `any` does not)."""

    items: tuple[Condition, ...]
    location: Location


@dataclass(frozen=True, slots=True)
class Not:
    """The sub-condition does not hold."""

    item: Condition
    location: Location


Condition = Test | AllOf | AnyOf | Not


# --------------------------------------------------------------------------- rules


@dataclass(frozen=True, slots=True)
class BasisSpec:
    """A legal-basis reference: regime id, article (may use `${field}`), optional URL."""

    regime: str
    ref: str
    url: str | None
    location: Location
    path: str


@dataclass(frozen=True, slots=True)
class RemedySpec:
    """What would make a denied request pass: a header and value, or a consent token."""

    text: str
    header: str | None
    value: str | None
    location: Location


@dataclass(frozen=True, slots=True)
class ProblemSpec:
    """The problem a deny rule reports (type key, title, detail, remedy)."""

    type: str | None
    title: str | None
    detail: str | None
    remedy: RemedySpec | None
    location: Location


@dataclass(frozen=True, slots=True)
class MaskSpec:
    """Mask personal-data categories or payload paths with one method."""

    categories: tuple[str, ...]
    paths: tuple[str, ...]
    method: str
    keep: int | None
    location: Location
    path: str


@dataclass(frozen=True, slots=True)
class RouteSpec:
    """Allowed backend regions, or backends holding one of the transfer mechanisms."""

    regions: tuple[str, ...]
    mechanisms: tuple[str, ...]
    location: Location
    path: str


@dataclass(frozen=True, slots=True)
class HeaderSpec:
    """A response header to add (value may use `${field}`)."""

    name: str
    value: str
    location: Location
    path: str


@dataclass(frozen=True, slots=True)
class ImageMarkSpec:
    """A machine-readable mark to write into a generated image's metadata."""

    scheme: str
    value: str | None
    fields: tuple[tuple[str, str], ...]
    location: Location
    path: str


@dataclass(frozen=True, slots=True)
class SinkSuppressionSpec:
    """Side flows (event sinks) to suppress for this request."""

    categories: tuple[str, ...]
    sale_or_share: bool
    location: Location
    path: str


@dataclass(frozen=True, slots=True)
class AuditSpec:
    """Record-keeping duties: minimum retention and where the record must be stored."""

    retention_days: int | None
    storage_region: str | None
    location: Location
    path: str


@dataclass(frozen=True, slots=True)
class ObligationsSpec:
    """Everything a matching rule asks the gateway to do besides allow or deny."""

    mask: tuple[MaskSpec, ...] = ()
    route: RouteSpec | None = None
    headers: tuple[HeaderSpec, ...] = ()
    image_marks: tuple[ImageMarkSpec, ...] = ()
    suppress_sinks: SinkSuppressionSpec | None = None
    audit: AuditSpec | None = None

    def kinds(self) -> frozenset[str]:
        """Names of the obligation kinds this spec sets."""
        present = {
            "mask": bool(self.mask),
            "route": self.route is not None,
            "headers": bool(self.headers),
            "image_marks": bool(self.image_marks),
            "suppress_sinks": self.suppress_sinks is not None,
            "audit": self.audit is not None,
        }
        return frozenset(k for k, v in present.items() if v)


@dataclass(frozen=True, slots=True)
class ExceptionSpec:
    """A time-boxed waiver: while `when` holds and `until` has not passed, the rule is off."""

    when: Condition | None
    until: dt.date
    ticket: str
    reason: str | None
    location: Location
    path: str


@dataclass(frozen=True, slots=True)
class AbsenceSpec:
    """What a deny rule means when a declared fact it reads is absent.

    `ask`: the rule refuses while the fact is undeclared (each test on the fact counts as
    holding), and the problem asks for the header. `not_applicable`: absence does not bring
    the rule into play, for the stated `reason`.
    """

    fact: str
    mode: Literal["ask", "not_applicable"]
    reason: str | None
    location: Location
    path: str


@dataclass(frozen=True, slots=True)
class RuleSpec:
    """One rule as written (before compilation)."""

    id: str
    pack: str
    stage: str
    effect: str
    mode: str
    status: int | None
    description: str | None
    applies_to: str | None
    when: Condition | None
    basis: tuple[BasisSpec, ...]
    problem: ProblemSpec | None
    obligations: ObligationsSpec
    effective_from: dt.date | dt.datetime | None
    effective_until: dt.date | dt.datetime | None
    exceptions: tuple[ExceptionSpec, ...]
    location: Location
    path: str
    index: int  # position within its pack
    when_absent: tuple[AbsenceSpec, ...] = ()


@dataclass(frozen=True, slots=True)
class PackDoc:
    """A policy pack: one regime's rules, from one file."""

    id: str
    title: str | None
    regime: str | None
    rules: tuple[RuleSpec, ...]
    file: str
    location: Location
    #: The sanctions programme the pack implements (`US-OFAC`, `EU`); its rules apply only
    #: when the operator declares the programme in the settings.
    sanctions_program: str | None = None


@dataclass(frozen=True, slots=True)
class SettingsDoc:
    """Pack-set settings: what happens when no rule allows a request."""

    default_effect: str
    default_status: int
    default_problem: ProblemSpec | None
    file: str
    location: Location
    #: The operator's declarations: where it is established, and the sanctions programmes
    #: it applies (None: every shipped programme applies).
    established_in: str | None = None
    sanctions_programs: tuple[str, ...] | None = None
    operator_location: Location | None = None
    #: Why US programmes apply to an EU-established operator (its US nexus, or an
    #: authorisation under Art. 5 of the EU Blocking Statute); None when not recorded.
    us_nexus: str | None = None
