"""Tenants: loading with located errors, authentication, and the `jurisgate tenants` CLI."""

from __future__ import annotations

import hashlib
import json
from pathlib import Path

import pytest

from gateway.cli import main
from gateway.commands.tenants import insert_tenant
from gateway.errors import DiagnosticError
from gateway.request import tenants as tenants_module
from gateway.request.tenants import (
    Authentication,
    AuthFailure,
    TenantRegistry,
    generate_api_key,
    hash_api_key,
)


def _hash(key: str) -> str:
    return "sha256:" + hashlib.sha256(key.encode()).hexdigest()


TENANTS = f"""\
# tenants of the scenario file (keys as hashes only)
tenants:
  - id: acme-eu
    api_key_hashes: ["{_hash("key-acme-eu")}"]
    established_in: DE
    registered_purposes: [product_catalog_tagging, quality_inspection]
    mask_pd_in_free_text: true
  - id: westmart-us
    api_key_hashes: ["{_hash("key-westmart-us")}", "{_hash("key-westmart-us-2")}"]
    established_in: us-ca
    registered_purposes: [product_catalog_tagging]
    ccpa_business: true
    share_request_events_with: [adtech-partner]
    flags: {{mask_pd_in_free_text: true}}
  - id: cn-retail
    api_key_hashes: ["{_hash("key-cn-retail")}"]
    established_in: CN
    registered_purposes: [product_catalog_tagging]
    default_backend: be-us-east
    source_networks: ["198.51.100.0/26", "2001:db8:c::/48"]
  - id: cn-retail-lab
    established_in: CN
    source_networks: ["198.51.100.32/27"]
"""


@pytest.fixture
def registry() -> TenantRegistry:
    return TenantRegistry.from_text(TENANTS, "tenants.yaml", default_tenant=None)


def test_tenants_load_with_fields_and_flags(registry: TenantRegistry) -> None:
    assert [t.id for t in registry] == ["acme-eu", "westmart-us", "cn-retail", "cn-retail-lab"]
    acme = registry.get("acme-eu")
    assert acme is not None
    assert acme.established_in == "DE"
    assert acme.registered_purposes == ("product_catalog_tagging", "quality_inspection")
    assert dict(acme.flags) == {"mask_pd_in_free_text": True}
    westmart = registry.get("westmart-us")
    assert westmart is not None
    assert westmart.established_in == "US-CA"
    assert westmart.shares_with == ("adtech-partner",)
    assert westmart.context_view() == {
        "id": "westmart-us",
        "established_in": "US-CA",
        "registered_purposes": ["product_catalog_tagging"],
        "default_backend": None,
        "flags": {
            "ccpa_business": True,
            "share_request_events_with": ["adtech-partner"],
            "mask_pd_in_free_text": True,
        },
    }
    json.dumps(westmart.context_view())
    assert registry.get("nobody") is None
    assert len(registry) == 4


def test_flags_are_read_only(registry: TenantRegistry) -> None:
    westmart = registry.get("westmart-us")
    assert westmart is not None
    with pytest.raises(TypeError):
        westmart.flags["ccpa_business"] = False  # type: ignore[index]
    view = westmart.context_view()
    view["flags"]["ccpa_business"] = False
    assert westmart.flags["ccpa_business"] is True


# ---------------------------------------------------------------------------------------------
# Authentication


@pytest.mark.parametrize(
    ("api_key", "client_ip", "tenant", "method"),
    [
        ("key-acme-eu", "192.0.2.10", "acme-eu", "api_key"),
        ("  key-acme-eu ", None, "acme-eu", "api_key"),
        ("key-westmart-us-2", "192.0.2.10", "westmart-us", "api_key"),
        # a key wins over the network binding
        ("key-acme-eu", "198.51.100.10", "acme-eu", "api_key"),
        (None, "198.51.100.10", "cn-retail", "network"),
        (None, "198.51.100.40", "cn-retail-lab", "network"),  # longest prefix
        ("", "198.51.100.10", "cn-retail", "network"),  # an empty header is no key
        (None, "2001:db8:c::5", "cn-retail", "network"),
        (None, "192.0.2.10", None, "anonymous"),
        (None, None, None, "anonymous"),
        (None, "not an address", None, "anonymous"),
    ],
)
def test_authenticate(
    registry: TenantRegistry,
    api_key: str | None,
    client_ip: str | None,
    tenant: str | None,
    method: str,
) -> None:
    result = registry.authenticate(api_key, client_ip)
    assert isinstance(result, Authentication)
    assert (result.tenant.id if result.tenant else None, result.method) == (tenant, method)


