"""RFC 6962 / RFC 9162 Merkle tree: hashing, compact ranges, proofs and their verification.

Rule 1 (domain separation): a leaf hashes as SHA-256(0x00 || data), an inner node as
SHA-256(0x01 || left || right), so a leaf can never pass for a node.

Rule 2 (compact range): the tree over leaves [0, n) is summarised by the roots of the
perfect, aligned subtrees that make up n in binary (at most log2(n) + 1 hashes). Appending
is O(1) amortised and the root at size n is a right-to-left fold of those hashes.

Rule 3 (verification is strict): proofs are checked with the RFC 9162 algorithms, which
also require the whole proof to be consumed; indices, sizes and every hash length are
checked before any hashing.
"""

from __future__ import annotations

import hashlib
from collections.abc import Iterable, Sequence
from dataclasses import dataclass

from gateway.audit.errors import ProofError

__all__ = [
    "EMPTY_ROOT",
    "HASH_SIZE",
    "CompactRange",
    "RangeNode",
    "TreeHashes",
    "compact_range_positions",
    "consistency_proof",
    "inclusion_proof",
    "leaf_hash",
    "node_hash",
    "root_from_inclusion_proof",
    "tree_root",
    "verify_consistency",
    "verify_inclusion",
]

HASH_SIZE = 32
#: Root of the empty tree: SHA-256 of the empty string.
EMPTY_ROOT = hashlib.sha256(b"").digest()

_sha256 = hashlib.sha256


def leaf_hash(data: bytes) -> bytes:
    """RFC 6962 leaf hash: SHA-256(0x00 || data)."""
    return _sha256(b"\x00" + data).digest()


def node_hash(left: bytes, right: bytes) -> bytes:
    """RFC 6962 interior node hash: SHA-256(0x01 || left || right)."""
    return _sha256(b"\x01" + left + right).digest()


def _largest_power_of_two_below(n: int) -> int:
    return 1 << ((n - 1).bit_length() - 1)


def tree_root(leaf_hashes: Sequence[bytes]) -> bytes:
    """MTH over already-hashed leaves, by the recursive definition (reference use)."""
    n = len(leaf_hashes)
    if n == 0:
        return EMPTY_ROOT
    if n == 1:
        return leaf_hashes[0]
    k = _largest_power_of_two_below(n)
    return node_hash(tree_root(leaf_hashes[:k]), tree_root(leaf_hashes[k:]))


@dataclass(frozen=True)
class RangeNode:
    """A perfect subtree: `level` is its height, it covers leaves
    [index * 2**level, (index + 1) * 2**level)."""

    level: int
    index: int
    hash: bytes


def compact_range_positions(size: int) -> list[tuple[int, int]]:
    """(level, index) of the compact-range nodes of [0, size), left to right."""
    positions: list[tuple[int, int]] = []
    start = 0
    for level in range(size.bit_length() - 1, -1, -1):
        if size >> level & 1:
            positions.append((level, start >> level))
            start += 1 << level
    return positions


class CompactRange:
    """Right-border perfect subtree roots of the tree over [0, size)."""

    __slots__ = ("nodes", "size")

    def __init__(self, size: int = 0, nodes: Iterable[bytes] = ()) -> None:
        self.size = size
        self.nodes: list[bytes] = list(nodes)
        if len(self.nodes) != size.bit_count():
            raise ProofError(
                f"compact range of size {size} needs {size.bit_count()} hashes, "
                f"got {len(self.nodes)}"
            )
        if any(len(h) != HASH_SIZE for h in self.nodes):
            raise ProofError("compact range hash with a wrong length")

    @classmethod
    def from_range_nodes(cls, size: int, nodes: Sequence[RangeNode]) -> CompactRange:
        """Build from explicit nodes, checking they are exactly the decomposition of size."""
        expected = compact_range_positions(size)
        got = [(node.level, node.index) for node in nodes]
        if got != expected:
            raise ProofError(f"compact range positions {got} do not decompose size {size}")
        return cls(size, [node.hash for node in nodes])

    def copy(self) -> CompactRange:
        """An independent copy."""
        return CompactRange(self.size, self.nodes)

    def append(self, leaf: bytes) -> None:
        """Append one leaf hash (already domain-separated with `leaf_hash`)."""
        size = self.size
        nodes = self.nodes
        sha = _sha256
        while size & 1:
            leaf = sha(b"\x01" + nodes.pop() + leaf).digest()
            size >>= 1
        nodes.append(leaf)
        self.size += 1

    def root(self) -> bytes:
        """The RFC 6962 root of the tree over [0, size)."""
        nodes = self.nodes
        if not nodes:
            return EMPTY_ROOT
        result = nodes[-1]
        for node in reversed(nodes[:-1]):
            result = node_hash(node, result)
        return result

    def range_nodes(self) -> list[RangeNode]:
        """The nodes with their positions, left to right."""
        return [
            RangeNode(level, index, digest)
            for (level, index), digest in zip(
                compact_range_positions(self.size), self.nodes, strict=True
            )
        ]


