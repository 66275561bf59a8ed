"""The shared command line of ``python -m train.full`` and ``python -m train.lora``.

The flags are built by transformers' ``HfArgumentParser`` from the argument groups of
:class:`train.common.TrainOptions`, so their names, types, defaults and help text live in one
place; ``train.full`` leaves out the LoRA group.
"""

from __future__ import annotations

import argparse
import json
import logging
import os
import sys
from collections.abc import Sequence

from transformers import HfArgumentParser

from core.data import DataError
from train.common import (
    LoraArguments,
    OptimisationArguments,
    RunArguments,
    TrainingError,
    TrainOptions,
    train,
)
from train.push import PushError

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
  accelerate launch -m train.{method} --bf16            # data-parallel on every GPU (see `accelerate config`)
  torchrun --nproc-per-node 4 -m train.{method} --bf16  # the same through torchrun

Training on the CPU works but is slow; T5 is never trained in float16 (it overflows)."""


class HelpFormatter(argparse.RawDescriptionHelpFormatter):
    """Examples kept as written, defaults shown, and each flag listed once.

    ``HfArgumentParser`` accepts ``--max_steps`` as well as ``--max-steps``; the help shows
    only the hyphenated spelling, and on/off flags without a value placeholder.
    """

    def _get_help_string(self, action: argparse.Action) -> str | None:
        help_text = action.help or ""
        unset = action.default is None or action.default is False or action.default == argparse.SUPPRESS
        if not unset and "(default" not in help_text:
            help_text += " (default: %(default)s)"
        return help_text

    def _format_action_invocation(self, action: argparse.Action) -> str:
        options = action.option_strings
        shown = [o for o in options if "_" not in o or o.replace("_", "-") not in options]
        if action.nargs == 0 or (action.const is True and action.nargs == "?"):  # --bf16 alone turns it on
            return ", ".join(shown)
        value = self._format_args(action, self._get_default_metavar_for_optional(action))
        return ", ".join(f"{option} {value}" for option in shown)


def build_parser(method: str) -> HfArgumentParser:
    """The parser of one method's command line; every flag explains itself in ``--help``."""
    groups = [RunArguments, OptimisationArguments] + ([LoraArguments] if method == "lora" else [])
    return HfArgumentParser(
        groups,
        prog=f"python -m train.{method}",
        usage="%(prog)s [options]  (all options below)",
        description=DESCRIPTIONS[method],
        epilog=EPILOG.format(method=method),
        formatter_class=HelpFormatter,
    )


def options_from_args(method: str, args: argparse.Namespace) -> TrainOptions:
    """The :class:`TrainOptions` of parsed flags, with the output directory and data resolved."""
    return TrainOptions(method=method, **vars(args)).with_defaults()


def main(method: str, argv: Sequence[str] | None = None) -> int:
    """Run the command line; returns the exit status."""
    args = build_parser(method).parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="%(levelname)s %(name)s: %(message)s")
    try:
        options = options_from_args(method, args).validate()
        meta = train(options)
    except (TrainingError, DataError, ValueError, PushError) as err:
        print(f"error: {err}", file=sys.stderr)
        return 2
    if int(os.environ.get("RANK", "0")) != 0:  # data-parallel: the main process reports for all
        return 0
    share = 100 * meta["trainable_params"] / meta["total_params"]
    print(
        f"trainable params: {meta['trainable_params']:,} || all params: {meta['total_params']:,} "
        f"|| trainable%: {share:.4f}"
    )
    print(
        f"done: {method} -> {options.output_dir} | {meta['steps']} steps, {meta['examples']} examples, "
        f"final loss {meta['final_train_loss']:.4f}, {meta['wall_time_s']:.0f} s on {meta['hardware']} "
        f"(global batch {meta['global_batch_size']}), "
        f"weights {meta['size_on_disk_bytes'] / 1e6:.1f} MB"
    )
    if options.push_to_hub:
        print(f"pushed to https://huggingface.co/{options.push_to_hub}")
    logging.getLogger(__name__).debug("metadata: %s", json.dumps(meta)[:2000])
    return 0
