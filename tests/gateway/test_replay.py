"""Decisions anyone can re-derive: each `decision` record carries the evaluation input and
names a revision filed beside the log; `audit verify --replay` decides every record again,
and `policy replay` shows what a candidate policy would change."""

from __future__ import annotations

import json
import shutil
from collections.abc import AsyncIterator, Awaitable, Callable
from pathlib import Path
from typing import Any

import pytest
import yaml

from gateway.cli import main as cli_main
from gateway.replay.decisions import iter_decision_records, replay_log
from gateway.replay.revisions import STORE_DIR, RevisionError, load_revision
from tests.gateway.test_pipeline import IMAGE, KEY, _headers, _write_config
from tests.plugins.gateway import GatewayHarness, StubBackend

ROOT = Path(__file__).resolve().parents[2]
PREDICT = "/v1/models/mnist:predict"


@pytest.fixture
async def traffic(
    tmp_path: Path, gateway_factory: Callable[..., Awaitable[GatewayHarness]]
) -> AsyncIterator[GatewayHarness]:
    """A gateway that has answered allowed, masked, sanctioned and unlicensed requests."""
    eu = StubBackend("be-eu", 0)
    us = StubBackend("be-us", 0)
    await eu.start()
    await us.start()
    config = _write_config(
        tmp_path, eu.port, us.port, admin={"enabled": True, "token": {"env": "TEST_TOKEN"}}
    )
    harness = await gateway_factory(config, environ={"TEST_TOKEN": "replay-token"})
    plain = {"instances": [IMAGE]}
    noted = {"instances": [{"images": IMAGE, "note": "mail anna@example.de"}]}
    sent = [
        (_headers(), plain, 200),
        (_headers(), noted, 200),
        (_headers(**{"X-Geo-Country": "IR"}), plain, 451),
        (_headers(**{"X-Geo-Country": "IR"}), noted, 451),
        ({**_headers(), "X-Api-Key": KEY + "-2"}, plain, 403),
        ({**_headers(), "X-Api-Key": "wrong"}, plain, 401),
    ]
    try:
        for headers, body, want in sent:
            status, _, payload = await harness.request(
                "POST", PREDICT, headers=headers, json_body=body
            )
            assert status == want, payload
        yield harness
    finally:
        await eu.stop()
        await us.stop()


def _verify(harness: GatewayHarness, capsys: pytest.CaptureFixture[str]) -> tuple[int, str]:
    code = cli_main(
        ["audit", "verify", str(harness.audit_dir), "--trusted-keys",
         str(harness.trusted_keys), "--replay"]
    )  # fmt: skip
    out = capsys.readouterr()
    return code, out.out + out.err


async def test_every_decision_re_derives_with_its_revision(
    traffic: GatewayHarness, capsys: pytest.CaptureFixture[str]
) -> None:
    code, output = _verify(traffic, capsys)
    assert code == 0, output
    assert "replay OK" in output and "5 decisions re-derived, 0 mismatches" in output
    # The revision in force is filed beside the log and hashes to its name.
    revision = traffic.runtime.snapshot.policy_set.revision
    assert load_revision(traffic.audit_dir / STORE_DIR, revision).revision == revision


async def test_inputs_hold_no_address_and_no_payload(traffic: GatewayHarness) -> None:
    records = [r for r in traffic.audit_records() if r["type"] == "decision" and "input" in r]
    assert records
    for record in records:
        text = json.dumps(record["input"])
        assert record["input"]["caller"]["client_ip"] is None
        assert "anna@example.de" not in text and "127.0.0.1" not in text
        # The standard request's input stays small.
        assert len(text.encode()) < 2048, len(text)


async def test_an_operator_who_rewrites_an_outcome_is_caught(
    traffic: GatewayHarness, capsys: pytest.CaptureFixture[str]
) -> None:
    denied = next(
        r for r in traffic.audit_records() if r["type"] == "decision" and r["status"] == 451
    )
    # Written with the real key through the gateway's own log: every signature verifies.
    forged = {key: value for key, value in denied.items()
              if key not in ("seq", "prev", "ts", "kid", "log", "v")}  # fmt: skip
    forged.update(decision="allow", status=200, decision_id="forged-0001", backend="be-eu")
    await traffic.runtime.audit.append(forged)
    code, output = _verify(traffic, capsys)
    assert code == 1, output
    assert "REPLAY_MISMATCH" in output and "decision forged-0001" in output
    assert "recorded allow 200" in output and "decides deny 451" in output


async def test_a_tampered_revision_store_is_refused(
    traffic: GatewayHarness, capsys: pytest.CaptureFixture[str]
) -> None:
    revision = traffic.runtime.snapshot.policy_set.revision
    path = traffic.audit_dir / STORE_DIR / f"{revision.split(':', 1)[1]}.json"
    stored = json.loads(path.read_text())
    name = next(n for n in stored["files"] if n.endswith("us.yaml"))
    stored["files"][name] = stored["files"][name].replace("sanctions-us-iran", "renamed-rule")
    path.write_text(json.dumps(stored))
    with pytest.raises(RevisionError):
        load_revision(traffic.audit_dir / STORE_DIR, revision)
    code, output = _verify(traffic, capsys)
    assert code == 1 and "REPLAY_REVISION_MISSING" in output, output


