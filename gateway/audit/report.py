"""Self-contained HTML report of an export, for people (no scripts, no external resources).

The summary counts every decision kind and names the tree size, root hash, signing key IDs
and witness cosignatures. Decisions over time are an inline SVG on a continuous time axis
with a legend; rules and legal bases (of all decisions and of denials) are tables with bars,
so no label is cut; then a table of the denials. Fits 1280 px and prints. Every value from
a record is HTML-escaped.
The report is a view: the bundle's signatures, not this page, are the evidence.
"""

from __future__ import annotations

import html
from collections import Counter
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass
from datetime import datetime, timedelta
from typing import Any

import orjson

__all__ = [
    "DECISION_KINDS",
    "LogFacts",
    "ReportTally",
    "decision_effect",
    "render_report",
    "render_tally",
]

_BAR = "#1565c0"
_MAX_DENIALS = 500


#: Every kind of decision a record can carry, in the order the report shows them.
DECISION_KINDS = ("allow", "transform", "deny", "reject", "error")
_KIND_COLORS = {
    "allow": "#2e7d32",
    "transform": "#f9a825",
    "deny": "#c62828",
    "reject": "#6a1b9a",
    "error": "#37474f",
    "other": "#9e9e9e",
}


def decision_effect(record: Mapping[str, Any]) -> str | None:
    """The decision kind of a decision record (from `effect` or `decision`): one of
    DECISION_KINDS, else None."""
    value = record.get("effect", record.get("decision"))
    return value if value in DECISION_KINDS else None


def _regimes(record: Mapping[str, Any]) -> list[str]:
    found: list[str] = []
    for basis in record.get("legal_basis") or []:
        if isinstance(basis, Mapping) and basis.get("regime"):
            ref = basis.get("ref")
            found.append(f"{basis['regime']} {ref}" if ref else str(basis["regime"]))
        elif isinstance(basis, str):
            found.append(basis)
    if not found and record.get("juris"):
        found.append(str(record["juris"]))
    return found


def _esc(value: object) -> str:
    return html.escape(str(value), quote=True)


_UNITS = (("minute", timedelta(minutes=1), 16), ("hour", timedelta(hours=1), 13),
          ("day", timedelta(days=1), 10))  # fmt: skip
_MAX_BUCKETS = 400


def _bucket_start(moment: datetime, unit: str) -> datetime:
    if unit == "minute":
        return moment.replace(second=0, microsecond=0)
    if unit == "hour":
        return moment.replace(minute=0, second=0, microsecond=0)
    return moment.replace(hour=0, minute=0, second=0, microsecond=0)


