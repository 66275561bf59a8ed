"""``python -m bench.gpu_train``: the real training path, full then LoRA, timed on one device.

Runs :func:`train.common.train` - the ``Seq2SeqTrainer`` path behind ``python -m train.full``
and ``python -m train.lora`` - on a checkpoint with flan-t5-base's exact shape and random
weights (built by :mod:`bench.fixtures`, as ``python -m bench`` builds it; step time and memory
don't depend on weight values), once per method, in bf16 mixed precision on a CUDA GPU
(float32 on the CPU). For each method it records:

* the median seconds per optimizer step after a warm-up (CUDA is synchronised at every step
  end, so queued kernels count in their own step; data loading and logging count too),
* the peak memory: ``torch.cuda.max_memory_allocated`` (reset before each method) on a GPU,
  the peak resident set size (reset through ``/proc/self/clear_refs``) on the CPU,
* trainable and total parameters.

It prints a table and, as its last line, one JSON object with both methods and the LoRA/full
ratios. Needs ``datasets`` (``train.common`` tokenizes into a ``datasets.Dataset``) and
``sentencepiece`` (the fixtures' tokenizer) besides torch, transformers, peft and accelerate;
it never touches the network.

Examples:
    python -m bench.gpu_train                                  # flan-t5-base shape, 300 steps x 2
    python -m bench.gpu_train --steps 100 --batch-size 16
    python -m bench.gpu_train --shape tiny --steps 5 --warmup-steps 1   # quick CPU check
    python -m bench.gpu_train --output-json gpu_train.json --workdir /tmp/gpu-train
"""

from __future__ import annotations

import os

# Set before transformers / huggingface_hub are imported: they read these once.
os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("HF_HUB_DISABLE_TELEMETRY", "1")
os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")

import argparse
import contextlib
import ctypes
import gc
import importlib.util
import json
import logging
import statistics
import sys
import tempfile
import time
from dataclasses import MISSING, dataclass, field, fields
from pathlib import Path
from typing import Any, Literal

import torch
from transformers import HfArgumentParser, TrainerCallback

from bench.rss import peak_rss_bytes, reset_peak_rss
from core.config import default_data_source
from train.common import METHODS, TrainOptions, train

logger = logging.getLogger("bench.gpu_train")

# What train.common and the fixtures import beyond torch/transformers; checked before any work.
REQUIRED_MODULES: tuple[str, ...] = ("datasets", "sentencepiece", "peft", "accelerate")
TRAIN_DEFAULTS = {f.name: f.default for f in fields(TrainOptions) if f.default is not MISSING}
GIB = 1024**3
DESCRIPTION = (
    "Time the real training path (train.common.train) of full fine-tuning and LoRA on random "
    "weights with flan-t5-base's shape: median step time, peak memory and parameters of each, "
    "their ratios. Prints a table, then one JSON line."
)


@dataclass
class GpuTrainArguments:
    """Flags of ``python -m bench.gpu_train`` (parsed by ``transformers.HfArgumentParser``)."""

    shape: Literal["base", "tiny"] = field(
        default="base",
        metadata={"help": "model shape: base = flan-t5-base (247.6M parameters), tiny = the tests' tiny T5"},
    )
    steps: int = field(default=300, metadata={"help": "optimizer steps per method"})
    batch_size: int = field(default=8, metadata={"help": "examples per optimizer step"})
    warmup_steps: int = field(
        default=10, metadata={"help": "first steps left out of the median (allocations, autotuning)"}
    )
    data: str = field(
        default_factory=default_data_source,
        metadata={"help": "DialogSum directory (or hub id, if cached) for the training and tokenizer texts"},
    )
    split: str = field(
        default="validation",
        metadata={"help": "split to train on (the local copy has no train split; timing does not care)"},
    )
    max_source_length: int = field(
        default=TRAIN_DEFAULTS["max_source_length"], metadata={"help": "prompt tokens, as in training"}
    )
    max_target_length: int = field(
        default=TRAIN_DEFAULTS["max_target_length"], metadata={"help": "summary tokens, as in training"}
    )
    precision: Literal["auto", "bf16", "float32"] = field(
        default="auto", metadata={"help": "auto = bf16 mixed on a CUDA GPU, float32 on the CPU"}
    )
    seed: int = field(default=TRAIN_DEFAULTS["seed"], metadata={"help": "random seed of both runs"})
    workdir: str | None = field(
        default=None,
        metadata={
            "help": "where to build (and reuse) the checkpoint and write the runs; default: a temp dir"
        },
    )
    output_json: str | None = field(
        default=None, metadata={"help": "also write the JSON result to this file"}
    )
    quiet: bool = field(default=False, metadata={"help": "no progress bars"})

    def validate(self) -> GpuTrainArguments:
        """Return self, or raise ``ValueError`` naming the bad flag."""
        for name in ("steps", "batch_size", "max_source_length", "max_target_length"):
            if getattr(self, name) < 1:
                raise ValueError(f"--{name.replace('_', '-')} must be at least 1, got {getattr(self, name)}")
        if not 0 <= self.warmup_steps < self.steps:
            raise ValueError(f"--warmup-steps must be in [0, steps={self.steps}), got {self.warmup_steps}")
        if self.precision == "bf16" and not torch.cuda.is_available():
            raise ValueError("--precision bf16 needs a CUDA GPU")
        return self

    def bf16(self) -> bool:
        """Whether the runs use bf16 mixed precision."""
        return self.precision == "bf16" or (self.precision == "auto" and torch.cuda.is_available())


