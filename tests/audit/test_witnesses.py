"""Witnesses end to end: the witness server's durable state and status codes, a gateway
cosigned by two `jurisgate witness serve` processes whose export verifies with
`--min-witnesses 2`, a third witness that saw a fork raising the gateway's alarm, and a
rollback caught at start even when every note was rewritten."""

from __future__ import annotations

import asyncio
import json
import os
import re
import shutil
import subprocess
import sys
import time
from collections.abc import AsyncIterator, Awaitable, Callable
from pathlib import Path
from typing import Any

import aiohttp
import pytest
import yaml
from aiohttp import web
from aiohttp.test_utils import TestServer

from gateway.audit import AuditLog, AuditRecoveryRefused, Signer
from gateway.audit.chain import record_bytes_of_line
from gateway.audit.merkle import TreeHashes, consistency_proof, leaf_hash
from gateway.audit.note import parse_note, split_notes
from gateway.audit.signing import write_private_key
from gateway.audit.witness import (
    Cosigner,
    CosignerKey,
    encode_add_checkpoint,
    origin_hash,
    parse_tree_head,
)
from gateway.cli import main as cli_main
from gateway.witness.server import WitnessService, WitnessStateError, create_witness_app

from .conftest import LogBuilder, decision, segment_lines

REPO = Path(__file__).resolve().parents[2]
ORIGIN = "gw.test/t1"  # the pipeline test configuration's deployment/instance


def _leaves(directory: Path) -> list[bytes]:
    return [leaf_hash(record_bytes_of_line(line) or line) for line in segment_lines(directory)]


def _latest_note(directory: Path) -> str:
    notes, _end = split_notes((directory / "checkpoints.notes").read_bytes())
    return notes[-1][1].decode()


# -- the witness server ------------------------------------------------------------------


@pytest.fixture
async def witness(
    tmp_path: Path, builder: LogBuilder
) -> AsyncIterator[tuple[TestServer, WitnessService]]:
    service = WitnessService(
        Signer.generate("witness.test/w1"),
        {"gw.example.test/i1": (builder.signer.verifier,)},
        tmp_path / "w1-state.json",
    )
    server = TestServer(create_witness_app(service), host="127.0.0.1")
    await server.start_server()
    yield server, service
    await server.close()


async def _post(server: TestServer, body: bytes) -> tuple[int, str, str]:
    async with aiohttp.ClientSession() as session:
        async with session.post(server.make_url("/add-checkpoint"), data=body) as resp:
            return resp.status, await resp.text(), resp.headers.get("Content-Type", "")


async def test_the_witness_cosigns_records_durably_and_refuses_rollback(
    witness: tuple[TestServer, WitnessService], builder: LogBuilder, tmp_path: Path
) -> None:
    server, service = witness
    log = await builder.open()
    for i in range(5):
        await log.append(decision(i))
    first = log.latest_checkpoint
    first_size = parse_tree_head(parse_note(first).text).size
    for i in range(5, 9):
        await log.append(decision(i))
    second = log.latest_checkpoint
    await log.close()

    status, body, _ = await _post(server, encode_add_checkpoint(0, [], first))
    assert status == 200
    signature = parse_note(parse_note(first).text + "\n" + body).signatures[0]
    assert service.cosigner.key.verify(parse_note(first).text, signature) > 0
    state = json.loads(service.state_path.read_text())
    assert state["logs"]["gw.example.test/i1"]["size"] == first_size

    # A new process on the same state file still knows the head: 409 with its size.
    reborn = WitnessService(service.cosigner._signer, service.log_keys, service.state_path)  # noqa: SLF001
    status, answer, kind = await reborn.add_checkpoint(encode_add_checkpoint(0, [], second))
    assert (status, answer, kind) == (409, f"{first_size}\n", "text/x.tlog.size")

    leaves = _leaves(builder.directory)
    second_size = parse_tree_head(parse_note(second).text).size
    proof = consistency_proof(first_size, second_size, TreeHashes(leaves))
    status, _body, _ = await _post(server, encode_add_checkpoint(first_size, proof, second))
    assert status == 200
    # Rolled back: an older checkpoint after a newer one.
    status, _body, _ = await _post(server, encode_add_checkpoint(second_size, [], first))
    assert status == 400
    async with aiohttp.ClientSession() as session:
        url = server.make_url(f"/{origin_hash('gw.example.test/i1')}/checkpoint")
        async with session.get(url) as resp:
            assert resp.status == 200
            cosigned = parse_note(await resp.text())
    assert parse_tree_head(cosigned.text).size == second_size
    assert any(service.cosigner.key.matches(s) for s in cosigned.signatures)


