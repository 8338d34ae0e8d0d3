"""Snapshots and reloads: compiling what a request is evaluated under, swapping it whole.

`build_snapshot` compiles policies and loads tenants and the region table; `reload_snapshot`
replaces the serving snapshot only when the new one builds without a diagnostic, files the
new policy revision beside the audit log and records the change; `watch_for_reloads` runs
reloads on SIGHUP and on changes to any file a reload reads.
"""

from __future__ import annotations

import asyncio
import gc
import logging
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

from gateway.config.loader import ConfigError, GatewayConfig, load_config
from gateway.edge.runtime import Runtime, Snapshot, build_backends
from gateway.errors import DiagnosticError, format_diagnostics
from gateway.policy import load_policy_set
from gateway.policy.loader import tree_files
from gateway.replay.revisions import STORE_DIR, store_revision
from gateway.request.clientip import ClientIPConfig
from gateway.request.geo import CachedRegionLookup, RegionTable
from gateway.request.tenants import TenantRegistry

__all__ = [
    "SnapshotError",
    "build_snapshot",
    "fingerprint",
    "keep_revision",
    "reload_snapshot",
    "settle_heap",
    "watch_for_reloads",
]

log = logging.getLogger("jurisgate")


class SnapshotError(Exception):
    """Building a snapshot failed; `diagnostics_text` is ready to print."""

    def __init__(self, text: str) -> None:
        super().__init__(text)
        self.diagnostics_text = text


def build_snapshot(config: GatewayConfig) -> Snapshot:
    """Compile policies, load tenants and the region table for `config`.

    Raises `SnapshotError` with every diagnostic; nothing is half-applied.
    """
    result = load_policy_set(list(config.policy_paths))
    if result.policy_set is None:
        raise SnapshotError(format_diagnostics(result.diagnostics, cap=None))
    try:
        tenants = (
            TenantRegistry.load(config.tenants_file, default_tenant=config.default_tenant)
            if config.tenants_file is not None
            else TenantRegistry.empty(default_tenant=config.default_tenant)
        )
    except DiagnosticError as exc:
        raise SnapshotError(format_diagnostics(exc.diagnostics(), cap=None)) from None
    try:
        regions = RegionTable.from_sources(
            entries=config.geoip_entries,
            table_file=config.geoip_table,
            mmdb_file=config.geoip_mmdb,
        )
    except DiagnosticError as exc:
        raise SnapshotError(format_diagnostics(exc.diagnostics(), cap=None)) from None
    except (OSError, ValueError) as exc:
        raise SnapshotError(f"{config.source}: network.geoip: {exc}") from None
    sinks = tuple(
        {"id": s.id, "category": s.category, "is_sale_or_share": s.is_sale_or_share}
        for s in config.sinks
    )
    return Snapshot(
        config=config,
        policy_set=result.policy_set,
        tenants=tenants,
        regions=CachedRegionLookup(regions),
        client_ip=ClientIPConfig(
            trusted_proxies=config.trusted_proxies,
            forwarded_header="forwarded"
            if config.forwarded_header == "forwarded"
            else "x-forwarded-for",
            claim_headers=(config.headers.geo_claim,),
            trusted_region_header=config.trusted_region_header,
        ),
        backends=build_backends(config),
        sink_views=sinks,
    )


def keep_revision(snapshot: Snapshot) -> None:
    """File the serving policy revision beside the audit log, so its decisions can be
    re-derived (`jurisgate audit verify --replay`)."""
    config = snapshot.config
    try:
        store_revision(
            config.audit.directory / STORE_DIR,
            list(config.policy_paths),
            snapshot.policy_set.revision,
        )
    except OSError as exc:
        log.error(
            "could not keep policy revision %s in %s: %s",
            snapshot.policy_set.revision, config.audit.directory / STORE_DIR, exc.strerror,
        )  # fmt: skip


