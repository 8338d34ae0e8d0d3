"""C2SP signed notes and checkpoints: the Go known answers, round trips, mutations."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from gateway.audit.errors import KeyLoadError, NoteError
from gateway.audit.note import (
    Checkpoint,
    checkpoint_text,
    parse_checkpoint_text,
    parse_note,
    sign_note,
    split_notes,
)
from gateway.audit.signing import Signer, Verifier, compute_key_id

KAT = json.loads((Path(__file__).parent / "vectors" / "signed_note.json").read_text())
TEXT: str = KAT["text"]
PETER_SIG: str = KAT["peter_sig_line"]
ENOCH_SIG: str = KAT["enoch_sig_line"]


def test_go_example_key_and_signature() -> None:
    signer = Signer.from_note_private_key(KAT["peter_signer_key"])
    peter = Verifier.from_note_key(KAT["peter_verifier_key"])
    assert signer.kid == peter.kid == "c74f20a3"
    assert compute_key_id("PeterNeumann", peter.public_key).hex() == "c74f20a3"
    assert signer.verifier.note_key() == KAT["peter_verifier_key"]
    # Ed25519 is deterministic: our signature is byte-for-byte Go's.
    assert sign_note(TEXT, [signer]) == TEXT + "\n" + PETER_SIG


def test_go_example_open_ignores_unknown_and_verifies_known() -> None:
    peter = Verifier.from_note_key(KAT["peter_verifier_key"])
    enoch = Verifier.from_note_key(KAT["enoch_verifier_key"])
    note = parse_note(TEXT + "\n" + PETER_SIG + ENOCH_SIG)
    assert note.text == TEXT
    valid, unknown = note.verify([peter])
    assert valid == [peter] and [s.name for s in unknown] == ["EnochRoot"]
    valid, unknown = note.verify([peter, enoch])
    assert valid == [peter, enoch] and unknown == []
    valid, unknown = note.verify([])
    assert valid == [] and len(unknown) == 2


@pytest.mark.parametrize("key", KAT["bad_verifier_keys"])
def test_go_bad_verifier_keys_are_rejected(key: str) -> None:
    with pytest.raises(KeyLoadError):
        Verifier.from_note_key(key)


def test_mangled_verifier_keys_are_rejected() -> None:
    key = KAT["peter_verifier_key"]
    for i in range(len(key)):
        mangled = key[:i] + chr(ord(key[i]) + 1) + key[i + 1 :]
        with pytest.raises(KeyLoadError):
            Verifier.from_note_key(mangled)


@pytest.mark.parametrize(
    "message",
    [
        TEXT,
        TEXT + "\n",
        TEXT + "\n" + PETER_SIG[:-1],
        "\x01" + TEXT + "\n" + PETER_SIG,
        TEXT + "\n" + PETER_SIG.replace("PeterNeumann", "Bad Name"),
        TEXT + "\n" + PETER_SIG + "Unexpected line.\n",
        TEXT + "\n" + PETER_SIG * 101,
    ],
)
def test_go_malformed_notes(message: str) -> None:
    with pytest.raises(NoteError):
        parse_note(message)


def test_invalid_utf8_is_malformed() -> None:
    with pytest.raises(NoteError):
        parse_note(b"\xff" + (TEXT + "\n" + PETER_SIG).encode())


def test_mutations_fail() -> None:
    peter = Verifier.from_note_key(KAT["peter_verifier_key"])
    # A changed body byte: the known key's signature fails, so the note fails.
    with pytest.raises(NoteError, match="invalid signature"):
        parse_note(TEXT.replace("answer", "Answer") + "\n" + PETER_SIG).verify([peter])
    # The signature corrupted in the middle (Go's "ABCD" insertion).
    with pytest.raises(NoteError):
        parse_note(TEXT + "\n" + PETER_SIG[:60] + "ABCD" + PETER_SIG[60:]).verify([peter])
    # A removed blank line: no signature block any more.
    with pytest.raises(NoteError):
        parse_note(TEXT + PETER_SIG)
    # A changed key ID or a wrong name with the right ID: the signature is from an
    # unknown key, so nothing verifies.
    wrong_id = PETER_SIG.replace("x08g", "xxxx")
    assert parse_note(TEXT + "\n" + wrong_id).verify([peter])[0] == []
    wrong_name = PETER_SIG.replace("PeterNeumann", "CarmenSandiego")
    assert parse_note(TEXT + "\n" + wrong_name).verify([peter])[0] == []


def test_checkpoint_round_trip_and_cosigning() -> None:
    k1, k2 = Signer.generate("gw.example.test"), Signer.generate("gw.example.test")
    cp = Checkpoint("gw.example.test/i1", 123457, bytes(range(32)), "2026-03-01T12:00:00.000000Z")
    note = sign_note(checkpoint_text(cp), [k1, k2])
    parsed = parse_note(note)
    assert parse_checkpoint_text(parsed.text) == cp
    valid, unknown = parsed.verify([k2.verifier])
    assert valid == [k2.verifier] and len(unknown) == 1
    assert parse_note(note).encode() == note


@pytest.mark.parametrize(
    "text",
    [
        "o\n12\nAAAA\nts 2026-03-01T12:00:00.000000Z\n",  # root too short
        "o\n012\n" + "A" * 43 + "=\nts 2026-03-01T12:00:00.000000Z\n",  # leading zero
        "o\n12\n" + "A" * 43 + "=\n",  # no ts
        "o\n12\n" + "A" * 43 + "=\nts 2026-03-01T12:00:00Z\n",  # ts without micros
        "o o\n12\n" + "A" * 43 + "=\nts 2026-03-01T12:00:00.000000Z\n",  # space in origin
    ],
)
def test_bad_checkpoint_texts(text: str) -> None:
    with pytest.raises(NoteError):
        parse_checkpoint_text(text)


def test_split_notes_finds_a_torn_tail() -> None:
    signer = Signer.generate("k")
    one = sign_note("a\n1\n", [signer]).encode() + b"\n"
    two = sign_note("b\n2\n", [signer]).encode() + b"\n"
    notes, end = split_notes(one + two)
    assert [raw for _offset, raw in notes] == [one[:-1], two[:-1]] and end == len(one + two)
    for cut in range(len(one) + 1, len(one + two)):
        notes, end = split_notes((one + two)[:cut])
        assert len(notes) == 1 and end == len(one)
