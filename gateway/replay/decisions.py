"""Re-deriving recorded decisions: with the revision that made them, or with a candidate.

A `decision` record carries the policy revision in force (`policy`) and the request context
as the engine evaluated it (`input`, see `pipeline.records.evaluation_input`). Replaying it
evaluates that input again, with the declared subject region read as the gateway read it (the
stricter of the declared and the inferred region unless the tenant attests it) and the
routing constraint checked against the recorded candidate backends, and compares the outcome
with the one recorded: allow or deny, the status, and the rules that matched.

* `replay_log` re-derives every decision with its own revision (`jurisgate audit verify
  --replay`): a mismatch means the record does not show what the recorded policy decides.
* `policy_impact` evaluates every recorded decision with a candidate policy set (`jurisgate
  policy replay`): what an edit would change, by rule, tenant and model.

Records without an input (written before inputs were recorded, or refused before a decision
existed: a wrong key, an unreadable body) are counted as not replayable, never as mismatches.
What an auditor trusts here: this module and the policy engine it runs, and the revisions
filed beside the log (`replay.revisions`), which must hash to the revision each record names.
"""

from __future__ import annotations

import json
from collections import Counter
from collections.abc import Callable, Iterable, Iterator
from dataclasses import dataclass, field
from functools import lru_cache
from pathlib import Path
from typing import Any

from gateway.audit.storage import list_segments
from gateway.policy import Decision, PolicySet
from gateway.policy.combine import stricter
from gateway.request.context import inferred_alternative
from gateway.request.problems import EVALUATION_ERROR_STATUS
from gateway.request.regions import RegionGroups
from gateway.request.routing import BackendSpec, select_backend

__all__ = [
    "ChangeListener",
    "Impact",
    "impact_html",
    "Outcome",
    "ReplayReport",
    "iter_decision_records",
    "policy_impact",
    "recorded_outcome",
    "replay_log",
    "replayed_outcome",
]

#: Decisions a replay compares (`reject` and `error` are the gateway's, not the policy's).
_POLICY_DECISIONS = frozenset({"allow", "transform", "deny"})


@dataclass(frozen=True, order=True)
class Outcome:
    """What the policies decided: allow or deny, the status, the rules that matched."""

    effect: str
    status: int
    rules: tuple[str, ...]

    def describe(self) -> str:
        """`deny 451 [rule-a, rule-b]`."""
        return f"{self.effect} {self.status} [{', '.join(self.rules)}]"


def iter_decision_records(source: Path) -> Iterator[dict[str, Any]]:
    """The `decision` records of a log directory or an export bundle, in log order."""
    if (source / "manifest.json").exists():
        files = sorted((source / "records").glob("*.jsonl"), key=lambda p: int(p.stem))
    else:
        files = [path for _, path in list_segments(source)]
    for path in files:
        with path.open("rb") as handle:
            for line in handle:
                if not line.strip() or not line.endswith(b"\n"):
                    continue  # a line still being written by a running gateway
                record = json.loads(line)["r"]
                if record.get("type") == "decision":
                    yield record


def recorded_outcome(record: dict[str, Any]) -> Outcome | None:
    """The policy outcome a record shows, or None when the record holds none to compare."""
    if record.get("decision") not in _POLICY_DECISIONS or "input" not in record:
        return None
    effect = "deny" if record["decision"] == "deny" else "allow"
    status = int(record.get("status", 0)) if effect == "deny" else 200
    return Outcome(effect, status, tuple(sorted(record.get("rules") or ())))


def _with_floats(value: Any) -> Any:
    if isinstance(value, dict):
        if len(value) == 1 and isinstance(value.get("float"), str):
            return float(value["float"])
        return {key: _with_floats(item) for key, item in value.items()}
    if isinstance(value, list):
        return [_with_floats(item) for item in value]
    return value


