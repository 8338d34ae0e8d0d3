"""What the engine returns for one request: the decision, its problem and its obligations.

Rule 1: a `Decision` is plain, immutable data (named tuples: cheap to build on the hot path,
impossible to modify); `to_json()` gives the JSON-safe mapping the gateway puts in responses
and audit records (no floats, no personal-data values).
Rule 2: `effect == "deny"` iff `status != 200`; a deny always has a `problem`; any entry in
`errors` implies a deny.
"""

from __future__ import annotations

from collections.abc import Mapping
from types import MappingProxyType
from typing import Any, NamedTuple

__all__ = [
    "AuditObligation",
    "Decision",
    "DecisionError",
    "ImageMark",
    "LegalBasis",
    "MaskAction",
    "Obligations",
    "Problem",
    "Remedy",
    "Routing",
    "SinkSuppression",
    "Waiver",
]


class LegalBasis(NamedTuple):
    """A legal reference: regime id, article or clause, and a public URL."""

    regime: str
    ref: str
    url: str | None = None

    def to_json(self) -> dict[str, Any]:
        """JSON form `{regime, ref, url}`."""
        return {"regime": self.regime, "ref": self.ref, "url": self.url}


class Remedy(NamedTuple):
    """What would make a denied request pass (a header and value, or a consent token)."""

    text: str
    header: str | None = None
    value: str | None = None

    def to_json(self) -> dict[str, Any]:
        """JSON form `{text, header, value}`."""
        return {"text": self.text, "header": self.header, "value": self.value}


class Problem(NamedTuple):
    """The problem details of a denial (the gateway adds URLs, status and audit id).

    `type` is a key (`legal` or `licence`) the gateway maps to its problem-type URI.
    """

    type: str
    title: str
    detail: str
    remedy: Remedy | None = None
    demanding_party: str | None = None
    applies_to: str | None = None
    jurisdiction: str | None = None

    def to_json(self) -> dict[str, Any]:
        """JSON form of the problem."""
        return {
            "type": self.type,
            "title": self.title,
            "detail": self.detail,
            "remedy": self.remedy.to_json() if self.remedy else None,
            "demanding_party": self.demanding_party,
            "applies_to": self.applies_to,
            "jurisdiction": self.jurisdiction,
        }


class MaskAction(NamedTuple):
    """How to mask one category or path: `redact`, keyed `hash`, or `keep_last` N.

    `keep_last` keeps the last N characters that are letters or digits and replaces the
    earlier ones with `X`, leaving separators (spaces, dots, dashes) where they were:
    Aadhaar `2341 2341 2346` becomes `XXXX XXXX 2346`.
    """

    method: str
    keep: int | None = None

    def to_json(self) -> dict[str, Any]:
        """JSON form `{method}` or `{method, keep}`."""
        if self.keep is None:
            return {"method": self.method}
        return {"method": self.method, "keep": self.keep}


class Routing(NamedTuple):
    """Where the request may go: allowed backend regions and the candidates inside them."""

    allowed_regions: tuple[str, ...]
    backends: tuple[str, ...]
    mechanisms: tuple[str, ...] = ()

    def to_json(self) -> dict[str, Any]:
        """JSON form `{allowed_regions, backends, mechanisms}`."""
        return {
            "allowed_regions": list(self.allowed_regions),
            "backends": list(self.backends),
            "mechanisms": list(self.mechanisms),
        }


class ImageMark(NamedTuple):
    """A machine-readable mark to write into a generated image's own metadata."""

    scheme: str
    value: str | None = None
    fields: tuple[tuple[str, str], ...] = ()

    def to_json(self) -> dict[str, Any]:
        """JSON form `{scheme, value, fields}`."""
        return {"scheme": self.scheme, "value": self.value, "fields": dict(self.fields)}


class SinkSuppression(NamedTuple):
    """Side flows not to feed for this request: by category, sale/share flag, and ids."""

    categories: tuple[str, ...]
    sale_or_share: bool
    sinks: tuple[str, ...]

    def to_json(self) -> dict[str, Any]:
        """JSON form `{categories, sale_or_share, sinks}`."""
        return {
            "categories": list(self.categories),
            "sale_or_share": self.sale_or_share,
            "sinks": list(self.sinks),
        }


