"""docker-compose.yml, models.config and batching.config agree with the export layout."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import yaml

from model_server.batching import batching_parameters_message, read_batching_parameters
from model_server.registry import configs_from_config_file

REPO = Path(__file__).resolve().parents[2]


def compose() -> dict[str, Any]:
    return yaml.safe_load((REPO / "docker-compose.yml").read_text())  # type: ignore[no-any-return]


def mount_target(service: dict[str, Any], source: str) -> str:
    for volume in service["volumes"]:
        host, target, *_ = volume.split(":")
        if host == source:
            return str(target)
    raise AssertionError(f"{source} is not mounted")


def test_services_volumes_and_network() -> None:
    doc = compose()
    assert set(doc["services"]) >= {"model-trainer", "tfserving"}
    assert doc["volumes"]["models"]["name"] == "jurisgate-models"
    assert doc["networks"]["backend"] == {"name": "jurisgate-backend", "internal": True}
    assert doc["networks"]["edge"]["name"] == "jurisgate-edge"
    # TF Serving and the gateway share the internal network; the trainer needs the index.
    assert doc["services"]["tfserving"]["networks"] == ["backend"]
    assert set(doc["services"]["gateway"]["networks"]) == {"edge", "backend"}
    assert doc["services"]["model-trainer"]["networks"] == ["edge"]


def test_trainer_fills_the_directory_tfserving_loads() -> None:
    doc = compose()
    trainer, serving = doc["services"]["model-trainer"], doc["services"]["tfserving"]
    assert serving["depends_on"]["model-trainer"]["condition"] == "service_completed_successfully"
    assert trainer["restart"] == "no"
    trainer_models = mount_target(trainer, "models")
    script = " ".join(trainer["command"])
    assert f"--model-base {trainer_models}" in script and "--name mnist" in script
    serving_models = mount_target(serving, "models")
    assert serving_models == trainer_models

    flags = dict(flag.split("=", 1) for flag in serving["command"])
    config_path = flags["--model_config_file"]
    batching_path = flags["--batching_parameters_file"]
    assert flags["--enable_batching"] == "true"
    assert mount_target(serving, "./model_server/models.config") == config_path
    assert mount_target(serving, "./model_server/batching.config") == batching_path

    # models.config, parsed with TF Serving's own ModelServerConfig proto.
    models = configs_from_config_file(REPO / "model_server" / "models.config")
    assert [(m.name, str(m.base_path)) for m in models] == [("mnist", f"{trainer_models}/mnist")]
    assert models[0].policy.kind == "latest" and models[0].policy.latest == 1


def test_ports_and_health_check() -> None:
    serving = compose()["services"]["tfserving"]
    # Both ports stay on the internal network: only the gateway publishes a port.
    assert "ports" not in serving and serving["expose"] == ["8500", "8501"]
    check = " ".join(serving["healthcheck"]["test"])
    assert "8501" in check and "/v1/models/mnist" in check and "AVAILABLE" in check
    assert serving["image"].startswith("tensorflow/serving:")


def test_batching_file_is_a_valid_batching_parameters_message() -> None:
    from google.protobuf import text_format

    message = batching_parameters_message()()
    text_format.Parse((REPO / "model_server" / "batching.config").read_text(), message)
    assert message.max_batch_size.value == 32
    assert read_batching_parameters(REPO / "model_server" / "batching.config").max_batch_size == 32
