"""The training loss is logged often enough that a short run has a curve (issue 11)."""

from __future__ import annotations

import math

import pytest

from train.common import LOSS_LOG_SHARE, TrainOptions, _training_arguments


@pytest.mark.parametrize("steps", [20, 64, 400, 5000])
def test_a_run_of_any_length_logs_many_loss_points(tmp_path, steps: int) -> None:
    options = TrainOptions(method="lora", output_dir=str(tmp_path / "out"), max_steps=steps).validate()
    args = _training_arguments(options, tmp_path / "trainer")
    # transformers reads a float below 1 as a share of the run: every ceil(steps * share) steps.
    every = math.ceil(steps * args.logging_steps) if args.logging_steps < 1 else args.logging_steps
    assert args.logging_steps == LOSS_LOG_SHARE
    assert steps // every > 6, f"a {steps}-step run would log only {steps // every} points"


def test_an_explicit_interval_is_kept_and_a_negative_one_refused(tmp_path) -> None:
    options = TrainOptions(method="full", output_dir=str(tmp_path / "o"), max_steps=64, logging_steps=5)
    assert _training_arguments(options.validate(), tmp_path / "t").logging_steps == 5
    with pytest.raises(ValueError, match="logging_steps"):
        TrainOptions(method="full", output_dir=str(tmp_path / "o"), max_steps=64, logging_steps=-1).validate()
