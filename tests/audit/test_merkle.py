"""RFC 6962 / 9162 Merkle tree: known answers, proofs for every small tree, corruptions."""

from __future__ import annotations

import json
from collections.abc import Sequence
from pathlib import Path

import pytest

from gateway.audit.errors import ProofError
from gateway.audit.merkle import (
    EMPTY_ROOT,
    CompactRange,
    RangeNode,
    TreeHashes,
    consistency_proof,
    inclusion_proof,
    leaf_hash,
    node_hash,
    tree_root,
    verify_consistency,
    verify_inclusion,
)

KAT = json.loads((Path(__file__).parent / "vectors" / "merkle.json").read_text())
LEAVES = [leaf_hash(bytes.fromhex(h)) for h in KAT["leaves_hex"]]
ROOTS = [bytes.fromhex(h) for h in KAT["roots_hex"]]
SOME_HASH = bytes.fromhex("abacaba000000000000000000000000000000000000000000060061e00123456")


def _tree(n: int) -> TreeHashes:
    return TreeHashes([leaf_hash(i.to_bytes(4, "big")) for i in range(n)])


@pytest.mark.parametrize("size", range(9))
def test_roots_match_known_answers(size: int) -> None:
    compact = CompactRange()
    for leaf in LEAVES[:size]:
        compact.append(leaf)
    assert compact.root() == ROOTS[size]
    assert tree_root(LEAVES[:size]) == ROOTS[size]


def test_leaf_and_node_hashes_match_known_answers() -> None:
    hashes = KAT["hashes"]
    assert EMPTY_ROOT.hex() == hashes["empty_root"]
    assert leaf_hash(b"").hex() == hashes["empty_leaf"]
    assert leaf_hash(b"L123456").hex() == hashes["leaf_L123456"]
    assert node_hash(b"N123", b"N456").hex() == hashes["node_N123_N456"]


def test_domain_separation() -> None:
    a, b = leaf_hash(b"Hello"), leaf_hash(b"World")
    assert node_hash(a, b) != leaf_hash(a + b)
    assert node_hash(a, b) != node_hash(b, a)


@pytest.mark.parametrize("case", KAT["inclusion"], ids=lambda c: f"{c['leaf_index']}/{c['size']}")
def test_inclusion_proofs_match_known_answers(case: dict[str, object]) -> None:
    index, size = int(case["leaf_index"]), int(case["size"])  # type: ignore[call-overload]
    expected = [bytes.fromhex(h) for h in case["proof"]]  # type: ignore[attr-defined]
    assert inclusion_proof(index, size, TreeHashes(LEAVES)) == expected
    verify_inclusion(index, size, LEAVES[index], expected, ROOTS[size])


@pytest.mark.parametrize("case", KAT["consistency"], ids=lambda c: f"{c['size1']}-{c['size2']}")
def test_consistency_proofs_match_known_answers(case: dict[str, object]) -> None:
    size1, size2 = int(case["size1"]), int(case["size2"])  # type: ignore[call-overload]
    expected = [bytes.fromhex(h) for h in case["proof"]]  # type: ignore[attr-defined]
    assert consistency_proof(size1, size2, TreeHashes(LEAVES)) == expected
    verify_consistency(size1, size2, expected, ROOTS[size1], ROOTS[size2])


def test_every_proof_up_to_64_leaves_verifies() -> None:
    tree = _tree(64)
    roots = [tree.root(n) for n in range(65)]
    for n in range(1, 65):
        for i in range(n):
            verify_inclusion(i, n, tree.subtree(i, i + 1), inclusion_proof(i, n, tree), roots[n])
        for m in range(0, n + 1):
            verify_consistency(m, n, consistency_proof(m, n, tree), roots[m], roots[n])


