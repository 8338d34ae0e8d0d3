"""On-disk layout of one log directory (I/O shell; blocking calls, run off the event loop).

```
DIR/
  LOG.json              log identity: origin, epoch, key name, segment size (JSON)
  LOCK                  flock()ed by the one writer process
  segments/<first seq, 20 digits>.jsonl
                        stored lines; a segment holds `segment_records` records (a power
                        of two, so each full segment is one perfect Merkle subtree)
  checkpoints.notes     every signed checkpoint, oldest first, each followed by "\\n"
  pruned.json           after pruning: compact range and last leaf at the cut
  quarantine/           torn or invalid bytes moved aside by recovery
  epochs/<n>/           earlier epochs, moved aside by `jurisgate audit new-epoch`
```

Rule 1: appends use O_APPEND and one write per batch; fsync follows in strict mode.
Rule 2: new files are followed by an fsync of their directory; replaced files go through
a temporary file, fsync and rename.
"""

from __future__ import annotations

import base64
import contextlib
import errno
import fcntl
import json
import os
import time
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, NamedTuple

from gateway.audit.errors import AuditError, AuditLogLocked
from gateway.audit.merkle import CompactRange, RangeNode

__all__ = [
    "CHECKPOINTS_FILE",
    "COSIGNED_FILE",
    "LOG_FORMAT",
    "META_FILE",
    "PRUNED_FILE",
    "SEGMENTS_DIR",
    "DirLock",
    "FileWatch",
    "LogFiles",
    "LineBlocks",
    "LogMeta",
    "StartState",
    "atomic_write",
    "check_unchanged",
    "effective_origin",
    "fsync_dir",
    "list_segments",
    "publish_tree",
    "read_meta",
    "segment_name",
    "split_lines",
    "watch_open_file",
    "write_all",
]

LOG_FORMAT = "jurisgate-audit-log/1"
META_FILE = "LOG.json"
LOCK_FILE = "LOCK"
SEGMENTS_DIR = "segments"
CHECKPOINTS_FILE = "checkpoints.notes"
#: Checkpoints cosigned by witnesses: each note carries the log's signature and one or
#: more witness cosignatures (written by the gateway's witness submitter).
COSIGNED_FILE = "checkpoints.cosigned"
PRUNED_FILE = "pruned.json"
QUARANTINE_DIR = "quarantine"
EPOCHS_DIR = "epochs"


def effective_origin(base_origin: str, epoch: int) -> str:
    """The origin of epoch `epoch` of a log configured as `base_origin`.

    A new epoch restarts the tree, so it must not reuse the old origin: two different
    roots at the same size under one origin would be a fork.
    """
    return base_origin if epoch <= 1 else f"{base_origin}/epoch-{epoch}"


@dataclass(frozen=True)
class LogMeta:
    """Identity of a log directory (LOG.json)."""

    base_origin: str
    epoch: int
    key_name: str
    segment_records: int
    created: str

    @property
    def origin(self) -> str:
        """The origin written in records and checkpoints."""
        return effective_origin(self.base_origin, self.epoch)

    def to_json(self) -> dict[str, Any]:
        """JSON form."""
        return {
            "format": LOG_FORMAT,
            "origin": self.origin,
            "base_origin": self.base_origin,
            "epoch": self.epoch,
            "key_name": self.key_name,
            "segment_records": self.segment_records,
            "created": self.created,
        }

    @classmethod
    def from_json(cls, data: Any, where: str) -> LogMeta:
        """Parse LOG.json content."""
        if not isinstance(data, dict) or data.get("format") != LOG_FORMAT:
            raise AuditError(f"{where}: not a {LOG_FORMAT} file")
        try:
            meta = cls(
                str(data["base_origin"]),
                int(data["epoch"]),
                str(data["key_name"]),
                int(data["segment_records"]),
                str(data["created"]),
            )
        except (KeyError, TypeError, ValueError) as exc:
            raise AuditError(f"{where}: missing or bad field {exc}") from None
        seg = meta.segment_records
        if seg <= 0 or seg & (seg - 1):
            raise AuditError(f"{where}: segment_records {seg} is not a power of two")
        return meta


def read_meta(directory: Path) -> LogMeta | None:
    """LOG.json of `directory`, or None when the directory holds no log yet."""
    path = directory / META_FILE
    try:
        text = path.read_text(encoding="utf-8")
    except FileNotFoundError:
        return None
    try:
        return LogMeta.from_json(json.loads(text), str(path))
    except json.JSONDecodeError as exc:
        raise AuditError(f"{path}: invalid JSON: {exc.msg}") from None


