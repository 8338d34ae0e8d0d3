"""`jurisgate up`: the embedded default, end to end, in one command.

Trains the CNN if no model exists, starts the embedded TF-Serving-compatible model server
behind the gateway, and runs the gateway with the shipped policies, a demo tenant and a
default tenant for keyless local callers, on the port TF Serving clients expect (8501).
Everything it creates lives in the work directory (`./var/jurisgate` by default) and is
reused on the next start: model, signing key, keyring, tenants, admin token, audit log.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import secrets
import signal
import subprocess
import sys
import time
import urllib.error
import urllib.request
from pathlib import Path
from typing import Any

from gateway.commands import exitcodes
from gateway.commands.serve import add_log_format_argument

DEMO_TENANT = "demo"
LOCAL_TENANT = "local-dev"
DEMO_PURPOSE = "document_classification"


def register(subparsers: Any) -> None:
    """Add the `up` command."""
    parser = subparsers.add_parser(
        "up",
        help="train if needed, start the model server and the gateway (the embedded default)",
        description="Run the whole product locally: embedded model server behind the gateway.",
    )
    parser.add_argument("--workdir", type=Path, default=Path("var/jurisgate"))
    parser.add_argument("--policies", type=Path, default=None, help="policy directory")
    parser.add_argument("--host", default="127.0.0.1", help="gateway listen address")
    parser.add_argument("--port", type=int, default=8501, help="gateway port (TF Serving REST)")
    parser.add_argument(
        "--grpc-port", type=int, default=8500, help="gateway port (TF Serving gRPC)"
    )
    parser.add_argument("--admin-port", type=int, default=8601)
    parser.add_argument("--backend-port", type=int, default=8511, help="model server REST port")
    parser.add_argument("--backend-grpc-port", type=int, default=8510)
    parser.add_argument("--epochs", type=int, default=None, help="training epochs (first run)")
    add_log_format_argument(parser)
    parser.set_defaults(func=run)


def _shipped_policies() -> Path | None:
    candidate = Path(__file__).resolve().parents[2] / "policies"
    return candidate if (candidate / "vocabulary.yaml").exists() else None


def _quiet_tensorflow() -> dict[str, str]:
    """The environment for the model server: TensorFlow's start-up notices (oneDNN, CUDA
    stubs: its INFO and WARNING lines) are its internals, not the operator's business; a
    value the operator set wins."""
    env = dict(os.environ)
    env.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")
    return env


def _say(text: str) -> None:
    print(f"jurisgate up: {text}", flush=True)


def _write_secret(path: Path, value: str) -> None:
    fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
    with os.fdopen(fd, "w") as handle:
        handle.write(value + "\n")


def _model_card(model_base: Path) -> dict[str, Any]:
    versions = sorted(
        (p for p in (model_base / "mnist").glob("*") if p.is_dir() and p.name.isdigit()),
        key=lambda p: int(p.name),
    )
    for version in reversed(versions):
        for name in ("model_card.json", "model-card.json"):
            for card in (version / name, version.parent / f"{version.name}.{name}"):
                if card.exists():
                    data: dict[str, Any] = json.loads(card.read_text())
                    return data
    return {}


def _has_model(model_base: Path) -> bool:
    return any(
        p.is_dir() and p.name.isdigit() and (p / "saved_model.pb").exists()
        for p in (model_base / "mnist").glob("*")
    )


def _prepare(args: argparse.Namespace, policies: Path) -> tuple[Path, str]:
    """Create what is missing in the work directory; return the config path and demo key."""
    from gateway.cli import main as cli_main
    from gateway.request.tenants import generate_api_key, hash_api_key

    work = args.workdir.resolve()
    (work / "keys").mkdir(parents=True, exist_ok=True)
    key_file = work / "keys" / "audit-signing-key.pem"
    if not key_file.exists():
        code = cli_main(
            ["keys", "generate", "--out", str(key_file), "--name", "jurisgate.local",
             "--keyring", str(work / "keys" / "trusted-keys.json")]
        )  # fmt: skip
        if code != 0:
            raise SystemExit(code)
    token_file = work / "admin-token"
    if not token_file.exists():
        _write_secret(token_file, secrets.token_urlsafe(24))
    demo_key_file = work / "demo-api-key"
    if not demo_key_file.exists():
        _write_secret(demo_key_file, generate_api_key())
    demo_key = demo_key_file.read_text().strip()
    _write_editor_schemas(work)
    tenants = work / "tenants.yaml"
    if not tenants.exists():
        tenants.write_text(
            f"{_modeline('tenants')}\n"
            "# Tenants of the local demo. Add one with: jurisgate tenants add --file "
            f"{tenants} --id NAME\n"
            "tenants:\n"
            f"  - id: {DEMO_TENANT}\n"
            f'    api_key_hashes: ["{hash_api_key(demo_key)}"]\n'
            "    established_in: DE\n"
            f"    registered_purposes: [{DEMO_PURPOSE}]\n"
            "    mask_pd_in_free_text: true\n"
            f"  - id: {LOCAL_TENANT}\n"
            "    established_in: DE\n"
            f"    registered_purposes: [{DEMO_PURPOSE}]\n"
            "    mask_pd_in_free_text: true\n"
        )
    card = _model_card(work / "models")
    licence_id = str(card.get("licence") or card.get("license") or "Apache-2.0")
    if isinstance(card.get("licence"), dict):
        licence_id = str(card["licence"].get("spdx") or card["licence"].get("id"))
    config = work / "jurisgate.yaml"
    if config.exists():
        return config, demo_key
    config.write_text(
        f"""{_modeline("config")}
