"""Starting ``python app.py`` on a free loopback port, waiting until it serves, stopping it.

One helper for everything that launches the app as a separate process: the test suite's
fixtures, ``python -m bench.load`` and ``python -m bench``'s cold-start figure (P6).
"""

from __future__ import annotations

import os
import socket
import subprocess
import sys
import time
import urllib.error
import urllib.request
from dataclasses import dataclass, field
from pathlib import Path

PROJECT_ROOT = Path(__file__).resolve().parent.parent
STOP_TIMEOUT_S = 15.0


class AppStartError(RuntimeError):
    """The app exited, or did not serve its page in time; the message carries the log's tail."""

    def __init__(self, message: str, exit_code: int | None = None) -> None:
        super().__init__(message)
        self.exit_code = exit_code


def free_port() -> int:
    """A TCP port on 127.0.0.1 that was free a moment ago."""
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def app_environment(port: int, **overrides: str) -> dict[str, str]:
    """This process's environment for an offline app serving on ``127.0.0.1:port``, plus ``overrides``."""
    env = dict(os.environ)
    env.update(
        GRADIO_SERVER_NAME="127.0.0.1",
        GRADIO_SERVER_PORT=str(port),
        HF_HUB_OFFLINE="1",
        HF_HUB_DISABLE_TELEMETRY="1",
        GRADIO_ANALYTICS_ENABLED="False",
    )
    env.update(overrides)
    return env


@dataclass
class AppProcess:
    """A launched ``python app.py`` and where its output goes."""

    port: int
    process: subprocess.Popen
    log_path: Path
    started: float = field(default_factory=time.perf_counter)

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}/"

    def log_tail(self, chars: int = 4000) -> str:
        """The end of the app's log (stdout and stderr), for error messages."""
        try:
            return self.log_path.read_text(encoding="utf-8", errors="replace")[-chars:]
        except OSError:
            return ""

    def wait_until_serving(self, timeout_s: float, poll_s: float = 0.3) -> float:
        """Seconds from launch until the page answered HTTP 200; :class:`AppStartError` if the
        app exits first or ``timeout_s`` (counted from launch) passes."""
        while time.perf_counter() - self.started < timeout_s:
            if self.process.poll() is not None:
                code = self.process.returncode
                raise AppStartError(f"app exited with code {code}:\n{self.log_tail()}", exit_code=code)
            try:
                with urllib.request.urlopen(self.url, timeout=2) as response:
                    if response.status == 200:
                        return time.perf_counter() - self.started
            except (urllib.error.URLError, ConnectionError, TimeoutError, OSError):
                pass  # not listening yet
            time.sleep(poll_s)
        raise AppStartError(f"app did not serve {self.url} within {timeout_s:.0f} s:\n{self.log_tail()}")

    def stop(self) -> None:
        """Terminate the app (SIGTERM, then SIGKILL) and wait for it."""
        if self.process.poll() is None:
            self.process.terminate()
            try:
                self.process.wait(timeout=STOP_TIMEOUT_S)
            except subprocess.TimeoutExpired:
                self.process.kill()
                self.process.wait(timeout=STOP_TIMEOUT_S)


def launch_app(log_path: Path, port: int | None = None, **env: str) -> AppProcess:
    """Start ``python app.py`` (offline, on loopback, ``env`` added) without waiting for it."""
    port = port or free_port()
    log_path.parent.mkdir(parents=True, exist_ok=True)
    started = time.perf_counter()
    with log_path.open("ab") as log:
        process = subprocess.Popen(
            [sys.executable, str(PROJECT_ROOT / "app.py")],
            cwd=str(PROJECT_ROOT),
            env=app_environment(port, **env),
            stdout=log,
            stderr=subprocess.STDOUT,
        )
    return AppProcess(port, process, log_path, started)


def start_app(log_path: Path, timeout_s: float, port: int | None = None, **env: str) -> AppProcess:
    """Launch the app and wait until it serves its page; it is stopped again if it does not."""
    app = launch_app(log_path, port, **env)
    try:
        app.wait_until_serving(timeout_s)
    except BaseException:
        app.stop()
        raise
    return app