class _HelpFormatter(argparse.RawDescriptionHelpFormatter, argparse.ArgumentDefaultsHelpFormatter):
    """Keeps the examples' layout and shows every flag's default."""


def build_parser() -> HfArgumentParser:
    """The command line, one flag per :class:`GpuTrainArguments` field."""
    return HfArgumentParser(
        GpuTrainArguments,
        prog="python -m bench.gpu_train",
        description=DESCRIPTION,
        epilog="examples:" + __doc__.split("Examples:")[1] if __doc__ else None,
        formatter_class=_HelpFormatter,
    )


class SyncedStepTimer(TrainerCallback):
    """Seconds of each optimizer step: from the previous step's end (or the first begin) to its end.

    On CUDA each end waits for the device, so a step's queued kernels are not billed to the next.
    """

    def __init__(self, cuda: bool) -> None:
        self.cuda = cuda
        self.marks: list[float] = []  # first step's begin, then every step's end

    def _now(self) -> float:
        if self.cuda:
            torch.cuda.synchronize()
        return time.perf_counter()

    def on_step_begin(self, args: Any, state: Any, control: Any, **kwargs: Any) -> None:
        if not self.marks:
            self.marks.append(self._now())

    def on_step_end(self, args: Any, state: Any, control: Any, **kwargs: Any) -> None:
        self.marks.append(self._now())

    def durations(self) -> list[float]:
        """One duration per finished optimizer step, in order."""
        return [b - a for a, b in zip(self.marks, self.marks[1:], strict=False)]


def missing_modules(names: tuple[str, ...] = REQUIRED_MODULES) -> list[str]:
    """The modules of ``names`` that cannot be imported here."""
    return [name for name in names if importlib.util.find_spec(name) is None]


def build_base(shape: str, root: Path, data: str) -> str:
    """Write a random-weight base of ``shape`` with its tokenizer under ``root``; return its directory.

    The flan-t5-base shape comes from ``python -m bench``'s builder (and is reused when ``root``
    already holds it); the tiny one from the tests' builder.
    """
    if shape == "base":
        from bench.fixtures import build_checkpoints

        return build_checkpoints(root / "base-shape", data=data).original
    from bench.fixtures import build_tiny_checkpoints  # the same tiny T5 the test suite trains

    return build_tiny_checkpoints(root / "tiny-shape", data)["original"]


def _free_memory(cuda: bool) -> None:
    """Collect garbage and hand cached memory back, so the next peak starts from live memory only."""
    gc.collect()
    if cuda:
        torch.cuda.empty_cache()
        return
    # glibc keeps freed heap pages, which would count in the next method's peak RSS.
    with contextlib.suppress(OSError, AttributeError):
        ctypes.CDLL("libc.so.6").malloc_trim(0)


