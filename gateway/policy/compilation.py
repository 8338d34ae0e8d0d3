"""The state one compilation carries through its stages (the codes they report are in
`codes.py`)."""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

from gateway.errors import Diagnostic, Location
from gateway.policy.ast import PackDoc, RuleSpec, SettingsDoc, Test
from gateway.policy.ir import CompiledRule, CompileResult
from gateway.policy.parse import ParsedFile
from gateway.policy.vocabulary import Vocabulary
from gateway.source import LoadedDocument

__all__ = [
    "Compilation",
    "TypedTest",
]


@dataclass(frozen=True, slots=True)
class TypedTest:
    """A test checked against the vocabulary: its field type, normalised operand and text."""

    test: Test
    ftype: str
    operand: Any
    ref: str | None
    ref_type: str | None
    text: str


class Compilation:
    """State shared by the compile stages: the files, the diagnostics, the collected
    documents and rules, and the result being built."""

    def __init__(
        self,
        files: Sequence[tuple[LoadedDocument, ParsedFile]],
        emitted: frozenset[str] | None = None,
    ) -> None:
        self.files = files
        #: Categories some detector emits (None: not checked).
        self.emitted = emitted
        self.docs = {doc.filename: doc for doc, _ in files}
        self.diags: list[Diagnostic] = []
        self.vocab: Vocabulary | None = None
        self.settings: SettingsDoc | None = None
        self.packs: list[PackDoc] = []
        self.rules: list[RuleSpec] = []
        self.typed: dict[int, TypedTest] = {}  # id(Test) -> typed form
        self.compiled: list[CompiledRule] = []
        self.result = CompileResult()

    def error(
        self,
        code: str,
        message: str,
        location: Location | None,
        path: str | None,
        help: str | None = None,
        severity: str = "error",
    ) -> None:
        """Record a diagnostic (an error, or a warning when `severity` says so)."""
        self.diags.append(
            Diagnostic(
                code, message, location, path, help, "warning" if severity == "warning" else "error"
            )
        )

    @property
    def vocabulary(self) -> Vocabulary:
        """The collected vocabulary (after the `collect` stage)."""
        assert self.vocab is not None
        return self.vocab
