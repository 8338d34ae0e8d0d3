"""The compose deployment agrees with itself: gateway config, TF Serving configs, training
output and the gateway image all name the same ports, paths and models."""

from __future__ import annotations

import re
from pathlib import Path

import yaml
from google.protobuf import text_format
from tensorflow_serving.config import model_server_config_pb2

from gateway.config.loader import GatewayConfig, load_config
from gateway.request.tenants import TenantRegistry

ROOT = Path(__file__).resolve().parents[2]


def _compose_text() -> str:
    return (ROOT / "docker-compose.yml").read_text()


def _compose() -> dict:  # type: ignore[type-arg]
    return yaml.safe_load(_compose_text())


def test_gateway_service_fronts_tf_serving() -> None:
    services = _compose()["services"]
    gateway, serving = services["gateway"], services["tfserving"]
    assert gateway["ports"][:2] == ["8501:8501", "8500:8500"]
    assert gateway["depends_on"]["tfserving"]["condition"] == "service_healthy"
    assert serving["depends_on"]["model-trainer"]["condition"] == "service_completed_successfully"
    assert "8501:8501" not in serving.get("ports", [])
    assert "readyz" in " ".join(gateway["healthcheck"]["test"])
    mounts = {m.split(":")[1]: m.split(":")[0] for m in gateway["volumes"]}
    assert mounts["/etc/jurisgate/jurisgate.yaml"] == "./deploy/jurisgate.yaml"
    assert mounts["/opt/jurisgate/policies"] == "./policies"
    assert mounts["/var/lib/jurisgate/audit"] == "audit"
    assert "audit" in _compose()["volumes"]


def test_only_the_gateway_publishes_a_port() -> None:
    compose = _compose()
    services = compose["services"]
    publishing = sorted(name for name, service in services.items() if service.get("ports"))
    assert publishing == ["gateway"], "a published backend port bypasses the gateway"
    # TF Serving sits on an internal network that only the gateway shares.
    serving_networks = set(services["tfserving"]["networks"])
    for name in serving_networks:
        assert compose["networks"][name].get("internal") is True
    sharing = sorted(
        name for name, service in services.items()
        if serving_networks & set(service.get("networks", ())) and name != "tfserving"
    )  # fmt: skip
    assert sharing == ["gateway"]
    assert not any("network_mode" in service for service in services.values())


def _deploy_config(tmp_path: Path) -> GatewayConfig:
    # The HMAC key is a compose secret under /run/secrets; here a stand-in file.
    hmac_key = tmp_path / "audit-hmac.key"
    hmac_key.write_text("00" * 32)
    env = {"JURISGATE_ADMIN_TOKEN": "t" * 24, "JURISGATE__AUDIT__HMAC_KEY__FILE": str(hmac_key)}
    return load_config(ROOT / "deploy" / "jurisgate.yaml", env)


def test_gateway_config_names_the_compose_backend_and_model(tmp_path: Path) -> None:
    config = _deploy_config(tmp_path)
    services = _compose()["services"]
    (backend,) = config.backends
    assert backend.url == "http://tfserving:8501" and backend.grpc == "tfserving:8500"
    assert config.grpc.enabled and config.grpc.port == 8500
    assert "tfserving" in services
    served = text_format.Parse(
        (ROOT / "model_server" / "models.config").read_text(),
        model_server_config_pb2.ModelServerConfig(),
    )
    names = {c.name for c in served.model_config_list.config}
    assert set(backend.models) <= names
    # The trainer writes <base>/<name>/<version>; TF Serving reads base_path /models/<name>.
    trainer = " ".join(services["model-trainer"]["command"])
    assert "--model-base /models" in trainer and "--name mnist" in trainer
    for model in served.model_config_list.config:
        assert model.base_path == f"/models/{model.name}"
    # Paths inside the gateway image: policies where the Dockerfile copies them, the audit
    # log and key on the mounted volume, the listen port the image exposes.
    dockerfile = (ROOT / "Dockerfile").read_text()
    assert "COPY policies ./policies" in dockerfile and "WORKDIR /opt/jurisgate" in dockerfile
    assert [str(p) for p in config.policy_paths] == ["/opt/jurisgate/policies"]
    assert str(config.audit.directory).startswith("/var/lib/jurisgate/")
    assert re.search(rf"EXPOSE .*\b{config.listen_port}\b", dockerfile)
    assert "--name jurisgate.compose" in _compose_text()
    assert config.deployment == "jurisgate.compose"
    # The tenants file it mounts loads, and the default tenant exists.
    tenants = TenantRegistry.load(ROOT / "deploy" / "tenants.yaml")
    assert config.default_tenant is not None and tenants.get(config.default_tenant)