def _inclusion_probes(
    index: int, size: int, leaf: bytes, proof: Sequence[bytes], root: bytes
) -> list[tuple[str, int, int, bytes, list[bytes], bytes]]:
    """The transparency-dev corruption classes of one valid inclusion proof."""
    p = list(proof)
    probes = [
        ("index - 1", index - 1, size, leaf, p, root),
        ("index + 1", index + 1, size, leaf, p, root),
        ("index ^ 2", index ^ 2, size, leaf, p, root),
        ("size * 2", index, size * 2, leaf, p, root),
        ("size / 2", index, size // 2, leaf, p, root),
        ("wrong leaf", index, size, b"WrongLeaf", p, root),
        ("empty root", index, size, leaf, p, EMPTY_ROOT),
        ("random root", index, size, leaf, p, SOME_HASH),
        ("trailing garbage", index, size, leaf, [*p, b""], root),
        ("trailing root", index, size, leaf, [*p, root], root),
        ("preceding garbage", index, size, leaf, [b"", *p], root),
        ("preceding root", index, size, leaf, [root, *p], root),
    ]
    for i in range(len(p)):
        flipped = list(p)
        flipped[i] = bytes([flipped[i][0] ^ 8]) + flipped[i][1:]
        probes.append((f"proof[{i}] bit 3", index, size, leaf, flipped, root))
    if p:
        probes.append(("removed component", index, size, leaf, p[:-1], root))
    if len(p) > 1:
        probes.append(("inserted component", index, size, leaf, [p[0], SOME_HASH, *p[1:]], root))
    return probes


def _consistency_probes(
    size1: int, size2: int, proof: Sequence[bytes], root1: bytes, root2: bytes
) -> list[tuple[str, int, int, list[bytes], bytes, bytes]]:
    p = list(proof)
    probes = [
        ("size1 - 1", size1 - 1, size2, p, root1, root2),
        ("size1 + 1", size1 + 1, size2, p, root1, root2),
        ("size1 ^ 2", size1 ^ 2, size2, p, root1, root2),
        ("size2 * 2", size1, size2 * 2, p, root1, root2),
        ("size2 / 2", size1, size2 // 2, p, root1, root2),
        ("wrong root1", size1, size2, p, b"WrongRoot", root2),
        ("wrong root2", size1, size2, p, root1, b"WrongRoot"),
        ("swapped roots", size1, size2, p, root2, root1),
        ("empty proof", size1, size2, [], root1, root2),
        ("trailing garbage", size1, size2, [*p, b""], root1, root2),
        ("trailing root1", size1, size2, [*p, root1], root1, root2),
        ("trailing root2", size1, size2, [*p, root2], root1, root2),
        ("preceding garbage", size1, size2, [b"", *p], root1, root2),
        ("preceding root1", size1, size2, [root1, *p], root1, root2),
        ("preceding root2", size1, size2, [root2, *p], root1, root2),
        ("preceding proof[0]", size1, size2, [p[0], *p], root1, root2),
        ("truncated proof", size1, size2, p[:-1], root1, root2),
    ]
    for i in range(len(p)):
        flipped = list(p)
        flipped[i] = bytes([flipped[i][0] ^ 16]) + flipped[i][1:]
        probes.append((f"proof[{i}] bit 4", size1, size2, flipped, root1, root2))
    return probes


def test_every_inclusion_corruption_fails() -> None:
    tree = _tree(20)
    for n in range(1, 21):
        root = tree.root(n)
        for i in range(n):
            leaf = tree.subtree(i, i + 1)
            for desc, index, size, lf, proof, rt in _inclusion_probes(
                i, n, leaf, inclusion_proof(i, n, tree), root
            ):
                with pytest.raises(ProofError):
                    verify_inclusion(index, size, lf, proof, rt)
                    pytest.fail(f"inclusion {i}/{n}: `{desc}` verified")


def test_every_consistency_corruption_fails() -> None:
    tree = _tree(20)
    for n in range(2, 21):
        for m in range(1, n):
            proof = consistency_proof(m, n, tree)
            for desc, s1, s2, pr, r1, r2 in _consistency_probes(
                m, n, proof, tree.root(m), tree.root(n)
            ):
                with pytest.raises(ProofError):
                    verify_consistency(s1, s2, pr, r1, r2)
                    pytest.fail(f"consistency {m}->{n}: `{desc}` verified")


@pytest.mark.parametrize(
    "size1,size2,proof,root1,root2",
    [
        (1, 0, [], ROOTS[1], ROOTS[0]),  # time travel to the past
        (2, 1, [], ROOTS[2], ROOTS[1]),
        (1, 2, [], ROOTS[1], ROOTS[2]),  # empty proof
        (1, 1, [], ROOTS[1], ROOTS[2]),  # equal sizes, different roots
        (0, 0, [EMPTY_ROOT], EMPTY_ROOT, EMPTY_ROOT),  # equal sizes, non-empty proof
        (1, 1, [EMPTY_ROOT], ROOTS[1], ROOTS[1]),
        (0, 1, [EMPTY_ROOT], EMPTY_ROOT, ROOTS[1]),  # from the empty tree, non-empty proof
    ],
)
def test_consistency_edge_cases_fail(
    size1: int, size2: int, proof: list[bytes], root1: bytes, root2: bytes
) -> None:
    with pytest.raises(ProofError):
        verify_consistency(size1, size2, proof, root1, root2)


@pytest.mark.parametrize("index,size", [(0, 0), (1, 0), (2, 1), (1, 1)])
def test_inclusion_edge_cases_fail(index: int, size: int) -> None:
    with pytest.raises(ProofError):
        verify_inclusion(index, size, LEAVES[0], [], ROOTS[1])


def test_pruned_prefix_gives_the_same_roots_and_proofs() -> None:
    full = _tree(40)
    leaves = [full.subtree(i, i + 1) for i in range(40)]
    base = CompactRange()
    for leaf in leaves[:16]:
        base.append(leaf)
    pruned = TreeHashes(leaves[16:], base)
    for n in range(16, 41):
        assert pruned.root(n) == full.root(n)
        for i in range(16, n):
            assert inclusion_proof(i, n, pruned) == inclusion_proof(i, n, full)
    with pytest.raises(ProofError):
        inclusion_proof(3, 16, pruned)  # its path lies inside the pruned subtree


def test_compact_range_positions_are_checked() -> None:
    compact = CompactRange()
    for leaf in LEAVES[:6]:
        compact.append(leaf)
    nodes = compact.range_nodes()
    assert [(n.level, n.index) for n in nodes] == [(2, 0), (1, 2)]
    assert CompactRange.from_range_nodes(6, nodes).root() == ROOTS[6]
    with pytest.raises(ProofError):
        CompactRange.from_range_nodes(6, [RangeNode(1, 2, nodes[1].hash), nodes[0]])
    with pytest.raises(ProofError):
        CompactRange.from_range_nodes(7, nodes)
