"""Model versions the way TF Serving's core keeps them: configuration, version policies, and
the registry that loads, serves and unloads versions.

The registry polls every model's base path, loads newly aspired versions off the event
loop, switches traffic to them once they are AVAILABLE and only then unloads the versions
the policy no longer wants (availability-preserving, like TF Serving's default). Requests
hold a reference to the servable they resolved, so an unloaded version finishes its
in-flight work before its session is closed: a version swap drops no request. Version
resolution and status answer with TF Serving's messages and codes.
"""

from __future__ import annotations

import asyncio
import concurrent.futures
import contextlib
import enum
import logging
import os
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from model_server.servables import LoadedServable, ServableLoadError, SessionOptions, load_servable
from model_server.status import Code, ServingError

log = logging.getLogger("model_server")

__all__ = [
    "ModelConfig",
    "ModelRegistry",
    "StartupError",
    "VersionPolicy",
    "VersionState",
    "configs_from_config_file",
    "configs_from_model_base",
    "configs_from_proto",
    "version_directories",
]


class StartupError(Exception):
    """A configuration or model problem that stops the server from starting."""


class VersionState(enum.Enum):
    """ModelVersionStatus.State."""

    START = 10
    LOADING = 20
    AVAILABLE = 30
    UNLOADING = 40
    END = 50


@dataclass(frozen=True)
class VersionPolicy:
    """ServableVersionPolicy: `latest` N versions, `all`, or `specific` versions."""

    kind: str = "latest"
    latest: int = 1
    specific: frozenset[int] = frozenset()

    def aspired(self, available_on_disk: Sequence[int]) -> set[int]:
        """The versions this policy wants loaded, out of those on disk."""
        ordered = sorted(available_on_disk, reverse=True)
        if self.kind == "all":
            return set(ordered)
        if self.kind == "specific":
            return set(ordered) & set(self.specific)
        return set(ordered[: max(self.latest, 1)])


@dataclass(frozen=True)
class ModelConfig:
    """One served model: name, base path, version policy and version labels."""

    name: str
    base_path: Path
    policy: VersionPolicy = VersionPolicy()
    labels: Mapping[str, int] = field(default_factory=dict)


def version_directories(base_path: Path) -> dict[int, Path]:
    """Numeric sub-directories of a model's base path (other names are ignored)."""
    versions: dict[int, Path] = {}
    try:
        entries = list(os.scandir(base_path))
    except FileNotFoundError:
        return versions
    for entry in entries:
        if entry.is_dir() and entry.name.isdigit() and entry.name.isascii():
            version = int(entry.name)
            if version < 2**63:
                versions[version] = Path(entry.path)
    return versions


@dataclass
class _VersionEntry:
    state: VersionState
    error: ServingError | None = None
    servable: LoadedServable | None = None
    failed_mtime: float | None = None


@dataclass
class _ModelState:
    config: ModelConfig
    versions: dict[int, _VersionEntry] = field(default_factory=dict)


