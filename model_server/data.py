"""Training data that needs no download: scikit-learn's digits, or MNIST IDX files on disk.

Both sources give float32 images of shape [N, 28, 28, 1] scaled to [0, 1] and int64 labels
0-9. The held-out split of the digits is fixed (its own seed), so accuracies of models
trained with different seeds are comparable.
"""

from __future__ import annotations

import gzip
from dataclasses import dataclass
from pathlib import Path

import numpy as np

__all__ = [
    "Dataset",
    "IdxError",
    "read_idx",
    "load_digits_28",
    "load_mnist_dir",
    "DIGITS_SPLIT_SEED",
]

#: Seed of the digits train/held-out split; independent of the training seed.
DIGITS_SPLIT_SEED = 1797
DIGITS_HELD_OUT_FRACTION = 0.2

#: IDX element types (the third byte of the magic number).
_IDX_TYPES: dict[int, str] = {
    0x08: ">u1",
    0x09: ">i1",
    0x0B: ">i2",
    0x0C: ">i4",
    0x0D: ">f4",
    0x0E: ">f8",
}


class IdxError(ValueError):
    """A file that is not a well-formed IDX file."""


@dataclass(frozen=True)
class Dataset:
    """Train and held-out images/labels plus a description for the model card."""

    train_images: np.ndarray
    train_labels: np.ndarray
    test_images: np.ndarray
    test_labels: np.ndarray
    source: str
    description: str
    licence: str


def read_idx(path: Path) -> np.ndarray:
    """Read an IDX file (raw or gzip, detected from its first bytes)."""
    raw = path.read_bytes()
    if raw[:2] == b"\x1f\x8b":
        try:
            raw = gzip.decompress(raw)
        except (OSError, EOFError) as error:
            raise IdxError(f"{path}: broken gzip data: {error}") from None
    if len(raw) < 4 or raw[0] != 0 or raw[1] != 0:
        raise IdxError(f"{path}: not an IDX file (bad magic number {raw[:4].hex()})")
    type_code, ndim = raw[2], raw[3]
    if type_code not in _IDX_TYPES:
        raise IdxError(f"{path}: unknown IDX element type 0x{type_code:02x}")
    header = 4 + 4 * ndim
    if len(raw) < header:
        raise IdxError(f"{path}: truncated header ({ndim} dimensions announced)")
    shape = tuple(int(d) for d in np.frombuffer(raw, ">u4", count=ndim, offset=4))
    dtype = np.dtype(_IDX_TYPES[type_code])
    expected = int(np.prod(shape, dtype=np.int64)) * dtype.itemsize
    if len(raw) - header != expected:
        raise IdxError(
            f"{path}: expected {expected} data bytes for shape {list(shape)}, "
            f"found {len(raw) - header}"
        )
    return np.frombuffer(raw, dtype, offset=header).reshape(shape).astype(dtype.newbyteorder("="))


def _find_idx(directory: Path, stem: str) -> Path:
    candidates = sorted(
        p
        for p in directory.iterdir()
        if p.is_file() and p.name.replace(".", "-").startswith(stem.replace(".", "-"))
    )
    if not candidates:
        raise FileNotFoundError(
            f"--mnist {directory}: missing {stem} (raw or .gz), e.g. {directory / (stem + '.gz')}"
        )
    return candidates[0]


def _images(array: np.ndarray, path: str) -> np.ndarray:
    if array.ndim != 3 or array.shape[1:] != (28, 28):
        raise IdxError(f"{path}: expected images of shape [N, 28, 28], got {list(array.shape)}")
    scale = 255.0 if array.dtype.kind in "iu" else 1.0
    return (array.astype(np.float32) / scale)[..., None]


def load_mnist_dir(directory: Path, limit: int | None = None) -> Dataset:
    """The original MNIST IDX files: train-images-idx3-ubyte, train-labels-idx1-ubyte, t10k-*."""
    if not directory.is_dir():
        raise FileNotFoundError(f"--mnist {directory}: directory does not exist")
    parts = {}
    for key, stem in (
        ("train_images", "train-images-idx3-ubyte"),
        ("train_labels", "train-labels-idx1-ubyte"),
        ("test_images", "t10k-images-idx3-ubyte"),
        ("test_labels", "t10k-labels-idx1-ubyte"),
    ):
        path = _find_idx(directory, stem)
        parts[key] = (read_idx(path), str(path))
    train_images = _images(*parts["train_images"])
    test_images = _images(*parts["test_images"])
    train_labels = parts["train_labels"][0].astype(np.int64)
    test_labels = parts["test_labels"][0].astype(np.int64)
    for images, labels, name in (
        (train_images, train_labels, "train"),
        (test_images, test_labels, "t10k"),
    ):
        if labels.ndim != 1 or len(labels) != len(images):
            raise IdxError(
                f"--mnist {directory}: {len(images)} {name} images but labels of shape "
                f"{list(labels.shape)}"
            )
        if labels.size and (labels.min() < 0 or labels.max() > 9):
            raise IdxError(f"--mnist {directory}: {name} labels outside 0-9")
    if limit is not None:
        train_images, train_labels = train_images[:limit], train_labels[:limit]
    return Dataset(
        train_images,
        train_labels,
        test_images,
        test_labels,
        source="mnist-idx",
        description=f"MNIST IDX files from {directory}",
        licence="CC-BY-SA-3.0",
    )


def _resize_28(images_8x8: np.ndarray) -> np.ndarray:
    from PIL import Image

    out = np.empty((len(images_8x8), 28, 28), np.float32)
    for index, image in enumerate(images_8x8):
        resized = Image.fromarray(image.astype(np.float32), mode="F").resize(
            (28, 28), Image.Resampling.BILINEAR
        )
        out[index] = np.asarray(resized, dtype=np.float32)
    return np.clip(out, 0.0, 1.0)


def load_digits_28(limit: int | None = None) -> Dataset:
    """scikit-learn's bundled 8x8 digits, resized to 28x28 and split 80/20 (fixed seed)."""
    from sklearn.datasets import load_digits

    digits = load_digits()
    images = _resize_28(digits.images.astype(np.float32) / 16.0)[..., None]
    labels = digits.target.astype(np.int64)
    order = np.random.default_rng(DIGITS_SPLIT_SEED).permutation(len(images))
    held_out = int(round(len(images) * DIGITS_HELD_OUT_FRACTION))
    test, train = order[:held_out], order[held_out:]
    if limit is not None:
        train = train[:limit]
    return Dataset(
        images[train],
        labels[train],
        images[test],
        labels[test],
        source="sklearn-digits",
        description=(
            "scikit-learn digits (UCI optical recognition of handwritten digits), 8x8 "
            "resized to 28x28 (bilinear), scaled to [0, 1]; fixed 80/20 split "
            f"(seed {DIGITS_SPLIT_SEED})"
        ),
        licence="CC-BY-4.0",
    )
