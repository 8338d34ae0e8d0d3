"""Findings: where personal data was found, never what it was.

A `PersonalDataFinding` carries a category, a path and a character span; it holds no copy of
the value, so findings can be logged, put in the request context and written to the audit
record.
"""

from __future__ import annotations

import json
from collections.abc import Iterator, Sequence
from dataclasses import dataclass, field
from typing import Literal, overload

Location = tuple[str | int, ...]
Source = Literal["body", "header"]
#: How the scanned text was carried: as written (`""`), inside a `{"b64": ...}` object
#: (`b64`), inside a `data:` URL (`data_url`), as raw bytes of a protobuf tensor (`bytes`), a
#: `data:` URL inside either of the last two (`b64+data_url`, `bytes+data_url`), as readable
#: runs of a binary value (`binary`), or as an object key (`key`); the last two can be
#: detected but not rewritten.
Encoding = Literal[
    "", "b64", "data_url", "bytes", "b64+data_url", "bytes+data_url", "binary", "key"
]


@dataclass(frozen=True, slots=True)
class PersonalDataFinding:
    """One validated value: `category` at `path`, characters `start:end` of that string.

    `path` uses the scenario form (`instances[0].note`, `inputs["odd key"][2]`; the empty
    string for a top-level string); `location` holds the same steps as keys and indexes, for
    code that needs to reach the value; header findings have `source="header"`, a path
    `headers["x-name"]` and a location `(index of the header line,)`. For an `encoding`
    other than `""` the span counts characters of the decoded text, not of the JSON string.
    """

    category: str
    path: str
    start: int
    end: int
    location: Location = field(repr=False)
    source: Source = "body"
    encoding: Encoding = ""


@dataclass(frozen=True, slots=True)
class BinaryInput:
    """A decoded value that is not text: where it is, its sniffed media type and its size."""

    path: str
    media_type: str
    size: int

    def to_json(self) -> dict[str, str | int]:
        """`{path, media_type, size}`, the form the audit record stores."""
        return {"path": self.path, "media_type": self.media_type, "size": self.size}


@dataclass(frozen=True, slots=True)
class Findings(Sequence[PersonalDataFinding]):
    """The findings of one scan, in document order.

    `unscanned` lists the path where the scan's work budget ran out (the rest of the
    document was not scanned either); a gateway should refuse such a request rather than
    forward personal data it could not look for. `binary` lists the decoded values that are
    not text (an image, audio, a serialised record), which the detectors could only read in
    part.
    """

    items: tuple[PersonalDataFinding, ...] = ()
    unscanned: tuple[str, ...] = ()
    binary: tuple[BinaryInput, ...] = ()
    #: Paths of `{"b64": ...}` values that are not base64: the gateway cannot read them.
    undecodable: tuple[str, ...] = ()

    @property
    def complete(self) -> bool:
        """False when the work budget ran out before every string was scanned."""
        return not self.unscanned

    @overload
    def __getitem__(self, index: int) -> PersonalDataFinding: ...

    @overload
    def __getitem__(self, index: slice) -> Sequence[PersonalDataFinding]: ...

    def __getitem__(
        self, index: int | slice
    ) -> PersonalDataFinding | Sequence[PersonalDataFinding]:
        return self.items[index]

    def __len__(self) -> int:
        return len(self.items)

    def __iter__(self) -> Iterator[PersonalDataFinding]:
        return iter(self.items)

    def __add__(self, other: Findings) -> Findings:
        return Findings(
            self.items + other.items,
            self.unscanned + other.unscanned,
            self.binary + other.binary,
            self.undecodable + other.undecodable,
        )

    @property
    def media_types(self) -> tuple[str, ...]:
        """Distinct media types of the binary values, sorted (`request.binary_inputs`)."""
        return tuple(sorted({item.media_type for item in self.binary}))

    @property
    def categories(self) -> tuple[str, ...]:
        """Distinct categories, sorted (the context's `request.personal_data`)."""
        return tuple(sorted({finding.category for finding in self.items}))

    def paths_by_category(self) -> dict[str, list[str]]:
        """Distinct paths per category, in document order (`request.personal_data_paths`)."""
        paths: dict[str, list[str]] = {}
        for finding in self.items:
            listed = paths.setdefault(finding.category, [])
            if finding.path not in listed:
                listed.append(finding.path)
        return paths

    def summary(self) -> list[dict[str, str]]:
        """Distinct `{type, path}` pairs, the form the audit record and the scenarios use."""
        seen: set[tuple[str, str]] = set()
        pairs: list[dict[str, str]] = []
        for finding in self.items:
            key = (finding.category, finding.path)
            if key not in seen:
                seen.add(key)
                pairs.append({"type": finding.category, "path": finding.path})
        return pairs


def header_path(name: str) -> str:
    """The path of a header finding: `headers["x-note"]` (names are case-insensitive)."""
    return f"headers[{json.dumps(name.lower(), ensure_ascii=False)}]"
