"""The tamper matrix (design brief section 4): one mutant per tamper class, at the first, a
middle and the last position, each detected with its code; the untouched log and bundles
verify.

The world: a log of ~220 records (per-record signatures on, segments of 32, a key
rotation, a restart after an hour, a prune of the first two segments), a fork of it (same
origin and keys, different records), a log of another origin, a log forged end to end with
an attacker's key, and bundles exported from the log (whole, a time window, filtered).
"""

from __future__ import annotations

import asyncio
import base64
import json
import shutil
from collections.abc import Callable
from dataclasses import dataclass
from datetime import timedelta
from pathlib import Path
from typing import Any

import orjson
import pytest

from gateway.audit import (
    AuditLog,
    AuditOptions,
    ExportFilter,
    Keyring,
    KeyringEntry,
    Signer,
    VerifyOptions,
    export_bundle,
    verify_paths,
    verify_source,
)
from gateway.audit.canonical import canonical_dumps
from gateway.audit.merkle import leaf_hash
from gateway.audit.note import (
    checkpoint_text,
    parse_checkpoint_text,
    parse_note,
    sign_note,
    split_notes,
)
from gateway.audit.record import format_ts, parse_ts
from gateway.audit.verify import save_state
from gateway.cli import main as cli_main

from .conftest import DEPLOYMENT, ORIGIN, FakeClock, decision

MAX_GAP = 5.0
POSITIONS = ("first", "middle", "last")


@dataclass
class World:
    root: Path
    log: Path
    old_log: Path
    fork: Path
    other: Path
    forged: Path
    bundle: Path
    window: Path
    filtered: Path
    keyring: Keyring
    k1: Signer
    k2: Signer
    attacker: Signer
    rotation_seq: int


async def _build(
    directory: Path,
    k1: Signer,
    k2: Signer | None,
    clock: FakeClock,
    *,
    origin: str = ORIGIN,
    variant: str = "",
    snapshot: Path | None = None,
) -> int:
    options = AuditOptions(
        segment_records=32,
        record_signatures=True,
        heartbeat_seconds=3600.0,
        default_retention_days=1,
        clock=clock,
    )
    count = 0
    extra = {"variant": variant} if variant else {}

    async def batch(log: AuditLog, size: int, **fields: Any) -> None:
        nonlocal count
        await asyncio.gather(
            *(log.append(decision(count + i, **fields, **extra)) for i in range(size))
        )
        count += size

    log = await AuditLog.open(directory, k1, origin=origin, options=options)
    for _ in range(7):
        await batch(log, 10, retention_days=1)
    for _ in range(3):
        await batch(log, 10)
    rotation_seq = -1
    if k2 is not None:
        rotation_seq = (await log.rotate_key(k2)).seq
    for _ in range(5):
        await batch(log, 10)
    await log.close()
    if snapshot is not None:
        shutil.copytree(directory, snapshot)
    clock.advance(3600)  # down for an hour: explained by the next start record
    log = await AuditLog.open(directory, k2 or k1, origin=origin, options=options)
    await batch(log, 10)
    pruned = await log.prune(clock.now + timedelta(days=30))
    assert pruned is not None and pruned.to_seq == 64
    for _ in range(3):
        await batch(log, 10)
    await log.close()
    return rotation_seq