@pytest.mark.parametrize(
    "api_key", ["key-acme-eux", "KEY-ACME-EU", _hash("key-acme-eu"), "x" * 100_000, "\udcff"]
)
def test_wrong_keys_fail_even_from_a_bound_network(registry: TenantRegistry, api_key: str) -> None:
    result = registry.authenticate(api_key, "198.51.100.10")
    assert isinstance(result, AuthFailure)
    assert (result.code, result.http_status) == ("invalid_api_key", 401)
    assert "key" in result.message


def test_default_tenant_covers_keyless_callers_only_when_configured() -> None:
    registry = TenantRegistry.from_text(TENANTS, default_tenant="acme-eu")
    result = registry.authenticate(None, "192.0.2.10")
    assert isinstance(result, Authentication)
    assert (result.tenant.id if result.tenant else None, result.method) == ("acme-eu", "default")
    bound = registry.authenticate(None, "198.51.100.10")
    assert isinstance(bound, Authentication) and bound.method == "network"
    assert isinstance(registry.authenticate("wrong", "192.0.2.10"), AuthFailure)


def test_keys_are_compared_in_constant_time(
    registry: TenantRegistry, monkeypatch: pytest.MonkeyPatch
) -> None:
    calls: list[tuple[str, str]] = []
    real = tenants_module.hmac.compare_digest

    def spy(a: str, b: str) -> bool:
        calls.append((a, b))
        return real(a, b)

    monkeypatch.setattr(tenants_module.hmac, "compare_digest", spy)
    assert isinstance(registry.authenticate("key-acme-eu", None), Authentication)
    assert calls == [(_hash("key-acme-eu"), _hash("key-acme-eu"))]


def test_generated_keys() -> None:
    key = generate_api_key()
    assert key.startswith("jg_") and len(key) >= 40
    assert key != generate_api_key()
    assert hash_api_key(key) == _hash(key)


def test_unknown_default_tenant() -> None:
    with pytest.raises(DiagnosticError, match="default tenant `ghost`"):
        TenantRegistry.from_text(TENANTS, default_tenant="ghost")
    with pytest.raises(DiagnosticError) as caught:
        TenantRegistry.empty(default_tenant="ghost")
    assert caught.value.diagnostics()[0].code == "tenants_unknown_default"
    empty = TenantRegistry.empty()
    result = empty.authenticate(None, "192.0.2.1")
    assert isinstance(result, Authentication) and result.tenant is None


def test_empty_files_are_empty_registries() -> None:
    assert len(TenantRegistry.from_text("")) == 0
    assert len(TenantRegistry.from_text("tenants:\n")) == 0
    assert len(TenantRegistry.from_text("tenants: []\nversion: 1\n")) == 0


# ---------------------------------------------------------------------------------------------
# Located loading errors

