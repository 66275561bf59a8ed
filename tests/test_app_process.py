"""The one helper that starts, waits for and stops ``python app.py`` (tests and benchmarks)."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import pytest

from bench.app_process import AppProcess, AppStartError, app_environment, free_port


def _process(code: str, log_path: Path) -> AppProcess:
    with log_path.open("wb") as log:
        process = subprocess.Popen([sys.executable, "-c", code], stdout=log, stderr=subprocess.STDOUT)
    return AppProcess(free_port(), process, log_path)


def test_an_app_that_exits_is_reported_with_its_code_and_log(tmp_path: Path) -> None:
    app = _process("import sys; print('boom: no models'); sys.exit(3)", tmp_path / "app.log")
    with pytest.raises(AppStartError, match="boom: no models") as info:
        app.wait_until_serving(timeout_s=60, poll_s=0.05)
    assert info.value.exit_code == 3


def test_an_app_that_never_serves_times_out_and_stops(tmp_path: Path) -> None:
    app = _process("import time; time.sleep(60)", tmp_path / "app.log")
    try:
        with pytest.raises(AppStartError, match="did not serve") as info:
            app.wait_until_serving(timeout_s=0.5, poll_s=0.05)
        assert info.value.exit_code is None
    finally:
        app.stop()
    assert app.process.poll() is not None


def test_app_environment_is_offline_on_loopback_and_overridable() -> None:
    env = app_environment(4321, ARENA_DEVICE="cpu", HF_HUB_OFFLINE="0")
    assert (env["GRADIO_SERVER_NAME"], env["GRADIO_SERVER_PORT"]) == ("127.0.0.1", "4321")
    assert env["ARENA_DEVICE"] == "cpu" and env["HF_HUB_OFFLINE"] == "0"
