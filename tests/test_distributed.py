"""Data-parallel training: ``accelerate launch -m train.lora`` on two CPU processes (gloo).

accelerate 1.15 starts several CPU processes only through its torchrun launcher: ``--cpu
--num_processes 2`` alone starts one (multi-CPU there needs mpirun), so the test asks for
``--multi_gpu`` and hides every GPU; ``train.common`` then runs each process on the CPU and
accelerate picks the gloo backend. This is the command a GPU host runs, minus the GPUs.
"""

from __future__ import annotations

import os
import subprocess
import sys
import time
from pathlib import Path

import yaml

from bench.app_process import free_port
from core.checkpoints import read_metadata
from train.metadata import CARD_FILE
from train.push import TRAINER_DIR

PROJECT_ROOT = Path(__file__).resolve().parent.parent
LAUNCH_TIMEOUT_S = 240  # the run itself takes well under a minute; a shared CI host may be slow


def test_accelerate_launch_trains_lora_on_two_processes_and_only_the_main_one_writes(
    tiny_checkpoints: dict[str, str], data_dir: str, tmp_path: Path
) -> None:
    out = tmp_path / "lora"
    command = [
        sys.executable, "-m", "accelerate.commands.launch", "--multi_gpu", "--num_processes", "2",
        "--num_machines", "1", "--mixed_precision", "no", "--dynamo_backend", "no",
        "--main_process_port", str(free_port()),
        "-m", "train.lora", "--base-model", tiny_checkpoints["original"], "--data", data_dir,
        "--split", "validation", "--limit", "8", "--batch-size", "2", "--max-steps", "3",
        "--lora-r", "4", "--lora-alpha", "8", "--lr", "1e-2", "--logging-steps", "1",
        "--max-source-length", "64", "--max-target-length", "16", "--output", str(out),
    ]  # fmt: skip
    env = {
        **os.environ,
        "CUDA_VISIBLE_DEVICES": "",  # the CPU path on any host, GPUs or not
        "OMP_NUM_THREADS": "1",
        "HF_HUB_OFFLINE": "1",
        "TOKENIZERS_PARALLELISM": "false",
        "PYTHONUNBUFFERED": "1",
    }
    start = time.perf_counter()
    done = subprocess.run(
        command, cwd=PROJECT_ROOT, env=env, capture_output=True, text=True, timeout=LAUNCH_TIMEOUT_S
    )
    seconds = time.perf_counter() - start
    assert done.returncode == 0, done.stderr[-4000:]
    print(f"accelerate launch, 2 processes, 3 steps: {seconds:.1f} s")

    meta = read_metadata(out)
    assert meta is not None
    assert meta["world_size"] == 2 and meta["distributed_type"] == "MULTI_CPU"
    assert meta["distributed_backend"] == "gloo"
    assert meta["global_batch_size"] == 2 * 1 * 2  # per device x accumulation x processes
    assert meta["steps"] == 3 and [h["step"] for h in meta["loss_history"]] == [1, 2, 3]
    assert meta["hardware"].endswith("2 processes")
    card = (out / CARD_FILE).read_text()
    assert "data-parallel over 2 processes" in card
    assert "accelerate launch --num_processes 2 -m train.lora" in card
    assert "2 per device x 1 accumulation step x 2 processes = 4 examples per optimizer step" in card
    yaml.safe_load(card.split("---\n")[1])  # the front matter stays valid YAML
    # One writer: one adapter, no leftover Trainer checkpoints, and one "done" line.
    assert (out / "adapter_model.safetensors").is_file() and not (out / TRAINER_DIR).exists()
    assert done.stdout.count("done: lora ->") == 1, done.stdout[-2000:]