async def reload_snapshot(runtime: Runtime, *, trigger: str) -> dict[str, Any]:
    """Reload configuration, policies and tenants; keep the old snapshot on any error.

    A successful reload that changes the policy revision writes a `policy_change` record.
    """
    old = runtime.snapshot
    started = datetime.now(UTC).strftime("%Y-%m-%dT%H:%M:%SZ")
    try:
        config = load_config(old.config.source, old.config.environ)
        if config.audit.directory != old.config.audit.directory:
            raise SnapshotError(
                f"{config.source}: audit.directory cannot change while running "
                f"(`{old.config.audit.directory}` -> `{config.audit.directory}`); restart"
            )
        snapshot = build_snapshot(config)
    except ConfigError as exc:
        text = format_diagnostics(exc.diagnostics(), cap=None)
        return _reload_failed(runtime, trigger, started, text)
    except SnapshotError as exc:
        return _reload_failed(runtime, trigger, started, exc.diagnostics_text)
    except Exception as exc:  # noqa: BLE001 - nothing may escape the reload boundary
        log.exception("reload (%s): unexpected error", trigger)
        text = f"{old.config.source}: reload failed: {type(exc).__name__}: {exc}"
        return _reload_failed(runtime, trigger, started, text)
    if snapshot.policy_set.revision != old.policy_set.revision:
        keep_revision(snapshot)
        await runtime.audit.append(
            {
                "type": "policy_change",
                "policy": snapshot.policy_set.revision,
                "previous_policy": old.policy_set.revision,
                "trigger": trigger,
            }
        )
    runtime.snapshot = snapshot
    settle_heap()
    runtime.metrics.count_reload("ok")
    runtime.metrics.set_policy_revision(snapshot.policy_set.revision)
    runtime.last_reload = {
        "result": "ok",
        "trigger": trigger,
        "at": started,
        "revision": snapshot.policy_set.revision,
    }
    log.info("reloaded (%s): policy revision %s", trigger, snapshot.policy_set.revision)
    return runtime.last_reload


def _reload_failed(runtime: Runtime, trigger: str, started: str, text: str) -> dict[str, Any]:
    runtime.metrics.count_reload("error")
    runtime.last_reload = {
        "result": "error",
        "trigger": trigger,
        "at": started,
        "revision": runtime.snapshot.policy_set.revision,
        "diagnostics": text.splitlines(),
    }
    log.error("reload (%s) failed; still serving %s:\n%s", trigger,
              runtime.snapshot.policy_set.revision, text)  # fmt: skip
    return runtime.last_reload


def settle_heap() -> None:
    """Take what is alive now (compiled policies, tenants, tables, imported code) out of the
    cyclic collector's reach.

    Those objects live as long as their snapshot, yet every full collection traversed them
    all again: about a tenth of the gateway's CPU under load. Unfreezing first lets the
    collector reclaim the cycles of a snapshot a reload has just replaced.
    """
    gc.unfreeze()
    gc.collect()
    gc.freeze()


def fingerprint(runtime: Runtime) -> tuple[tuple[str, int, int], ...]:
    """Modification stamps of every file a reload would read."""
    config = runtime.snapshot.config
    paths: list[Path] = [config.source]
    if config.tenants_file is not None:
        paths.append(config.tenants_file)
    if config.geoip_table is not None:
        paths.append(config.geoip_table)
    for root in config.policy_paths:
        if root.is_dir():
            # The files the loader reads (a ConfigMap volume's hidden copies are not among
            # them; its link swap changes the stamps of the linked files).
            paths.extend(p for p in tree_files(root) if p.suffix in (".yaml", ".yml"))
        else:
            paths.append(root)
    stamps: list[tuple[str, int, int]] = []
    for path in paths:
        try:
            st = path.stat()
        except OSError:
            stamps.append((str(path), -1, -1))
            continue
        stamps.append((str(path), st.st_mtime_ns, st.st_size))
    return tuple(stamps)


async def watch_for_reloads(runtime: Runtime, reload_requested: asyncio.Event) -> None:
    """Reload when `reload_requested` is set (SIGHUP) or, with `watch_policies`, when a file
    a reload reads changes; runs until cancelled and outlives any one failed reload."""
    last = fingerprint(runtime)
    while True:
        try:
            last = await _next_reload(runtime, reload_requested, last)
        except asyncio.CancelledError:
            raise
        except Exception:  # noqa: BLE001 - the watcher outlives any one failed reload
            log.exception("configuration watcher: unexpected error; still watching")
            await asyncio.sleep(1.0)


async def _next_reload(
    runtime: Runtime, reload_requested: asyncio.Event, last: tuple[tuple[str, int, int], ...]
) -> tuple[tuple[str, int, int], ...]:
    """Wait for the next reload, run it, and return the fingerprint it was taken at."""
    while True:
        try:
            await asyncio.wait_for(reload_requested.wait(), timeout=1.0)
            reload_requested.clear()
            await reload_snapshot(runtime, trigger="sighup")
            return fingerprint(runtime)
        except TimeoutError:
            pass
        if not runtime.snapshot.config.watch_policies:
            continue
        now = fingerprint(runtime)
        if now != last:
            await reload_snapshot(runtime, trigger="file-change")
            return now
