"""Policies from a Kubernetes ConfigMap volume: read once, reloaded on the link swap.

The kubelet writes a ConfigMap volume's files into a hidden `..<timestamp>/` directory and
shows them through symbolic links (`..data`, then one per top-level entry); an update writes
a new hidden directory and swaps `..data` at once. These tests lay out such a volume as the
kubelet does: the loader reads each policy once under its plain name (the revision is the
checkout's), and a running `jurisgate serve` that watches the policies reloads on the swap.
"""

from __future__ import annotations

import json
import os
import shutil
import signal
import subprocess
import sys
from pathlib import Path

import aiohttp
import yaml

from gateway.audit.storage import list_segments
from gateway.policy import load_policy_set
from gateway.policy.loader import tree_files
from tests.gateway.test_operations import BLOCK_PACK, _serve_config, _wait_for
from tests.gateway.test_pipeline import IMAGE, KEY
from tests.plugins.gateway import StubBackend

ROOT = Path(__file__).resolve().parents[2]


def shipped_policies() -> dict[str, str]:
    root = ROOT / "policies"
    return {p.relative_to(root).as_posix(): p.read_text() for p in tree_files(root)}


def project(mount: Path, files: dict[str, str], stamp: str) -> None:
    """Write `files` into the volume at `mount` as the kubelet's atomic writer does."""
    mount.mkdir(parents=True, exist_ok=True)
    data = mount / f"..{stamp}"
    for rel, text in files.items():
        (data / rel).parent.mkdir(parents=True, exist_ok=True)
        (data / rel).write_text(text)
    old = os.readlink(mount / "..data") if (mount / "..data").is_symlink() else None
    (mount / "..data_tmp").symlink_to(data.name)
    os.replace(mount / "..data_tmp", mount / "..data")
    tops = {rel.split("/", 1)[0] for rel in files}
    for top in tops:
        if not (mount / top).is_symlink():
            (mount / top).symlink_to(f"..data/{top}")
    for entry in mount.iterdir():
        if entry.is_symlink() and not entry.name.startswith(".") and entry.name not in tops:
            entry.unlink()
    if old is not None:
        shutil.rmtree(mount / old)


def test_a_configmap_volume_is_read_once_under_plain_names(tmp_path: Path) -> None:
    mount = tmp_path / "policies"
    project(mount, shipped_policies(), "2026_01_01_00_00_00.1")
    names = [p.relative_to(mount).as_posix() for p in tree_files(mount)]
    assert names == sorted(shipped_policies())
    assert not any(name.startswith(".") for name in names)
    plain = load_policy_set([ROOT / "policies"]).policy_set
    mounted = load_policy_set([mount]).policy_set
    assert plain is not None and mounted is not None
    assert mounted.revision == plain.revision
    # After a swap with the same content the revision is the same: no timestamp in it.
    project(mount, shipped_policies(), "2026_01_01_00_05_00.2")
    again = load_policy_set([mount]).policy_set
    assert again is not None and again.revision == plain.revision


async def test_serve_reloads_when_the_configmap_links_swap(tmp_path: Path) -> None:
    backend = StubBackend("be", 0)
    await backend.start()
    mount = tmp_path / "policies"
    project(mount, shipped_policies(), "2026_01_01_00_00_00.1")
    config_path = _serve_config(tmp_path, backend.port, mount)
    port = yaml.safe_load(config_path.read_text())["listen"]["port"]
    url = f"http://127.0.0.1:{port}/v1/models/mnist:predict"
    proc = subprocess.Popen(
        [sys.executable, "-m", "gateway", "serve", "--config", str(config_path)],
        stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, cwd=tmp_path,
    )  # fmt: skip
    try:
        async with aiohttp.ClientSession() as session:

            async def status_is(expected: int) -> bool:
                try:
                    async with session.post(
                        url, json={"instances": [IMAGE]},
                        headers={"X-Api-Key": KEY, "X-Purpose": "academic_research"},
                    ) as resp:  # fmt: skip
                        await resp.read()
                        return resp.status == expected
                except aiohttp.ClientConnectionError:
                    return False

            await _wait_for(lambda: status_is(200), timeout=90)
            project(mount, {**shipped_policies(), "ops-test.yaml": BLOCK_PACK},
                    "2026_01_01_00_05_00.2")  # fmt: skip
            await _wait_for(lambda: status_is(451), timeout=30)
        proc.send_signal(signal.SIGTERM)
        assert proc.wait(timeout=60) == 0
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait()
        await backend.stop()
    records = [
        json.loads(line)["r"]
        for _, segment in list_segments(tmp_path / "audit")
        for line in segment.read_bytes().splitlines()
        if line.strip()
    ]
    (change,) = [r for r in records if r["type"] == "policy_change"]
    assert change["trigger"] == "file-change"