def replayed_outcome(policy_set: PolicySet, record: dict[str, Any]) -> Outcome:
    """The outcome `policy_set` gives the record's input, read as the gateway reads it."""
    context = dict(record["input"])
    if record.get("input_floats"):
        context = _with_floats(context)
    unavailable = frozenset(context.pop("unavailable_backends", ()))
    decision = policy_set.evaluate(context)
    declared = record.get("declared_subject_region") or {}
    alternative = inferred_alternative(context, attested=bool(declared.get("attested")))
    if alternative is not None:
        decision = stricter(decision, policy_set.evaluate(alternative))
    rules = tuple(sorted(decision.rules))
    if decision.allowed:
        if not _routable(policy_set, decision, context, unavailable):
            return Outcome("deny", 451, rules)  # the residency denial the gateway writes
        return Outcome("allow", 200, rules)
    if decision.errors:
        return Outcome("deny", EVALUATION_ERROR_STATUS, rules)
    return Outcome("deny", decision.status if decision.status in (451, 403) else 451, rules)


def _routable(
    policy_set: PolicySet, decision: Decision, context: dict[str, Any], unavailable: frozenset[str]
) -> bool:
    """Whether a recorded candidate backend meets the decision's routing constraint."""
    routing = decision.obligations.routing
    if routing is None:
        return True
    groups = RegionGroups.from_vocabulary(policy_set.vocabulary.groups)
    model = (context.get("request") or {}).get("model") or ""
    candidates = [
        _candidate(
            str(backend["id"]),
            str(backend["region"]),
            model,
            tuple(backend.get("transfer_mechanisms") or ()),
        )
        for backend in context.get("backends") or ()
    ]
    chosen = select_backend(
        candidates,
        model,
        allowed_regions=frozenset(routing.allowed_regions),
        caller_region=(context.get("caller") or {}).get("region"),
        preferred=None,
        region_routing_default={},
        groups=groups,
        unavailable=unavailable,
    )
    return chosen is not None


@lru_cache(maxsize=4096)
def _candidate(
    backend_id: str, region: str, model: str, mechanisms: tuple[str, ...]
) -> BackendSpec:
    """A recorded candidate backend as routing reads it (built once: specs validate)."""
    return BackendSpec(
        id=backend_id,
        url="http://replay.invalid",
        region=region,
        models={model: {}},
        transfer_mechanisms=mechanisms,
    )


@dataclass(frozen=True)
class Mismatch:
    """A record whose outcome is not what its revision decides."""

    seq: int
    decision_id: str
    recorded: Outcome
    replayed: Outcome

    def text(self) -> str:
        """One line for people."""
        return (
            f"record {self.seq} (decision {self.decision_id}): recorded "
            f"{self.recorded.describe()}, the revision decides {self.replayed.describe()}"
        )


@dataclass
class ReplayReport:
    """What a replay of a log found."""

    replayed: int = 0
    not_replayable: int = 0
    mismatches: list[Mismatch] = field(default_factory=list)
    missing_revisions: dict[str, str] = field(default_factory=dict)

    @property
    def ok(self) -> bool:
        """No mismatch and every revision was there."""
        return not self.mismatches and not self.missing_revisions


def replay_log(
    records: Iterable[dict[str, Any]],
    revision: Callable[[str], PolicySet],
) -> ReplayReport:
    """Re-derive every decision with the revision it names (`revision(id)` loads it, and
    raises for a revision it cannot give: every record naming it is then unverified)."""
    report = ReplayReport()
    loaded: dict[str, PolicySet | None] = {}
    for record in records:
        recorded = recorded_outcome(record)
        if recorded is None:
            report.not_replayable += 1
            continue
        name = str(record.get("policy"))
        if name not in loaded:
            try:
                loaded[name] = revision(name)
            except Exception as exc:  # noqa: BLE001 - reported, and the replay fails
                loaded[name] = None
                report.missing_revisions[name] = str(exc)
        policy_set = loaded[name]
        if policy_set is None:
            continue
        report.replayed += 1
        replayed = replayed_outcome(policy_set, record)
        if replayed != recorded:
            report.mismatches.append(
                Mismatch(
                    int(record.get("seq", -1)), str(record.get("decision_id")), recorded, replayed
                )  # fmt: skip
            )
    return report


