"""Export bundle format: manifest, its signed note, path rules and record filters.

```
audit-export-<origin-slug>-<a>-<b>/
  manifest.json          JCS: format, origin, range {from, to}, requested {from_ts, to_ts},
                         filter (null or object), completeness, files [{path, sha256, bytes}],
                         generator, created
  manifest.sig           signed note: "jurisgate-audit-export/v1\\n<origin>\\n<hex sha256>\\n"
  records/<first seq>.jsonl   the exact stored lines
  checkpoints.notes      every checkpoint with a size in [a, b], oldest first
  proofs/start.json      a > 0: compact range of [0, a), last leaf L(a-1) and its proof
  proofs/inclusion.jsonl filtered exports: one RFC 9162 audit path per record, vs size b
  keys/keyring.json      informational copy; trust comes from the auditor's pinned keyring
  views/records.csv, views/records.jsonl, report.html, VERIFY.txt   for people
```

Rule 1: every file except manifest.json and manifest.sig is listed with its size and
SHA-256; anything else in the bundle is an error, as are paths that escape it.
Rule 2: the manifest note binds the manifest bytes to the origin; the manifest binds
range, filter and time, so none of these claims can be edited without breaking it.
"""

from __future__ import annotations

import hashlib
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

__all__ = [
    "BUNDLE_FORMAT",
    "MANIFEST_CONTEXT",
    "ExportFilter",
    "manifest_note_text",
    "path_problem",
]

BUNDLE_FORMAT = "jurisgate-audit-export/1"
MANIFEST_CONTEXT = "jurisgate-audit-export/v1"
MANIFEST_FILE = "manifest.json"
MANIFEST_SIG_FILE = "manifest.sig"


def manifest_note_text(origin: str, manifest_bytes: bytes) -> str:
    """The note text that signs a manifest."""
    digest = hashlib.sha256(manifest_bytes).hexdigest()
    return f"{MANIFEST_CONTEXT}\n{origin}\n{digest}\n"


def path_problem(path: object) -> str | None:
    """Why `path` may not appear in a bundle listing, or None."""
    if not isinstance(path, str) or not path:
        return "path must be a non-empty string"
    if path.startswith("/") or "\\" in path or "\x00" in path:
        return f"path `{path}` must be relative, with `/` separators"
    parts = path.split("/")
    if any(part in ("", ".", "..") for part in parts):
        return f"path `{path}` has an empty, `.` or `..` component"
    if path in (MANIFEST_FILE, MANIFEST_SIG_FILE):
        return f"path `{path}` is reserved"
    return None


def _as_list(value: Any) -> list[str]:
    if value is None:
        return []
    if isinstance(value, list):
        return [str(v) for v in value]
    return [str(value)]


@dataclass(frozen=True)
class ExportFilter:
    """Record selection of a filtered export (all given criteria must hold)."""

    tenant: str | None = None
    jurisdiction: str | None = None
    decision: str | None = None
    rule: str | None = None

    @property
    def empty(self) -> bool:
        """True when nothing is filtered."""
        return not (self.tenant or self.jurisdiction or self.decision or self.rule)

    def to_json(self) -> dict[str, str] | None:
        """Manifest form (null when empty)."""
        if self.empty:
            return None
        return {
            key: value
            for key, value in (
                ("tenant", self.tenant),
                ("jurisdiction", self.jurisdiction),
                ("decision", self.decision),
                ("rule", self.rule),
            )
            if value
        }

    @classmethod
    def from_json(cls, data: Any) -> ExportFilter:
        """Parse the manifest form."""
        if data is None:
            return cls()
        if not isinstance(data, dict) or not set(data) <= {
            "tenant",
            "jurisdiction",
            "decision",
            "rule",
        }:
            raise ValueError(
                "filter must be null or an object of tenant/jurisdiction/decision/rule"
            )
        return cls(**{key: str(value) for key, value in data.items()})

    def matches(self, record: Mapping[str, Any]) -> bool:
        """True when `record` is selected.

        Only `decision` and `outcome` records are selected by a filter. `decision`
        matches the record's `effect` or `decision` field; `jurisdiction` matches `juris`
        or any `regime` in `legal_basis`; `rule` matches an entry of `rules`.
        """
        if record.get("type") not in ("decision", "outcome"):
            return False
        if self.tenant and record.get("tenant") != self.tenant:
            return False
        if self.decision and self.decision not in (record.get("effect"), record.get("decision")):
            return False
        if self.rule and self.rule not in _as_list(record.get("rules")):
            return False
        if self.jurisdiction:
            regimes = set(_as_list(record.get("juris")))
            for basis in record.get("legal_basis") or []:
                if isinstance(basis, dict) and basis.get("regime"):
                    regimes.add(str(basis["regime"]))
            if self.jurisdiction not in regimes:
                return False
        return True