async def test_racing_submissions_never_roll_the_head_back(
    witness: tuple[TestServer, WitnessService], builder: LogBuilder
) -> None:
    server, service = witness
    log = await builder.open()
    notes = []
    for i in range(6):
        await log.append(decision(i))
        notes.append(log.latest_checkpoint)
    await log.close()
    results = await asyncio.gather(
        *(_post(server, encode_add_checkpoint(0, [], note)) for note in notes)
    )
    assert [status for status, _b, _k in results].count(200) == 1
    winner = notes[[status for status, _b, _k in results].index(200)]
    head = service.heads["gw.example.test/i1"]
    assert head.size == parse_tree_head(parse_note(winner).text).size


def test_an_unreadable_state_file_stops_the_witness(tmp_path: Path) -> None:
    state = tmp_path / "state.json"
    state.write_text("{not json")
    with pytest.raises(WitnessStateError, match="restore it"):
        WitnessService(Signer.generate("w.test/1"), {}, state)


def test_witness_config_mistakes_are_located(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    config = tmp_path / "w.yaml"
    config.write_text("name: w.test/1\nkey: missing.pem\nstate: s.json\nlogs:\n  - origin: a/b\n"
                      "    keys: [\"not-a-key\"]\n")  # fmt: skip
    assert cli_main(["witness", "serve", "--config", str(config)]) == 3
    err = capsys.readouterr().err
    assert f"{config}:6:" in err and "config_value_error" in err and "help:" in err
    assert "jurisgate keys generate" in err
    assert "Traceback" not in err


# -- a gateway with witnesses ------------------------------------------------------------


class WitnessProcess:
    """`jurisgate witness serve` in a child process."""

    def __init__(self, tmp: Path, name: str, log_vkey: str) -> None:
        self.dir = tmp / name.replace("/", "_")
        self.dir.mkdir(parents=True)
        signer = Signer.generate(name)
        write_private_key(self.dir / "key.pem", signer)
        self.key = Cosigner(signer).key
        self.config = self.dir / "witness.yaml"
        self.config.write_text(yaml.safe_dump({
            "name": name, "key": "key.pem", "state": "state.json",
            "listen": {"host": "127.0.0.1", "port": 0},
            "logs": [{"origin": ORIGIN, "keys": [log_vkey]}],
        }))  # fmt: skip
        self.proc: subprocess.Popen[bytes] | None = None
        self.url = ""

    def start(self) -> None:
        env = dict(os.environ, PYTHONPATH=str(REPO) + os.pathsep + os.environ.get("PYTHONPATH", ""))
        self.proc = subprocess.Popen(
            [sys.executable, "-m", "gateway", "witness", "serve", "--config", str(self.config)],
            stdout=subprocess.PIPE, stderr=subprocess.PIPE, env=env,
        )  # fmt: skip
        assert self.proc.stdout is not None
        line = self.proc.stdout.readline().decode()
        found = re.search(r"serving on (http://\S+)", line)
        assert found, line + (self.proc.stderr.read().decode() if self.proc.stderr else "")
        self.url = found.group(1)

    def stop(self) -> None:
        if self.proc is not None:
            if self.proc.poll() is None:
                self.proc.terminate()
            self.proc.communicate(timeout=10)  # also closes the pipes


async def _gateway(tmp_path: Path, witnesses: list[WitnessProcess]) -> tuple[Any, web.AppRunner]:
    from tests.gateway.test_pipeline import _write_config
    from tests.plugins.gateway import start_gateway

    audit = {
        "witnesses": [{"url": w.url, "key": w.key.vkey()} for w in witnesses],
        "witness_interval_s": 0.1,
        "witness_timeout_s": 2.0,
    }
    config = _write_config(tmp_path, 9, 9, audit=audit)
    return await start_gateway(config, tmp_path / "gw")


def _log_signer(tmp_path: Path) -> Signer:
    from tests.plugins.gateway import make_signing_key

    return Signer.from_pem_file(make_signing_key(tmp_path / "gw" / "keys", "gw.test"), "gw.test")


async def _until(predicate: Callable[[], bool | Awaitable[bool]], timeout: float = 15.0) -> None:
    end = time.monotonic() + timeout
    while time.monotonic() < end:
        result = predicate()
        if isinstance(result, Awaitable):
            result = await result
        if result:
            return
        await asyncio.sleep(0.05)
    raise AssertionError("condition not met in time")


async def _requests(harness: Any, count: int) -> None:
    from tests.gateway.test_pipeline import _headers

    for _ in range(count):
        await harness.request(
            "POST", "/v1/models/mnist:predict", headers=_headers(), json_body={"instances": [1]}
        )


@pytest.mark.timeout(120)
async def test_two_witnesses_cosign_the_export_and_a_forked_witness_raises_the_alarm(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    signer = _log_signer(tmp_path)
    processes = [
        WitnessProcess(tmp_path, f"witness.test/w{i}", signer.verifier.note_key())
        for i in (1, 2, 3)
    ]
    try:
        for process in processes:
            process.start()
        harness, runner = await _gateway(tmp_path, processes)
        witnessing = harness.runtime.witnessing
        try:
            await _requests(harness, 3)
            size = harness.runtime.audit.stats().size
            await _until(lambda: all((s.size or 0) >= size for s in witnessing.statuses))
            status, _, body = await harness.request("GET", "/readyz")
            report = json.loads(body)
            assert set(report["witnesses"]) == {p.key.name for p in processes}
            assert all(w["alarm"] is None for w in report["witnesses"].values())

            # The third witness is shown a fork: a copy of the log that went on differently.
            fork = tmp_path / "fork"
            shutil.copytree(harness.audit_dir, fork, ignore=shutil.ignore_patterns("LOCK"))
            seen = witnessing.statuses[2].size
            assert seen is not None
            log = await AuditLog.open(fork, signer, origin=ORIGIN)
            for i in range(5):
                await log.append(decision(i))
            fork_note = log.latest_checkpoint
            await log.close()
            fork_size = parse_tree_head(parse_note(fork_note).text).size
            proof = consistency_proof(seen, fork_size, TreeHashes(_leaves(fork)))
            async with aiohttp.ClientSession() as session:
                async with session.post(
                    processes[2].url + "/add-checkpoint",
                    data=encode_add_checkpoint(seen, proof, fork_note),
                ) as resp:
                    assert resp.status == 200, await resp.text()

            await _requests(harness, 1)  # a new checkpoint for every witness

            async def alarmed() -> bool:
                status, _, body = await harness.request("GET", "/readyz")
                return status == 503 and any("w3" in r for r in json.loads(body)["reasons"])

            await _until(alarmed)
            assert not witnessing.statuses[0].alarm and not witnessing.statuses[1].alarm
        finally:
            await harness.session.close()
            await runner.cleanup()  # closes the log; the final checkpoint is submitted
        final = parse_tree_head(parse_note(_latest_note(harness.audit_dir)).text)
        cosigned, _end = split_notes((harness.audit_dir / "checkpoints.cosigned").read_bytes())
        final_witnesses = {
            sig.name
            for _o, raw in cosigned
            for sig in parse_note(raw).signatures
            if parse_tree_head(parse_note(raw).text) == final and sig.name.startswith("witness")
        }
        assert final_witnesses == {"witness.test/w1", "witness.test/w2"}
    finally:
        for process in processes:
            process.stop()

    bundle = tmp_path / "bundle"
    key = harness.config.audit.signing_key
    assert cli_main(["audit", "export", "--log", str(harness.audit_dir), "--out", str(bundle),
                     "--key", str(key), "--no-log-record"]) == 0  # fmt: skip
    assert (bundle / "checkpoints.cosigned").exists()
    keys = tmp_path / "witness-keys.txt"
    keys.write_text("".join(p.key.vkey() + "\n" for p in processes[:2]))
    capsys.readouterr()
    verify = ["audit", "verify", str(bundle), "--trusted-keys", str(harness.trusted_keys),
              "--witness-keys", str(keys)]  # fmt: skip
    assert cli_main([*verify, "--min-witnesses", "2"]) == 0, capsys.readouterr().out
    assert "witnessed: size" in capsys.readouterr().out
    # Only pinned keys count: a third pinned witness that never cosigned makes 3 impossible.
    stranger = Cosigner(Signer.generate("witness.test/w4")).key
    keys.write_text(
        "".join(k.vkey() + "\n" for k in (processes[0].key, processes[1].key, stranger))
    )
    assert cli_main([*verify, "--min-witnesses", "3"]) == 1
    assert "WITNESS_QUORUM" in capsys.readouterr().out


async def test_a_rollback_is_caught_at_start_even_with_every_note_rewritten(
    tmp_path: Path,
) -> None:
    signer = _log_signer(tmp_path)
    process = WitnessProcess(tmp_path, "witness.test/w1", signer.verifier.note_key())
    process.start()
    try:
        harness, runner = await _gateway(tmp_path, [process])
        try:
            await _requests(harness, 2)
            snapshot = tmp_path / "snapshot"
            await asyncio.sleep(0.3)
            shutil.copytree(harness.audit_dir, snapshot, ignore=shutil.ignore_patterns("LOCK"))
            await _requests(harness, 3)
            size = harness.runtime.audit.stats().size
            await _until(lambda: (harness.runtime.witnessing.statuses[0].size or 0) >= size)
        finally:
            await harness.session.close()
            await runner.cleanup()
        # The disk writer puts the older, self-consistent log back: notes, records and the
        # cosigned file all from the snapshot (every note is genuine, just old).
        shutil.rmtree(harness.audit_dir)
        shutil.copytree(snapshot, harness.audit_dir)
        (harness.audit_dir / "checkpoints.cosigned").unlink(missing_ok=True)
        with pytest.raises(AuditRecoveryRefused, match="rolled back"):
            await _gateway(tmp_path, [process])
    finally:
        process.stop()


def test_witness_vkey_prints_the_pinned_form(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    process = WitnessProcess(tmp_path, "witness.test/w9", "gw.test+00000000+AQ==")
    capsys.readouterr()
    # The log key in the config is checked too.
    assert cli_main(["witness", "vkey", "--config", str(process.config)]) == 3
    signer = Signer.generate("gw.test")
    data = yaml.safe_load(process.config.read_text())
    data["logs"][0]["keys"] = [signer.verifier.note_key()]
    process.config.write_text(yaml.safe_dump(data))
    capsys.readouterr()
    assert cli_main(["witness", "vkey", "--config", str(process.config)]) == 0
    assert CosignerKey.from_vkey(capsys.readouterr().out.strip()) == process.key


async def test_a_witness_away_for_long_is_served_from_disk_with_a_bounded_window(
    witness: tuple[TestServer, WitnessService], builder: LogBuilder
) -> None:
    from gateway.witness.client import CheckpointWitnessing, WitnessEndpoint
    from tests.plugins.gateway import free_port

    server, service = witness
    log = await builder.open(segment_records=16)
    await log.append(decision(0))
    async with aiohttp.ClientSession() as session:
        endpoint = WitnessEndpoint(service.cosigner.key, str(server.make_url("")).rstrip("/"))
        witnessing = CheckpointWitnessing(log, [endpoint], session, max_window=8)
        status = witnessing.statuses[0]
        await witnessing.submit_all()
        seen = status.size
        assert seen is not None and seen == log.stats().size
        # The witness goes away while the log grows far beyond the window.
        status.endpoint = WitnessEndpoint(service.cosigner.key, f"http://127.0.0.1:{free_port()}")
        for i in range(1, 60):
            await log.append(decision(i))
        await witnessing.submit_all()
        assert status.last_error and status.size == seen
        assert len(witnessing.window.leaves) <= 8
        # Back again: the proof from its old size comes from the segments.
        status.endpoint = endpoint
        await witnessing.submit_all()
        assert not status.alarm, status.alarm
        assert status.size == log.stats().size == service.heads["gw.example.test/i1"].size
    await log.close()