@dataclass
class Impact:
    """What a candidate policy would change in recorded traffic."""

    compared: int = 0
    not_replayable: int = 0
    changed: int = 0
    transitions: Counter[str] = field(default_factory=Counter)
    by_rule: Counter[str] = field(default_factory=Counter)
    by_tenant: Counter[str] = field(default_factory=Counter)
    by_model: Counter[str] = field(default_factory=Counter)
    samples: dict[str, list[str]] = field(default_factory=dict)

    def to_json(self) -> dict[str, Any]:
        """The report as JSON."""
        return {
            "compared": self.compared,
            "not_replayable": self.not_replayable,
            "changed": self.changed,
            "transitions": dict(self.transitions),
            "by_rule": dict(self.by_rule),
            "by_tenant": dict(self.by_tenant),
            "by_model": dict(self.by_model),
            "samples": self.samples,
        }


def _responsible(recorded: Outcome, replayed: Outcome) -> list[str]:
    """The rules a change is owed to: a denial's rules that no longer match (deny to allow),
    a new denial's rules (allow to deny), otherwise every rule that matches on one side only."""
    before, after = set(recorded.rules), set(replayed.rules)
    if recorded.effect == "deny" and replayed.effect == "allow":
        return sorted(before - after)
    if recorded.effect == "allow" and replayed.effect == "deny":
        return sorted(after - before)
    return sorted(before ^ after)


ChangeListener = Callable[[dict[str, Any], Outcome, Outcome], None]


def policy_impact(
    records: Iterable[dict[str, Any]],
    candidate: PolicySet,
    *,
    tenants: frozenset[str] = frozenset(),
    samples: int = 5,
    on_change: ChangeListener | None = None,
) -> Impact:
    """Compare every recorded decision (of `tenants`, when given) with what `candidate`
    decides for the same input; `on_change(record, recorded, replayed)` hears of each change
    (a CSV writer, say) as it is found."""
    impact = Impact()
    for record in records:
        if tenants and record.get("tenant") not in tenants:
            continue
        recorded = recorded_outcome(record)
        if recorded is None:
            impact.not_replayable += 1
            continue
        impact.compared += 1
        replayed = replayed_outcome(candidate, record)
        if replayed == recorded:
            continue
        impact.changed += 1
        if on_change is not None:
            on_change(record, recorded, replayed)
        transition = f"{recorded.effect} {recorded.status} -> {replayed.effect} {replayed.status}"
        impact.transitions[transition] += 1
        for rule in _responsible(recorded, replayed):
            impact.by_rule[rule] += 1
        impact.by_tenant[str(record.get("tenant"))] += 1
        impact.by_model[str(record.get("model"))] += 1
        listed = impact.samples.setdefault(transition, [])
        if len(listed) < samples:
            listed.append(str(record.get("decision_id")))
    return impact


def impact_html(impact: Impact, revision: str, sources: list[str]) -> str:
    """A self-contained HTML page of `impact` (for a review or a change ticket)."""
    from html import escape

    def table(title: str, counts: Counter[str]) -> str:
        rows = "".join(
            f"<tr><td>{escape(name)}</td><td class=n>{count}</td></tr>"
            for name, count in counts.most_common()
        )
        return f"<h2>{escape(title)}</h2><table><tr><th>{escape(title)}</th><th>decisions</th></tr>{rows or '<tr><td colspan=2>none</td></tr>'}</table>"  # noqa: E501

    samples = "".join(
        f"<li><b>{escape(transition)}</b>: {escape(', '.join(ids))}</li>"
        for transition, ids in impact.samples.items()
    )
    return (
        "<!doctype html><html lang=en><meta charset=utf-8><title>Policy replay</title>"
        "<style>body{font:14px/1.4 system-ui,sans-serif;max-width:960px;margin:2em auto}"
        "table{border-collapse:collapse;margin-bottom:1em}td,th{border:1px solid #999;"
        "padding:.2em .6em;text-align:left}.n{text-align:right}</style>"
        f"<h1>Policy replay</h1><p>Candidate <code>{escape(revision)}</code> on "
        f"{escape(', '.join(sources))}.</p>"
        f"<p><b>{impact.changed}</b> of {impact.compared} recorded decisions would change "
        f"({impact.not_replayable} not replayable).</p>"
        + table("transition", impact.transitions)
        + table("rule", impact.by_rule)
        + table("tenant", impact.by_tenant)
        + table("model", impact.by_model)
        + f"<h2>Sample decision ids</h2><ul>{samples or '<li>none</li>'}</ul></html>"
    )