# Written by `jurisgate up`; edit freely, it is rewritten only when deleted.
# Every key is documented in docs/configuration.md.
version: 1
deployment: jurisgate.local
instance: up
# One process and one audit log, the one the README's audit commands name; `workers: 0` runs
# one worker per core, each with its own log under audit/w<k>.
workers: 1
listen: {{host: "{args.host}", port: {args.port}}}
grpc: {{enabled: true, host: "{args.host}", port: {args.grpc_port}}}
admin: {{enabled: true, host: 127.0.0.1, port: {args.admin_port}, token: {{file: admin-token}}}}
operator:
  name: Jurisgate demo operator
  established_in: DE
  blocking_entity_uri: "http://127.0.0.1:{args.port}/legal/blocking-entity"
policies: {{paths: ["{policies}"], watch: true}}
tenants: {{file: tenants.yaml, default_tenant: {LOCAL_TENANT}}}
models:
  - {{id: mnist, kind: classifier, output: labels, placed_on_market: "2026-01-01"}}
licences:
  - {{id: LIC-MNIST-DEMO, model: mnist, licensee: "*", kind: public, spdx: "{licence_id}",
     commercial_use: allowed, valid_from: "2025-01-01"}}
backends:
  - {{id: local, url: "http://127.0.0.1:{args.backend_port}", region: DE, models: [mnist],
     grpc: "127.0.0.1:{args.backend_grpc_port}"}}
routing: {{default_by_caller_region: {{other: local}}}}
network:
  geoip:
    entries:
      - {{cidr: 127.0.0.0/8, region: DE}}
      - {{cidr: "::1/128", region: DE}}
audit:
  directory: audit
  signing_key: keys/audit-signing-key.pem
"""
    )
    return config, demo_key


def _modeline(schema: str) -> str:
    """The comment that points a YAML language server at the schema beside the file."""
    return f"# yaml-language-server: $schema=schemas/{schema}.schema.json"


def _write_editor_schemas(work: Path) -> None:
    """Write the schemas the written files name, rendered by the running version.

    Written on every start rather than pointing into a checkout, which an installed package
    does not have; an upgrade then brings its editors the schema it enforces.
    """
    from gateway.config.json_schemas import render

    target = work / "schemas"
    target.mkdir(exist_ok=True)
    for name in ("config", "tenants"):
        (target / f"{name}.schema.json").write_text(render(name), encoding="utf-8")


def _wait_for_model(url: str, process: subprocess.Popen[bytes], deadline_s: float) -> None:
    end = time.monotonic() + deadline_s
    while time.monotonic() < end:
        if process.poll() is not None:
            raise SystemExit(f"jurisgate up: the model server exited with {process.returncode}")
        try:
            with urllib.request.urlopen(url, timeout=1) as resp:
                if b"AVAILABLE" in resp.read():
                    return
        except (urllib.error.URLError, OSError):
            pass
        time.sleep(0.2)
    raise SystemExit(f"jurisgate up: the model server did not become ready at {url}")


def _banner(args: argparse.Namespace, demo_key: str, work: Path) -> None:
    base = f"http://{args.host}:{args.port}/v1/models/mnist"
    example = Path(__file__).resolve().parents[2] / "examples"
    digit = example / "digit.json"
    noted = example / "digit-with-note.json"
    print(
        f"""