@pytest.fixture(scope="module")
def world(tmp_path_factory: pytest.TempPathFactory, signer: Signer) -> World:
    root = tmp_path_factory.mktemp("tamper")
    k1, k2 = signer, Signer.generate(DEPLOYMENT)
    attacker = Signer.generate(DEPLOYMENT)
    clock = FakeClock(step=1.0)
    rotation_seq = asyncio.run(_build(root / "log", k1, k2, clock, snapshot=root / "old-log"))
    fork_clock = FakeClock(step=1.0)
    asyncio.run(_build(root / "fork", k1, k2, fork_clock, variant="fork"))
    asyncio.run(_build(root / "other", k1, None, FakeClock(step=1.0), origin=f"{DEPLOYMENT}/i2"))
    asyncio.run(_build(root / "forged", attacker, None, FakeClock(step=1.0)))
    records = [
        orjson.loads(line)["r"]
        for path in sorted((root / "log" / "segments").glob("*.jsonl"))
        for line in path.read_bytes().splitlines()
    ]
    rotation = next(r for r in records if r["type"] == "key_rotation")
    keyring = Keyring(
        [
            KeyringEntry(k1.verifier, (DEPLOYMENT,), not_after=rotation["ts"], status="retired"),
            KeyringEntry(k2.verifier, (DEPLOYMENT,), not_before=rotation["ts"]),
        ]
    )
    now = clock.now
    export_bundle(root / "log", root / "bundle", k2, keyring=keyring, now=now)
    middle_ts = next(r["ts"] for r in records if r["seq"] == 150)
    export_bundle(root / "log", root / "window", k2, from_ts=middle_ts, keyring=keyring, now=now)
    export_bundle(
        root / "log", root / "filtered", k2, export_filter=ExportFilter(tenant="acme-eu"),
        keyring=keyring, now=now,
    )  # fmt: skip
    return World(
        root, root / "log", root / "old-log", root / "fork", root / "other", root / "forged",
        root / "bundle", root / "window", root / "filtered", keyring, k1, k2, attacker,
        rotation_seq,
    )  # fmt: skip


def _options(**kw: Any) -> VerifyOptions:
    return VerifyOptions(max_gap_seconds=MAX_GAP, **kw)


def _codes(path: Path, world: World, keyring: Keyring | None = None, **kw: Any) -> set[str]:
    report = verify_source(path, keyring or world.keyring, _options(**kw))
    return {f.code for f in report.errors}


# -- the untouched world verifies ------------------------------------------------------


@pytest.mark.parametrize("name", ["log", "bundle", "window", "filtered", "fork", "other"])
def test_untouched_sources_verify(world: World, name: str) -> None:
    keyring = world.keyring
    if name == "other":  # signed by K1 only, never rotated: pin K1 without a window
        keyring = Keyring([KeyringEntry(world.k1.verifier, (DEPLOYMENT,))])
    report = verify_source(world.root / name, keyring, _options())
    assert report.valid, [f.text() for f in report.errors]
    expected = "not-proven" if name == "filtered" else "proven"
    assert report.completeness == expected


def test_untouched_log_and_bundles_exit_0_through_the_cli(world: World, tmp_path: Path) -> None:
    ring = tmp_path / "ring.json"
    world.keyring.save(ring)
    paths = [str(world.root / n) for n in ("log", "bundle", "window", "filtered")]
    report = tmp_path / "report.json"
    code = cli_main(["audit", "verify", *paths, "--trusted-keys", str(ring),
                     "--max-gap", str(MAX_GAP), "--json", str(report), "--quiet"])  # fmt: skip
    assert code == 0
    assert json.loads(report.read_text())["result"] == "valid"


def test_the_world_has_the_promised_shape(world: World) -> None:
    assert (world.log / "pruned.json").exists()
    assert not (world.log / "segments" / f"{0:020d}.jsonl").exists()
    assert (world.bundle / "proofs" / "start.json").exists()
    start = json.loads((world.window / "proofs" / "start.json").read_text())
    assert len(start["compact_range"]) >= 2 and start["size"] > 64
    assert world.rotation_seq > 64


# -- record-level mutants, applied to the log directory and to the whole-range bundle --