async def test_policy_replay_reports_what_a_candidate_would_flip(
    traffic: GatewayHarness, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    candidate = tmp_path / "candidate"
    shutil.copytree(ROOT / "policies", candidate)
    pack = candidate / "sanctions" / "us.yaml"
    data = yaml.safe_load(pack.read_text())
    data["rules"] = [r for r in data["rules"] if r["id"] != "sanctions-us-iran"]
    pack.write_text(yaml.safe_dump(data, allow_unicode=True, sort_keys=False))
    report = tmp_path / "impact.json"
    rows = tmp_path / "impact.csv"
    page = tmp_path / "impact.html"
    code = cli_main(
        ["policy", "replay", "--log", str(traffic.audit_dir), "--policies", str(candidate),
         "--json", str(report), "--csv", str(rows), "--html", str(page), "--fail-on-change"]
    )  # fmt: skip
    out = capsys.readouterr().out
    assert code == 1, out
    impact: dict[str, Any] = json.loads(report.read_text())
    assert impact["compared"] == 5 and impact["changed"] == 2
    assert impact["by_rule"] == {"sanctions-us-iran": 2}
    assert impact["by_tenant"] == {"acme": 2}
    assert sum(impact["transitions"].values()) == 2
    assert all(t.startswith("deny 451 -> allow 200") for t in impact["transitions"])
    assert "2 of 5 recorded decisions would change" in out
    lines = rows.read_text().splitlines()
    assert lines[0].startswith("decision_id,seq,tenant") and len(lines) == 3
    assert all(",acme,mnist,deny 451" in line and "allow 200" in line for line in lines[1:])
    html = page.read_text()
    assert "<b>2</b> of 5 recorded decisions would change" in html and "sanctions-us-iran" in html
    # A window before the traffic holds nothing to change.
    code = cli_main(
        ["policy", "replay", "--log", str(traffic.audit_dir), "--policies", str(candidate),
         "--to", "2000-01-01T00:00:00Z", "--fail-on-change"]
    )  # fmt: skip
    assert code == 0 and "0 of 0 recorded decisions" in capsys.readouterr().out
    assert cli_main(["policy", "replay", "--log", str(traffic.audit_dir), "--policies",
                     str(candidate), "--from", "yesterday"]) == 2  # fmt: skip
    # The shipped policies themselves change nothing.
    code = cli_main(
        ["policy", "replay", "--log", str(traffic.audit_dir), "--policies",
         str(ROOT / "policies"), "--fail-on-change"]
    )  # fmt: skip
    assert code == 0, capsys.readouterr().out


async def test_the_scenarios_log_replays_without_a_mismatch(
    tmp_path: Path,
    gateway_factory: Callable[..., Awaitable[GatewayHarness]],
) -> None:
    from tests.test_scenarios_http import MARKING, POLICIES, SCENARIOS, World, run_scenario

    world = World()
    await world.start(tmp_path, gateway_factory, POLICIES)
    try:
        for _, scenario in sorted({**SCENARIOS, **MARKING}.items()):
            await run_scenario(scenario, world)
    finally:
        await world.stop()
    assert world.harness is not None
    # The scenarios set the gateway's clock (audit timestamps included) to their own dates,
    # before the test's signing key existed: replay the records without the key checks.
    audit_dir = world.harness.audit_dir
    report = replay_log(
        iter_decision_records(audit_dir), lambda rev: load_revision(audit_dir / STORE_DIR, rev)
    )
    assert report.ok, [m.text() for m in report.mismatches] or report.missing_revisions
    assert report.replayed >= len(SCENARIOS)


async def test_the_admin_api_replays_the_recent_log(
    traffic: GatewayHarness, tmp_path: Path
) -> None:
    from aiohttp.test_utils import TestClient, TestServer

    from gateway.edge.admin import create_admin_app
    from gateway.edge.runtime import RUNTIME

    class _Public(dict[Any, Any]):
        pass

    public = _Public()
    public[RUNTIME] = traffic.runtime
    auth = {"Authorization": "Bearer replay-token"}
    candidate = tmp_path / "candidate"
    shutil.copytree(ROOT / "policies", candidate)
    pack = candidate / "sanctions" / "us.yaml"
    data = yaml.safe_load(pack.read_text())
    data["rules"] = [r for r in data["rules"] if r["id"] != "sanctions-us-iran"]
    pack.write_text(yaml.safe_dump(data, allow_unicode=True, sort_keys=False))
    async with TestClient(TestServer(create_admin_app(public))) as client:  # type: ignore[arg-type]
        resp = await client.post("/admin/v1/replay", headers=auth, json={})
        body = await resp.json()
        assert resp.status == 200 and body["ok"] and body["replayed"] == 5, body
        resp = await client.post(
            "/admin/v1/replay", headers=auth, json={"candidate": str(candidate), "limit": 3}
        )
        body = await resp.json()
        assert resp.status == 200, body
        # The three most recent decisions: an IR request, and two refused before any policy.
        assert body["changed"] == 1 and body["by_rule"] == {"sanctions-us-iran": 1}, body
        resp = await client.post("/admin/v1/replay", json={})
        assert resp.status == 401


async def test_a_bundle_carries_its_revisions_and_replays_alone(
    traffic: GatewayHarness, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    bundle = tmp_path / "bundle"
    code = cli_main(
        ["audit", "export", "--log", str(traffic.audit_dir), "--key",
         str(traffic.config.audit.signing_key), "--out", str(bundle), "--no-log-record"]
    )  # fmt: skip
    assert code == 0, capsys.readouterr()
    revision = traffic.runtime.snapshot.policy_set.revision
    assert (bundle / STORE_DIR / f"{revision.split(':', 1)[1]}.json").exists()
    code = cli_main(
        ["audit", "verify", str(bundle), "--trusted-keys", str(traffic.trusted_keys), "--replay"]
    )
    output = capsys.readouterr().out
    assert code == 0, output
    assert "5 decisions re-derived, 0 mismatches" in output
