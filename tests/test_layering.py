"""Layering rules, checked in fresh interpreters.

The pure modules (policy engine, audit core, privacy detectors, parsing, context) import no
aiohttp; the gateway process never imports TensorFlow. The TF Serving protocol core
(gateway/tfserving/) is checked further in tests/test_tfserving_core.py.
"""

from __future__ import annotations

import subprocess
import sys

import pytest

PURE_MODULES = [
    "gateway.policy",
    "gateway.errors",
    "gateway.source",
    "gateway.context",
    "gateway.privacy",
    "gateway.strictjson",
    "gateway.jsonsplice",
    "gateway.privacy.normalize",
    "gateway.privacy.encoded",
    "gateway.policy.combine",
    "gateway.clientip",
    "gateway.tfserving",
    "gateway.tfserving.urls",
    "gateway.tfserving.errors",
    "gateway.tfserving.jsonparse",
    "gateway.tfserving.jsonwrite",
    "gateway.tfserving.inflate",
    "gateway.tfserving.bodychecks",
    "gateway.tfserving.notfound",
    "gateway.tfserving.protos",
    "gateway.regions",
    "gateway.marks",
    "gateway.audit.canonical",
    "gateway.audit.merkle",
    "gateway.audit.chain",
    "gateway.audit.record",
    "gateway.audit.signing",
    "gateway.audit.note",
    "gateway.audit.verify",
    "gateway.audit.verify.findings",
    "gateway.audit.verify.trust",
    "gateway.audit.verify.policy",
    "gateway.audit.witness",
    "gateway.audit.views",
]


def _loaded_after(imports: list[str], probe: str) -> bool:
    code = "import sys\n" + "".join(f"import {m}\n" for m in imports)
    prefix = probe + "."
    code += f"print(any(k == {probe!r} or k.startswith({prefix!r}) for k in sys.modules))"
    out = subprocess.run(
        [sys.executable, "-c", code], capture_output=True, text=True, check=True, timeout=120
    )
    return out.stdout.strip() == "True"


@pytest.mark.parametrize("module", PURE_MODULES)
def test_pure_module_does_not_import_aiohttp(module: str) -> None:
    assert not _loaded_after([module], "aiohttp")


def test_gateway_process_never_imports_tensorflow() -> None:
    modules = [
        "gateway.cli",
        "gateway.app",
        "gateway.handlers",
        "gateway.commands.serve",
        "gateway.grpc_upstream",
    ]
    assert not _loaded_after(modules, "tensorflow")
    # Building the whole command line (every command module) must not pull it in either.
    code = "import sys\nfrom gateway.cli import build_parser\nbuild_parser()\n"
    code += "print('tensorflow' in sys.modules)"
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert out.stdout.strip() == "False"
