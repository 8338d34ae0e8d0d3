"""`jurisgate witness serve`: a small C2SP `tlog-witness` (HTTP edge around
gateway.audit.witness).

Rule 1 (check and record are one step): every `add-checkpoint` takes one lock, checks the
request against the latest head of its origin, writes the new state file (temporary file,
fsync, rename, fsync of the directory) and only then answers with the cosignature; two
racing requests can never roll the recorded head back.
Rule 2 (the state survives): the state file holds, per origin, the latest size, root and
cosigned checkpoint; a witness that restarts keeps refusing what it refused before. An
unreadable state file stops the witness instead of starting it from nothing.
"""

from __future__ import annotations

import asyncio
import base64
import binascii
import json
import logging
import time
from collections.abc import Callable, Mapping, Sequence
from pathlib import Path
from typing import Any

from aiohttp import web

from gateway.audit.errors import AuditError
from gateway.audit.signing import Signer, Verifier
from gateway.audit.storage import atomic_write
from gateway.audit.witness import (
    AddCheckpoint,
    Cosigner,
    TreeHead,
    WitnessRefusal,
    check_add_checkpoint,
    origin_hash,
    parse_add_checkpoint,
)

__all__ = [
    "STATE_FORMAT",
    "WitnessService",
    "WitnessStateError",
    "create_witness_app",
    "state_summary",
]

STATE_FORMAT = "jurisgate-witness-state/1"
#: Largest add-checkpoint body accepted (63 proof lines and a note with a few signatures).
MAX_BODY_BYTES = 64 * 1024
_log = logging.getLogger("jurisgate.witness")


class WitnessStateError(AuditError):
    """The witness's state file cannot be read; the witness must not start without it."""


class WitnessService:
    """The witness: its key, the logs it trusts, and the latest head per origin."""

    def __init__(
        self,
        signer: Signer,
        log_keys: Mapping[str, Sequence[Verifier]],
        state_path: Path,
        clock: Callable[[], float] = time.time,
    ) -> None:
        self.cosigner = Cosigner(signer)
        self.log_keys = {origin: tuple(keys) for origin, keys in log_keys.items()}
        self.state_path = state_path
        self._clock = clock
        self._lock = asyncio.Lock()
        self.heads: dict[str, TreeHead] = {}
        self.checkpoints: dict[str, str] = {}
        self._load()

    def _load(self) -> None:
        try:
            text = self.state_path.read_text(encoding="utf-8")
        except FileNotFoundError:
            return
        except OSError as exc:
            raise WitnessStateError(f"{self.state_path}: cannot read: {exc.strerror}") from None
        try:
            data = json.loads(text)
            if data.get("format") != STATE_FORMAT:
                raise ValueError(f"not a {STATE_FORMAT} file")
            for origin, entry in data["logs"].items():
                root = base64.b64decode(entry["root"], validate=True)
                self.heads[origin] = TreeHead(origin, int(entry["size"]), root)
                self.checkpoints[origin] = str(entry["checkpoint"])
        except (ValueError, KeyError, TypeError, AttributeError, binascii.Error) as exc:
            raise WitnessStateError(
                f"{self.state_path}: unreadable witness state ({exc}); restore it from a "
                "backup: starting from nothing would let a log roll back"
            ) from None

    def _save(self) -> None:
        logs = {
            origin: {
                "size": head.size,
                "root": base64.b64encode(head.root).decode(),
                "checkpoint": self.checkpoints[origin],
            }
            for origin, head in sorted(self.heads.items())
        }
        data = {"format": STATE_FORMAT, "logs": logs}
        atomic_write(self.state_path, (json.dumps(data, indent=2, sort_keys=True) + "\n").encode())

    async def add_checkpoint(self, body: bytes) -> tuple[int, str, str]:
        """Answer an `add-checkpoint` body: (HTTP status, body, content type)."""
        try:
            request: AddCheckpoint = parse_add_checkpoint(body)
        except WitnessRefusal as refusal:
            return self._refused(refusal, "?")
        async with self._lock:  # rule 1: check, record, then answer
            try:
                note, head = check_add_checkpoint(request, self.log_keys, self.heads)
            except WitnessRefusal as refusal:
                return self._refused(refusal, _origin_of(request.note))
            timestamp = max(int(self._clock()), 1)
            signature = self.cosigner.cosign(note.text, timestamp)
            line = signature.line()
            previous_head = self.heads.get(head.origin)
            previous_checkpoint = self.checkpoints.get(head.origin)
            self.heads[head.origin] = head
            self.checkpoints[head.origin] = note.encode() + line
            try:
                await asyncio.to_thread(self._save)
            except OSError as exc:
                if previous_head is None or previous_checkpoint is None:
                    self.heads.pop(head.origin, None)
                    self.checkpoints.pop(head.origin, None)
                else:
                    self.heads[head.origin] = previous_head
                    self.checkpoints[head.origin] = previous_checkpoint
                _log.error(
                    "witness state %s not written (errno %s): %s; not cosigning",
                    self.state_path,
                    exc.errno,
                    exc.strerror,
                )
                return 503, "the witness cannot record its state\n", "text/plain"
        return 200, line, "text/plain; charset=utf-8"

    def _refused(self, refusal: WitnessRefusal, origin: str) -> tuple[int, str, str]:
        if refusal.status in (409, 422):
            # Possibly evidence of a misbehaving log: keep a trace.
            _log.warning("refused a checkpoint of %s: %s %s", origin, refusal.status, refusal)
        body = refusal.body if refusal.body is not None else refusal.message + "\n"
        return refusal.status, body, refusal.content_type

    def checkpoint_for(self, hashed_origin: str) -> str | None:
        """The latest cosigned checkpoint of the origin whose SHA-256 is `hashed_origin`."""
        for origin, checkpoint in self.checkpoints.items():
            if origin_hash(origin) == hashed_origin:
                return checkpoint
        return None


def _origin_of(note: str) -> str:
    first = note.split("\n", 1)[0]
    return first if first and len(first) < 256 else "?"


def create_witness_app(service: WitnessService) -> web.Application:
    """The witness's HTTP surface: `POST /add-checkpoint` and the monitoring
    `GET /<origin hash>/checkpoint`."""
    app = web.Application(client_max_size=MAX_BODY_BYTES)

    async def add_checkpoint(request: web.Request) -> web.Response:
        body = await request.read()
        status, text, content_type = await service.add_checkpoint(body)
        return web.Response(status=status, body=text.encode(), content_type=None,
                            headers={"Content-Type": content_type})  # fmt: skip

    async def checkpoint(request: web.Request) -> web.Response:
        found = service.checkpoint_for(request.match_info["origin_hash"])
        if found is None:
            return web.Response(status=404, text="no checkpoint cosigned for this origin\n")
        return web.Response(text=found, content_type="text/plain")

    app.router.add_post("/add-checkpoint", add_checkpoint)
    app.router.add_get("/{origin_hash:[0-9a-f]{64}}/checkpoint", checkpoint)
    return app


def state_summary(service: WitnessService) -> dict[str, Any]:
    """Latest size per origin (for the start-up message)."""
    return {origin: head.size for origin, head in service.heads.items()}
