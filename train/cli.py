"""The shared command line of ``python -m train.full`` and ``python -m train.lora``."""

from __future__ import annotations

import argparse
import json
import logging
import sys
from collections.abc import Sequence
from dataclasses import MISSING, fields
from pathlib import Path

from core.config import DEFAULT_HUB_DATA, PRESETS, default_data_source
from core.data import DataError
from train.common import DEFAULT_LEARNING_RATES, TrainingError, TrainOptions, default_output_dir, train

# The flags' defaults are TrainOptions' own, so the CLI and scripted callers cannot drift apart.
DEFAULTS = {f.name: f.default for f in fields(TrainOptions) if f.default is not MISSING}

DESCRIPTIONS = {
    "full": (
        "Fully fine-tune a seq2seq model (default google/flan-t5-base) on DialogSum: every weight "
        "is trained. Writes the model, tokenizer, arena.json (run metadata) and a model card "
        "README.md to the output directory."
    ),
    "lora": (
        "Train a LoRA adapter (default r=32, alpha=32 on the q and v projections) for a seq2seq "
        "model (default google/flan-t5-base) on DialogSum: the base stays frozen and only the small "
        "adapter is trained and saved, with the tokenizer, arena.json and a model card README.md."
    ),
}

EPILOG = """examples:
  python -m train.{method} --bf16                       # flan-t5-base on the Hub's DialogSum, on a GPU
  python -m train.{method} --max-steps 20 --limit 64 --output /tmp/try   # a quick smoke run
  python -m train.{method} --resume --output DIR        # continue a run that died

Training on the CPU works but is slow; T5 is never trained in float16 (it overflows)."""


