"""Self-contained HTML report of an export, for people (no scripts, no external resources).

Charts are inline SVG: decisions over time (allow/deny), by rule, by jurisdiction and
legal basis; then a table of the denials. Every value from a record is HTML-escaped.
The report is a view: the bundle's signatures, not this page, are the evidence.
"""

from __future__ import annotations

import html
from collections import Counter
from collections.abc import Iterable, Mapping, Sequence
from typing import Any

__all__ = ["decision_effect", "render_report"]

_ALLOW = "#2e7d32"
_DENY = "#c62828"
_BAR = "#1565c0"
_MAX_DENIALS = 500


def decision_effect(record: Mapping[str, Any]) -> str | None:
    """`allow` or `deny` for a decision record (from `effect` or `decision`), else None."""
    value = record.get("effect", record.get("decision"))
    return value if value in ("allow", "deny") else None


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


def _time_chart(decisions: Sequence[Mapping[str, Any]]) -> str:
    if not decisions:
        return "<p>No decisions in this range.</p>"
    first, last = decisions[0]["ts"], decisions[-1]["ts"]
    # Buckets by minute within an hour, by hour within two days, else by day.
    if first[:13] == last[:13]:
        width = 16
    elif len({str(d["ts"])[:10] for d in decisions}) <= 2:
        width = 13
    else:
        width = 10
    buckets: dict[str, Counter[str]] = {}
    for record in decisions:
        key = str(record["ts"])[:width]
        buckets.setdefault(key, Counter())[decision_effect(record) or "other"] += 1
    keys = sorted(buckets)
    peak = max(sum(c.values()) for c in buckets.values())
    bar_w = max(4, min(40, 760 // max(len(keys), 1)))
    height = 180
    parts = [
        f'<svg role="img" aria-label="decisions over time" width="{bar_w * len(keys) + 60}" '
        f'height="{height + 40}" xmlns="http://www.w3.org/2000/svg">'
    ]
    for i, key in enumerate(keys):
        counts = buckets[key]
        x = 50 + i * bar_w
        y = height
        for effect, color in (("allow", _ALLOW), ("deny", _DENY), ("other", "#9e9e9e")):
            n = counts.get(effect, 0)
            if not n:
                continue
            h = max(1, round(n / peak * (height - 10)))
            y -= h
            parts.append(
                f'<rect x="{x}" y="{y}" width="{bar_w - 1}" height="{h}" fill="{color}">'
                f"<title>{_esc(key)}: {n} {effect}</title></rect>"
            )
    parts.append(f'<text x="0" y="12" font-size="11">{peak}</text>')
    parts.append(f'<text x="50" y="{height + 15}" font-size="11">{_esc(keys[0])}</text>')
    parts.append(
        f'<text x="{50 + (len(keys) - 1) * bar_w}" y="{height + 30}" font-size="11">'
        f"{_esc(keys[-1])}</text>"
    )
    parts.append("</svg>")
    return "".join(parts)


def _bar_chart(label: str, counts: Counter[str], limit: int = 15) -> str:
    items = counts.most_common(limit)
    if not items:
        return f"<p>No {label} in this range.</p>"
    peak = items[0][1]
    row = 22
    parts = [
        f'<svg role="img" aria-label="{_esc(label)}" width="760" height="{row * len(items) + 10}" '
        'xmlns="http://www.w3.org/2000/svg">'
    ]
    for i, (name, n) in enumerate(items):
        y = 5 + i * row
        w = max(1, round(n / peak * 420))
        parts.append(f'<text x="0" y="{y + 14}" font-size="12">{_esc(name[:40])}</text>')
        parts.append(
            f'<rect x="300" y="{y}" width="{w}" height="{row - 6}" fill="{_BAR}">'
            f"<title>{_esc(name)}: {n}</title></rect>"
        )
        parts.append(f'<text x="{305 + w}" y="{y + 14}" font-size="12">{n}</text>')
    parts.append("</svg>")
    return "".join(parts)


def render_report(
    records: Iterable[Mapping[str, Any]],
    *,
    origin: str,
    range_from: int,
    range_to: int,
    completeness: str,
    created: str,
    filter_text: str,
) -> str:
    """The HTML document for the records of one export."""
    all_records = list(records)
    decisions = [r for r in all_records if r.get("type") == "decision"]
    by_type = Counter(str(r.get("type")) for r in all_records)
    effects = Counter(decision_effect(r) or "other" for r in decisions)
    rules: Counter[str] = Counter()
    regimes: Counter[str] = Counter()
    for record in decisions:
        for rule in record.get("rules") or []:
            rules[str(rule)] += 1
        for regime in _regimes(record):
            regimes[regime] += 1
    denials = [r for r in decisions if decision_effect(r) == "deny"]
    rows = []
    for record in denials[:_MAX_DENIALS]:
        rows.append(
            "<tr>"
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
        f"<p>{len(denials) - _MAX_DENIALS} more denials are in views/records.csv.</p>"
        if len(denials) > _MAX_DENIALS
        else ""
    )
    type_rows = "".join(
        f"<tr><td>{_esc(k)}</td><td>{v}</td></tr>" for k, v in sorted(by_type.items())
    )
    return f"""<!DOCTYPE html>
<html lang="en"><head><meta charset="utf-8">
<meta http-equiv="Content-Security-Policy" content="default-src 'none'; style-src 'unsafe-inline'">
<title>Audit export {_esc(origin)} [{range_from}, {range_to})</title>
<style>
body {{ font-family: system-ui, sans-serif; margin: 2em; color: #212121; }}
table {{ border-collapse: collapse; }} td, th {{ border: 1px solid #ccc; padding: 2px 6px; }}
th {{ background: #eee; }} .note {{ background: #fff8e1; padding: 0.5em 1em; }}
</style></head><body>
<h1>Audit export: {_esc(origin)}</h1>
<p class="note">This page is a summary for people. The evidence is the signed bundle:
run <code>jurisgate audit verify &lt;bundle&gt; --trusted-keys KEYRING</code> (see VERIFY.txt).</p>
<table>
<tr><th>Origin</th><td>{_esc(origin)}</td></tr>
<tr><th>Records</th><td>seq {range_from} to {range_to - 1} ({len(all_records)} exported)</td></tr>
<tr><th>Filter</th><td>{_esc(filter_text)}</td></tr>
<tr><th>Completeness</th><td>{_esc(completeness)}</td></tr>
<tr><th>Created</th><td>{_esc(created)}</td></tr>
<tr><th>Decisions</th>
<td>{effects.get("allow", 0)} allowed, {effects.get("deny", 0)} denied</td></tr>
</table>
<h2>Records by type</h2><table><tr><th>type</th><th>count</th></tr>{type_rows}</table>
<h2>Decisions over time</h2>
<p><span style="color:{_ALLOW}">&#9632; allow</span>
<span style="color:{_DENY}">&#9632; deny</span></p>
{_time_chart(decisions)}
<h2>Decisions by rule</h2>
{_bar_chart("rules", rules)}
<h2>Decisions by jurisdiction and legal basis</h2>
{_bar_chart("legal bases", regimes)}
<h2>Denials</h2>
<table><tr><th>ts</th><th>seq</th><th>decision id</th><th>tenant</th><th>status</th>
<th>rules</th><th>legal basis</th></tr>
{"".join(rows)}
</table>{more}
</body></html>
"""
