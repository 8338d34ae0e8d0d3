"""Layering rules, checked in fresh interpreters and on the source.

Every pure folder (docs/architecture.md lists them) imports no aiohttp and no grpc, and
reads no file when imported: `gateway/request/`, `gateway/privacy/`, `gateway/marks/`,
`gateway/policy/`, the TF Serving protocol core `gateway/tfserving/` (its `protos/` are
loaded by gRPC code only), the audit core, and `gateway/config/` and `gateway/replay/`
(which read files when called, never when imported). The gateway process never imports
TensorFlow. The import graph of `gateway/` and `model_server/` has no cycle. The protocol
core is checked further in tests/test_tfserving_core.py.
"""

from __future__ import annotations

import ast
import json
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parent.parent

#: The pure folders, and the pure modules of folders that also hold a shell.
PURE = {
    "gateway/request": "gateway/request",
    "gateway/privacy": "gateway/privacy",
    "gateway/marks": "gateway/marks",
    "gateway/policy": "gateway/policy",
    "gateway/tfserving": "gateway/tfserving",
    "gateway/config": "gateway/config",
    "gateway/replay": "gateway/replay",
    "audit core": [
        "gateway.audit.canonical",
        "gateway.audit.merkle",
        "gateway.audit.chain",
        "gateway.audit.record",
        "gateway.audit.signing",
        "gateway.audit.note",
        "gateway.audit.keyring",
        "gateway.audit.witness",
        "gateway.audit.views",
        # Verification's trust decisions, apart from its mechanics (which read the files).
        "gateway.audit.verify.findings",
        "gateway.audit.verify.trust",
        "gateway.audit.verify.policy",
    ],
    "foundation": ["gateway.errors", "gateway.source", "gateway.lru", "gateway.jsonpath"],
}

#: Modules a pure folder holds that are not pure, and why.
NOT_PURE = {
    # TF Serving's protobuf messages: read from a committed descriptor set, by gRPC code only.
    "gateway.tfserving.protos",
    # Loads and compiles policy files: the one policy module that reads files (when called).
    "gateway.policy.loader",
}


def _modules(folder: str) -> list[str]:
    """The modules of a folder, found on disk (nothing is imported to list them)."""
    names = []
    for path in sorted((ROOT / folder).glob("*.py")):
        dotted = ".".join(path.relative_to(ROOT).with_suffix("").parts)
        names.append(dotted.removesuffix(".__init__"))
    return [name for name in names if name not in NOT_PURE]


def _group(members: str | list[str]) -> list[str]:
    return _modules(members) if isinstance(members, str) else members


# The probe runs in a fresh interpreter: it records every file the project's own code opens
# through `open`, `io.open` or `os.open` while the modules are imported (libraries reading
# their own data, and the import system reading sources, are not counted), then which
# packages were loaded.
_PROBE = """
import builtins, io, json, os, sys
opened = []
_open, _os_open = builtins.open, os.open
_PROJECT = (os.sep + "gateway" + os.sep, os.sep + "model_server" + os.sep)
def record(path):
    caller = sys._getframe(2).f_code.co_filename
    if any(part in caller for part in _PROJECT):
        opened.append(str(path))
def spy_open(file, *args, **kwargs):
    record(file)
    return _open(file, *args, **kwargs)
def spy_os_open(path, *args, **kwargs):
    record(path)
    return _os_open(path, *args, **kwargs)
builtins.open = io.open = spy_open
os.open = spy_os_open
import importlib
for name in sys.argv[1:]:
    importlib.import_module(name)
builtins.open = io.open = _open
os.open = _os_open
def loaded(top):
    return sorted(k for k in sys.modules if k == top or k.startswith(top + "."))[:3]
print(json.dumps({"aiohttp": loaded("aiohttp"), "grpc": loaded("grpc"), "opened": opened}))
"""


def _probe(modules: list[str]) -> dict[str, list[str]]:
    out = subprocess.run(
        [sys.executable, "-c", _PROBE, *modules],
        capture_output=True,
        text=True,
        check=True,
        timeout=120,
        cwd=ROOT,
    )
    result: dict[str, list[str]] = json.loads(out.stdout.strip().splitlines()[-1])
    return result


@pytest.mark.parametrize("folder", sorted(PURE))
def test_pure_folder_imports_no_aiohttp_no_grpc_and_reads_no_file(folder: str) -> None:
    modules = _group(PURE[folder])
    assert modules, f"{folder}: no modules found"
    found = _probe(modules)
    assert found["aiohttp"] == [], f"{folder} imports aiohttp"
    assert found["grpc"] == [], f"{folder} imports grpc"
    assert found["opened"] == [], f"{folder} reads files at import: {found['opened']}"


def test_pipeline_is_transport_neutral() -> None:
    """The pipeline imports no aiohttp and no edge module (it uses the edge's types only
    for type checking); gRPC message handling is confined to `grpc_steps`."""
    code = (
        "import sys\n"
        + "".join(f"import {m}\n" for m in _modules("gateway/pipeline"))
        + "print(sorted(m for m in sys.modules if m == 'aiohttp' or m.startswith('gateway.edge')))"
    )
    out = subprocess.run(
        [sys.executable, "-c", code], capture_output=True, text=True, check=True, timeout=120
    )
    assert out.stdout.strip() == "[]"


def test_the_probe_sees_a_file_read_at_import(tmp_path: Path) -> None:
    folder = tmp_path / "gateway"  # counted as the project's own code by its path
    folder.mkdir()
    (folder / "reads_at_import.py").write_text("open(__file__).close()\n")
    code = f"import sys; sys.path.insert(0, {str(folder)!r})\n" + _PROBE
    out = subprocess.run(
        [sys.executable, "-c", code, "reads_at_import"],
        capture_output=True,
        text=True,
        check=True,
        timeout=120,
    )
    assert json.loads(out.stdout.strip().splitlines()[-1])["opened"]