def _time_chart(per_minute: Mapping[str, Counter[str]]) -> str:
    """Stacked bars per minute, hour or day on a continuous time axis (empty periods
    included). `per_minute` maps `YYYY-MM-DDTHH:MM` to counts by decision kind, so the
    report needs memory per distinct minute, not per record."""
    if not per_minute:
        return "<p>No decisions in this range.</p>"
    minutes = {
        datetime.strptime(key, "%Y-%m-%dT%H:%M"): counts for key, counts in per_minute.items()
    }
    first, last = min(minutes), max(minutes)
    unit, step, width = _UNITS[-1]
    for candidate in _UNITS:
        span = (
            _bucket_start(last, candidate[0]) - _bucket_start(first, candidate[0])
        ) // candidate[1]
        if span < _MAX_BUCKETS:
            unit, step, width = candidate
            break
    start = _bucket_start(first, unit)
    count = (_bucket_start(last, unit) - start) // step + 1
    buckets: list[Counter[str]] = [Counter() for _ in range(count)]
    for moment, counts in minutes.items():
        buckets[(_bucket_start(moment, unit) - start) // step].update(counts)
    peak = max(sum(c.values()) for c in buckets)
    plot_w, height, left = 900, 180, 50
    bar_w = plot_w / count
    parts = [
        f'<svg role="img" aria-label="decisions per {unit}" viewBox="0 0 {left + plot_w + 10} '
        f'{height + 40}" width="100%" style="max-width:{left + plot_w + 10}px" '
        'xmlns="http://www.w3.org/2000/svg">',
        f'<line x1="{left}" y1="{height}" x2="{left + plot_w}" y2="{height}" stroke="#757575"/>',
        f'<text x="{left - 4}" y="12" font-size="11" text-anchor="end">{peak}</text>',
        f'<text x="{left - 4}" y="{height}" font-size="11" text-anchor="end">0</text>',
    ]
    for i, counts in enumerate(buckets):
        x = left + i * bar_w
        y = float(height)
        label = (start + i * step).strftime("%Y-%m-%dT%H:%M")[:width]
        for kind in (*DECISION_KINDS, "other"):
            n = counts.get(kind, 0)
            if not n:
                continue
            h = max(1.0, n / peak * (height - 10))
            y -= h
            parts.append(
                f'<rect x="{x:.2f}" y="{y:.2f}" width="{max(bar_w - 0.5, 0.5):.2f}" '
                f'height="{h:.2f}" fill="{_KIND_COLORS[kind]}"><title>{_esc(label)}: {n} '
                f"{kind}</title></rect>"
            )
    for fraction, anchor in ((0.0, "start"), (0.5, "middle"), (1.0, "end")):
        index = min(int(fraction * (count - 1)), count - 1)
        label = (start + index * step).strftime("%Y-%m-%dT%H:%M")[:width]
        x = left + fraction * plot_w
        parts.append(
            f'<text x="{x:.0f}" y="{height + 16}" font-size="11" text-anchor="{anchor}">'
            f"{_esc(label)}</text>"
        )
    parts.append(
        f'<text x="{left + plot_w / 2:.0f}" y="{height + 34}" font-size="11" '
        f'text-anchor="middle">time (UTC), one bar per {unit}</text>'
    )
    parts.append("</svg>")
    return "".join(parts)


def _legend() -> str:
    return (
        '<p class="legend">'
        + " ".join(
            f'<span><span class="swatch" style="background:{_KIND_COLORS[k]}"></span>{k}</span>'
            for k in (*DECISION_KINDS, "other")
        )
        + "</p>"
    )


def _bar_chart(label: str, counts: Counter[str], limit: int = 15) -> str:
    """A table with one bar per item: full labels, readable on screen and paper."""
    items = counts.most_common(limit)
    if not items:
        return f"<p>No {label} in this range.</p>"
    peak = items[0][1]
    rows = "".join(
        f'<tr><td class="label">{_esc(name)}</td><td class="bars"><span class="bar" '
        f'style="width:{max(1, round(n / peak * 400))}px"></span> {n}</td></tr>'
        for name, n in items
    )
    rest = len(counts) - len(items)
    tail = f"<p>{rest} more {label} are in views/records.csv.</p>" if rest > 0 else ""
    return f'<table class="chart" aria-label="{_esc(label)}">{rows}</table>{tail}'


@dataclass(frozen=True)
class LogFacts:
    """One log of a bundle of many logs, as its report names it."""

    origin: str
    range_from: int
    range_to: int
    records: int
    completeness: str
    head_root: str
    witnesses: tuple[str, ...] = ()


def _head_rows(
    origin: str, range_from: int, range_to: int, total: int, logs: Sequence[LogFacts]
) -> str:
    """The report's rows that name the log(s): one log's range, or a row per log."""
    if not logs:
        return f"""<tr><th>Origin</th><td>{_esc(origin)}</td></tr>
<tr><th>Records</th><td>seq {range_from} to {range_to - 1} ({total} exported)</td></tr>"""
    rows = "".join(
        f"<tr><td>{_esc(log.origin)}</td><td>seq {log.range_from} to {log.range_to - 1}</td>"
        f"<td>{log.records}</td><td>{_esc(log.completeness)}</td><td>{log.range_to}</td>"
        f'<td class="hash">{_esc(log.head_root or "-")}</td>'
        f"<td>{_esc(', '.join(log.witnesses) or '-')}</td></tr>"
        for log in logs
    )
    return f"""<tr><th>Logs</th><td>{len(logs)}, records interleaved by time ({total} exported)
<table><tr><th>origin</th><th>range</th><th>records</th><th>completeness</th>
<th>tree size</th><th>root hash</th><th>witnesses</th></tr>{rows}</table></td></tr>"""


class ReportTally:
    """The report's counters, fed one record at a time (bounded memory at any size).

    Records that agree on every field the report reads (type, key id, decision kind,
    minute, rules, legal basis, jurisdiction) are counted together first and folded into
    the counters in batches: a log repeats those few fields far more often than it
    varies them, so most records cost one small serialization and one dict update.
    """

    _FOLD_AT = 65536

    def __init__(self) -> None:
        self.by_type: Counter[str] = Counter()
        self.effects: Counter[str] = Counter()
        self.rules: Counter[str] = Counter()
        self.regimes: Counter[str] = Counter()
        self.denial_rules: Counter[str] = Counter()
        self.denial_regimes: Counter[str] = Counter()
        self.per_minute: dict[str, Counter[str]] = {}
        self.kids: set[str] = set()
        self.denials: list[Mapping[str, Any]] = []
        self.denial_count = 0
        self.total = 0
        self._pending: dict[bytes, int] = {}

    def add(self, record: Mapping[str, Any]) -> None:
        """Count one record."""
        self.total += 1
        get = record.get
        kind = get("type")
        effect = get("effect", get("decision"))
        minute = str(get("ts", ""))[:16] if kind == "decision" else ""
        if kind == "decision" and effect == "deny" and len(self.denials) < _MAX_DENIALS:
            self.denials.append(record)
        fields = (kind, get("kid"), effect, minute, get("rules"), get("legal_basis"), get("juris"))
        try:
            key = orjson.dumps(fields)
        except TypeError:  # not plain JSON values: count it on its own, in order
            self.flush()
            self._fold(fields, 1)
            return
        pending = self._pending
        pending[key] = pending.get(key, 0) + 1
        if len(pending) >= self._FOLD_AT:
            self.flush()

    def flush(self) -> None:
        """Fold the grouped records into the counters."""
        pending, self._pending = self._pending, {}
        for key, n in pending.items():
            self._fold(tuple(orjson.loads(key)), n)

    def _fold(self, fields: tuple[Any, ...], n: int) -> None:
        kind, kid, effect, minute, rules, legal_basis, juris = fields
        self.by_type[str(kind)] += n
        if kid:
            self.kids.add(str(kid))
        if kind != "decision":
            return
        effect = effect if effect in DECISION_KINDS else "other"
        self.effects[effect] += n
        self.per_minute.setdefault(minute, Counter())[effect] += n
        denied = effect == "deny"
        if denied:
            self.denial_count += n
        for rule in rules or []:
            self.rules[str(rule)] += n
            if denied:
                self.denial_rules[str(rule)] += n
        for regime in _regimes({"legal_basis": legal_basis, "juris": juris}):
            self.regimes[regime] += n
            if denied:
                self.denial_regimes[regime] += n


def render_report(
    records: Iterable[Mapping[str, Any]],
    *,
    origin: str,
    range_from: int,
    range_to: int,
    completeness: str,
    created: str,
    filter_text: str,
    head_root: str = "",
    witnesses: Sequence[str] = (),
) -> str:
    """The HTML document for the records of one export; `head_root` is the root of the
    checkpoint at `range_to` and `witnesses` the names on its cosignatures."""
    tally = ReportTally()
    for record in records:
        tally.add(record)
    return render_tally(
        tally,
        origin=origin,
        range_from=range_from,
        range_to=range_to,
        completeness=completeness,
        created=created,
        filter_text=filter_text,
        head_root=head_root,
        witnesses=witnesses,
    )


def render_tally(
    tally: ReportTally,
    *,
    origin: str,
    range_from: int,
    range_to: int,
    completeness: str,
    created: str,
    filter_text: str,
    head_root: str = "",
    witnesses: Sequence[str] = (),
    logs: Sequence[LogFacts] = (),
) -> str:
    """The HTML document from the counters of every record of one export; with `logs`,
    of an export of many logs (each log's range, root and witnesses in a table)."""
    tally.flush()
    effects, by_type, kids, denials = tally.effects, tally.by_type, tally.kids, tally.denials
    rules, regimes, per_minute = tally.rules, tally.regimes, tally.per_minute
    denial_rules, denial_regimes = tally.denial_rules, tally.denial_regimes
    denial_count, total = tally.denial_count, tally.total
    decision_count = sum(effects.values())
    summary = ", ".join(f"{effects.get(kind, 0)} {kind}" for kind in DECISION_KINDS)
    if effects.get("other"):
        summary += f", {effects['other']} other"
    key_ids = ", ".join(sorted(kids)) or "-"
    cosigners = ", ".join(witnesses) if witnesses else "none in this bundle"
    rows = []
    for record in denials:
        rows.append(
            "<tr>"
            # Of many logs, each denial names its log (`log`, set by the merge).
            + (f"<td>{_esc(record.get('log', ''))}</td>" if logs else "")
            + "".join(
                f"<td>{_esc(v)}</td>"
                for v in (
                    record.get("ts", ""),
                    record.get("seq", ""),
                    record.get("decision_id", ""),
                    record.get("tenant", ""),
                    record.get("status", ""),
                    ", ".join(str(x) for x in record.get("rules") or []),
                    "; ".join(_regimes(record)),
                )
            )
            + "</tr>"
        )
    more = (
        f"<p>{denial_count - _MAX_DENIALS} more denials are in views/records.csv.</p>"
        if denial_count > _MAX_DENIALS
        else ""
    )
    type_rows = "".join(
        f"<tr><td>{_esc(k)}</td><td>{v}</td></tr>" for k, v in sorted(by_type.items())
    )
    # A bundle of many logs names each log's tree and witnesses in its table instead.
    tree_rows = (
        ""
        if logs
        else (
            f"<tr><th>Tree size</th><td>{range_to}</td></tr>\n"
            f'<tr><th>Root hash</th><td class="hash">{_esc(head_root or "-")}</td></tr>\n'
        )
    )
    cosign_rows = (
        ""
        if logs
        else (
            f"<tr><th>Witness cosignatures</th><td>{_esc(cosigners)}\n"
            "(checked by <code>jurisgate audit verify --witness-keys</code>)</td></tr>"
        )
    )
    log_th = "<th>log</th>" if logs else ""
    title = (
        f"Audit export of {len(logs)} logs"
        if logs
        else f"Audit export {_esc(origin)} [{range_from}, {range_to})"
    )
    return f"""<!DOCTYPE html>
<html lang="en"><head><meta charset="utf-8">
<meta http-equiv="Content-Security-Policy" content="default-src 'none'; style-src 'unsafe-inline'">
<title>{title}</title>
<style>
body {{ font-family: system-ui, sans-serif; margin: 2em auto; max-width: 1180px;
  padding: 0 1em; color: #212121; }}
table {{ border-collapse: collapse; }} td, th {{ border: 1px solid #ccc; padding: 2px 6px; }}
th {{ background: #eee; text-align: left; }} .note {{ background: #fff8e1; padding: 0.5em 1em; }}
code, .hash {{ font-family: ui-monospace, monospace; word-break: break-all; }}
.legend span {{ margin-right: 1em; }}
.swatch {{ display: inline-block; width: 0.9em; height: 0.9em; margin-right: 0.3em;
  vertical-align: middle; }}
table.chart td {{ border: none; }} td.label {{ max-width: 480px; overflow-wrap: anywhere; }}
.bar {{ display: inline-block; height: 0.9em; background: {_BAR}; vertical-align: middle; }}
.swatch, .bar, svg rect {{ -webkit-print-color-adjust: exact; print-color-adjust: exact; }}
@media print {{ body {{ margin: 0; max-width: none; }} h2 {{ break-after: avoid; }}
  tr {{ break-inside: avoid; }} }}
</style></head><body>
<h1>Audit export: {_esc(origin)}</h1>
<p class="note">This page is a summary for people. The evidence is the signed bundle:
run <code>jurisgate audit verify &lt;bundle&gt; --trusted-keys KEYRING</code> (see VERIFY.txt).</p>
<table>
{_head_rows(origin, range_from, range_to, total, logs)}
<tr><th>Filter</th><td>{_esc(filter_text)}</td></tr>
<tr><th>Completeness</th><td>{_esc(completeness)}</td></tr>
<tr><th>Created</th><td>{_esc(created)}</td></tr>
<tr><th>Decisions</th><td>{decision_count}: {_esc(summary)}</td></tr>
{tree_rows}<tr><th>Signing key IDs</th><td class="hash">{_esc(key_ids)}</td></tr>
{cosign_rows}
</table>
<h2>Records by type</h2><table><tr><th>type</th><th>count</th></tr>{type_rows}</table>
<h2>Decisions over time</h2>
{_legend()}
{_time_chart(per_minute)}
<h2>Decisions by rule</h2>
{_bar_chart("rules", rules)}
<h2>Decisions by jurisdiction and legal basis</h2>
{_bar_chart("legal bases", regimes)}
<h2>Denials by rule</h2>
{_bar_chart("denying rules", denial_rules)}
<h2>Denials by legal basis</h2>
{_bar_chart("legal bases of denials", denial_regimes)}
<h2>Denials</h2>
<table><tr>{log_th}<th>ts</th><th>seq</th><th>decision id</th><th>tenant</th><th>status</th>
<th>rules</th><th>legal basis</th></tr>
{"".join(rows)}
</table>{more}
</body></html>
"""