@dataclass(frozen=True)
class StartState:
    """The tree state at a cut `size` > 0 without its leaves: compact range of [0, size),
    the last leaf L(size - 1) and that leaf's inclusion proof in the size-`size` tree.

    Stored as pruned.json in a pruned log and as proofs/start.json in an export bundle.
    """

    size: int
    compact: CompactRange
    prev_leaf: bytes
    prev_leaf_proof: tuple[bytes, ...]
    extra: dict[str, Any] = field(default_factory=dict)

    def to_json(self) -> dict[str, Any]:
        """JSON form."""
        data: dict[str, Any] = dict(self.extra)
        data.update(
            {
                "size": self.size,
                "compact_range": [
                    {"level": n.level, "index": n.index, "hash": n.hash.hex()}
                    for n in self.compact.range_nodes()
                ],
                "prev_leaf": self.prev_leaf.hex(),
                "prev_leaf_proof": [h.hex() for h in self.prev_leaf_proof],
            }
        )
        return data

    @classmethod
    def from_json(cls, data: Any) -> StartState:
        """Parse; raises ValueError (or ProofError) on any structural problem."""
        if not isinstance(data, dict):
            raise ValueError("start state must be an object")
        size = data["size"]
        if type(size) is not int or size <= 0:
            raise ValueError("start state size must be a positive integer")
        nodes = [
            RangeNode(int(n["level"]), int(n["index"]), bytes.fromhex(n["hash"]))
            for n in data["compact_range"]
        ]
        compact = CompactRange.from_range_nodes(size, nodes)
        prev_leaf = bytes.fromhex(data["prev_leaf"])
        proof = tuple(bytes.fromhex(h) for h in data["prev_leaf_proof"])
        extra = {
            k: v
            for k, v in data.items()
            if k not in {"size", "compact_range", "prev_leaf", "prev_leaf_proof"}
        }
        return cls(size, compact, prev_leaf, proof, extra)


def segment_name(first_seq: int) -> str:
    """File name of the segment starting at `first_seq`."""
    return f"{first_seq:020d}.jsonl"


def list_segments(directory: Path) -> list[tuple[int, Path]]:
    """(first seq, path) of every segment file, in order."""
    seg_dir = directory / SEGMENTS_DIR
    if not seg_dir.is_dir():
        return []
    found: list[tuple[int, Path]] = []
    for path in seg_dir.iterdir():
        stem = path.name.removesuffix(".jsonl")
        if path.name.endswith(".jsonl") and stem.isdigit() and len(stem) == 20:
            found.append((int(stem), path))
    found.sort()
    return found


def split_lines(data: bytes) -> tuple[list[bytes], int]:
    """Complete lines (without newline) and the offset where an unterminated tail starts."""
    end = data.rfind(b"\n") + 1
    if end == 0:
        return [], 0
    # Split the whole buffer and drop the piece after the last newline: slicing first
    # would copy a segment-sized buffer once more.
    lines = data.split(b"\n")
    lines.pop()
    return lines, end


#: Bytes read at a time when a segment is streamed (a segment holds up to ~40 MB).
READ_BLOCK = 4 << 20


class LineBlocks:
    """The complete lines of a file, a block of them at a time: memory stays at about one
    block whatever the file's size. After iterating, `tail` holds the bytes after the last
    newline (a torn line) and `size` the bytes read. With `digest` (a hashlib object),
    every byte read is hashed too: one read of the file for both."""

    def __init__(self, path: Path, block: int = READ_BLOCK, digest: Any = None) -> None:
        self.path = path
        self.block = block
        self.tail = b""
        self.size = 0
        self.digest = digest

    def __iter__(self) -> Iterator[list[bytes]]:
        digest = self.digest
        with open(self.path, "rb") as handle:
            rest = b""
            while data := handle.read(self.block):
                self.size += len(data)
                if digest is not None:
                    digest.update(data)
                lines = data.split(b"\n")
                if rest:  # the line cut by the previous block (not the whole block copied)
                    lines[0] = rest + lines[0]
                rest = lines.pop()
                if lines:
                    yield lines
        self.tail = rest


def write_all(fd: int, data: bytes) -> None:
    """Write every byte (os.write may write less than asked)."""
    view = memoryview(data)
    while view:
        written = os.write(fd, view)
        view = view[written:]


