"""Run one measurement in a fresh Python process and read its JSON result.

Peak memory (``VmHWM``) and start-up costs are only meaningful per process, so every bench
figure runs in its own; the child prints its result as the last JSON line on stdout, and its
stderr is appended to the run's log.
"""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path
from typing import Any

PROJECT_ROOT = Path(__file__).resolve().parent.parent


def run_json_module(module: str, args: list[str], env: dict[str, str], log: Path, title: str) -> Any:
    """``python -m module *args`` in the project root; its last stdout line starting with ``{``,
    parsed. ``title`` heads its stderr in ``log``; a failed run or one with no JSON line raises."""
    with log.open("a", encoding="utf-8") as err:
        err.write(f"\n=== {title}\n")
        err.flush()
        proc = subprocess.run(
            [sys.executable, "-m", module, *args],
            cwd=str(PROJECT_ROOT),
            env=env,
            stdout=subprocess.PIPE,
            stderr=err,
            text=True,
            check=False,
        )
    lines = [line for line in proc.stdout.splitlines() if line.startswith("{")]
    if proc.returncode != 0 or not lines:
        raise RuntimeError(f"{module} failed (exit {proc.returncode}); see {log}")
    return json.loads(lines[-1])
