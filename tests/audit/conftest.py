"""Fixtures for the audit-log tests: keys made per run, a fake clock, log builders."""

from __future__ import annotations

import asyncio
import os
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import pytest

from gateway.audit import AuditLog, AuditOptions, Keyring, KeyringEntry, Signer

DEPLOYMENT = "gw.example.test"
ORIGIN = f"{DEPLOYMENT}/i1"


class FakeClock:
    """A clock that moves only when told to (or by `step` on every call)."""

    def __init__(self, start: datetime | None = None, step: float = 0.0) -> None:
        self.now = start or datetime(2026, 3, 1, 12, 0, tzinfo=UTC)
        self.step = timedelta(seconds=step)

    def __call__(self) -> datetime:
        current = self.now
        self.now += self.step
        return current

    def advance(self, seconds: float) -> None:
        self.now += timedelta(seconds=seconds)


@pytest.fixture(scope="session")
def signer() -> Signer:
    """A fresh key for this test run (never committed)."""
    return Signer.generate(DEPLOYMENT)


@pytest.fixture(scope="session")
def keyring(signer: Signer) -> Keyring:
    return Keyring([KeyringEntry(signer.verifier, (DEPLOYMENT,))])


def decision(i: int, **extra: Any) -> dict[str, Any]:
    """A decision record shaped like the gateway's."""
    deny = i % 3 == 0
    record: dict[str, Any] = {
        "type": "decision",
        "decision_id": f"00000000-0000-4000-8000-{i:012d}",
        "tenant": "acme-eu" if i % 2 else "beta-us",
        "decision": "deny" if deny else "allow",
        "status": 451 if deny else 200,
        "rules": ["geo.eu_residency"] if deny else ["allow.default"],
        "legal_basis": [{"regime": "GDPR", "ref": "Art. 44"}] if deny else [],
        "req_mac": "hmac-sha256:k1:" + f"{i:064x}",
        "client_ip": "192.0.2.0/24",
        "retention_days": 200,
    }
    record.update(extra)
    return record


def run(coro: Any) -> Any:
    """Run a coroutine to completion from synchronous code (module fixtures)."""
    return asyncio.run(coro)


@dataclass
class LogBuilder:
    """Opens logs in a directory with test-friendly options."""

    directory: Path
    signer: Signer
    clock: FakeClock

    def options(self, **overrides: Any) -> AuditOptions:
        base: dict[str, Any] = {
            "segment_records": 32,
            "heartbeat_seconds": 3600.0,
            "clock": self.clock,
        }
        base.update(overrides)
        return AuditOptions(**base)

    async def open(self, signer: Signer | None = None, **overrides: Any) -> AuditLog:
        return await AuditLog.open(
            self.directory, signer or self.signer, origin=ORIGIN, options=self.options(**overrides)
        )


@pytest.fixture
def clock() -> FakeClock:
    return FakeClock(step=0.001)


@pytest.fixture
def builder(tmp_path: Path, signer: Signer, clock: FakeClock) -> LogBuilder:
    return LogBuilder(tmp_path / "log", signer, clock)


@pytest.fixture
def no_fsync(monkeypatch: pytest.MonkeyPatch) -> Iterator[None]:
    """Skip fsync where durability is not what a test checks (keeps the suite fast)."""
    monkeypatch.setattr(os, "fsync", lambda fd: None)
    yield


def segment_lines(directory: Path) -> list[bytes]:
    """Every stored line of a log directory, in order."""
    lines: list[bytes] = []
    for path in sorted((directory / "segments").glob("*.jsonl")):
        lines.extend(path.read_bytes().splitlines())
    return lines


def verify_codes(report: Any) -> set[str]:
    """Error codes of a VerifyReport or SourceReport."""
    sources = getattr(report, "sources", [report])
    return {f.code for s in sources for f in s.errors}


Mutator = Callable[[Path], None]