def fsync_dir(path: Path) -> None:
    """fsync a directory so that entries created or renamed in it are durable."""
    fd = os.open(path, os.O_RDONLY | os.O_DIRECTORY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


def publish_tree(tmp: Path, target: Path) -> None:
    """Make every file and directory under `tmp` durable, then rename `tmp` to `target` and
    make the rename durable: a crash leaves either no `target` or all of it, never a bundle
    whose listed files are missing or short."""
    for directory, _dirs, files in os.walk(tmp, topdown=False):
        for name in files:
            fd = os.open(os.path.join(directory, name), os.O_RDONLY)
            try:
                os.fsync(fd)
            finally:
                os.close(fd)
        fsync_dir(Path(directory))
    os.replace(tmp, target)
    fsync_dir(target.parent)


def atomic_write(path: Path, data: bytes) -> None:
    """Replace `path` with `data` atomically and durably: the bytes go to a temporary
    file beside it, which is fsynced and renamed over `path`; then the directory is
    fsynced, so that the rename itself survives a crash. The one helper for every small
    file the audit code and the witness replace (metadata, state, keyrings)."""
    tmp = path.with_name(path.name + ".tmp")
    fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o644)
    try:
        write_all(fd, data)
        os.fsync(fd)
    finally:
        os.close(fd)
    os.replace(tmp, path)
    fsync_dir(path.parent)


def dump_json(data: Any) -> bytes:
    """Indented, sorted JSON bytes for the small metadata files."""
    return (json.dumps(data, indent=2, sort_keys=True) + "\n").encode()


class DirLock:
    """An exclusive flock() on DIR/LOCK: one writer per log, across processes."""

    def __init__(self, directory: Path) -> None:
        self.path = directory / LOCK_FILE
        self._fd: int | None = None

    def acquire(self) -> None:
        """Take the lock or raise `AuditLogLocked` naming the holder's pid."""
        fd = os.open(self.path, os.O_RDWR | os.O_CREAT, 0o644)
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except OSError as exc:
            holder = os.pread(fd, 32, 0).decode(errors="replace").strip() or "unknown"
            os.close(fd)
            if exc.errno in (errno.EAGAIN, errno.EACCES, errno.EWOULDBLOCK):
                raise AuditLogLocked(
                    f"{self.path.parent}: the log is open in another process (pid {holder})"
                ) from None
            raise
        os.ftruncate(fd, 0)
        os.pwrite(fd, f"{os.getpid()}\n".encode(), 0)
        self._fd = fd

    def release(self) -> None:
        """Release the lock (closing the descriptor drops the flock)."""
        if self._fd is not None:
            os.close(self._fd)
            self._fd = None


class FileWatch(NamedTuple):
    """What the writer expects at a path: the file it holds open, at the size it wrote."""

    device: int
    inode: int
    size: int


def watch_open_file(fd: int) -> FileWatch:
    """The identity and current size of the file open as `fd`."""
    opened = os.fstat(fd)
    return FileWatch(opened.st_dev, opened.st_ino, opened.st_size)


def check_unchanged(path: Path, expected: FileWatch) -> None:
    """Raise `FileNotFoundError` (errno ENOENT, naming `path`) when `path` is no longer the
    file the writer holds open, and `OSError` (errno EIO) when it is not at the size the
    writer left it.

    Appending to a descriptor whose file was deleted or renamed over succeeds and fsyncs,
    yet nothing of it will be found at `path` after the process exits; bytes another
    process appended would be signed over by the next checkpoint. One `stat` of the path
    tells both: while the descriptor is open its inode cannot be reused, so a file at `path`
    with the same device and inode is the open file, not yet unlinked.
    """
    try:
        named = os.stat(path)
    except FileNotFoundError:
        raise FileNotFoundError(
            errno.ENOENT, "the open file was removed from the log directory", str(path)
        ) from None
    if (named.st_dev, named.st_ino) != (expected.device, expected.inode):
        raise FileNotFoundError(
            errno.ENOENT, "the open file was unlinked or replaced by another file", str(path)
        )
    if named.st_size != expected.size:
        raise OSError(
            errno.EIO,
            f"the open file is {named.st_size} bytes, not the {expected.size} this writer "
            "wrote: another process changed it",
            str(path),
        )