HASH = _hash("k")


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        (
            "tenants:\n  - id: acme\n    api_key: key-acme-eu\n",
            "t.yaml:3:5: tenants_plain_key: the tenants file must not hold plain API keys\n"
            "  help: replace it with `api_key_hashes: [sha256:...]`; `jurisgate tenants add` "
            "generates a key and stores its hash",
        ),
        (
            "tenants:\n  - id: acme\n    registerd_purposes: [x]\n",
            "t.yaml:3:5: tenants_schema_error: unknown tenant field `registerd_purposes`\n"
            "  help: did you mean `registered_purposes`?",
        ),
        (
            "tenants:\n  - id: acme\n    api_key_hashes: [md5:abc]\n",
            "t.yaml:3:22: tenants_key_hash_error: api key hash `md5:abc` is not `sha256:` and "
            "64 lower-case hex digits\n  help: generate keys with `jurisgate tenants add`",
        ),
        (
            "tenants:\n  - id: a\n  - id: a\n",
            "t.yaml:3:9: tenants_duplicate_id: duplicate tenant id `a`\n"
            "  help: `a` is first defined at line 2",
        ),
        (
            "tenants:\n  - id: acme\n    established_in: NO\n",
            "t.yaml:3:21: type_error: established_in must be a string, got boolean `false`\n"
            '  help: YAML 1.1 reads NO as false; quote it: "NO"',
        ),
        (
            "tenants:\n  - id: acme\n    established_in: Germany\n",
            "t.yaml:3:21: tenants_schema_error: established_in `Germany` is not an ISO 3166 code\n"
            "  help: write a country (`DE`) or subdivision (`US-CA`) code",
        ),
        (
            "tenants:\n  - id: acme\n    source_networks: [10.0.0.0/33]\n",
            "t.yaml:3:23: tenants_schema_error: source network `10.0.0.0/33` is not a CIDR "
            "network\n  help: write e.g. `192.0.2.0/24` or `2001:db8::/48`",
        ),
        (
            "tenants:\n  - id: acme\n    contract_start: 2025-01-01\n",
            "t.yaml:3:21: type_error: flag must be a string, number, boolean, null, list or "
            "mapping, got date `2025-01-01`\n"
            '  help: YAML 1.1 reads 2025-01-01 as a date; quote it: "2025-01-01"',
        ),
        (
            "tenants:\n  - id: acme corp\n",
            "t.yaml:2:9: tenants_schema_error: tenant id `acme corp` may hold only letters, "
            "digits, `.`, `_` and `-`",
        ),
        (
            "tenants:\n  - established_in: DE\n",
            "t.yaml:2:5: tenants_schema_error: tenant without `id`",
        ),
        (
            "tenants:\n  - id: a\ndefault_tenant: a\n",
            "t.yaml:3:1: tenants_schema_error: unknown top-level key `default_tenant`\n"
            "  help: set tenants.default_tenant in the gateway configuration instead",
        ),
        (
            "tenants:\n  - id: a\n    registered_purposes: product_catalog_tagging\n",
            "t.yaml:3:26: type_error: registered_purposes must be a list of strings, got string "
            "`product_catalog_tagging`",
        ),
        (
            "tenants:\n  - id: a\n  - id: a\n    id: b\n",
            "t.yaml:4:5: yaml_duplicate_key: duplicate key `id`\n  help: `id` is first set at "
            "line 3; keep one",
        ),
        ("tenants: [\n", "t.yaml:2:1: yaml_syntax_error:"),
    ],
)
def test_loading_errors_are_located(text: str, expected: str) -> None:
    with pytest.raises(DiagnosticError) as caught:
        TenantRegistry.from_text(text, "t.yaml")
    assert caught.value.diagnostics()[0].text().startswith(expected)


def test_conflicts_between_tenants() -> None:
    shared = (
        f'tenants:\n  - id: a\n    api_key_hashes: ["{HASH}"]\n'
        f'  - id: b\n    api_key_hashes: ["{HASH}"]\n'
    )
    with pytest.raises(DiagnosticError, match="share an API key hash"):
        TenantRegistry.from_text(shared, "t.yaml")
    network = (
        "tenants:\n  - id: a\n    source_networks: [10.0.0.0/8]\n"
        "  - id: b\n    source_networks: [10.0.0.0/8]\n"
    )
    with pytest.raises(DiagnosticError, match="bound to `a` and `b`"):
        TenantRegistry.from_text(network, "t.yaml")


def test_every_problem_is_reported() -> None:
    text = "tenants:\n  - id: a\n    api_key: x\n  - id: b\n    established_in: nowhere-land\n"
    with pytest.raises(DiagnosticError) as caught:
        TenantRegistry.from_text(text, "t.yaml")
    assert [d.code for d in caught.value.diagnostics()] == [
        "tenants_plain_key",
        "tenants_schema_error",
    ]


def test_load_from_file(tmp_path: Path) -> None:
    path = tmp_path / "tenants.yaml"
    path.write_text(TENANTS)
    assert TenantRegistry.load(path).get("cn-retail") is not None
    with pytest.raises(DiagnosticError) as caught:
        TenantRegistry.load(tmp_path / "missing.yaml")
    assert caught.value.diagnostics()[0].code == "io_error"


# ---------------------------------------------------------------------------------------------
# CLI