def run_method(method: str, base_model: str, args: GpuTrainArguments, runs: Path) -> dict[str, Any]:
    """Train ``method`` through ``train.common.train`` for ``args.steps`` steps; return its figures."""
    cuda = torch.cuda.is_available()
    timer = SyncedStepTimer(cuda)
    options = TrainOptions(
        method=method,
        base_model=base_model,
        output_dir=str(runs / method),
        data=args.data,
        split=args.split,
        limit=args.steps * args.batch_size,  # enough dialogues for one pass; no need to tokenize more
        max_steps=args.steps,
        batch_size=args.batch_size,
        bf16=args.bf16(),
        seed=args.seed,
        max_source_length=args.max_source_length,
        max_target_length=args.max_target_length,
        logging_steps=max(1, min(50, args.steps // 5)),
        save_steps=args.steps + 1,  # no mid-run Trainer checkpoints (the Trainer still saves one at the end)
        overwrite=True,
        quiet=args.quiet,
        callbacks=[timer],
    )
    _free_memory(cuda)
    if cuda:
        torch.cuda.reset_peak_memory_stats()
        at_start = torch.cuda.memory_allocated()
    else:
        if not reset_peak_rss():
            logger.warning("cannot reset the peak RSS here; the CPU figure is the process's peak so far")
        at_start = peak_rss_bytes()
    logger.info("training %s for %d steps (batch %d)", method, args.steps, args.batch_size)
    meta = train(options)
    peak = torch.cuda.max_memory_allocated() if cuda else peak_rss_bytes()
    steady = timer.durations()[args.warmup_steps :]
    if not steady:
        raise RuntimeError(f"{method}: no optimizer step was timed after {args.warmup_steps} warm-up steps")
    step_s = statistics.median(steady)
    return {
        "step_s": round(step_s, 5),
        "examples_per_s": round(args.batch_size / step_s, 2),
        "timed_steps": len(steady),
        "steps": int(meta["steps"]),
        "wall_s": meta["wall_time_s"],
        "arena_median_step_s": meta["median_step_seconds"],  # the project's timer (no device sync)
        "peak_memory_bytes": int(peak),
        "peak_memory_gib": round(peak / GIB, 3),
        "memory_kind": "cuda_max_allocated" if cuda else "peak_rss",
        "memory_at_start_bytes": int(at_start),
        "trainable_params": int(meta["trainable_params"]),
        "total_params": int(meta["total_params"]),
        "trainable_percent": meta["trainable_percent"],
        "precision": meta["precision"],
        "final_train_loss": meta["final_train_loss"],
    }


def benchmark(args: GpuTrainArguments) -> dict[str, Any]:
    """Build the base, train every method on it in turn, and return the JSON result."""
    import peft
    import transformers

    args.validate()
    cuda = torch.cuda.is_available()
    with tempfile.TemporaryDirectory(prefix="gpu-train-") as tmp:
        root = Path(args.workdir).expanduser() if args.workdir else Path(tmp)
        start = time.perf_counter()
        base_model = build_base(args.shape, root, args.data)
        logger.info("%s-shape base ready in %.1f s: %s", args.shape, time.perf_counter() - start, base_model)
        results: dict[str, dict[str, Any]] = {}
        for method in METHODS:
            results[method] = run_method(method, base_model, args, root / "runs")
            _free_memory(cuda)  # the next method's peak must not include this one's leftovers
    full, lora = results["full"], results["lora"]
    return {
        "device": torch.cuda.get_device_name() if cuda else "cpu",
        "dtype": "bfloat16" if args.bf16() else "float32",
        "shape": args.shape,
        "steps": args.steps,
        "batch_size": args.batch_size,
        "warmup_steps": args.warmup_steps,
        "max_source_length": args.max_source_length,
        "full": full,
        "lora": lora,
        "lora_full_step_ratio": round(lora["step_s"] / full["step_s"], 4),
        "lora_full_memory_ratio": round(lora["peak_memory_bytes"] / full["peak_memory_bytes"], 4),
        "torch": torch.__version__,
        "transformers": transformers.__version__,
        "peft": peft.__version__,
    }


def format_table(result: dict[str, Any]) -> str:
    """A human-readable table of ``result`` (the JSON object :func:`benchmark` returns)."""
    memory = "peak GPU GiB" if result["full"]["memory_kind"] == "cuda_max_allocated" else "peak RSS GiB"
    lines = [
        f"{result['device']} · {result['dtype']} · {result['shape']} shape · {result['steps']} steps "
        f"x batch {result['batch_size']} · median after {result['warmup_steps']} warm-up steps",
        f"{'method':<6} {'trainable / total params':>28} {'s/step':>8} {'ex/s':>8} {memory:>13} {'loss':>7}",
    ]
    for method in METHODS:
        r = result[method]
        params = f"{r['trainable_params']:,} / {r['total_params']:,}"
        lines.append(
            f"{method:<6} {params:>28} {r['step_s']:>8.4f} {r['examples_per_s']:>8.1f} "
            f"{r['peak_memory_gib']:>13.3f} {r['final_train_loss']:>7.3f}"
        )
    lines.append(
        f"LoRA / full: step time {result['lora_full_step_ratio']:.3f}, memory {result['lora_full_memory_ratio']:.3f}"
    )
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> int:
    """Command line entry point; prints the table and the JSON line; returns the exit status."""
    (args,) = build_parser().parse_args_into_dataclasses(args=argv)
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(name)s %(levelname)s %(message)s")
    missing = missing_modules()
    if missing:
        print(f"bench.gpu_train needs {', '.join(missing)} (not importable here)", file=sys.stderr)
        return 2
    try:
        args.validate()
    except ValueError as err:
        print(f"bench.gpu_train: {err}", file=sys.stderr)
        return 2
    result = benchmark(args)
    line = json.dumps(result)
    if args.output_json:
        Path(args.output_json).expanduser().write_text(line + "\n", encoding="utf-8")
    print(format_table(result))
    print(line)
    return 0


if __name__ == "__main__":
    sys.exit(main())
