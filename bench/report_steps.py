"""Step time as the training script itself records it: full vs LoRA on a tiny T5.

``train.common.train`` writes ``median_step_cpu_seconds`` (median CPU time of one optimizer step,
start-up excluded) into every run's metadata. This measures it for a full and a LoRA run of the
same tiny random T5 on the same DialogSum batch, one torch thread, in a fresh process, and reports
both and their ratio. P5 measures the same question on flan-t5-base's shape through a bench worker;
this figure checks the number the training pipeline records and prints (it used to be a test,
``test_report_step_time``, that printed it and asserted only that it existed).

Examples:
    python -m bench.report_steps                 # prints one JSON line
    python -m bench --only P5                    # also prints these rows, below P5's
"""

from __future__ import annotations

import argparse
import json
import sys
import tempfile
from collections.abc import Callable
from pathlib import Path
from typing import Any

from bench.child import run_json_module

METHODS = ("full", "lora")


def measure(data: str, workdir: Path, steps: int) -> dict[str, float]:
    """Train ``steps`` optimizer steps of each method on a tiny T5; CPU seconds per step from metadata."""
    import torch

    from bench.fixtures import build_tiny_checkpoints

    threads = torch.get_num_threads()
    torch.set_num_threads(1)  # one thread: comparable across busy machines, as the tests trained
    try:
        return _train_both(data, workdir, steps, build_tiny_checkpoints(workdir / "tiny", data)["original"])
    finally:
        torch.set_num_threads(threads)


def _train_both(data: str, workdir: Path, steps: int, base: str) -> dict[str, float]:
    from train.common import TrainOptions, train

    result: dict[str, float] = {}
    for method in METHODS:
        options = TrainOptions(
            method=method, base_model=base, output_dir=str(workdir / method), data=data,
            split="validation", limit=4, batch_size=4, max_steps=steps, learning_rate=1e-2,
            logging_steps=1, max_source_length=128, max_target_length=32, lora_r=4, lora_alpha=8,
            quiet=True,
        )  # fmt: skip
        seconds = train(options)["median_step_cpu_seconds"]
        if seconds is None:
            raise RuntimeError(f"{method} run recorded no step time")
        result[f"{method}_step_cpu_s"] = float(seconds)
    result["full_lora_ratio"] = result["full_step_cpu_s"] / max(result["lora_step_cpu_s"], 1e-9)
    return result


def run(data: str, steps: int, env: dict[str, str], log: Path) -> dict[str, float]:
    """:func:`measure` in a fresh process (like every bench figure); its stderr goes to ``log``."""
    args = ["--data", data, "--steps", str(steps)]
    return run_json_module("bench.report_steps", args, env, log, f"report_steps {data} steps={steps}")


def add_rows(
    row: Callable[..., None], rows: list, data: str, quick: bool, env: dict[str, str], log: Path
) -> None:
    """Measure and add the rows to ``python -m bench``'s table (``row`` is its row printer)."""
    figures = run(data, 5 if quick else 10, env, log)
    row(
        rows,
        "tiny T5 step CPU time full / LoRA (s)",
        f"{figures['full_step_cpu_s']:.4f} / {figures['lora_step_cpu_s']:.4f}",
        "as train() records it, 1 thread",
    )
    row(rows, "  tiny T5 full / LoRA step time", f"{figures['full_lora_ratio']:.2f}", "information only")


def main(argv: list[str] | None = None) -> int:
    """CLI: measure and print one JSON line."""
    from core.config import default_data_source

    parser = argparse.ArgumentParser(prog="python -m bench.report_steps", description=__doc__.split("\n")[0])
    parser.add_argument("--data", default=None, help="DialogSum directory or hub id (default: the project's)")
    parser.add_argument("--steps", type=int, default=10, help="optimizer steps per method (default 10)")
    parser.add_argument("--workdir", help="where to build and train; default: a temporary directory")
    args = parser.parse_args(argv)
    data = args.data or default_data_source()
    if args.workdir:
        result: dict[str, Any] = measure(data, Path(args.workdir), args.steps)
    else:
        with tempfile.TemporaryDirectory(prefix="arena-report-steps-") as tmp:
            result = measure(data, Path(tmp), args.steps)
    print(json.dumps({k: round(v, 5) for k, v in result.items()}))
    return 0


if __name__ == "__main__":
    sys.exit(main())