def build_parser(method: str) -> argparse.ArgumentParser:
    """The argparse parser for one method; every flag explains itself in ``--help``."""
    parser = argparse.ArgumentParser(
        prog=f"python -m train.{method}",
        description=DESCRIPTIONS[method],
        epilog=EPILOG.format(method=method),
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    where = parser.add_argument_group("what to train on and where to write it")
    where.add_argument(
        "--base-model",
        default="google/flan-t5-base",
        help="hub id or local directory of the model to start from (default: %(default)s)",
    )
    where.add_argument(
        "--data",
        default=None,
        help=(
            f"DialogSum: a hub id (e.g. {DEFAULT_HUB_DATA}) or a local directory with <split>.jsonl "
            "files (default: the local copy beside the project if it has the split, else the Hub)"
        ),
    )
    where.add_argument(
        "--split", default=DEFAULTS["split"], help="data split to train on (default: %(default)s)"
    )
    where.add_argument(
        "--limit", type=int, default=None, help="use only the first N dialogues (default: all)"
    )
    where.add_argument(
        "--output",
        default=None,
        help=f"output directory (default: checkpoints/<preset>/{method} under the checkpoints root)",
    )
    where.add_argument(
        "--preset",
        choices=PRESETS,
        default="flan-t5-base",
        help="preset whose checkpoints folder is the default output (default: %(default)s)",
    )
    where.add_argument(
        "--overwrite", action="store_true", help="replace a non-empty output directory instead of refusing"
    )
    where.add_argument(
        "--resume",
        action="store_true",
        help="continue an interrupted run from its last checkpoint in OUTPUT/trainer/",
    )
    where.add_argument(
        "--push-to-hub",
        metavar="REPO",
        default=None,
        help="after training, upload the output directory to this Hub repo (needs `hf auth login`)",
    )

    how = parser.add_argument_group("optimisation")
    how.add_argument(
        "--epochs", type=float, default=DEFAULTS["epochs"], help="passes over the data (default: %(default)s)"
    )
    how.add_argument(
        "--max-steps",
        type=int,
        default=DEFAULTS["max_steps"],
        help="stop after this many optimizer steps (overrides --epochs)",
    )
    how.add_argument(
        "--learning-rate",
        "--lr",
        type=float,
        default=None,
        help=f"peak learning rate (default: {DEFAULT_LEARNING_RATES[method]:g}, the lab's value)",
    )
    how.add_argument(
        "--batch-size",
        type=int,
        default=DEFAULTS["batch_size"],
        help="examples per device per step (default: %(default)s)",
    )
    how.add_argument(
        "--grad-accum",
        type=int,
        default=DEFAULTS["grad_accum"],
        help="accumulate gradients over N batches (effective batch = batch size x N; default: %(default)s)",
    )
    how.add_argument(
        "--weight-decay",
        type=float,
        default=DEFAULTS["weight_decay"],
        help="AdamW weight decay (default: %(default)s)",
    )
    how.add_argument(
        "--warmup-ratio",
        type=float,
        default=DEFAULTS["warmup_ratio"],
        help="share of steps spent warming up (default: %(default)s)",
    )
    how.add_argument(
        "--label-smoothing",
        type=float,
        default=DEFAULTS["label_smoothing"],
        help="label smoothing factor (default: %(default)s)",
    )
    how.add_argument(
        "--dropout", type=float, default=None, help="override the model's dropout rate (default: keep it)"
    )
    how.add_argument(
        "--seed",
        type=int,
        default=DEFAULTS["seed"],
        help="random seed for data order and init (default: %(default)s)",
    )
    how.add_argument(
        "--bf16",
        action="store_true",
        help="bfloat16 mixed precision (CUDA GPUs only; much faster on A100/H100)",
    )
    how.add_argument(
        "--max-source-length",
        type=int,
        default=DEFAULTS["max_source_length"],
        help="cut prompts to this many tokens (default: %(default)s)",
    )
    how.add_argument(
        "--max-target-length",
        type=int,
        default=DEFAULTS["max_target_length"],
        help="cut summaries to this many tokens (default: %(default)s)",
    )
    how.add_argument(
        "--logging-steps",
        type=int,
        default=DEFAULTS["logging_steps"],
        help="log the loss every N steps (default: %(default)s)",
    )
    how.add_argument(
        "--save-steps",
        type=int,
        default=DEFAULTS["save_steps"],
        help="write a resumable checkpoint every N steps (default: %(default)s)",
    )
    if method == "lora":
        lora = parser.add_argument_group("LoRA")
        lora.add_argument(
            "--lora-r",
            type=int,
            default=DEFAULTS["lora_r"],
            help="rank of the update matrices (default: %(default)s)",
        )
        lora.add_argument(
            "--lora-alpha",
            type=int,
            default=DEFAULTS["lora_alpha"],
            help="scaling numerator alpha (default: %(default)s)",
        )
        lora.add_argument(
            "--lora-dropout",
            type=float,
            default=DEFAULTS["lora_dropout"],
            help="dropout on the LoRA path (default: %(default)s)",
        )
        lora.add_argument(
            "--lora-targets",
            nargs="+",
            default=list(DEFAULTS["lora_targets"]),
            help="module names to adapt, e.g. q k v o wi wo (default: q v)",
        )
    return parser


def default_training_data(split: str) -> str:
    """The local DialogSum copy when it holds ``split``, else the Hub (the local copy has no train split)."""
    local = default_data_source()
    return local if (Path(local) / f"{split}.jsonl").is_file() else DEFAULT_HUB_DATA


def options_from_args(method: str, args: argparse.Namespace) -> TrainOptions:
    """Map parsed flags to :class:`TrainOptions`."""
    extra = {}
    if method == "lora":
        extra = {
            "lora_r": args.lora_r,
            "lora_alpha": args.lora_alpha,
            "lora_dropout": args.lora_dropout,
            "lora_targets": tuple(args.lora_targets),
        }
    return TrainOptions(
        method=method,
        base_model=args.base_model,
        output_dir=args.output or default_output_dir(method, args.preset),
        data=args.data or default_training_data(args.split),
        split=args.split,
        limit=args.limit,
        epochs=args.epochs,
        max_steps=args.max_steps,
        learning_rate=args.learning_rate,
        batch_size=args.batch_size,
        grad_accum=args.grad_accum,
        weight_decay=args.weight_decay,
        warmup_ratio=args.warmup_ratio,
        label_smoothing=args.label_smoothing,
        dropout=args.dropout,
        seed=args.seed,
        resume=args.resume,
        overwrite=args.overwrite,
        bf16=args.bf16,
        push_to_hub=args.push_to_hub,
        max_source_length=args.max_source_length,
        max_target_length=args.max_target_length,
        logging_steps=args.logging_steps,
        save_steps=args.save_steps,
        **extra,
    )


def main(method: str, argv: Sequence[str] | None = None) -> int:
    """Run the command line; returns the exit status."""
    args = build_parser(method).parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="%(levelname)s %(name)s: %(message)s")
    try:
        options = options_from_args(method, args).validate()
        meta = train(options)
    except (TrainingError, DataError, ValueError) as err:
        print(f"error: {err}", file=sys.stderr)
        return 2
    share = 100 * meta["trainable_params"] / meta["total_params"]
    print(
        f"trainable params: {meta['trainable_params']:,} || all params: {meta['total_params']:,} "
        f"|| trainable%: {share:.4f}"
    )
    print(
        f"done: {method} -> {options.output_dir} | {meta['steps']} steps, {meta['examples']} examples, "
        f"final loss {meta['final_train_loss']:.4f}, {meta['wall_time_s']:.0f} s on {meta['hardware']}, "
        f"weights {meta['size_on_disk_bytes'] / 1e6:.1f} MB"
    )
    if args.push_to_hub:
        print(f"pushed to https://huggingface.co/{args.push_to_hub}")
    logging.getLogger(__name__).debug("metadata: %s", json.dumps(meta)[:2000])
    return 0
