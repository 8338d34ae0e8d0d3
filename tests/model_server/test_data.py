"""Training data: the IDX reader (on tiny files made here) and the digits loader."""

from __future__ import annotations

import gzip
import re
import struct
from pathlib import Path

import numpy as np
import pytest

from model_server.data import IdxError, load_digits_28, load_mnist_dir, read_idx


def idx_bytes(array: np.ndarray, type_code: int = 0x08) -> bytes:
    dtype = {0x08: ">u1", 0x0C: ">i4", 0x0D: ">f4"}[type_code]
    header = struct.pack(">BBBB", 0, 0, type_code, array.ndim)
    header += b"".join(struct.pack(">I", d) for d in array.shape)
    return header + array.astype(dtype).tobytes()


def test_reads_raw_and_gzip_idx(tmp_path: Path) -> None:
    images = np.arange(2 * 3 * 4, dtype=np.uint8).reshape(2, 3, 4)
    raw = tmp_path / "raw-idx3-ubyte"
    raw.write_bytes(idx_bytes(images))
    packed = tmp_path / "packed-idx3-ubyte.gz"
    packed.write_bytes(gzip.compress(idx_bytes(images)))
    np.testing.assert_array_equal(read_idx(raw), images)
    np.testing.assert_array_equal(read_idx(packed), images)
    floats = tmp_path / "floats"
    floats.write_bytes(idx_bytes(np.array([1.5, -2.0]), 0x0D))
    np.testing.assert_array_equal(read_idx(floats), [1.5, -2.0])


@pytest.mark.parametrize(
    ("content", "message"),
    [
        (b"\x01\x00\x08\x01\x00\x00\x00\x01\x05", "bad magic number"),
        (b"\x00\x00\x07\x01\x00\x00\x00\x01\x05", "unknown IDX element type 0x07"),
        (b"\x00\x00\x08\x03\x00\x00", "truncated header"),
        (b"\x00\x00\x08\x01\x00\x00\x00\x03\x05", "expected 3 data bytes for shape [3], found 1"),
        (b"\x1f\x8bnot gzip", "broken gzip data"),
    ],
)
def test_rejects_broken_idx(tmp_path: Path, content: bytes, message: str) -> None:
    path = tmp_path / "broken"
    path.write_bytes(content)
    with pytest.raises(IdxError, match=re.escape(message)):
        read_idx(path)


def write_mnist(directory: Path, train: int, test: int, gz: bool) -> None:
    rng = np.random.default_rng(0)
    suffix = ".gz" if gz else ""
    files = {
        "train-images-idx3-ubyte": rng.integers(0, 256, (train, 28, 28)),
        "train-labels-idx1-ubyte": rng.integers(0, 10, train),
        "t10k-images-idx3-ubyte": rng.integers(0, 256, (test, 28, 28)),
        "t10k-labels-idx1-ubyte": rng.integers(0, 10, test),
    }
    for name, array in files.items():
        content = idx_bytes(array)
        (directory / (name + suffix)).write_bytes(gzip.compress(content) if gz else content)


@pytest.mark.parametrize("gz", [False, True])
def test_loads_an_mnist_directory(tmp_path: Path, gz: bool) -> None:
    write_mnist(tmp_path, train=5, test=3, gz=gz)
    data = load_mnist_dir(tmp_path, limit=4)
    assert data.train_images.shape == (4, 28, 28, 1) and data.test_images.shape == (3, 28, 28, 1)
    assert data.train_images.dtype == np.float32
    assert 0.0 <= data.train_images.min() and data.train_images.max() <= 1.0
    assert data.source == "mnist-idx"


def test_mnist_directory_errors(tmp_path: Path) -> None:
    with pytest.raises(FileNotFoundError, match="directory does not exist"):
        load_mnist_dir(tmp_path / "missing")
    write_mnist(tmp_path, train=5, test=3, gz=False)
    (tmp_path / "t10k-labels-idx1-ubyte").unlink()
    with pytest.raises(FileNotFoundError, match="missing t10k-labels-idx1-ubyte"):
        load_mnist_dir(tmp_path)
    (tmp_path / "t10k-labels-idx1-ubyte").write_bytes(idx_bytes(np.zeros(2)))
    with pytest.raises(IdxError, match="3 t10k images but labels of shape \\[2\\]"):
        load_mnist_dir(tmp_path)


def test_digits_are_28x28_with_a_fixed_split() -> None:
    first, second = load_digits_28(), load_digits_28(limit=100)
    assert first.train_images.shape[1:] == (28, 28, 1)
    assert len(first.train_images) + len(first.test_images) == 1797
    assert len(second.train_images) == 100
    np.testing.assert_array_equal(first.test_labels, second.test_labels)
    assert first.train_images.min() >= 0.0 and first.train_images.max() <= 1.0
