"""Shared pytest configuration; fixture plugins live in tests/plugins/."""

pytest_plugins: list[str] = ["tests.plugins.gateway"]