class ModelRegistry:
    """Every served model and version; resolution, status and hot version swaps."""

    def __init__(
        self,
        configs: Sequence[ModelConfig],
        session_options: SessionOptions,
        *,
        model_base: Path | None = None,
        loader: Callable[[str, int, Path, SessionOptions], LoadedServable] = load_servable,
        on_load: Callable[[LoadedServable], None] | None = None,
        on_unload: Callable[[LoadedServable], None] | None = None,
    ) -> None:
        self._models: dict[str, _ModelState] = {c.name: _ModelState(c) for c in configs}
        self._session_options = session_options
        self._model_base = model_base
        self._loader = loader
        self._on_load = on_load
        self._on_unload = on_unload
        self._load_pool = concurrent.futures.ThreadPoolExecutor(1, "model-load")
        self._poll_lock = asyncio.Lock()

    # ------------------------------------------------------------------ resolution

    def model_names(self) -> list[str]:
        """Names of the configured models."""
        return sorted(self._models)

    def resolve(
        self, name: str, version: int | None = None, label: str | None = None
    ) -> LoadedServable:
        """ServerCore::GetServableHandle: the servable a request addresses."""
        model = self._models.get(name)
        if label is not None:
            labels = model.config.labels if model else {}
            if label not in labels:
                raise ServingError(
                    Code.INVALID_ARGUMENT, f"Unrecognized servable version label: {label}"
                )
            version = labels[label]
        if version is not None:
            entry = model.versions.get(version) if model else None
            if entry is None or entry.state is not VersionState.AVAILABLE or not entry.servable:
                raise ServingError(
                    Code.NOT_FOUND, f"Servable not found for request: Specific({name}, {version})"
                )
            return entry.servable
        if model is not None:
            for number in sorted(model.versions, reverse=True):
                entry = model.versions[number]
                if entry.state is VersionState.AVAILABLE and entry.servable is not None:
                    return entry.servable
        raise ServingError(Code.NOT_FOUND, f"Servable not found for request: Latest({name})")

    def status(
        self, name: str, version: int | None = None
    ) -> list[tuple[int, VersionState, ServingError | None]]:
        """GetModelStatusImpl: every known version, newest first, or just `version`."""
        model = self._models.get(name)
        if version is not None:
            entry = model.versions.get(version) if model else None
            if entry is None:
                raise ServingError(
                    Code.NOT_FOUND, f"Could not find version {version} of model {name}"
                )
            return [(version, entry.state, entry.error)]
        if model is None or not model.versions:
            raise ServingError(Code.NOT_FOUND, f"Could not find any versions of model {name}")
        return [
            (number, model.versions[number].state, model.versions[number].error)
            for number in sorted(model.versions, reverse=True)
        ]

    def available(self) -> dict[str, list[int]]:
        """AVAILABLE versions per model (for the ready line and the stats page)."""
        return {
            name: sorted(v for v, e in model.versions.items() if e.state is VersionState.AVAILABLE)
            for name, model in sorted(self._models.items())
        }

    # ------------------------------------------------------------------ loading

    def _discover_models(self) -> None:
        if self._model_base is None:
            return
        try:
            entries = sorted(os.scandir(self._model_base), key=lambda e: e.name)
        except FileNotFoundError:
            return
        for entry in entries:
            if entry.is_dir() and not entry.name.startswith(".") and entry.name not in self._models:
                self._models[entry.name] = _ModelState(ModelConfig(entry.name, Path(entry.path)))

    async def _load(self, name: str, version: int, path: Path) -> LoadedServable:
        loop = asyncio.get_running_loop()
        return await loop.run_in_executor(
            self._load_pool, self._loader, name, version, path, self._session_options
        )

    async def start(self) -> None:
        """Load every aspired version; any problem is a StartupError (the server exits)."""
        self._discover_models()
        if not self._models:
            where = self._model_base or "the model config"
            raise StartupError(
                f"no models found in {where}: expected <model>/<version>/saved_model.pb"
            )
        for name, model in sorted(self._models.items()):
            base = model.config.base_path
            if not base.is_dir():
                raise StartupError(f"model `{name}`: base path {base} does not exist")
            on_disk = version_directories(base)
            aspired = model.config.policy.aspired(list(on_disk))
            if not aspired:
                raise StartupError(
                    f"model `{name}`: no versions under {base} (expected numeric version "
                    f"directories such as {base}/1 holding saved_model.pb)"
                )
            for version in sorted(aspired):
                try:
                    servable = await self._load(name, version, on_disk[version])
                except ServableLoadError as error:
                    raise StartupError(f"model `{name}` version {version}: {error}") from None
                self._make_available(model, version, servable)
        self._check_labels()

    def _check_labels(self) -> None:
        for name, model in self._models.items():
            for label, version in model.config.labels.items():
                entry = model.versions.get(version)
                if entry is None or entry.state is not VersionState.AVAILABLE:
                    raise StartupError(
                        f"model `{name}`: version label `{label}` points to version {version}, "
                        "which is not loaded"
                    )

    def _make_available(self, model: _ModelState, version: int, servable: LoadedServable) -> None:
        if self._on_load is not None:
            self._on_load(servable)
        model.versions[version] = _VersionEntry(VersionState.AVAILABLE, servable=servable)
        log.info("model %s version %d available", model.config.name, version)

    async def poll_once(self) -> None:
        """One pass of TF Serving's file-system storage path source."""
        async with self._poll_lock:
            self._discover_models()
            for _name, model in sorted(self._models.items()):
                await self._poll_model(model)

    async def _poll_model(self, model: _ModelState) -> None:
        name = model.config.name
        on_disk = version_directories(model.config.base_path)
        aspired = model.config.policy.aspired(list(on_disk))
        for version in sorted(aspired):
            entry = model.versions.get(version)
            path = on_disk[version]
            if entry is not None and entry.state in (VersionState.AVAILABLE, VersionState.LOADING):
                continue
            if entry is not None and entry.failed_mtime is not None:
                with contextlib.suppress(OSError):
                    if path.stat().st_mtime == entry.failed_mtime:
                        continue  # failed before and unchanged since: do not retry
            model.versions[version] = _VersionEntry(VersionState.LOADING)
            try:
                servable = await self._load(name, version, path)
            except ServableLoadError as error:
                mtime = None
                with contextlib.suppress(OSError):
                    mtime = path.stat().st_mtime
                model.versions[version] = _VersionEntry(
                    VersionState.END,
                    error=ServingError(Code.UNKNOWN, str(error)),
                    failed_mtime=mtime,
                )
                log.error("model %s version %d failed to load: %s", name, version, error)
                continue
            self._make_available(model, version, servable)
        # Unload what is no longer aspired, but never the last available version unless a
        # wanted one is available (availability-preserving policy).
        wanted_available = any(
            model.versions.get(v) and model.versions[v].state is VersionState.AVAILABLE
            for v in aspired
        )
        for version, entry in sorted(model.versions.items()):
            if version in aspired or entry.state is not VersionState.AVAILABLE:
                continue
            if not wanted_available and version in on_disk:
                continue
            self._unload(model, version, entry)

    def _unload(self, model: _ModelState, version: int, entry: _VersionEntry) -> None:
        servable = entry.servable
        entry.state = VersionState.UNLOADING
        entry.servable = None
        log.info("model %s version %d unloading", model.config.name, version)
        if servable is None:
            entry.state = VersionState.END
            return
        if self._on_unload is not None:
            self._on_unload(servable)

        def finish(_: Any) -> None:
            entry.state = VersionState.END

        future = asyncio.get_running_loop().run_in_executor(None, servable.wait_idle_and_close)
        future.add_done_callback(finish)

    async def poll_forever(self, interval_seconds: float) -> None:
        """Poll the file system until cancelled."""
        while True:
            await asyncio.sleep(interval_seconds)
            try:
                await self.poll_once()
            except Exception:  # a broken poll must not stop serving
                log.exception("model directory poll failed")

    async def close(self) -> None:
        """Unload everything (server shutdown)."""
        loop = asyncio.get_running_loop()
        for model in self._models.values():
            for entry in model.versions.values():
                if entry.servable is not None:
                    servable = entry.servable
                    entry.servable = None
                    entry.state = VersionState.END
                    await loop.run_in_executor(None, servable.wait_idle_and_close)
        self._load_pool.shutdown(wait=False)


