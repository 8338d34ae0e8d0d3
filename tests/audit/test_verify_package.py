"""The verifier package: its public names, the durable state file, and the record files'
manifest check that rides on the record pass."""

from __future__ import annotations

import os
from pathlib import Path

import pytest

from gateway.audit import Keyring, export_bundle, verify_source

from .conftest import LogBuilder, decision, run, verify_codes


def test_the_public_names_import_from_the_package() -> None:
    from gateway.audit.verify import (  # noqa: F401
        CODES,
        Finding,
        SourceReport,
        VerifyOptions,
        VerifyReport,
        load_state,
        save_state,
        verify_paths,
        verify_source,
    )

    assert "VIEW_MISMATCH" in CODES


def test_the_state_file_is_fsynced_and_so_is_its_directory(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    from gateway.audit.verify import load_state, save_state

    synced: list[str] = []
    real_fsync = os.fsync

    def fsync(fd: int) -> None:
        synced.append(os.readlink(f"/proc/self/fd/{fd}"))
        real_fsync(fd)

    monkeypatch.setattr(os, "fsync", fsync)
    state = tmp_path / "state.json"
    logs = {"o": {"size": 3, "root": "AAAA", "ts": "2026-01-01T00:00:00.000000Z"}}
    save_state(state, logs)
    assert str(tmp_path / "state.json.tmp") in synced  # the bytes, before the rename
    assert str(tmp_path) in synced  # the rename
    assert synced.index(str(tmp_path)) > synced.index(str(tmp_path / "state.json.tmp"))
    assert load_state(state) == logs
    assert not (tmp_path / "state.json.tmp").exists()


def _bundle(builder: LogBuilder, keyring: Keyring, out: Path) -> Path:
    async def write() -> None:
        log = await builder.open()
        for i in range(12):
            await log.append(decision(i))
        await log.close()

    run(write())
    export_bundle(builder.directory, out, builder.signer, keyring=keyring)
    return out


def test_a_changed_record_file_is_caught_by_its_hash_even_unread(
    builder: LogBuilder, keyring: Keyring, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    import gateway.audit.verify as verify_package

    bundle = _bundle(builder, keyring, tmp_path / "bundle")
    records = sorted((bundle / "records").glob("*.jsonl"))[0]
    records.write_bytes(records.read_bytes().replace(b'"decision":"allow"', b'"decision":"deny!"'))
    assert "FILE_HASH_MISMATCH" in verify_codes(verify_source(bundle, keyring))
    # When the record pass does not read the file (it stops early), the file is read
    # for its hash alone.
    monkeypatch.setattr(verify_package, "_check_records", lambda run, src: None)
    assert "FILE_HASH_MISMATCH" in verify_codes(verify_source(bundle, keyring))


def _only_slow(self: object, label: str, number: int, lines: list[bytes]) -> None:
    """`_Contiguous.block` with every line on the explaining path."""
    views = self.src.views  # type: ignore[attr-defined]
    bodies = []
    for raw in lines:
        number += 1
        self.slow(label, number, raw, True)  # type: ignore[attr-defined]
        if views is not None:
            bodies.append(views.other(raw))
    if views is not None:
        views.jsonl(bodies)


def _swap(lines: list[bytes]) -> list[bytes]:
    return [lines[0], lines[2], lines[1], *lines[3:]]


_MUTATIONS = {
    "none": lambda lines: lines,
    "edit": lambda lines: [lines[0], lines[1].replace(b"192.0.2.0", b"192.0.2.1"), *lines[2:]],
    "drop": lambda lines: [lines[0], *lines[2:]],
    "swap": _swap,
    "duplicate": lambda lines: [lines[0], lines[1], lines[1], *lines[2:]],
    "respace": lambda lines: [lines[0], lines[1].replace(b":", b": ", 1), *lines[2:]],
    "stop": lambda lines: [lines[0], lines[1].replace(b'"type":"decision"', b'"type":"stop"'),
                           *lines[2:]],
}  # fmt: skip


@pytest.mark.parametrize("mutation", sorted(_MUTATIONS))
def test_the_fast_path_finds_what_the_explaining_path_finds(
    builder: LogBuilder,
    keyring: Keyring,
    tmp_path: Path,
    monkeypatch: pytest.MonkeyPatch,
    mutation: str,
) -> None:
    from gateway.audit.verify.stream import _Contiguous

    bundle = _bundle(builder, keyring, tmp_path / "bundle")
    records = sorted((bundle / "records").glob("*.jsonl"))[0]
    lines = records.read_bytes().split(b"\n")[:-1]
    records.write_bytes(b"\n".join(_MUTATIONS[mutation](lines)) + b"\n")
    fast = verify_source(bundle, keyring).to_json()
    monkeypatch.setattr(_Contiguous, "block", _only_slow)
    slow = verify_source(bundle, keyring).to_json()
    assert fast == slow
    assert (mutation == "none") == (fast["result"] == "valid")
