"""TensorFlow session settings: idle threads do not spin unless asked to."""

from __future__ import annotations

from pathlib import Path

import pytest

from model_server.__main__ import build_parser
from model_server.servables import SessionOptions, load_servable


def test_serve_flag_turns_spinning_back_on() -> None:
    parser = build_parser()
    default = parser.parse_args(["serve", "--model-base", "m"])
    spinning = parser.parse_args(["serve", "--model-base", "m", "--tensorflow-thread-spinning"])
    assert default.tensorflow_thread_spinning is False
    assert spinning.tensorflow_thread_spinning is True


@pytest.mark.parametrize("spinning", [False, True])
def test_session_config_carries_the_spinning_setting(
    trained_model_base: Path, spinning: bool
) -> None:
    options = SessionOptions(intra_op_threads=2, inter_op_threads=1, thread_spinning=spinning)
    servable = load_servable("mnist", 1, trained_model_base / "mnist" / "1", options)
    try:
        config = servable._session._config
        assert config.experimental.disable_thread_spinning is (not spinning)
        assert config.intra_op_parallelism_threads == 2
    finally:
        servable.wait_idle_and_close()
