"""Find policy files, load them strictly, compile them, and hash their canonical sources.

Rule 1: loading never raises for bad input and never leaves a half-built set: it returns
either a complete `PolicySet` or diagnostics (the caller keeps its previous set).
Rule 2: the revision is `sha256:` + hex of the RFC 8785 canonical JSON of every file's
decoded data, keyed by its path relative to the directory it was found in; comments,
key order and formatting do not change it, any change of meaning does.
Rule 3: directories are searched recursively for `*.yaml`/`*.yml`, in sorted order;
`*.cases.yaml` files are test cases and are not part of the policy set.
"""

from __future__ import annotations

import datetime as dt
import hashlib
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import rfc8785

from gateway.errors import Diagnostic, Location, has_errors, sort_diagnostics
from gateway.policy.compile import compile_documents
from gateway.policy.parse import ParsedFile, parse_document
from gateway.policy.policyset import PolicySet
from gateway.privacy.detectors import emitted_categories as detector_categories
from gateway.source import LoadedDocument, load_yaml

__all__ = [
    "LoadResult",
    "PolicyFile",
    "discover_files",
    "tree_files",
    "is_case_file",
    "load_policy_set",
    "revision_of",
]

_SUFFIXES = (".yaml", ".yml")
_CASE_SUFFIXES = (".cases.yaml", ".cases.yml")


@dataclass(frozen=True, slots=True)
class LoadResult:
    """The outcome of `load_policy_set`: a policy set, or the diagnostics that prevented it."""

    policy_set: PolicySet | None
    diagnostics: tuple[Diagnostic, ...]

    @property
    def ok(self) -> bool:
        """True when a policy set was built."""
        return self.policy_set is not None


@dataclass(frozen=True, slots=True)
class PolicyFile:
    """A policy file found on disk: its path, display name, and name for the revision."""

    path: Path
    display: str
    canonical_name: str


def is_case_file(path: Path) -> bool:
    """True for `*.cases.yaml` / `*.cases.yml`."""
    return path.name.endswith(_CASE_SUFFIXES)


def tree_files(root: Path) -> list[Path]:
    """The files under directory `root`, sorted, following symbolic links to directories and
    skipping hidden names (`.x`).

    A Kubernetes ConfigMap volume keeps its files in a hidden `..<timestamp>/` directory and
    shows them through symbolic links (`..data`, then one per top-level entry), swapped at
    once on an update: a plain `rglob` would read the hidden copy (its name in the revision)
    beside the linked one and miss linked directories. Each real directory is visited once.
    """
    found: list[Path] = []
    seen: set[tuple[int, int]] = set()
    pending = [root]
    while pending:
        directory = pending.pop()
        try:
            stat = directory.stat()
            entries = list(directory.iterdir())
        except OSError:
            continue
        if (stat.st_dev, stat.st_ino) in seen:
            continue
        seen.add((stat.st_dev, stat.st_ino))
        for entry in entries:
            if entry.name.startswith("."):
                continue
            if entry.is_dir():
                pending.append(entry)
            elif entry.is_file():
                found.append(entry)
    return sorted(found)


def discover_files(
    paths: Iterable[Path | str], *, cases: bool = False
) -> tuple[list[PolicyFile], list[Diagnostic]]:
    """List policy files (or, with `cases=True`, case files) under the given paths."""
    found: list[PolicyFile] = []
    problems: list[Diagnostic] = []
    for raw in paths:
        root = Path(raw)
        if root.is_dir():
            for path in tree_files(root):
                if not path.name.endswith(_SUFFIXES) or is_case_file(path) != cases:
                    continue
                rel = path.relative_to(root).as_posix()
                found.append(PolicyFile(path, str(path), rel))
        elif root.is_file():
            if cases or not is_case_file(root):
                found.append(PolicyFile(root, str(root), root.name))
        else:
            problems.append(
                Diagnostic("io_error", "no such file or directory", Location(str(root)))
            )
    return found, problems


def _canonical(value: Any) -> Any:
    if isinstance(value, dict):
        return {k: _canonical(v) for k, v in value.items()}
    if isinstance(value, list):
        return [_canonical(v) for v in value]
    if isinstance(value, dt.datetime):
        return value.isoformat().replace("+00:00", "Z")
    if isinstance(value, dt.date):
        return value.isoformat()
    return value


def revision_of(documents: Sequence[tuple[str, Any]]) -> str:
    """Revision hash of (canonical name, decoded data) pairs."""
    body = {name: _canonical(data) for name, data in sorted(documents, key=lambda d: d[0])}
    return "sha256:" + hashlib.sha256(rfc8785.dumps(body)).hexdigest()


def load_policy_set(paths: Sequence[Path | str]) -> LoadResult:
    """Load, check and compile policy files and directories into a `PolicySet`.

    Every problem in every file is reported at once (sorted; warnings included). On any
    error the result holds no policy set. A masking rule must name a category one of the
    built-in detectors emits.
    """
    files, diagnostics = discover_files(paths)
    if not files and not diagnostics:
        diagnostics.append(
            Diagnostic(
                "io_error",
                "no policy files found",
                Location(", ".join(str(p) for p in paths) or "."),
            )
        )
    loaded: list[tuple[LoadedDocument, ParsedFile]] = []
    canonical: list[tuple[str, Any]] = []
    unreadable = False
    for file in files:
        doc = load_yaml(file.path, file.display)
        diagnostics.extend(doc.diagnostics)
        if not doc.ok:
            unreadable = True
            continue
        parsed = parse_document(doc)
        diagnostics.extend(parsed.diagnostics)
        if parsed.kind == "cases":
            diagnostics.append(
                Diagnostic(
                    "policy_schema_error",
                    "a cases document in a policy file",
                    Location(file.display, 1, 1),
                    None,
                    "name case files `*.cases.yaml` so they are read as tests",
                )
            )
            continue
        loaded.append((doc, parsed))
        canonical.append((file.canonical_name, doc.data))
    # Rules that parsed are still checked against the vocabulary, so one run reports
    # problems of every kind; only a broken (or unreadable, possibly vocabulary) file
    # makes the reference checks meaningless.
    vocabularies = [p for _d, p in loaded if p.kind == "vocabulary"]
    if any(p.vocabulary is None for p in vocabularies) or (unreadable and not vocabularies):
        return LoadResult(None, tuple(sort_diagnostics(diagnostics)))
    compiled = compile_documents(loaded, emitted=detector_categories())
    diagnostics.extend(compiled.diagnostics)
    if has_errors(diagnostics) or compiled.vocabulary is None:
        return LoadResult(None, tuple(sort_diagnostics(diagnostics)))
    policy_set = PolicySet(compiled, revision_of(canonical), [f.display for f in files])
    return LoadResult(policy_set, tuple(sort_diagnostics(diagnostics)))
