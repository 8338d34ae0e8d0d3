"""C2SP tlog-cosignature and tlog-witness logic (pure): the specification's own example,
vectors derived from its text and checked by an independent computation, and every status
code of add-checkpoint."""

from __future__ import annotations

import base64
import hashlib
import struct

import pytest
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey
from cryptography.hazmat.primitives.serialization import Encoding, PublicFormat

from gateway.audit import Signer
from gateway.audit.errors import NoteError
from gateway.audit.merkle import CompactRange, TreeHashes, consistency_proof, leaf_hash
from gateway.audit.note import parse_note, sign_note
from gateway.audit.witness import (
    AddCheckpoint,
    Cosigner,
    CosignerKey,
    ProofWindow,
    TreeHead,
    WitnessRefusal,
    check_add_checkpoint,
    cosignature_message,
    encode_add_checkpoint,
    parse_add_checkpoint,
    parse_tree_head,
)

# c2sp.org/tlog-cosignature, "Format": a checkpoint with a log signature and a cosignature.
SPEC_NOTE = (
    "example.com/behind-the-sofa\n"
    "20852163\n"
    "CsUYapGGPo4dkMgIAUqom/Xajj7h2fB2MPA3j2jxq2I=\n"
    "\n"
    "\u2014 example.com/behind-the-sofa Az3grlgtzPICa5OS8npVmf1Myq/5IZniMp+ZJurmRDeOoRDe4URYN7u5"
    "/Zhcyv2q1gGzGku9nTo+zyWE+xeMcTOAYQ8=\n"
    "\u2014 witness.example.com/w1 jWbPPwAAAABkGFDLEZMHwSRaJNiIDoe9DYn/zXcrtPHeolMI5OWXEhZCB9dlrD"
    "JsX3b2oyin1nPZqhf5nNo0xUe+mbIUBkBIfZ+qnA==\n"
)
SPEC_TEXT = SPEC_NOTE.split("\n\n")[0] + "\n"
# The specification's "Ed25519 signed message" example.
SPEC_MESSAGE = (
    "cosignature/v1\n"
    "time 1679315147\n"
    "example.com/behind-the-sofa\n"
    "20852163\n"
    "CsUYapGGPo4dkMgIAUqom/Xajj7h2fB2MPA3j2jxq2I=\n"
)


def test_the_specification_example_frames_a_timestamped_cosignature() -> None:
    note = parse_note(SPEC_NOTE)
    witness = note.signatures[1]
    assert witness.name == "witness.example.com/w1"
    assert witness.key_id.hex() == "8d66cf3f"
    assert len(witness.signature) == 8 + 64
    (timestamp,) = struct.unpack(">Q", witness.signature[:8])
    assert timestamp == 1679315147  # the time line of the specification's message example
    assert cosignature_message(note.text, timestamp).decode() == SPEC_MESSAGE


def _independent_cosignature(seed: bytes, name: str, text: str, timestamp: int) -> str:
    """The signature line computed from the specification's text alone."""
    private = Ed25519PrivateKey.from_private_bytes(seed)
    public = private.public_key().public_bytes(Encoding.Raw, PublicFormat.Raw)
    key_id = hashlib.sha256(name.encode() + b"\n" + b"\x04" + public).digest()[:4]
    message = b"cosignature/v1\n" + b"time " + str(timestamp).encode() + b"\n" + text.encode()
    blob = key_id + timestamp.to_bytes(8, "big") + private.sign(message)
    return "\u2014 " + name + " " + base64.b64encode(blob).decode() + "\n"


@pytest.mark.parametrize("timestamp", [1, 1679315147, 2**63 - 1])
def test_cosignatures_match_an_independent_computation(timestamp: int) -> None:
    seed = bytes(range(32))
    name = "witness.example.com/w1"
    cosigner = Cosigner(Signer.from_seed(seed, name))
    line = cosigner.cosign(SPEC_TEXT, timestamp).line()
    assert line == _independent_cosignature(seed, name, SPEC_TEXT, timestamp)
    signature = parse_note(SPEC_TEXT + "\n" + line).signatures[0]
    assert cosigner.key.verify(SPEC_TEXT, signature) == timestamp


def test_a_cosignature_does_not_verify_for_other_text_or_key() -> None:
    cosigner = Cosigner(Signer.from_seed(bytes(32), "w.example/1"))
    signature = cosigner.cosign(SPEC_TEXT, 1679315147)
    other_text = SPEC_TEXT.replace("20852163", "20852164")
    with pytest.raises(NoteError):
        cosigner.key.verify(other_text, signature)
    impostor = Cosigner(Signer.from_seed(bytes([1]) * 32, "w.example/1"))
    with pytest.raises(NoteError):
        impostor.key.verify(SPEC_TEXT, signature)  # other key ID
    with pytest.raises(NoteError):
        cosigner.cosign(SPEC_TEXT, 0)  # a witness cosignature must carry a time


def test_verifier_keys_round_trip_and_check_their_id() -> None:
    key = Cosigner(Signer.from_seed(bytes(range(32)), "w.example/1")).key
    text = key.vkey()
    assert CosignerKey.from_vkey(text) == key
    name, kid, encoded = text.split("+", 2)
    assert base64.b64decode(encoded)[0] == 0x04
    with pytest.raises(Exception, match="does not match"):
        CosignerKey.from_vkey(f"{name}+00000000+{encoded}")


# -- add-checkpoint ----------------------------------------------------------------------

ORIGIN = "gw.example.test/i1"
LOG = Signer.from_seed(bytes([7]) * 32, "gw.example.test")


