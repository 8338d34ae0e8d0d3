"""The Kubernetes manifests under deploy/kubernetes/ validate offline against the Kubernetes
schemas, and agree with the gateway: the pod's configuration, rendered with its volumes and
its downward-API environment, passes `jurisgate config check`, and each log's origin names
its pod (and its worker)."""

from __future__ import annotations

import importlib.util
import math
from pathlib import Path
from types import ModuleType
from typing import Any

import kubernetes_validate
import pytest
import yaml

from gateway.cli import main as cli_main
from gateway.config.loader import WORKER_ENV, load_config
from tests.gateway.test_configmap_reload import project
from tests.plugins.gateway import make_signing_key

ROOT = Path(__file__).resolve().parents[1]
MANIFESTS = ROOT / "deploy" / "kubernetes"
#: The Kubernetes version the manifests are validated against (schemas bundled with the
#: pinned kubernetes-validate: no network).
KUBERNETES_VERSION = "1.37.0"
POD = "jurisgate-1"


def _tool() -> ModuleType:
    spec = importlib.util.spec_from_file_location(
        "kubernetes_policies", ROOT / "tools" / "kubernetes_policies.py"
    )
    assert spec is not None and spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def _documents() -> list[tuple[str, dict[str, Any]]]:
    return [
        (path.name, document)
        for path in sorted(MANIFESTS.glob("*.yaml"))
        for document in yaml.safe_load_all(path.read_text())
        if document
    ]


def _one(kind: str, name: str) -> dict[str, Any]:
    (found,) = [d for _, d in _documents() if d["kind"] == kind and d["metadata"]["name"] == name]
    return found


def _gateway_container() -> dict[str, Any]:
    (container,) = _one("StatefulSet", "jurisgate")["spec"]["template"]["spec"]["containers"]
    return container


@pytest.mark.parametrize(
    "name,document", _documents(), ids=lambda v: v if isinstance(v, str) else v["kind"]
)
def test_every_manifest_validates_against_the_kubernetes_schemas(
    name: str, document: dict[str, Any]
) -> None:
    # strict: an unknown field (a typo) is an error, not ignored.
    kubernetes_validate.validate(document, KUBERNETES_VERSION, strict=True)


def test_the_policy_configmap_and_its_items_are_generated_from_policies() -> None:
    tool = _tool()
    assert (MANIFESTS / "policies.yaml").read_text() == tool.render(), (
        "regenerate: python tools/kubernetes_policies.py"
    )
    gateway = (MANIFESTS / "gateway.yaml").read_text()
    assert tool.with_items(gateway) == gateway, "regenerate: python tools/kubernetes_policies.py"


def test_tf_serving_reads_the_model_servers_configuration() -> None:
    data = _one("ConfigMap", "tfserving-config")["data"]
    assert data["models.config"] == (ROOT / "model_server" / "models.config").read_text()
    assert data["batching.config"] == (ROOT / "model_server" / "batching.config").read_text()


def _pod_environment(container: dict[str, Any]) -> dict[str, str]:
    """The container's environment as the kubelet resolves it for pod `POD`."""
    env: dict[str, str] = {}
    for entry in container["env"]:
        source = entry.get("valueFrom", {})
        if "value" in entry:
            env[entry["name"]] = entry["value"]
        elif "fieldRef" in source:
            assert source["fieldRef"]["fieldPath"] == "metadata.name"
            env[entry["name"]] = POD
        elif "resourceFieldRef" in source:
            ref = source["resourceFieldRef"]
            assert ref["containerName"] == container["name"] and ref["divisor"] == "1"
            limit = container["resources"]["limits"][ref["resource"].split(".", 1)[1]]
            cores = float(limit[:-1]) / 1000 if limit.endswith("m") else float(limit)
            env[entry["name"]] = str(math.ceil(cores))  # the kubelet rounds up
        elif "secretKeyRef" in source:
            env[entry["name"]] = "a-token-from-the-secret-0123456789"
    return env