def _loaded_after(imports: list[str], probe: str) -> bool:
    code = "import sys\n" + "".join(f"import {m}\n" for m in imports)
    prefix = probe + "."
    code += f"print(any(k == {probe!r} or k.startswith({prefix!r}) for k in sys.modules))"
    out = subprocess.run(
        [sys.executable, "-c", code], capture_output=True, text=True, check=True, timeout=120
    )
    return out.stdout.strip() == "True"


def test_gateway_process_never_imports_tensorflow() -> None:
    modules = [
        "gateway.cli",
        "gateway.edge.app",
        "gateway.edge.handlers",
        "gateway.commands.serve",
        "gateway.edge.grpc_upstream",
    ]
    assert not _loaded_after(modules, "tensorflow")
    # Building the whole command line (every command module) must not pull it in either.
    code = "import sys\nfrom gateway.cli import build_parser\nbuild_parser()\n"
    code += "print('tensorflow' in sys.modules)"
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert out.stdout.strip() == "False"


# -- the import graph ------------------------------------------------------------------------

#: Cycles being removed on another branch; each entry fails the test once it is gone, so the
#: list empties as they land.
KNOWN_CYCLES: set[frozenset[str]] = set()


def _module_name(path: Path) -> str:
    return ".".join(path.relative_to(ROOT).with_suffix("").parts).removesuffix(".__init__")


def import_graph(packages: tuple[str, ...] = ("gateway", "model_server")) -> dict[str, set[str]]:
    """Module -> the project modules it imports (lazy imports included), read with `ast`.

    `from package import name` counts as importing `package.name` when that is a module,
    and `package` otherwise.
    """
    sources = {
        _module_name(path): path for package in packages for path in (ROOT / package).rglob("*.py")
    }
    graph: dict[str, set[str]] = {name: set() for name in sources}
    for name, path in sources.items():
        is_package = path.name == "__init__.py"
        for node in ast.walk(ast.parse(path.read_text(encoding="utf-8"), str(path))):
            targets: list[str] = []
            if isinstance(node, ast.Import):
                targets = [alias.name for alias in node.names]
            elif isinstance(node, ast.ImportFrom):
                base = node.module or ""
                if node.level:
                    parts = name.split(".")
                    parts = parts if is_package else parts[:-1]
                    parts = parts[: len(parts) - node.level + 1]
                    base = ".".join([*parts, base] if base else parts)
                targets = [
                    f"{base}.{alias.name}" if f"{base}.{alias.name}" in sources else base
                    for alias in node.names
                ]
            for target in targets:
                while target and target not in sources:
                    target = target.rpartition(".")[0]
                if target and target != name:
                    graph[name].add(target)
    return graph


def find_cycles(graph: dict[str, set[str]]) -> list[list[str]]:
    """The strongly connected components of more than one module (Tarjan, iteratively)."""
    index: dict[str, int] = {}
    low: dict[str, int] = {}
    on_stack: set[str] = set()
    stack: list[str] = []
    cycles: list[list[str]] = []
    counter = 0
    for root in sorted(graph):
        if root in index:
            continue
        work: list[tuple[str, list[str]]] = [(root, sorted(graph[root]))]
        index[root] = low[root] = counter
        counter += 1
        stack.append(root)
        on_stack.add(root)
        while work:
            node, pending = work[-1]
            if pending:
                child = pending.pop()
                if child not in index:
                    index[child] = low[child] = counter
                    counter += 1
                    stack.append(child)
                    on_stack.add(child)
                    work.append((child, sorted(graph[child])))
                elif child in on_stack:
                    low[node] = min(low[node], index[child])
                continue
            work.pop()
            if work:
                parent = work[-1][0]
                low[parent] = min(low[parent], low[node])
            if low[node] == index[node]:
                component = []
                while True:
                    member = stack.pop()
                    on_stack.discard(member)
                    component.append(member)
                    if member == node:
                        break
                if len(component) > 1:
                    cycles.append(sorted(component))
    return cycles


def test_the_cycle_finder_finds_a_cycle() -> None:
    graph = {"a": {"b"}, "b": {"c"}, "c": {"a"}, "d": {"a"}}
    assert find_cycles(graph) == [["a", "b", "c"]]
    assert find_cycles({"a": {"b"}, "b": set()}) == []


def test_the_import_graph_reads_relative_and_from_imports() -> None:
    graph = import_graph()
    assert "gateway.request.cidr" in graph["gateway.request.geo"]
    assert "gateway.marks.plan" in graph["gateway.marks"]


def test_the_import_graph_has_no_cycle() -> None:
    cycles = [frozenset(c) for c in find_cycles(import_graph())]
    unexpected = [sorted(c) for c in cycles if c not in KNOWN_CYCLES]
    assert unexpected == [], f"import cycles: {unexpected}"


@pytest.mark.parametrize("cycle", sorted(sorted(c) for c in KNOWN_CYCLES))
def test_a_known_cycle_is_still_there(cycle: list[str]) -> None:
    """Strict once fixed: a cycle that is gone must leave `KNOWN_CYCLES`."""
    cycles = [frozenset(c) for c in find_cycles(import_graph())]
    if frozenset(cycle) in cycles:
        pytest.xfail(f"known import cycle, being removed: {' <-> '.join(cycle)}")
    pytest.fail(f"{' <-> '.join(cycle)} is no longer a cycle: remove it from KNOWN_CYCLES")