def _leaves(count: int, salt: str = "") -> list[bytes]:
    return [leaf_hash(f"{salt}{i}".encode()) for i in range(count)]


def _note(leaves: list[bytes], signer: Signer = LOG, origin: str = ORIGIN) -> str:
    root = TreeHashes(leaves).root(len(leaves))
    encoded = base64.b64encode(root).decode()
    text = f"{origin}\n{len(leaves)}\n{encoded}\nts 2026-01-01T00:00:00.000000Z\n"
    return sign_note(text, [signer])


KEYS = {ORIGIN: (LOG.verifier,)}


def _check(request: AddCheckpoint, latest: dict[str, TreeHead]) -> TreeHead:
    _note_obj, head = check_add_checkpoint(request, KEYS, latest)
    return head


def _status(request: AddCheckpoint, latest: dict[str, TreeHead]) -> int:
    with pytest.raises(WitnessRefusal) as info:
        _check(request, latest)
    return info.value.status


def test_a_first_checkpoint_is_accepted_and_then_extended_with_a_proof() -> None:
    leaves = _leaves(20)
    head = _check(AddCheckpoint(0, (), _note(leaves[:7])), {})
    assert head.size == 7
    proof = tuple(consistency_proof(7, 20, TreeHashes(leaves)))
    again = _check(AddCheckpoint(7, proof, _note(leaves)), {ORIGIN: head})
    assert again.size == 20


def test_status_codes_follow_the_specification() -> None:
    leaves = _leaves(20)
    fork = _leaves(20, salt="fork")
    head = _check(AddCheckpoint(0, (), _note(leaves[:7])), {})
    latest = {ORIGIN: head}
    good_proof = tuple(consistency_proof(7, 20, TreeHashes(leaves)))
    # 409: old size not the latest, with the latest size as the body.
    with pytest.raises(WitnessRefusal) as info:
        _check(AddCheckpoint(0, (), _note(leaves)), latest)
    assert (info.value.status, info.value.body) == (409, "7\n")
    assert info.value.content_type == "text/x.tlog.size"
    # 400: old size above the checkpoint's (a rolled-back checkpoint).
    assert _status(AddCheckpoint(7, (), _note(leaves[:5])), latest) == 400
    # 404: unknown origin.
    assert _status(AddCheckpoint(0, (), _note(leaves, origin="other.example/x")), latest) == 404
    # 403: no trusted signature, or a failing one from the trusted key.
    stranger = Signer.from_seed(bytes([9]) * 32, "gw.example.test")
    assert _status(AddCheckpoint(7, good_proof, _note(leaves, stranger)), latest) == 403
    forged = _note(leaves).replace("20\n", "21\n", 1)
    assert _status(AddCheckpoint(7, good_proof, forged), latest) == 403
    # 422: a fork (no consistency with what the witness saw), same size other root.
    fork_proof = tuple(consistency_proof(7, 20, TreeHashes(fork)))
    assert _status(AddCheckpoint(7, fork_proof, _note(fork)), latest) == 422
    assert _status(AddCheckpoint(7, (), _note(fork[:7])), latest) == 422
    # 422: a proof from size 0, and an empty tree with another root.
    assert _status(AddCheckpoint(0, good_proof, _note(leaves)), {}) == 422
    empty = sign_note(
        f"{ORIGIN}\n0\n{base64.b64encode(bytes(32)).decode()}\nts 2026-01-01T00:00:00.000000Z\n",
        [LOG],
    )
    assert _status(AddCheckpoint(0, (), empty), {}) == 422


def test_request_bodies_round_trip_and_malformed_ones_are_400() -> None:
    leaves = _leaves(9)
    proof = consistency_proof(3, 9, TreeHashes(leaves))
    body = encode_add_checkpoint(3, proof, _note(leaves))
    parsed = parse_add_checkpoint(body)
    assert (parsed.old_size, list(parsed.proof)) == (3, proof)
    assert body.startswith(b"old 3\n") and b"\n\n" + _note(leaves).encode() in body
    for bad in (
        b"old 03\n\n" + _note(leaves).encode(),
        b"old x\n\n",
        b"nope\n\n",
        b"old 3\nnot-base64!\n\n" + _note(leaves).encode(),
        b"old 3\n" + b"".join(base64.b64encode(bytes(32)) + b"\n" for _ in range(64)) + b"\n",
        b"\xff\xfe",
    ):
        with pytest.raises(WitnessRefusal) as info:
            parse_add_checkpoint(bad)
        assert info.value.status == 400, bad


def test_tree_heads_parse_any_checkpoint() -> None:
    head = parse_tree_head(SPEC_TEXT)
    assert (head.origin, head.size) == ("example.com/behind-the-sofa", 20852163)


def test_the_proof_window_gives_the_same_proofs_as_the_whole_tree() -> None:
    leaves = _leaves(70)
    base = CompactRange()
    for leaf in leaves[:13]:
        base.append(leaf)
    window = ProofWindow(base, leaves[13:40])
    window.extend(40, leaves[40:])
    whole = TreeHashes(leaves)
    for old in (13, 14, 16, 31, 32, 33, 64, 69):
        for new in (old, 40, 64, 70):
            if new >= old:
                assert window.proof(old, new) == consistency_proof(old, new, whole), (old, new)
    assert window.root(70) == whole.root(70)
    window.advance(33)
    assert window.base.size == 33 and window.proof(33, 70) == consistency_proof(33, 70, whole)
    with pytest.raises(Exception, match="before the window"):
        window.proof(20, 70)