def configs_from_model_base(model_base: Path) -> list[ModelConfig]:
    """One model per sub-directory of `model_base` (checked at start-up)."""
    if not model_base.exists():
        raise StartupError(f"--model-base {model_base}: directory does not exist")
    if not model_base.is_dir():
        raise StartupError(f"--model-base {model_base}: not a directory")
    return [
        ModelConfig(entry.name, Path(entry.path))
        for entry in sorted(os.scandir(model_base), key=lambda e: e.name)
        if entry.is_dir() and not entry.name.startswith(".")
    ]


def configs_from_config_file(path: Path, *, relative_to: Path | None = None) -> list[ModelConfig]:
    """Models of a TF Serving `--model_config_file` (text ModelServerConfig)."""
    from google.protobuf import text_format
    from tensorflow_serving.config import model_server_config_pb2

    try:
        text = path.read_text()
    except OSError as error:
        raise StartupError(f"--model-config-file {path}: {error.strerror}") from None
    config = model_server_config_pb2.ModelServerConfig()
    try:
        text_format.Parse(text, config)
    except text_format.ParseError as error:
        raise StartupError(f"{path}:{error}") from None
    if config.WhichOneof("config") != "model_config_list":
        raise StartupError(f"{path}: expected a `model_config_list`")
    return configs_from_proto(config, relative_to)


def configs_from_proto(config: Any, relative_to: Path | None = None) -> list[ModelConfig]:
    """ModelConfig entries of a ModelServerConfig proto."""
    models: list[ModelConfig] = []
    for entry in config.model_config_list.config:
        if not entry.name:
            raise StartupError("model config entry without a `name`")
        base = Path(entry.base_path)
        if relative_to is not None and not base.is_absolute():
            base = relative_to / base
        policy_kind = entry.model_version_policy.WhichOneof("policy_choice") or "latest"
        if policy_kind == "latest":
            policy = VersionPolicy(
                "latest", latest=entry.model_version_policy.latest.num_versions or 1
            )
        elif policy_kind == "all":
            policy = VersionPolicy("all")
        else:
            policy = VersionPolicy(
                "specific", specific=frozenset(entry.model_version_policy.specific.versions)
            )
        models.append(ModelConfig(entry.name, base, policy, dict(entry.version_labels)))
    return models