class AuditObligation(NamedTuple):
    """Record-keeping duties for this request's audit record."""

    retention_days_min: int | None = None
    storage_region: str | None = None

    def to_json(self) -> dict[str, Any]:
        """JSON form `{retention_days_min, storage_region}`."""
        return {
            "retention_days_min": self.retention_days_min,
            "storage_region": self.storage_region,
        }


_NO_AUDIT = AuditObligation()


class Obligations(NamedTuple):
    """Everything the gateway must do with an allowed request (and audit duties always)."""

    mask: Mapping[str, MaskAction] = MappingProxyType({})
    mask_paths: Mapping[str, MaskAction] = MappingProxyType({})
    routing: Routing | None = None
    headers: tuple[tuple[str, str], ...] = ()
    image_marks: tuple[ImageMark, ...] = ()
    suppress_sinks: SinkSuppression | None = None
    audit: AuditObligation = _NO_AUDIT

    def changes_exchange(self) -> bool:
        """True when the request or response is changed (masking, marks, headers, sinks).

        Routing is not counted: whether it changes anything depends on the backend the
        gateway would otherwise pick.
        """
        return bool(
            self.mask
            or self.mask_paths
            or self.headers
            or self.image_marks
            or (self.suppress_sinks is not None and self.suppress_sinks.sinks)
        )

    def to_json(self) -> dict[str, Any]:
        """JSON form of all obligations (fixed keys, empty values when unset)."""
        return {
            "mask": {k: v.to_json() for k, v in self.mask.items()},
            "mask_paths": {k: v.to_json() for k, v in self.mask_paths.items()},
            "routing": self.routing.to_json() if self.routing else None,
            "headers": [{"name": n, "value": v} for n, v in self.headers],
            "image_marks": [m.to_json() for m in self.image_marks],
            "suppress_sinks": self.suppress_sinks.to_json() if self.suppress_sinks else None,
            "audit": self.audit.to_json(),
        }


EMPTY_OBLIGATIONS = Obligations()


class DecisionError(NamedTuple):
    """An evaluation error (the decision is then a deny): code, message, rule if any."""

    code: str
    message: str
    rule: str | None = None

    def to_json(self) -> dict[str, Any]:
        """JSON form `{code, message, rule}`."""
        return {"code": self.code, "message": self.message, "rule": self.rule}


class Waiver(NamedTuple):
    """A rule exception that applied: the rule stayed off until `until` under `ticket`."""

    rule: str
    ticket: str
    until: str

    def to_json(self) -> dict[str, Any]:
        """JSON form `{rule, ticket, until}`."""
        return {"rule": self.rule, "ticket": self.ticket, "until": self.until}


class Decision(NamedTuple):
    """The engine's answer for one request context."""

    effect: str
    status: int
    stage: str | None
    rules: tuple[str, ...]
    dry_run: tuple[str, ...]
    legal_basis: tuple[LegalBasis, ...]
    problem: Problem | None
    obligations: Obligations
    errors: tuple[DecisionError, ...]
    policy_revision: str
    waivers: tuple[Waiver, ...] = ()
    explanation: Any = None  # an `explain.Explanation` when asked for

    @property
    def allowed(self) -> bool:
        """True for an allow."""
        return self.effect == "allow"

    def to_json(self, *, include_explanation: bool = False) -> dict[str, Any]:
        """JSON-safe mapping of the decision (explanation only when asked and present)."""
        out: dict[str, Any] = {
            "effect": self.effect,
            "status": self.status,
            "stage": self.stage,
            "rules": list(self.rules),
            "dry_run": list(self.dry_run),
            "legal_basis": [b.to_json() for b in self.legal_basis],
            "problem": self.problem.to_json() if self.problem else None,
            "obligations": self.obligations.to_json(),
            "errors": [e.to_json() for e in self.errors],
            "waivers": [w.to_json() for w in self.waivers],
            "policy_revision": self.policy_revision,
        }
        if include_explanation and self.explanation is not None:
            out["explanation"] = self.explanation.to_json()
        return out