class LogFiles:
    """The writer's open files. Used from the writer's single I/O thread only."""

    def __init__(self, directory: Path, segment_records: int, segment_start: int, fsync: bool):
        self.directory = directory
        self.segment_records = segment_records
        self.fsync = fsync
        self.segment_start = segment_start
        self._seg_fd = self._open_segment(segment_start, create=False)
        self._seg_watch = watch_open_file(self._seg_fd)
        self.checkpoints_path = directory / CHECKPOINTS_FILE
        self._cp_fd = os.open(self.checkpoints_path, os.O_WRONLY | os.O_APPEND | os.O_CREAT, 0o644)
        self._cp_watch = watch_open_file(self._cp_fd)
        self.last_fsync_seconds = 0.0
        #: Tree size of the newest note written, and of the newest one fsynced.
        self.written_note_size = segment_start
        self.synced_note_size = segment_start
        self._notes_written = 0
        self._notes_synced = 0

    def _open_segment(self, first_seq: int, *, create: bool) -> int:
        seg_dir = self.directory / SEGMENTS_DIR
        path = seg_dir / segment_name(first_seq)
        flags = os.O_WRONLY | os.O_APPEND | os.O_CREAT
        if create:
            flags |= os.O_EXCL
        existed = path.exists()
        fd = os.open(path, flags, 0o644)
        if not existed:
            fsync_dir(seg_dir)
        return fd

    @property
    def segment_path(self) -> Path:
        """The segment file appended to now."""
        return self.directory / SEGMENTS_DIR / segment_name(self.segment_start)

    def check_files(self) -> None:
        """Raise `FileNotFoundError` when the open segment or checkpoints file is no
        longer the file at its path, or not at the size written (see `check_unchanged`)."""
        check_unchanged(self.segment_path, self._seg_watch)
        check_unchanged(self.checkpoints_path, self._cp_watch)

    def open_segment_for(self, first_seq: int) -> None:
        """Start the next segment file when a batch at `first_seq` begins one."""
        if first_seq != self.segment_start and first_seq % self.segment_records == 0:
            os.close(self._seg_fd)
            self._seg_fd = self._open_segment(first_seq, create=True)
            self._seg_watch = watch_open_file(self._seg_fd)
            self.segment_start = first_seq

    def append_records(self, first_seq: int, lines: bytes) -> int:
        """Append a batch that starts at `first_seq` (never crossing a segment end), after
        checking the files (`check_files`), and return the segment's length before it: the
        last durable offset. Errors name the segment file. On a failed write or fsync,
        `cut_back` removes what may have reached the file."""
        self.open_segment_for(first_seq)
        self.check_files()
        path = self.segment_path
        offset = self._seg_watch.size
        try:
            if lines:
                write_all(self._seg_fd, lines)
                if self.fsync:
                    started = time.perf_counter()
                    os.fsync(self._seg_fd)
                    self.last_fsync_seconds = time.perf_counter() - started
        except OSError as exc:
            # Part of the batch may be in the file (or only in the page cache after a
            # failed fsync): cut it off; recovery reports it if even that fails.
            with contextlib.suppress(OSError):
                self.cut_back(offset)
            raise OSError(exc.errno, exc.strerror, str(path)) from exc
        self._seg_watch = self._seg_watch._replace(size=offset + len(lines))
        return offset

    def cut_back(self, offset: int) -> None:
        """Truncate the open segment to `offset` (a failed batch's start) and fsync it,
        so that no record of a batch whose clients got 503 survives a restart."""
        os.ftruncate(self._seg_fd, offset)
        self._seg_watch = self._seg_watch._replace(size=offset)
        if self.fsync:
            os.fsync(self._seg_fd)

    def append_checkpoint(self, note: str, size: int) -> None:
        """Append a signed checkpoint note (after the records it covers are durable).

        Not fsynced here: `sync_checkpoints` runs off the critical path. A crash can lose
        the newest notes but never a record they cover; recovery signs those records again
        at the same size and root.
        """
        data = note.encode() + b"\n"
        try:
            write_all(self._cp_fd, data)
        except OSError as exc:
            raise OSError(exc.errno, exc.strerror, str(self.checkpoints_path)) from exc
        self._cp_watch = self._cp_watch._replace(size=self._cp_watch.size + len(data))
        self.written_note_size = size
        self._notes_written += 1

    def sync_checkpoints(self) -> None:
        """fsync the checkpoints file (strict mode)."""
        written = self._notes_written
        if self.fsync and written != self._notes_synced:
            size = self.written_note_size
            try:
                os.fsync(self._cp_fd)
            except OSError as exc:
                raise OSError(exc.errno, exc.strerror, str(self.checkpoints_path)) from exc
            self.synced_note_size = max(self.synced_note_size, size)
            self._notes_synced = max(self._notes_synced, written)

    def close(self) -> None:
        """Make the checkpoints durable, then close both files."""
        with contextlib.suppress(OSError):
            self.sync_checkpoints()
        for fd in (self._seg_fd, self._cp_fd):
            with contextlib.suppress(OSError):
                os.close(fd)


def b64(data: bytes) -> str:
    """Standard base64 text."""
    return base64.b64encode(data).decode()