Jurisgate is up: TF Serving clients use {base} (REST) and {args.host}:{args.grpc_port}
(gRPC) unchanged.
  model server (embedded TF Serving)  127.0.0.1:{args.backend_port} (REST) and \
127.0.0.1:{args.backend_grpc_port} (gRPC): loopback only, behind the gateway
  admin (token in {work / "admin-token"})  http://127.0.0.1:{args.admin_port}/metrics
  audit log  {work / "audit"}   trusted keys  {work / "keys" / "trusted-keys.json"}

Try it (the shipped policies decide):
  allowed, relayed unchanged:
    curl -s {base}:predict -H 'X-Purpose: {DEMO_PURPOSE}' -d @{digit}
  masked before the model sees it (GDPR minimisation; the `annotated` signature echoes the note):
    curl -s {base}:predict -H 'X-Purpose: {DEMO_PURPOSE}' -d @{noted}
  refused with 451 (an untrusted region claim can only make a decision stricter: sanctions):
    curl -s {base}:predict -H 'X-Purpose: {DEMO_PURPOSE}' -H 'X-Geo-Country: IR' -d @{digit}
  over gRPC with TF Serving's own client stubs (the same policies, masking and audit):
    python {example / "grpc_predict.py"} {args.host}:{args.grpc_port} --note 'mail anna@example.de'
  as the demo tenant (API key in {work / "demo-api-key"}):
    curl -s {base}:predict -H 'X-Api-Key: {demo_key[:6]}...' -H 'X-Purpose: {DEMO_PURPOSE}' \\
      -d @{digit}
Ctrl-C stops both.""",
        flush=True,
    )


def run(args: argparse.Namespace) -> int:
    """Start everything; return when interrupted."""
    from gateway.commands.serve import event_loop_factory
    from gateway.edge.app import run_gateway
    from gateway.edge.logs import configure_logging

    configure_logging("WARNING", args.log_format)
    policies = (args.policies or _shipped_policies() or Path("policies")).resolve()
    if not (policies / "vocabulary.yaml").exists():
        print(
            f"jurisgate up: --policies `{policies}` holds no vocabulary.yaml\n"
            "  help: run from a checkout, or point --policies at a policy directory",
            file=sys.stderr,
        )
        return exitcodes.USAGE
    work = args.workdir.resolve()
    model_base = work / "models"
    if not _has_model(model_base):
        _say(f"no model in {model_base}: training the CNN (first run only)")
        train = [sys.executable, "-m", "model_server", "train", "--model-base", str(model_base)]
        if args.epochs:
            train += ["--epochs", str(args.epochs)]
        if subprocess.run(train, check=False, env=_quiet_tensorflow()).returncode != 0:
            _say("training failed")
            return exitcodes.ERROR
    config, demo_key = _prepare(args, policies)
    if "\ngrpc:" not in config.read_text(encoding="utf-8"):
        _say(
            f"{config} was written by an earlier version and has no gRPC door; delete it to "
            f"have it written again with gRPC on {args.grpc_port}"
        )
    _say(f"starting the model server on 127.0.0.1:{args.backend_port}")
    server = subprocess.Popen(
        [sys.executable, "-m", "model_server", "serve", "--model-base", str(model_base),
         "--host", "127.0.0.1", "--rest-port", str(args.backend_port),
         "--grpc-port", str(args.backend_grpc_port)],
        stdout=subprocess.DEVNULL,
        env=_quiet_tensorflow(),
    )  # fmt: skip
    try:
        _wait_for_model(f"http://127.0.0.1:{args.backend_port}/v1/models/mnist", server, 180)

        def ready(url: str) -> None:
            _banner(args, demo_key, work)

        with asyncio.Runner(loop_factory=event_loop_factory()) as runner:
            return runner.run(run_gateway(config, ready=ready))
    finally:
        if server.poll() is None:
            server.send_signal(signal.SIGTERM)
            try:
                server.wait(timeout=20)
            except subprocess.TimeoutExpired:
                server.kill()
        _say("stopped")