class TreeHashes:
    """Hashes of a log's tree for proof generation: a compact range over a pruned prefix
    [0, base) plus the leaf hashes of [base, base + len(leaves)).

    Any subtree lying entirely inside one pruned node is unavailable; proofs that need
    one raise `ProofError`. Perfect-subtree hashes are memoised.
    """

    def __init__(self, leaves: Sequence[bytes], base: CompactRange | None = None) -> None:
        self.base = base.size if base is not None else 0
        self._leaves = leaves
        self._memo: dict[tuple[int, int], bytes] = {}
        if base is not None:
            for node in base.range_nodes():
                self._memo[(node.level, node.index)] = node.hash

    @property
    def size(self) -> int:
        """Number of leaves, pruned ones included."""
        return self.base + len(self._leaves)

    def _perfect(self, level: int, index: int) -> bytes:
        key = (level, index)
        found = self._memo.get(key)
        if found is not None:
            return found
        start = index << level
        if level == 0:
            if start < self.base:
                raise ProofError(f"leaf {start} was pruned")
            return self._leaves[start - self.base]
        if start < self.base and start + (1 << level) <= self.base:
            # Entirely pruned and not a stored node: only its ancestors might be known.
            raise ProofError(f"subtree at level {level} index {index} was pruned")
        digest = node_hash(
            self._perfect(level - 1, 2 * index), self._perfect(level - 1, 2 * index + 1)
        )
        if level >= 4:  # memoise the upper levels only: cheap to recompute below
            self._memo[key] = digest
        return digest

    def subtree(self, lo: int, hi: int) -> bytes:
        """MTH of leaves [lo, hi)."""
        n = hi - lo
        if n <= 0 or hi > self.size:
            raise ProofError(f"no subtree [{lo}, {hi}) in a tree of size {self.size}")
        if n & (n - 1) == 0 and lo % n == 0:
            return self._perfect(n.bit_length() - 1, lo // n)
        k = _largest_power_of_two_below(n)
        return node_hash(self.subtree(lo, lo + k), self.subtree(lo + k, hi))

    def root(self, size: int) -> bytes:
        """Root of the tree over [0, size)."""
        if size == 0:
            return EMPTY_ROOT
        return self.subtree(0, size)


def inclusion_proof(index: int, size: int, tree: TreeHashes) -> list[bytes]:
    """RFC 6962 section 2.1.1 audit path of leaf `index` in the tree of `size` leaves."""
    if not 0 <= index < size <= tree.size:
        raise ProofError(f"no leaf {index} in a tree of size {size}")
    proof: list[bytes] = []
    lo, hi = 0, size
    while hi - lo > 1:
        k = _largest_power_of_two_below(hi - lo)
        if index < lo + k:
            proof.append(tree.subtree(lo + k, hi))
            hi = lo + k
        else:
            proof.append(tree.subtree(lo, lo + k))
            lo = lo + k
    proof.reverse()
    return proof


def consistency_proof(size1: int, size2: int, tree: TreeHashes) -> list[bytes]:
    """RFC 6962 section 2.1.2 proof that the tree of size1 is a prefix of size2."""
    if not 0 <= size1 <= size2 <= tree.size:
        raise ProofError(f"no consistency proof from {size1} to {size2}")
    if size1 == 0 or size1 == size2:
        return []
    proof: list[bytes] = []

    def subproof(m: int, lo: int, hi: int, complete: bool) -> None:
        n = hi - lo
        if m == n:
            if not complete:
                proof.append(tree.subtree(lo, hi))
            return
        k = _largest_power_of_two_below(n)
        if m <= k:
            subproof(m, lo, lo + k, complete)
            proof.append(tree.subtree(lo + k, hi))
        else:
            subproof(m - k, lo + k, hi, False)
            proof.append(tree.subtree(lo, lo + k))

    subproof(size1, 0, size2, True)
    return proof


def _check_hash(name: str, value: bytes) -> None:
    if len(value) != HASH_SIZE:
        raise ProofError(f"{name} has {len(value)} bytes, want {HASH_SIZE}")


def root_from_inclusion_proof(index: int, size: int, leaf: bytes, proof: Sequence[bytes]) -> bytes:
    """RFC 9162 section 2.1.3.2: the root implied by an inclusion proof."""
    if index < 0 or index >= size:
        raise ProofError(f"leaf index {index} is outside a tree of size {size}")
    _check_hash("leaf hash", leaf)
    for element in proof:
        _check_hash("proof element", element)
    fn, sn = index, size - 1
    result = leaf
    for element in proof:
        if sn == 0:
            raise ProofError("inclusion proof is longer than the path")
        if fn & 1 or fn == sn:
            result = node_hash(element, result)
            while not fn & 1 and fn != 0:
                fn >>= 1
                sn >>= 1
        else:
            result = node_hash(result, element)
        fn >>= 1
        sn >>= 1
    if sn != 0:
        raise ProofError("inclusion proof is shorter than the path")
    return result


def verify_inclusion(
    index: int, size: int, leaf: bytes, proof: Sequence[bytes], root: bytes
) -> None:
    """Raise `ProofError` unless `proof` shows `leaf` at `index` in the tree with `root`."""
    _check_hash("root", root)
    if root_from_inclusion_proof(index, size, leaf, proof) != root:
        raise ProofError("inclusion proof does not lead to the root")


def _consistency_trivial(
    size1: int, size2: int, proof: Sequence[bytes], root1: bytes, root2: bytes
) -> bool:
    """Check the arguments; True when nothing is left to hash (equal sizes or size1 0)."""
    if size1 < 0 or size2 < 0:
        raise ProofError("negative tree size")
    if size2 < size1:
        raise ProofError(f"size1 {size1} is greater than size2 {size2}")
    for element in proof:
        _check_hash("proof element", element)
    if size1 == size2:
        if proof:
            raise ProofError("equal sizes need an empty proof")
        if root1 != root2:
            raise ProofError("equal sizes with different roots")
        return True
    if size1 == 0:
        if proof:
            raise ProofError("a proof from the empty tree must be empty")
        return True
    _check_hash("root1", root1)
    _check_hash("root2", root2)
    if not proof:
        raise ProofError("empty consistency proof")
    return False


def verify_consistency(
    size1: int, size2: int, proof: Sequence[bytes], root1: bytes, root2: bytes
) -> None:
    """RFC 9162 section 2.1.4.2: raise `ProofError` unless the tree (size2, root2)
    extends the tree (size1, root1)."""
    if _consistency_trivial(size1, size2, proof, root1, root2):
        return
    path = list(proof)
    if size1 & (size1 - 1) == 0:
        path.insert(0, root1)
    fn, sn = size1 - 1, size2 - 1
    while fn & 1:
        fn >>= 1
        sn >>= 1
    first = second = path[0]
    for element in path[1:]:
        if sn == 0:
            raise ProofError("consistency proof is longer than the path")
        if fn & 1 or fn == sn:
            first = node_hash(element, first)
            second = node_hash(element, second)
            while not fn & 1 and fn != 0:
                fn >>= 1
                sn >>= 1
        else:
            second = node_hash(second, element)
        fn >>= 1
        sn >>= 1
    if sn != 0:
        raise ProofError("consistency proof is shorter than the path")
    if first != root1:
        raise ProofError("consistency proof does not lead to root1")
    if second != root2:
        raise ProofError("consistency proof does not lead to root2")
