"""Every policy revision that was in force, kept beside the audit log, content-addressed.

A `decision` record names the revision that decided it (`policy: sha256:...`). To re-derive
the decision later, that revision's sources must still exist: at start and at each reload the
gateway writes them to `<audit directory>/policy-revisions/<hex>.json` (the file names the
loader gave them and their text), once per revision. Loading a stored revision compiles the
sources again and checks that they hash to the revision they are filed under, so a store that
was edited cannot pass for the policy in force.
"""

from __future__ import annotations

import json
import tempfile
from collections.abc import Sequence
from pathlib import Path
from typing import Final

from gateway.audit.storage import atomic_write
from gateway.policy import PolicySet, load_policy_set
from gateway.policy.loader import discover_files

__all__ = ["STORE_DIR", "RevisionError", "load_revision", "revision_path", "store_revision"]

#: The store's directory name inside the audit log directory.
STORE_DIR: Final = "policy-revisions"


class RevisionError(Exception):
    """A stored revision is missing, unreadable, or does not hash to its name."""


def revision_path(store: Path, revision: str) -> Path:
    """Where `revision` (`sha256:<hex>`) is filed in `store`."""
    algorithm, _, digest = revision.partition(":")
    if algorithm != "sha256" or len(digest) != 64 or not digest.isalnum():
        raise RevisionError(f"`{revision[:80]}` is not a policy revision id")
    return store / f"{digest}.json"


def store_revision(store: Path, policy_paths: Sequence[Path], revision: str) -> Path:
    """File the sources under `policy_paths` as `revision` (nothing is written when it is
    already there); returns the file's path."""
    target = revision_path(store, revision)
    if target.exists():
        return target
    files, _ = discover_files(policy_paths)
    sources = {f.canonical_name: f.path.read_text(encoding="utf-8") for f in files}
    body = json.dumps(
        {"revision": revision, "files": sources}, ensure_ascii=False, sort_keys=True
    ).encode()
    store.mkdir(parents=True, exist_ok=True)
    atomic_write(target, body)
    return target


def load_revision(store: Path, revision: str) -> PolicySet:
    """The compiled policy set filed as `revision`; raises `RevisionError` when it is missing
    or its sources do not hash to `revision`."""
    path = revision_path(store, revision)
    try:
        stored = json.loads(path.read_text(encoding="utf-8"))
        files = stored["files"]
    except (OSError, ValueError, KeyError, TypeError) as exc:
        raise RevisionError(f"{path}: cannot read the stored revision ({exc})") from None
    with tempfile.TemporaryDirectory(prefix="jurisgate-revision-") as tmp:
        root = Path(tmp)
        for name, text in files.items():
            target = (root / name).resolve()
            if root.resolve() not in target.parents:
                raise RevisionError(f"{path}: file name `{name}` leaves the revision")
            target.parent.mkdir(parents=True, exist_ok=True)
            target.write_text(text, encoding="utf-8")
        result = load_policy_set([root])
    if result.policy_set is None:
        raise RevisionError(f"{path}: the stored sources do not compile")
    if result.policy_set.revision != revision:
        raise RevisionError(
            f"{path}: the stored sources hash to {result.policy_set.revision}, not {revision}"
        )
    return result.policy_set
