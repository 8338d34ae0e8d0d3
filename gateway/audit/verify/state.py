"""The verifier's state file (I/O): the latest verified (size, root, ts) per origin, kept
between audits so that a smaller or different later source is caught (the verifier as a
witness of its own).

Written with `storage.atomic_write` (temporary file, fsync, rename, fsync of the
directory): a crash leaves the old state or the new one, never a torn file, and a state
that was reported as advanced is on disk.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

from gateway.audit.storage import atomic_write

__all__ = ["STATE_FORMAT", "load_state", "save_state"]

STATE_FORMAT = "jurisgate-audit-verifier-state/1"


def load_state(path: Path) -> dict[str, dict[str, Any]]:
    """The verifier state: latest verified {size, root, ts} per origin."""
    if not path.exists():
        return {}
    data = json.loads(path.read_text(encoding="utf-8"))
    if not isinstance(data, dict) or data.get("format") != STATE_FORMAT:
        raise ValueError(f"{path}: not a {STATE_FORMAT} file")
    logs = data.get("logs", {})
    if not isinstance(logs, dict):
        raise ValueError(f"{path}: `logs` must be an object")
    return logs


def save_state(path: Path, logs: dict[str, dict[str, Any]]) -> None:
    """Write the state file atomically and durably."""
    text = json.dumps({"format": STATE_FORMAT, "logs": logs}, indent=2, sort_keys=True) + "\n"
    atomic_write(path, text.encode())