class Lines:
    """The stored record lines of a log directory or bundle, editable by global index."""

    def __init__(self, root: Path) -> None:
        folder = root / ("records" if (root / "manifest.json").exists() else "segments")
        self.files = sorted(folder.glob("*.jsonl"))
        self.data = [path.read_bytes().split(b"\n")[:-1] for path in self.files]

    def index(self, position: str) -> tuple[int, int]:
        flat = [(f, i) for f, lines in enumerate(self.data) for i in range(len(lines))]
        pick = {"first": 0, "middle": len(flat) // 2, "last": len(flat) - 1}[position]
        return flat[pick]

    def get(self, where: tuple[int, int]) -> bytes:
        return self.data[where[0]][where[1]]

    def set(self, where: tuple[int, int], line: bytes) -> None:
        self.data[where[0]][where[1]] = line

    def delete(self, where: tuple[int, int]) -> None:
        del self.data[where[0]][where[1]]

    def insert_after(self, where: tuple[int, int], line: bytes) -> None:
        self.data[where[0]].insert(where[1] + 1, line)

    def save(self, *, final_newline: bool = True) -> None:
        for index, (path, lines) in enumerate(zip(self.files, self.data, strict=True)):
            body = b"".join(line + b"\n" for line in lines)
            if not final_newline and index == len(self.files) - 1:
                body = body[:-1]
            path.write_bytes(body)


def _resign(line: bytes, signer: Signer, **changes: Any) -> bytes:
    """The line with record fields changed, canonical and signed by `signer`."""
    record = orjson.loads(line)["r"]
    record.update(changes)
    record["kid"] = signer.kid
    body = canonical_dumps(record)
    sig = base64.b64encode(signer.sign_record(leaf_hash(body))).decode()
    return canonical_dumps({"r": record, "s": sig})


def _keep_signature(line: bytes, **changes: Any) -> bytes:
    obj = orjson.loads(line)
    obj["r"].update(changes)
    return canonical_dumps(obj)


def m_modify(lines: Lines, at: tuple[int, int], world: World) -> None:
    lines.set(at, _keep_signature(lines.get(at), tampered=True))


def m_modify_byte(lines: Lines, at: tuple[int, int], world: World) -> None:
    lines.set(at, lines.get(at).replace(b'{"r":{', b'{"r": {', 1))


def m_delete(lines: Lines, at: tuple[int, int], world: World) -> None:
    lines.delete(at)


def m_insert_forged(lines: Lines, at: tuple[int, int], world: World) -> None:
    lines.insert_after(at, _resign(lines.get(at), world.attacker, decision_id="forged"))


def m_insert_other_log(lines: Lines, at: tuple[int, int], world: World) -> None:
    other = Lines(world.other)
    lines.insert_after(at, other.get(other.index("middle")))


def m_reorder(lines: Lines, at: tuple[int, int], world: World) -> None:
    f, i = at
    if i + 1 >= len(lines.data[f]):
        i -= 1
    lines.data[f][i], lines.data[f][i + 1] = lines.data[f][i + 1], lines.data[f][i]


def m_truncate(lines: Lines, at: tuple[int, int], world: World) -> None:
    f, i = at
    lines.data[f] = lines.data[f][:i]
    for later in range(f + 1, len(lines.data)):
        lines.data[later] = []


def m_duplicate(lines: Lines, at: tuple[int, int], world: World) -> None:
    lines.insert_after(at, lines.get(at))


def _reencode(how: str) -> Callable[[Lines, tuple[int, int], World], None]:
    def mutate(lines: Lines, at: tuple[int, int], world: World) -> None:
        line = lines.get(at)
        if how == "whitespace":
            new = line.replace(b'":', b'": ', 1)
        elif how == "key order":
            record = orjson.loads(line)["r"]
            rest = line[len(b'{"r":') + len(canonical_dumps(record)) :]
            reordered = {"v": record.pop("v"), **record}
            new = b'{"r":' + orjson.dumps(reordered) + rest
        elif how == "escape":  # "decision" -> "\u0064ecision": same string, other bytes
            j = line.index(b'"type":"') + len(b'"type":"')
            new = line[:j] + b"\\u%04x" % line[j] + line[j + 1 :]
        else:  # "1.0"
            new = line.replace(b'"v":1', b'"v":1.0', 1)
        assert new != line
        lines.set(at, new)

    return mutate


def _malformed(how: str) -> Callable[[Lines, tuple[int, int], World], None]:
    def mutate(lines: Lines, at: tuple[int, int], world: World) -> None:
        line = lines.get(at)
        if how == "duplicate key":
            new = line.replace(b'{"r":{', b'{"r":{"v":1,', 1)
        elif how == "NaN":
            new = line.replace(b'"v":1', b'"v":NaN', 1)
        elif how == "lone surrogate":
            new = line.replace(b'"type":"', b'"type":"\\ud800', 1)
        else:  # invalid UTF-8
            new = line.replace(b'"type":"', b'"type":"\xff', 1)
        lines.set(at, new)

    return mutate


# (row, mutation, expected code per position)
Mutation = Callable[[Lines, tuple[int, int], World], None]
RECORD_MUTANTS: list[tuple[str, Mutation, dict[str, str]]] = [
    ("1 modify a field", m_modify, dict.fromkeys(POSITIONS, "RECORD_SIG_INVALID")),
    ("1 modify a field (root)", m_modify, dict.fromkeys(POSITIONS, "ROOT_MISMATCH")),
    ("1 modify a byte", m_modify_byte, dict.fromkeys(POSITIONS, "RECORD_NONCANONICAL")),
    ("2 delete", m_delete, {"first": "SEQ_GAP", "middle": "SEQ_GAP", "last": "RANGE_INCOMPLETE"}),
    ("2 delete (prev)", m_delete, {"first": "PREV_MISMATCH", "middle": "PREV_MISMATCH",
                                   "last": "RANGE_INCOMPLETE"}),
    ("3 insert forged", m_insert_forged, dict.fromkeys(POSITIONS, "UNTRUSTED_KEY")),
    ("3 insert forged (seq)", m_insert_forged, dict.fromkeys(POSITIONS, "SEQ_DUPLICATE")),
    ("3b insert from another log", m_insert_other_log, dict.fromkeys(POSITIONS, "ORIGIN_MISMATCH")),
    ("4 reorder", m_reorder, dict.fromkeys(POSITIONS, "SEQ_ORDER")),
    ("4 reorder (prev)", m_reorder, dict.fromkeys(POSITIONS, "PREV_MISMATCH")),
    ("5 truncate tail", m_truncate, dict.fromkeys(POSITIONS, "RANGE_INCOMPLETE")),
    ("10 duplicate", m_duplicate, dict.fromkeys(POSITIONS, "SEQ_DUPLICATE")),
    ("11 whitespace", _reencode("whitespace"), dict.fromkeys(POSITIONS, "RECORD_NONCANONICAL")),
    ("11 key order", _reencode("key order"), dict.fromkeys(POSITIONS, "RECORD_NONCANONICAL")),
    ("11 escape", _reencode("escape"), dict.fromkeys(POSITIONS, "RECORD_NONCANONICAL")),
    ("11 1.0", _reencode("1.0"), dict.fromkeys(POSITIONS, "RECORD_NONCANONICAL")),
    ("12 duplicate key", _malformed("duplicate key"), dict.fromkeys(POSITIONS, "RECORD_MALFORMED")),
    ("12 NaN", _malformed("NaN"), dict.fromkeys(POSITIONS, "RECORD_MALFORMED")),
    ("12 lone surrogate", _malformed("lone surrogate"),
     dict.fromkeys(POSITIONS, "RECORD_MALFORMED")),
    ("12 invalid UTF-8", _malformed("invalid UTF-8"), dict.fromkeys(POSITIONS, "RECORD_MALFORMED")),
]  # fmt: skip


def _copy(world: World, name: str, tmp_path: Path) -> Path:
    target = tmp_path / name
    shutil.copytree(world.root / name, target, symlinks=True)
    return target


@pytest.mark.parametrize("target", ["log", "bundle"])
@pytest.mark.parametrize("position", POSITIONS)
@pytest.mark.parametrize("row", RECORD_MUTANTS, ids=lambda r: r[0])
def test_record_mutants_are_detected(
    world: World, tmp_path: Path, target: str, position: str, row: Any
) -> None:
    _name, mutate, expected = row
    path = _copy(world, target, tmp_path)
    lines = Lines(path)
    mutate(lines, lines.index(position), world)
    lines.save()
    codes = _codes(path, world)
    assert expected[position] in codes, codes
    if target == "bundle":
        assert "FILE_HASH_MISMATCH" in codes


@pytest.mark.parametrize("fraction", [0.25, 0.5, 0.75])
def test_5c_torn_final_line(world: World, tmp_path: Path, fraction: float) -> None:
    path = _copy(world, "log", tmp_path)
    lines = Lines(path)
    at = lines.index("last")
    line = lines.get(at)
    lines.set(at, line[: int(len(line) * fraction)])
    lines.save(final_newline=False)
    assert "TRUNCATED_LINE" in _codes(path, world)


# -- checkpoints ------------------------------------------------------------------------


def _notes(path: Path) -> tuple[Path, list[bytes]]:
    name = "checkpoints.notes"
    file = path / name
    notes, _ = split_notes(file.read_bytes())
    return file, [raw for _offset, raw in notes]


def _write_notes(file: Path, notes: list[bytes]) -> None:
    file.write_bytes(b"".join(raw + b"\n" for raw in notes))


def _pick(items: list[Any], position: str) -> int:
    return {"first": 0, "middle": len(items) // 2, "last": len(items) - 1}[position]


@pytest.mark.parametrize("position", POSITIONS)
@pytest.mark.parametrize("field", ["size", "root", "ts"])
def test_9_edited_checkpoint_fails_its_signature(
    world: World, tmp_path: Path, position: str, field: str
) -> None:
    path = _copy(world, "log", tmp_path)
    file, notes = _notes(path)
    i = _pick(notes, position)
    note = parse_note(notes[i])
    cp = parse_checkpoint_text(note.text)
    if field == "size":
        text = note.text.replace(f"\n{cp.size}\n", f"\n{cp.size + 1}\n", 1)
    elif field == "root":
        text = checkpoint_text(type(cp)(cp.origin, cp.size, bytes(32), cp.ts))
    else:
        text = note.text.replace(cp.ts[:4], str(int(cp.ts[:4]) + 1), 1)
    notes[i] = type(note)(text, note.signatures).encode().encode()
    _write_notes(file, notes)
    assert "CHECKPOINT_SIG_INVALID" in _codes(path, world)


@pytest.mark.parametrize("position", POSITIONS)
def test_15_checkpoint_time_going_backwards(world: World, tmp_path: Path, position: str) -> None:
    path = _copy(world, "log", tmp_path)
    file, notes = _notes(path)
    signed_by = [[sig.key_id for sig in parse_note(raw).signatures] for raw in notes]
    # K2-only checkpoints, skipping the first: going back before it would also predate K2.
    late = [i for i, kids in enumerate(signed_by) if kids == [world.k2.key_id]][1:]
    i = late[_pick(late, position)]
    cp = parse_checkpoint_text(parse_note(notes[i]).text)
    earlier = parse_checkpoint_text(parse_note(notes[i - 1]).text).ts
    back = type(cp)(
        cp.origin, cp.size, cp.root, format_ts(parse_ts(earlier) - timedelta(seconds=1))
    )
    # An insider (or a broken clock) re-signs with the real key.
    notes[i] = sign_note(checkpoint_text(back), [world.k2]).encode()
    _write_notes(file, notes)
    assert "TS_REGRESSION" in _codes(path, world)


@pytest.mark.parametrize("position", POSITIONS)
def test_15_checkpoint_gap_without_restart(world: World, tmp_path: Path, position: str) -> None:
    path = _copy(world, "log", tmp_path)
    file, notes = _notes(path)
    cps = [parse_checkpoint_text(parse_note(raw).text) for raw in notes]
    times = [parse_ts(cp.ts) for cp in cps]
    restart = next(i for i in range(1, len(times)) if (times[i] - times[i - 1]).seconds > 600)
    at_cut = next(i for i, cp in enumerate(cps) if cp.size == 64)  # pruned.json needs it
    # Drop six consecutive checkpoints inside one writer session: the neighbours left are
    # more than MAX_GAP apart, and no start record lies between them.
    lo = {"first": 1, "middle": at_cut + 1, "last": restart + 1}[position]
    assert not lo <= at_cut < lo + 6
    assert lo + 6 < len(notes) and not lo <= restart < lo + 6
    del notes[lo : lo + 6]
    _write_notes(file, notes)
    assert "CHECKPOINT_GAP" in _codes(path, world)


def test_untouched_gap_is_explained_by_the_restart(world: World) -> None:
    # The hour of downtime is longer than MAX_GAP, and still valid: a start record explains it.
    assert verify_source(world.log, world.keyring, _options()).valid


# -- keys -------------------------------------------------------------------------------


def test_6_replaced_key_everything_resigned(world: World, tmp_path: Path) -> None:
    assert "UNTRUSTED_KEY" in _codes(world.forged, world)
    forged_bundle = tmp_path / "forged-bundle"
    attacker_ring = Keyring([KeyringEntry(world.attacker.verifier, (DEPLOYMENT,))])
    export_bundle(world.forged, forged_bundle, world.attacker, keyring=attacker_ring)
    codes = _codes(forged_bundle, world)
    assert {"UNTRUSTED_KEY", "MANIFEST_SIG_INVALID"} <= codes
    # The forger's own keyring inside the bundle changes nothing: trust is pinned.
    assert json.loads((forged_bundle / "keys" / "keyring.json").read_text())["keys"]


def test_6_swapped_keyring_file_in_a_bundle(world: World, tmp_path: Path) -> None:
    path = _copy(world, "bundle", tmp_path)
    attacker_ring = Keyring([KeyringEntry(world.attacker.verifier, (DEPLOYMENT,))])
    (path / "keys" / "keyring.json").write_text(attacker_ring.dumps())
    assert "FILE_HASH_MISMATCH" in _codes(path, world)


@pytest.mark.parametrize("position", POSITIONS)
def test_6b_key_used_outside_its_window(world: World, position: str) -> None:
    records = [orjson.loads(line)["r"] for ls in Lines(world.log).data for line in ls]
    k1_used = sorted({r["ts"] for r in records if r["kid"] == world.k1.kid})
    cut = k1_used[_pick(k1_used, position)]
    before = format_ts(parse_ts(cut) - timedelta(milliseconds=1))
    ring = Keyring(
        [
            KeyringEntry(world.k1.verifier, (DEPLOYMENT,), not_after=before, status="revoked"),
            KeyringEntry(world.k2.verifier, (DEPLOYMENT,), not_before=k1_used[-1]),
        ]
    )
    assert "KEY_NOT_VALID_AT_TIME" in _codes(world.log, world, ring)


def test_key_scoped_to_another_origin_is_untrusted(world: World) -> None:
    ring = Keyring(
        [KeyringEntry(e.verifier, ("gw.other.test",), e.not_before, e.not_after, e.status)
         for e in world.keyring]
    )  # fmt: skip
    assert "UNTRUSTED_KEY" in _codes(world.log, world, ring)


# -- splicing, forks, rollback ------------------------------------------------------------


@pytest.mark.parametrize("position", POSITIONS)
def test_7_spliced_segment_from_a_fork(world: World, tmp_path: Path, position: str) -> None:
    path = _copy(world, "log", tmp_path)
    files = sorted((path / "segments").glob("*.jsonl"))
    victim = files[_pick(files, position)]
    shutil.copy(world.fork / "segments" / victim.name, victim)
    codes = _codes(path, world)
    assert "ROOT_MISMATCH" in codes
    if position != "first":
        assert "PREV_MISMATCH" in codes


@pytest.mark.parametrize("position", POSITIONS)
def test_7_spliced_checkpoint_from_a_fork(world: World, tmp_path: Path, position: str) -> None:
    path = _copy(world, "log", tmp_path)
    file, notes = _notes(path)
    _f, fork_notes = _notes(world.fork)
    sizes = [parse_checkpoint_text(parse_note(raw).text).size for raw in notes]
    eligible = [i for i, size in enumerate(sizes) if size > 64]
    i = eligible[_pick(eligible, position)]
    size = sizes[i]
    twin = next(
        raw for raw in fork_notes if parse_checkpoint_text(parse_note(raw).text).size == size
    )
    notes.insert(i + 1, twin)
    _write_notes(file, notes)
    codes = _codes(path, world)
    assert {"FORK", "ROOT_MISMATCH"} <= codes


def _state_of(world: World, source: Path, tmp_path: Path, name: str) -> Path:
    report = verify_source(source, world.keyring, _options())
    assert report.valid and report.head is not None
    state = tmp_path / name
    save_state(state, {report.origin: report.head})
    return state


def test_8_replayed_old_log_is_a_rollback(world: World, tmp_path: Path) -> None:
    state = _state_of(world, world.log, tmp_path, "state.json")
    assert verify_source(world.old_log, world.keyring, _options()).valid  # fine on its own
    result = verify_paths([world.old_log], world.keyring, _options(), state)
    assert "ROLLBACK" in {f.code for s in result.sources for f in s.errors}


def test_8_same_size_other_root_is_a_fork(world: World, tmp_path: Path) -> None:
    state = _state_of(world, world.fork, tmp_path, "fork-state.json")
    result = verify_paths([world.log], world.keyring, _options(), state)
    assert "FORK" in {f.code for s in result.sources for f in s.errors}


@pytest.mark.parametrize("position", POSITIONS)
def test_5b_truncated_with_newest_checkpoints_dropped(
    world: World, tmp_path: Path, position: str
) -> None:
    state = _state_of(world, world.log, tmp_path, "state.json")
    newest = parse_checkpoint_text(parse_note(_notes(world.log)[1][-1]).text).ts
    path = _copy(world, "log", tmp_path)
    file, notes = _notes(path)
    sizes = [parse_checkpoint_text(parse_note(raw).text).size for raw in notes]
    eligible = [i for i, size in enumerate(sizes) if size > 65 and size < sizes[-1]]
    keep = eligible[{"first": 0, "middle": len(eligible) // 2, "last": -1}[position]] + 1
    cut = sizes[keep - 1]
    _write_notes(file, notes[:keep])
    lines = Lines(path)
    flat = [(f, i) for f, ls in enumerate(lines.data) for i in range(len(ls))]
    m_truncate(lines, flat[cut - 64], world)
    lines.save()
    alone = verify_source(path, world.keyring, _options())
    assert alone.valid, alone.errors  # consistent on its own: only external anchors catch it
    result = verify_paths([path], world.keyring, _options(), state)
    assert "ROLLBACK" in {f.code for s in result.sources for f in s.errors}
    last_ts = parse_checkpoint_text(parse_note(notes[keep - 1]).text).ts
    stale = (parse_ts(newest) - parse_ts(last_ts)).total_seconds() > MAX_GAP
    assert ("STALE_TAIL" in _codes(path, world, until=newest)) == stale


def test_stateful_verification_advances(world: World, tmp_path: Path) -> None:
    state = tmp_path / "state.json"
    assert verify_paths([world.old_log], world.keyring, _options(), state).valid
    assert verify_paths([world.log], world.keyring, _options(), state).valid
    assert json.loads(state.read_text())["logs"][ORIGIN]["size"] > 100
    again = verify_paths([world.old_log], world.keyring, _options(), state)
    assert "ROLLBACK" in {f.code for s in again.sources for f in s.errors}


# -- bundle files and proofs -------------------------------------------------------------


@pytest.mark.parametrize(
    "victim", ["records", "checkpoints.notes", "views/records.csv", "report.html", "VERIFY.txt"]
)
def test_13_removed_file(world: World, tmp_path: Path, victim: str) -> None:
    path = _copy(world, "bundle", tmp_path)
    if victim == "records":
        sorted((path / "records").glob("*.jsonl"))[-1].unlink()
    else:
        (path / victim).unlink()
    assert "FILE_MISSING" in _codes(path, world)


@pytest.mark.parametrize("victim", ["report.html", "views/records.jsonl", "keys/keyring.json"])
def test_13_altered_file(world: World, tmp_path: Path, victim: str) -> None:
    path = _copy(world, "bundle", tmp_path)
    with open(path / victim, "ab") as handle:
        handle.write(b" ")
    assert "FILE_HASH_MISMATCH" in _codes(path, world)


@pytest.mark.parametrize("extra", ["extra.txt", "records/99999999999999999999.jsonl", "proofs/x"])
def test_13_added_file(world: World, tmp_path: Path, extra: str) -> None:
    path = _copy(world, "bundle", tmp_path)
    (path / extra).parent.mkdir(parents=True, exist_ok=True)
    (path / extra).write_bytes(b"{}\n")
    assert "FILE_UNEXPECTED" in _codes(path, world)


def test_13_path_traversal_and_symlinks(world: World, tmp_path: Path) -> None:
    path = _copy(world, "bundle", tmp_path)
    manifest = json.loads((path / "manifest.json").read_text())
    manifest["files"].append({"path": "../outside.txt", "sha256": "00" * 32, "bytes": 1})
    (path / "manifest.json").write_bytes(canonical_dumps(manifest))
    codes = _codes(path, world)
    assert {"PATH_INVALID", "MANIFEST_SIG_INVALID"} <= codes
    path2 = _copy(world, "window", tmp_path)
    (path2 / "link").symlink_to(world.log / "LOG.json")
    assert "PATH_INVALID" in _codes(path2, world)


def test_13_manifest_claims_are_bound(world: World, tmp_path: Path) -> None:
    path = _copy(world, "filtered", tmp_path)
    manifest = json.loads((path / "manifest.json").read_text())
    manifest["completeness"] = "proven"
    (path / "manifest.json").write_bytes(canonical_dumps(manifest))
    assert {"MANIFEST_SIG_INVALID", "MANIFEST_INVALID"} <= _codes(path, world)


@pytest.mark.parametrize("position", POSITIONS)
@pytest.mark.parametrize("how", ["flip node", "drop node", "prev leaf", "prev proof", "size"])
def test_14_corrupt_start_state(world: World, tmp_path: Path, position: str, how: str) -> None:
    path = _copy(world, "window", tmp_path)
    start_path = path / "proofs" / "start.json"
    start = json.loads(start_path.read_text())
    nodes, proof = start["compact_range"], start["prev_leaf_proof"]
    if how == "flip node":
        i = _pick(nodes, position)
        nodes[i]["hash"] = ("0" if nodes[i]["hash"][0] != "0" else "1") + nodes[i]["hash"][1:]
    elif how == "drop node":
        del nodes[_pick(nodes, position)]
    elif how == "prev leaf":
        start["prev_leaf"] = "ff" * 32
    elif how == "prev proof":
        i = _pick(proof, position)
        proof[i] = ("0" if proof[i][0] != "0" else "1") + proof[i][1:]
    else:
        start["size"] += {"first": -1, "middle": 1, "last": 2}[position]
    start_path.write_text(json.dumps(start))
    assert "PROOF_INVALID" in _codes(path, world)


@pytest.mark.parametrize("position", POSITIONS)
@pytest.mark.parametrize("how", ["flip", "drop element", "drop proof", "other seq"])
def test_14_corrupt_inclusion_proofs(world: World, tmp_path: Path, position: str, how: str) -> None:
    path = _copy(world, "filtered", tmp_path)
    file = path / "proofs" / "inclusion.jsonl"
    entries = [json.loads(line) for line in file.read_text().splitlines()]
    i = _pick(entries, position)
    if how == "flip":
        element = entries[i]["proof"][0]
        entries[i]["proof"][0] = ("0" if element[0] != "0" else "1") + element[1:]
    elif how == "drop element":
        entries[i]["proof"].pop()
    elif how == "drop proof":
        del entries[i]
    else:
        entries[i]["seq"] += 1
    file.write_text("".join(json.dumps(e) + "\n" for e in entries))
    assert "PROOF_INVALID" in _codes(path, world)


@pytest.mark.parametrize("position", POSITIONS)
def test_filtered_bundle_claims_are_checked_against_records(
    world: World, tmp_path: Path, position: str
) -> None:
    path = _copy(world, "filtered", tmp_path)
    lines = Lines(path)
    other = Lines(world.bundle)
    beta = next(line for ls in other.data for line in ls if b'"tenant":"beta-us"' in line)
    lines.set(lines.index(position), beta)
    lines.save()
    codes = _codes(path, world)
    assert "FILTER_MISMATCH" in codes


def test_mutant_exits_1_and_usage_errors_exit_2(world: World, tmp_path: Path) -> None:
    ring = tmp_path / "ring.json"
    world.keyring.save(ring)
    path = _copy(world, "bundle", tmp_path)
    lines = Lines(path)
    m_delete(lines, lines.index("middle"), world)
    lines.save()
    assert cli_main(["audit", "verify", str(path), "--trusted-keys", str(ring), "--quiet"]) == 1
    assert cli_main(["audit", "verify", str(tmp_path / "nope"), "--trusted-keys", str(ring)]) == 4
    bad_ring = tmp_path / "bad.json"
    bad_ring.write_text("{")
    assert cli_main(["audit", "verify", str(world.log), "--trusted-keys", str(bad_ring)]) == 4
