"""Shared pytest configuration; fixture plugins live in tests/plugins/."""

pytest_plugins: list[str] = ["tests.plugins.gateway", "tests.plugins.model_server"]
