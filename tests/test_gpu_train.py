"""``python -m bench.gpu_train`` end to end on the tests' tiny T5 (CPU, or the GPU when there is one)."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
import torch

from bench.gpu_train import main

STEPS = 4
WARMUP = 1
BATCH = 2
METHOD_KEYS = {
    "step_s", "examples_per_s", "timed_steps", "steps", "wall_s", "arena_median_step_s",
    "peak_memory_bytes", "peak_memory_gib", "memory_kind", "memory_at_start_bytes",
    "trainable_params", "total_params", "trainable_percent", "precision", "final_train_loss",
}  # fmt: skip
TOP_KEYS = {
    "device", "dtype", "shape", "steps", "batch_size", "warmup_steps", "max_source_length",
    "full", "lora", "lora_full_step_ratio", "lora_full_memory_ratio", "torch", "transformers", "peft",
}  # fmt: skip


def test_tiny_run_reports_both_methods(
    data_dir: str, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    """The real training path runs for both methods; the last stdout line is the consistent JSON."""
    written = tmp_path / "result.json"
    argv = [
        "--shape", "tiny", "--steps", str(STEPS), "--warmup-steps", str(WARMUP),
        "--batch-size", str(BATCH), "--data", data_dir, "--workdir", str(tmp_path / "work"),
        "--output-json", str(written), "--quiet",
    ]  # fmt: skip
    assert main(argv) == 0
    out = capsys.readouterr().out
    result = json.loads(out.strip().splitlines()[-1])
    assert result == json.loads(written.read_text(encoding="utf-8"))
    assert "LoRA / full" in out  # the table came before the JSON

    assert set(result) == TOP_KEYS
    cuda = torch.cuda.is_available()
    assert result["device"] == (torch.cuda.get_device_name() if cuda else "cpu")
    assert result["dtype"] == ("bfloat16" if cuda else "float32")
    assert (result["shape"], result["steps"], result["batch_size"]) == ("tiny", STEPS, BATCH)
    assert result["torch"] == torch.__version__ and result["transformers"] and result["peft"]

    full, lora = result["full"], result["lora"]
    for figures in (full, lora):
        assert set(figures) == METHOD_KEYS
        assert figures["steps"] == STEPS
        assert figures["timed_steps"] == STEPS - WARMUP
        assert figures["step_s"] > 0 and figures["wall_s"] > 0
        assert figures["examples_per_s"] == pytest.approx(BATCH / figures["step_s"], rel=0.01)
        assert figures["peak_memory_bytes"] >= figures["memory_at_start_bytes"] >= 0
        assert figures["peak_memory_bytes"] > 0
        assert figures["memory_kind"] == ("cuda_max_allocated" if cuda else "peak_rss")
        assert 0 < figures["trainable_params"] <= figures["total_params"]
    assert full["trainable_params"] == full["total_params"]
    assert 0 < lora["trainable_params"] < full["trainable_params"]
    # LoRA's total is the frozen base (the same model full trains) plus its adapter.
    assert lora["total_params"] == full["total_params"] + lora["trainable_params"]
    assert result["lora_full_step_ratio"] == pytest.approx(lora["step_s"] / full["step_s"], rel=1e-3)
    assert result["lora_full_memory_ratio"] == pytest.approx(
        lora["peak_memory_bytes"] / full["peak_memory_bytes"], rel=1e-3
    )


@pytest.mark.parametrize(
    "argv",
    [
        ["--steps", "3", "--warmup-steps", "3"],  # nothing left to time
        ["--batch-size", "0"],
    ],
)
def test_bad_flags_exit_before_building(argv: list[str], tmp_path: Path) -> None:
    """Invalid flags end with status 2 and build nothing in the work directory."""
    work = tmp_path / "work"
    assert main(["--shape", "tiny", "--workdir", str(work), *argv]) == 2
    assert not work.exists()


def test_unknown_shape_is_refused() -> None:
    with pytest.raises(SystemExit):
        main(["--shape", "large"])