HARDENED = ("gateway", "tfserving")


def test_services_are_hardened_and_limited() -> None:
    services = _compose()["services"]
    for name in HARDENED:
        service = services[name]
        assert service["read_only"] is True, name
        assert service["cap_drop"] == ["ALL"], name
        assert "no-new-privileges:true" in service["security_opt"], name
        assert service["mem_limit"] and service["cpus"] and service["pids_limit"], name


def test_audit_keys_are_secrets_apart_from_the_log(tmp_path: Path) -> None:
    compose = _compose()
    gateway = compose["services"]["gateway"]
    secrets = compose["secrets"]
    assert set(gateway["secrets"]) == {"audit_signing_key", "audit_hmac_key"} <= set(secrets)
    for secret in secrets.values():
        assert secret["file"].startswith("./deploy/secrets/")
    assert "/deploy/secrets/" in (ROOT / ".gitignore").read_text()
    config = _deploy_config(tmp_path)
    assert config.audit.signing_key == Path("/run/secrets/audit_signing_key")
    assert config.audit.hmac_key == b"00" * 32
    # The only volume the gateway writes holds the log and nothing else.
    writable = [v for v in gateway["volumes"] if not v.endswith(":ro")]
    assert writable == [f"audit:{config.audit.directory}"]
    assert "keys generate" not in " ".join(gateway.get("entrypoint", []))


def test_image_runs_as_a_numeric_user_with_a_healthcheck_and_pinned_dependencies() -> None:
    dockerfile = (ROOT / "Dockerfile").read_text()
    user = re.search(r"^USER (\S+)$", dockerfile, re.M)
    assert user and re.fullmatch(r"[1-9][0-9]*(:[0-9]+)?", user.group(1))
    assert re.search(r"^HEALTHCHECK .*healthz", dockerfile, re.M | re.S)
    assert "pip install -c constraints.txt ." in dockerfile
    pins = [
        line for line in (ROOT / "constraints.txt").read_text().splitlines()
        if line and not line.startswith("#")
    ]  # fmt: skip
    assert pins and all(re.fullmatch(r"[a-z0-9-]+==[0-9][^ ]*", p) for p in pins), pins
    names = {p.split("==")[0] for p in pins}
    import tomllib

    declared = tomllib.loads((ROOT / "pyproject.toml").read_text())["project"]["dependencies"]
    wanted = {
        re.split(r"[<>=!~; \[]", d, maxsplit=1)[0].lower().replace("_", "-") for d in declared
    }
    assert wanted <= names, wanted - names


def test_the_trainer_is_an_image_stage_that_installs_nothing_at_start() -> None:
    trainer = _compose()["services"]["model-trainer"]
    assert trainer["build"] == {"context": ".", "target": "trainer"}
    command = " ".join(trainer["command"])
    assert "pip" not in command and "python -m model_server train" in command
    assert trainer["read_only"] is True and trainer["cap_drop"] == ["ALL"]
    dockerfile = (ROOT / "Dockerfile").read_text()
    stages = re.findall(r"^FROM \S+ AS (\S+)$", dockerfile, re.M)
    assert stages == ["trainer", "gateway"]  # `docker build .` gives the gateway
    trainer_stage = dockerfile.split("AS gateway")[0]
    installs = re.findall(r'"([a-z-]+)([=<>!~]=?)[^"]*"', trainer_stage)
    assert installs and all(op == "==" for _, op in installs), installs