def _render_pod(tmp: Path) -> tuple[Path, dict[str, str], dict[str, Path]]:
    """The gateway pod's files under `tmp`: its volumes laid out as the kubelet does, and the
    environment that points the configuration's absolute paths at them."""
    statefulset = _one("StatefulSet", "jurisgate")
    spec = statefulset["spec"]["template"]["spec"]
    container = _gateway_container()
    volumes = {v["name"]: v for v in spec["volumes"]}
    claims = {c["metadata"]["name"] for c in statefulset["spec"]["volumeClaimTemplates"]}
    mounts: dict[str, Path] = {}
    for mount in container["volumeMounts"]:
        local = tmp / mount["mountPath"].lstrip("/")
        mounts[mount["mountPath"]] = local
        volume = volumes.get(mount["name"])
        if mount["name"] in claims or (volume is not None and "emptyDir" in volume):
            local.mkdir(parents=True, exist_ok=True)
        elif volume is not None and "configMap" in volume:
            config_map = _one("ConfigMap", volume["configMap"]["name"])
            items = volume["configMap"].get("items")
            paths = {i["key"]: i["path"] for i in items} if items else {}
            files = {paths.get(key, key): text for key, text in config_map["data"].items()}
            if items:  # only the listed keys are in the volume
                assert set(paths) == set(config_map["data"]), "every key has its item"
            project(local, files, "2026_01_01_00_00_00.1")
        elif volume is not None and "secret" in volume:
            # What the operator puts in the Secret (docs/operations.md).
            key = make_signing_key(tmp / "keys-made", "jurisgate.k8s")
            files = {"audit-signing-key.pem": key.read_text(), "audit-hmac.key": "00" * 32}
            assert {i["path"] for i in volume["secret"]["items"]} == set(files)
            project(local, files, "2026_01_01_00_00_00.1")
        else:
            raise AssertionError(f"volume {mount['name']} is not defined")
    args = container["args"]
    config_path = Path(args[args.index("--config") + 1])
    return _local(config_path, mounts), _pod_environment(container), mounts


def _local(path: Path | str, mounts: dict[str, Path]) -> Path:
    """Where the pod's absolute `path` is in the rendered pod (it must be on a volume)."""
    text = str(path)
    for mount_path, local in sorted(mounts.items(), key=lambda m: -len(m[0])):
        if text == mount_path or text.startswith(mount_path + "/"):
            return local / text[len(mount_path) :].lstrip("/")
    raise AssertionError(f"{text} is on no volume of the gateway container")


def _pod_config_environment(
    tmp: Path, config_path: Path, env: dict[str, str], mounts: dict[str, Path]
) -> dict[str, str]:
    """`env` plus overrides that move each configured path onto the rendered volumes."""
    data = yaml.safe_load(config_path.read_text())
    audit = data["audit"]
    return {
        **env,
        "JURISGATE__POLICIES__PATHS": ",".join(
            str(_local(p, mounts)) for p in data["policies"]["paths"]
        ),
        "JURISGATE__TENANTS__FILE": str(_local(data["tenants"]["file"], mounts)),
        "JURISGATE__AUDIT__DIRECTORY": str(_local(audit["directory"], mounts)),
        "JURISGATE__AUDIT__SIGNING_KEY": str(_local(audit["signing_key"], mounts)),
        "JURISGATE__AUDIT__HMAC_KEY__FILE": str(_local(audit["hmac_key"]["file"], mounts)),
    }


