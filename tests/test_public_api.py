"""The public surface of each package is explicit and importable."""

from __future__ import annotations

import importlib

import pytest

PACKAGES = ["gateway", "gateway.policy", "gateway.audit", "gateway.privacy"]


@pytest.mark.parametrize("name", PACKAGES)
def test_all_names_exist_and_are_documented(name: str) -> None:
    module = importlib.import_module(name)
    exported = module.__all__
    assert len(exported) == len(set(exported)), "duplicate names in __all__"
    for symbol in exported:
        value = getattr(module, symbol)
        if callable(value) and name != "gateway":
            assert value.__doc__, f"{name}.{symbol} has no docstring"


def test_cli_lists_every_command_group() -> None:
    from gateway.cli import build_parser

    parser = build_parser()
    actions = [a for a in parser._actions if a.dest == "command"]
    choices = set(actions[0].choices)  # type: ignore[arg-type]
    assert {"up", "serve", "policy", "audit", "keys", "tenants"} <= choices
