"""One exit-code table for every command (`gateway.commands.exitcodes`), printed in `--help`."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
import yaml

from gateway.cli import build_parser, main
from gateway.commands import exitcodes
from gateway.config.model import config_json_schema

ROOT = Path(__file__).resolve().parents[2]


def _config(tmp: Path, **extra: object) -> Path:
    data = {
        "admin": {"enabled": False},
        "policies": {"paths": [str(ROOT / "policies")]},
        "backends": [{"id": "b", "url": "http://127.0.0.1:9", "region": "DE", "models": ["m"]}],
        **extra,
    }
    path = tmp / "gateway.yaml"
    path.write_text(yaml.safe_dump(data))
    return path


def test_help_prints_the_table(capsys: pytest.CaptureFixture[str]) -> None:
    with pytest.raises(SystemExit) as caught:
        main(["--help"])
    assert caught.value.code == exitcodes.OK
    out = capsys.readouterr().out
    assert exitcodes.TABLE in out
    for code in (exitcodes.OK, exitcodes.NEGATIVE, exitcodes.USAGE, exitcodes.INVALID,
                 exitcodes.ERROR, exitcodes.INTERRUPTED):  # fmt: skip
        assert f"\n  {code} " in out


def test_codes_are_distinct() -> None:
    codes = [exitcodes.OK, exitcodes.NEGATIVE, exitcodes.USAGE, exitcodes.INVALID,
             exitcodes.ERROR, exitcodes.INTERRUPTED]  # fmt: skip
    assert len(set(codes)) == len(codes)


def test_every_command_group_is_in_the_table_test() -> None:
    parser = build_parser()
    groups = next(a for a in parser._actions if a.dest == "command").choices
    assert set(groups) == {g for g, *_ in USAGE_CASES}


# Each command group with no subcommand, or a missing argument: a usage error.
USAGE_CASES = [
    ("up", "--policies", "/nonexistent-policies"),
    ("serve",),
    ("config",),
    ("policy",),
    ("audit",),
    ("keys",),
    ("tenants",),
    ("witness",),
]


@pytest.mark.parametrize("argv", USAGE_CASES, ids=lambda a: " ".join(a))
def test_usage_errors_exit_2(
    argv: tuple[str, ...], monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    monkeypatch.delenv("JURISGATE_CONFIG", raising=False)
    assert main(list(argv)) == exitcodes.USAGE


def test_unknown_command_and_option_exit_2() -> None:
    for argv in (["nope"], ["config", "check", "--nope"]):
        with pytest.raises(SystemExit) as caught:
            main(argv)
        assert caught.value.code == exitcodes.USAGE


def test_missing_files_exit_4(tmp_path: Path) -> None:
    missing = str(tmp_path / "missing.yaml")
    for argv in (
        ["serve", "--config", missing],
        ["config", "check", missing],
        ["tenants", "list", "--file", missing],
        ["witness", "vkey", "--config", missing],
        ["witness", "serve", "--config", missing],
        ["audit", "verify", str(tmp_path / "no-log"), "--trusted-keys", missing],
        ["policy", "eval", "--policies", str(ROOT / "policies"), "--context", missing],
    ):
        assert main(argv) == exitcodes.ERROR, argv


def test_keys_generate_codes(tmp_path: Path) -> None:
    out = tmp_path / "k.pem"
    assert main(["keys", "generate", "--out", str(out), "--name", "gw"]) == exitcodes.OK
    assert main(["keys", "generate", "--out", str(out), "--name", "gw"]) == exitcodes.ERROR
    bad = ["keys", "generate", "--out", str(tmp_path / "x.pem"), "--name", "bad name"]
    assert main(bad) == exitcodes.USAGE


def test_config_check_and_schema(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    good = _config(tmp_path)
    assert main(["config", "check", str(good)]) == exitcodes.OK
    assert "policy revision sha256:" in capsys.readouterr().out
    monkeypatch.setenv("JURISGATE_CONFIG", str(good))
    assert main(["config", "check", "--no-policies"]) == exitcodes.OK
    bad = _config(tmp_path, listen={"port": "8501"})
    assert main(["config", "check", str(bad)]) == exitcodes.INVALID
    err = capsys.readouterr().err
    assert f"{bad}:" in err and "config_type_error: listen.port" in err and "help:" in err
    broken_policies = _config(tmp_path, policies={"paths": [str(tmp_path / "none")]})
    assert main(["config", "check", "--no-policies", str(broken_policies)]) == exitcodes.OK
    assert main(["config", "check", str(broken_policies)]) == exitcodes.INVALID
    capsys.readouterr()
    assert main(["config", "schema"]) == exitcodes.OK
    assert json.loads(capsys.readouterr().out) == config_json_schema()


def test_serve_reads_jurisgate_config(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    bad = _config(tmp_path, timeouts={"read_s": -1})
    monkeypatch.setenv("JURISGATE_CONFIG", str(bad))
    assert main(["serve"]) == exitcodes.INVALID
    assert "timeouts.read_s" in capsys.readouterr().out