def test_the_pods_configuration_passes_config_check_and_names_the_pod(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    config_path, env, mounts = _render_pod(tmp_path)
    full = _pod_config_environment(tmp_path, config_path, env, mounts)
    for name, value in full.items():
        monkeypatch.setenv(name, value)
    assert cli_main(["config", "check", str(config_path)]) == 0, capsys.readouterr().err
    config = load_config(config_path, full)
    assert config.origin == f"jurisgate.k8s/{POD}"
    assert config.workers == 2  # the CPU limit
    # Each worker's log: the pod's volume, the pod name and the worker in the origin.
    worker = load_config(config_path, {**full, WORKER_ENV: "1"})
    assert worker.origin == f"jurisgate.k8s/{POD}/w1"
    claim = mounts["/var/lib/jurisgate/audit"]
    assert worker.audit.directory == claim / "w1"
    # The keys come from the Secret's volume, never from the log's.
    assert _local("/etc/jurisgate/keys", mounts) in worker.audit.signing_key.parents
    assert claim not in worker.audit.signing_key.parents


def test_probes_services_and_budget_select_the_gateway() -> None:
    statefulset = _one("StatefulSet", "jurisgate")
    labels = statefulset["spec"]["template"]["metadata"]["labels"]
    container = _gateway_container()
    ports = {p["name"]: p["containerPort"] for p in container["ports"]}
    config = yaml.safe_load(_one("ConfigMap", "jurisgate-config")["data"]["jurisgate.yaml"])
    assert ports == {"http": config["listen"]["port"], "grpc": config["grpc"]["port"],
                     "admin": config["admin"]["port"]}  # fmt: skip
    assert container["readinessProbe"]["httpGet"] == {"path": "/readyz", "port": "http"}
    assert container["livenessProbe"]["httpGet"] == {"path": "/healthz", "port": "http"}
    service = _one("Service", "jurisgate")
    assert service["spec"]["selector"].items() <= labels.items()
    assert {p["name"] for p in service["spec"]["ports"]} == {"http", "grpc"}
    assert statefulset["spec"]["serviceName"] == "jurisgate-pods"
    assert _one("Service", "jurisgate-pods")["spec"]["clusterIP"] == "None"
    budget = _one("PodDisruptionBudget", "jurisgate")
    assert budget["spec"]["selector"]["matchLabels"].items() <= labels.items()
    (claim,) = statefulset["spec"]["volumeClaimTemplates"]
    mounted = {m["name"]: m["mountPath"] for m in container["volumeMounts"]}
    assert mounted[claim["metadata"]["name"]] == config["audit"]["directory"]
    # The grace period covers the workers' drain.
    assert statefulset["spec"]["template"]["spec"]["terminationGracePeriodSeconds"] >= 30


def test_only_the_gateway_reaches_tf_serving() -> None:
    gateway_labels = _one("StatefulSet", "jurisgate")["spec"]["template"]["metadata"]["labels"]
    serving = _one("Deployment", "tfserving")
    serving_labels = serving["spec"]["template"]["metadata"]["labels"]
    policy = _one("NetworkPolicy", "tfserving-only-from-jurisgate")["spec"]
    assert policy["podSelector"]["matchLabels"].items() <= serving_labels.items()
    assert policy["policyTypes"] == ["Ingress"]
    (rule,) = policy["ingress"]
    (source,) = rule["from"]
    assert set(source) == {"podSelector"}, "no namespace or address range besides the gateway"
    assert source["podSelector"]["matchLabels"].items() <= gateway_labels.items()
    # The trainer Job's pods (and anything else) do not match it.
    trainer = _one("Job", "model-trainer")["spec"]["template"]["metadata"]["labels"]
    assert not source["podSelector"]["matchLabels"].items() <= trainer.items()
    # The gateway's backend is that Service, on the ports the policy opens.
    service = _one("Service", "tfserving")
    assert service["spec"]["type"] == "ClusterIP"
    config = yaml.safe_load(_one("ConfigMap", "jurisgate-config")["data"]["jurisgate.yaml"])
    (backend,) = config["backends"]
    opened = {p["port"] for p in rule["ports"]}
    assert backend["url"] == f"http://tfserving:{8501}" and 8501 in opened
    assert backend["grpc"] == "tfserving:8500" and 8500 in opened
    assert {p["port"] for p in service["spec"]["ports"]} == opened
