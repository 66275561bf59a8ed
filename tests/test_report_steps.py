"""``bench.report_steps``: the training pipeline's own step time, full vs LoRA (moved out of the suite
as a benchmark; this checks only that the measurement works, not how fast anything is)."""

from __future__ import annotations

from pathlib import Path

import pytest
import torch

from bench.report_steps import METHODS, main, measure


def test_report_steps_measures_both_methods_from_training_metadata(data_dir: str, tmp_path: Path) -> None:
    threads = torch.get_num_threads()
    figures = measure(data_dir, tmp_path, steps=2)
    assert torch.get_num_threads() == threads  # the one-thread setting does not leak
    for method in METHODS:
        assert figures[f"{method}_step_cpu_s"] > 0, figures
        assert (tmp_path / method / "arena.json").is_file() or any((tmp_path / method).iterdir())
    assert figures["full_lora_ratio"] == pytest.approx(
        figures["full_step_cpu_s"] / figures["lora_step_cpu_s"]
    )


def test_report_steps_cli_prints_one_json_line(capsys: pytest.CaptureFixture[str]) -> None:
    with pytest.raises(SystemExit) as exit_info:
        main(["--help"])
    assert exit_info.value.code == 0
    assert "--steps" in capsys.readouterr().out