def test_cli_add_creates_a_file_and_prints_the_key_once(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    path = tmp_path / "tenants.yaml"
    code = main(
        [
            "tenants", "add", "--file", str(path), "--id", "acme-eu", "--established-in", "de",
            "--purpose", "product_catalog_tagging", "--purpose", "quality_inspection",
            "--network", "192.0.2.0/26", "--default-backend", "be-eu-fra",
        ]
    )  # fmt: skip
    captured = capsys.readouterr()
    assert code == 0
    key = captured.out.strip()
    assert key.startswith("jg_") and "\n" not in key
    assert "acme-eu" in captured.err and key not in captured.err
    text = path.read_text()
    assert key not in text
    assert hash_api_key(key) in text
    registry = TenantRegistry.load(path)
    tenant = registry.get("acme-eu")
    assert tenant is not None
    assert tenant.established_in == "DE"
    assert tenant.registered_purposes == ("product_catalog_tagging", "quality_inspection")
    assert tenant.default_backend == "be-eu-fra"
    result = registry.authenticate(key, None)
    assert isinstance(result, Authentication) and result.tenant is tenant


def test_cli_add_keeps_comments_and_layout(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    path = tmp_path / "tenants.yaml"
    path.write_text(TENANTS + "# the end\n")
    assert main(["tenants", "add", "--file", str(path), "--id", "kz-retail"]) == 0
    key = capsys.readouterr().out.strip()
    text = path.read_text()
    assert text.startswith(TENANTS)
    assert text.endswith("# the end\n")
    registry = TenantRegistry.load(path)
    assert [t.id for t in registry][-1] == "kz-retail"
    result = registry.authenticate(key, None)
    assert isinstance(result, Authentication)
    assert result.tenant is not None and result.tenant.id == "kz-retail"


@pytest.mark.parametrize(
    "existing",
    [
        "",
        "version: 1\n",
        "tenants:\n",
        "tenants: []\n",
        "tenants: []   # none yet\nversion: 1\n",
        "tenants: ~\n",
        "tenants:\n- id: a\n  flags:\n    x: |\n      text\n",
        "tenants:\n    -   id: a\n        established_in: DE\n# tail\nversion: 1",
    ],
)
def test_insert_tenant_handles_file_shapes(existing: str) -> None:
    text = insert_tenant(existing, {"id": "new", "api_key_hashes": [HASH]})
    registry = TenantRegistry.from_text(text)
    assert registry.get("new") is not None
    before = TenantRegistry.from_text(existing)
    assert [t.id for t in registry] == [t.id for t in before] + ["new"]


def test_insert_tenant_refuses_flow_lists() -> None:
    with pytest.raises(ValueError, match="block list"):
        insert_tenant("tenants: [{id: a}]\n", {"id": "b"})


def test_cli_add_refusals(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    path = tmp_path / "tenants.yaml"
    path.write_text(TENANTS)
    before = path.read_text()
    assert main(["tenants", "add", "--file", str(path), "--id", "acme-eu"]) == 4
    assert "already exists" in capsys.readouterr().err
    assert main(["tenants", "add", "--file", str(path), "--id", "x", "--established-in", "?"]) == 2
    assert main(["tenants", "add", "--file", str(path), "--id", "x", "--network", "nope"]) == 2
    assert main(["tenants", "add", "--file", str(path), "--id", "bad id"]) == 3
    assert "tenant id `bad id`" in capsys.readouterr().err
    assert main(["tenants", "add", "--file", str(path), "--id", "x", "--purpose", "a b"]) == 3
    assert path.read_text() == before
    broken = tmp_path / "broken.yaml"
    broken.write_text("tenants:\n  - id: a\n    api_key: plain\n")
    assert main(["tenants", "add", "--file", str(broken), "--id", "b"]) == 3
    assert "broken.yaml:3:5: tenants_plain_key" in capsys.readouterr().err
    flow = tmp_path / "flow.yaml"
    flow.write_text("tenants: [{id: a}]\n")
    assert main(["tenants", "add", "--file", str(flow), "--id", "b"]) == 4


def test_cli_list(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    path = tmp_path / "tenants.yaml"
    path.write_text(TENANTS)
    assert main(["tenants", "list", "--file", str(path)]) == 0
    lines = capsys.readouterr().out.splitlines()
    assert lines[0].split() == ["ID", "ESTABLISHED", "KEYS", "PURPOSES", "NETWORKS", "BACKEND"]
    assert lines[2].split() == ["westmart-us", "US-CA", "2", "product_catalog_tagging", "-", "-"]
    assert main(["tenants", "list", "--file", str(path), "--format", "json"]) == 0
    rows = json.loads(capsys.readouterr().out)
    assert rows[2]["source_networks"] == ["198.51.100.0/26", "2001:db8:c::/48"]
    assert rows[0]["keys"] == 1
    assert all("sha256" not in json.dumps(row) for row in rows)


def test_cli_list_errors(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["tenants", "list", "--file", str(tmp_path / "missing.yaml")]) == 4
    broken = tmp_path / "broken.yaml"
    broken.write_text("tenants:\n  - id: a\n    registerd_purposes: []\n")
    assert main(["tenants", "list", "--file", str(broken)]) == 3
    err = capsys.readouterr().err
    assert "broken.yaml:3:5: tenants_schema_error: unknown tenant field" in err
    assert "help: did you mean `registered_purposes`?" in err
    assert main(["tenants"]) == 2
