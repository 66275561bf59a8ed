"""``python -m train.mini``: build the mini preset - the whole study, offline, on a CPU.

Four steps, each with a progress bar, from nothing but a DialogSum directory:

1. a sentencepiece tokenizer fitted on validation dialogues and summaries and unlabeled
   dialogues (never the test split);
2. ``original``: a small T5 trained from scratch with T5's span-corruption objective on the
   validation and unlabeled *dialogues* (never the summaries: it must not learn to summarize);
3. ``full`` and ``lora``: fine-tuned on the validation split by ``train.common.train`` - the
   same prompt, collator, metadata and model cards as the flan-t5-base preset;
4. the evaluation report on the test split (``train.evaluate``) in ``OUTPUT/eval``.

Every model directory carries its decoding defaults in ``generation_config.json``. Weights are
stored in bfloat16 (they load as float32) so the whole preset stays small enough to ship.
``OUTPUT/build.json`` records the options, the time of each step and the machine's load.
"""

from __future__ import annotations

import argparse
import json
import logging
import os
import platform
import shutil
import sys
import time
from collections.abc import Sequence
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

from core.config import DEFAULT_HUB_DATA, PROJECT_ROOT, default_data_source

logger = logging.getLogger("train.mini")

STEPS: tuple[str, ...] = ("tokenizer", "original", "full", "lora", "eval")
BUILD_FILE = "build.json"


@dataclass
class MiniOptions:
    """Everything ``train.mini`` builds from; the defaults are the shipped recipe."""

    data: str = field(default_factory=default_data_source)
    output: str = str(PROJECT_ROOT / "checkpoints" / "mini")
    seed: int = 0
    threads: int = 0  # 0 = torch's default
    overwrite: bool = False
    quiet: bool = False
    # tokenizer
    vocab_size: int = 2000
    # model shape
    d_model: int = 192
    d_ff: int = 512
    num_layers: int = 3
    num_heads: int = 4
    dropout: float = 0.1
    # span-corruption pre-training
    denoisers: str = "0.15:3:1"
    max_length: int = 256
    pretrain_steps: int = 400
    pretrain_lr: float = 2e-3
    pretrain_batch_size: int = 16
    # fine-tuning (both methods)
    train_limit: int | None = None
    batch_size: int = 16
    label_smoothing: float = 0.1
    finetune_dropout: float | None = None
    full_epochs: float = 2.0
    full_steps: int = -1
    full_lr: float = 1e-3
    lora_epochs: float = 2.0
    lora_steps: int = -1
    lora_lr: float = 3e-3
    lora_r: int = 32
    lora_alpha: int = 32
    # decoding defaults (every model's generation_config.json)
    num_beams: int = 4
    no_repeat_ngram_size: int = 3
    repetition_penalty: float = 1.0
    encoder_repetition_penalty: float = 1.0  # > 1 favours words of the dialogue (copying)
    length_penalty: float = 1.0
    max_new_tokens: int = 60
    min_new_tokens: int = 0
    # evaluation
    eval_split: str = "test"
    eval_limit: int | None = None
    skip_eval: bool = False

    def generation_defaults(self) -> dict[str, Any]:
        """The decoding defaults written to each model's ``generation_config.json``."""
        defaults: dict[str, Any] = {
            "num_beams": self.num_beams,
            "no_repeat_ngram_size": self.no_repeat_ngram_size,
            "max_new_tokens": self.max_new_tokens,
            "do_sample": False,
        }
        if self.num_beams > 1:
            defaults.update(early_stopping=True, length_penalty=self.length_penalty)
        if self.repetition_penalty != 1.0:
            defaults["repetition_penalty"] = self.repetition_penalty
        if self.encoder_repetition_penalty != 1.0:
            defaults["encoder_repetition_penalty"] = self.encoder_repetition_penalty
        if self.min_new_tokens:
            defaults["min_new_tokens"] = self.min_new_tokens
        return defaults

    def validate(self) -> MiniOptions:
        """Return self, or raise ``ValueError`` naming the bad option."""
        if self.vocab_size < 100:
            raise ValueError(f"vocab_size must be at least 100, got {self.vocab_size}")
        if self.d_model % self.num_heads:
            raise ValueError(f"d_model ({self.d_model}) must be divisible by num_heads ({self.num_heads})")
        for name in ("d_model", "d_ff", "num_layers", "num_heads", "max_length", "pretrain_batch_size"):
            if getattr(self, name) < 1:
                raise ValueError(f"{name} must be at least 1, got {getattr(self, name)}")
        if self.pretrain_steps < 1:
            raise ValueError(f"pretrain_steps must be at least 1, got {self.pretrain_steps}")
        if not 0 <= self.dropout < 1:
            raise ValueError(f"dropout must be in [0, 1), got {self.dropout}")
        if self.threads < 0:
            raise ValueError(f"threads must be >= 0, got {self.threads}")
        from core.config import GenerationSettings

        GenerationSettings(max_new_tokens=self.max_new_tokens, num_beams=self.num_beams).validate()
        return self


def _data_label(data: str) -> str:
    """Record the data set by name: a local copy of DialogSum is still DialogSum."""
    from train.metadata import portable_location

    return DEFAULT_HUB_DATA if Path(data).expanduser().is_dir() else portable_location(data)


def prepare_output(out: Path, overwrite: bool) -> None:
    """Refuse a non-empty output unless ``overwrite``; then remove only what this build writes."""
    if out.exists() and not out.is_dir():
        raise SystemExit(f"error: output path {out} exists and is not a directory")
    ours = [out / name for name in ("original", "full", "lora", "eval", BUILD_FILE)]
    present = [p for p in ours if p.exists()]
    if present and not overwrite:
        names = ", ".join(p.name for p in present)
        raise SystemExit(f"error: {out} already holds a build ({names}); pass --overwrite to rebuild it")
    for path in present:
        if path.is_dir():
            shutil.rmtree(path)
        else:
            path.unlink()
    out.mkdir(parents=True, exist_ok=True)


def store_bf16(directory: Path) -> None:
    """Re-save a full model's weights in bfloat16 and refresh the size in its ``arena.json``."""
    import torch
    from transformers import AutoModelForSeq2SeqLM

    from train.metadata import ARENA_FILE, weights_size_bytes

    model = AutoModelForSeq2SeqLM.from_pretrained(str(directory), dtype=torch.float32)
    for weights in directory.glob("*.safetensors"):
        weights.unlink()
    model.to(torch.bfloat16).save_pretrained(str(directory))
    meta_path = directory / ARENA_FILE
    if meta_path.is_file():
        meta = json.loads(meta_path.read_text(encoding="utf-8"))
        meta["size_on_disk_bytes"] = weights_size_bytes(directory)
        meta["storage_dtype"] = "bfloat16"
        meta_path.write_text(json.dumps(meta, indent=2) + "\n", encoding="utf-8")


def build(options: MiniOptions) -> dict[str, Any]:
    """Run the four steps and return the build record (also written to ``build.json``)."""
    import torch

    from core.data import load_split
    from train.common import TrainOptions, train
    from train.pretrain import ModelSize, PretrainOptions, parse_denoisers, pretrain
    from train.tokenizer import train_tokenizer

    options.validate()
    denoisers = parse_denoisers(options.denoisers)
    if options.threads:
        torch.set_num_threads(options.threads)
    out = Path(options.output).expanduser()
    prepare_output(out, options.overwrite)
    data_label = _data_label(options.data)
    decoding = options.generation_defaults()
    timings: dict[str, float] = {}
    load_before = os.getloadavg()
    threads = torch.get_num_threads()  # now: loading models for the report may change it
    started = time.perf_counter()

    logger.info("[1/4] tokenizer: %d pieces", options.vocab_size)
    step = time.perf_counter()
    validation = load_split(options.data, "validation")
    unlabeled = load_split(options.data, "unlabeled")
    dialogues = [r.dialogue for r in validation] + [r.dialogue for r in unlabeled]
    summaries = [ref for r in validation for ref in r.references]
    tokenizer = train_tokenizer(dialogues + summaries, vocab_size=options.vocab_size)
    timings["tokenizer"] = time.perf_counter() - step

    logger.info("[2/4] original: span-corruption pre-training on %d dialogues", len(dialogues))
    step = time.perf_counter()
    size = ModelSize(
        d_model=options.d_model,
        d_ff=options.d_ff,
        num_layers=options.num_layers,
        num_decoder_layers=options.num_layers,
        num_heads=options.num_heads,
        d_kv=options.d_model // options.num_heads,
        dropout=options.dropout,
    )
    pretrain(
        dialogues,  # dialogue text only: the original is never shown a summary
        tokenizer,
        PretrainOptions(
            output_dir=str(out / "original"),
            size=size,
            denoisers=denoisers,
            max_length=options.max_length,
            max_steps=options.pretrain_steps,
            learning_rate=options.pretrain_lr,
            batch_size=options.pretrain_batch_size,
            seed=options.seed,
            quiet=options.quiet,
            generation_defaults=decoding,
            data_source_label=data_label,
        ),
    )
    timings["original"] = time.perf_counter() - step

    for number, method in ((3, "full"), (4, "lora")):
        logger.info("[%d/4] %s: fine-tuning on the validation split", number, method)
        step = time.perf_counter()
        steps = options.full_steps if method == "full" else options.lora_steps
        train(
            TrainOptions(
                method=method,
                base_model=str(out / "original"),
                output_dir=str(out / method),
                data=options.data,
                split="validation",
                limit=options.train_limit,
                epochs=options.full_epochs if method == "full" else options.lora_epochs,
                max_steps=steps,
                learning_rate=options.full_lr if method == "full" else options.lora_lr,
                batch_size=options.batch_size,
                warmup_ratio=0.05,
                label_smoothing=options.label_smoothing,
                dropout=options.finetune_dropout,
                seed=options.seed,
                overwrite=True,
                lora_r=options.lora_r,
                lora_alpha=options.lora_alpha,
                logging_steps=min(10, steps) if steps > 0 else 10,
                generation_defaults=decoding,
                data_source_label=data_label,
                quiet=options.quiet,
            )
        )
        if method == "full":
            store_bf16(out / "full")
        timings[method] = time.perf_counter() - step

    summary = None
    if not options.skip_eval:
        logger.info("[eval] scoring the three models on the %s split", options.eval_split)
        step = time.perf_counter()
        summary = run_evaluation(out, options)
        timings["eval"] = time.perf_counter() - step

    record = {
        "command": "python -m train.mini",
        "options": {**asdict(options), "data": data_label, "output": None},
        "generation_defaults": decoding,
        "seconds": {k: round(v, 1) for k, v in timings.items()},
        "total_seconds": round(time.perf_counter() - started, 1),
        "load_average_before": [round(x, 2) for x in load_before],
        "load_average_after": [round(x, 2) for x in os.getloadavg()],
        "cpu_count": os.cpu_count(),
        "torch_threads": threads,
        "machine": platform.processor() or platform.machine(),
        "finished_at": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime()),
    }
    if summary is not None:
        record["rouge"] = {
            name: {m: round(v["mean"], 4) for m, v in scores.items()}
            for name, scores in summary.get("models", {}).items()
        }
    (out / BUILD_FILE).write_text(json.dumps(record, indent=2) + "\n", encoding="utf-8")
    return record


def run_evaluation(out: Path, options: MiniOptions) -> dict[str, Any]:
    """Score the freshly built models with ``train.evaluate`` into ``OUTPUT/eval``."""
    from core.config import load_config
    from train.evaluate import evaluate

    config = load_config(
        preset="mini",
        original=str(out / "original"),
        full=str(out / "full"),
        lora=str(out / "lora"),
        data=options.data,
        device="cpu",
    )
    return evaluate(
        config,
        split=options.eval_split,
        limit=options.eval_limit,
        output=out / "eval",
        progress=not options.quiet,
    )


def build_parser() -> argparse.ArgumentParser:
    """The command line; every flag maps to a :class:`MiniOptions` field."""
    defaults = MiniOptions()
    parser = argparse.ArgumentParser(
        prog="python -m train.mini",
        description=(
            "Build the mini preset from a DialogSum directory, offline, on a CPU: a tokenizer, a small "
            "T5 pre-trained from scratch with span corruption (the 'original', never taught to "
            "summarize), its full fine-tune and LoRA adapter trained on the validation split with "
            "train.full/train.lora's code, and the ROUGE report on the test split. The defaults are "
            "the shipped recipe (about half an hour on 2 CPU cores)."
        ),
        epilog=(
            "examples:\n"
            "  python -m train.mini --overwrite                    # rebuild checkpoints/mini\n"
            "  python -m train.mini --output /tmp/mini --pretrain-steps 50 --full-epochs 2 "
            "--lora-epochs 2   # a quick look\n"
            "The test split is used only for the final report, never for training or the tokenizer."
        ),
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    where = parser.add_argument_group("data and output")
    where.add_argument(
        "--data", default=defaults.data, help="DialogSum directory or hub id (default: %(default)s)"
    )
    where.add_argument(
        "--output",
        default=None,
        help="where to write the preset (default: checkpoints/mini under the checkpoints root)",
    )
    where.add_argument("--overwrite", action="store_true", help="replace an existing build in --output")
    where.add_argument(
        "--seed", type=int, default=defaults.seed, help="seed of every random step (default: %(default)s)"
    )
    where.add_argument(
        "--threads", type=int, default=defaults.threads, help="torch CPU threads; 0 = torch's default"
    )
    where.add_argument("--quiet", action="store_true", help="no progress bars")

    model = parser.add_argument_group("tokenizer and model shape")
    model.add_argument(
        "--vocab-size",
        type=int,
        default=defaults.vocab_size,
        help="sentencepiece pieces (default: %(default)s)",
    )
    model.add_argument(
        "--d-model", type=int, default=defaults.d_model, help="hidden size (default: %(default)s)"
    )
    model.add_argument(
        "--d-ff", type=int, default=defaults.d_ff, help="feed-forward size (default: %(default)s)"
    )
    model.add_argument(
        "--num-layers",
        type=int,
        default=defaults.num_layers,
        help="encoder and decoder layers each (default: %(default)s)",
    )
    model.add_argument(
        "--num-heads", type=int, default=defaults.num_heads, help="attention heads (default: %(default)s)"
    )
    model.add_argument(
        "--dropout", type=float, default=defaults.dropout, help="dropout rate (default: %(default)s)"
    )

    pre = parser.add_argument_group("span-corruption pre-training (the original model)")
    pre.add_argument(
        "--denoisers",
        default=defaults.denoisers,
        help="mixture of density:mean_span[:weight], comma separated (default: %(default)s)",
    )
    pre.add_argument(
        "--max-length",
        type=int,
        default=defaults.max_length,
        help="tokens per pre-training window (default: %(default)s)",
    )
    pre.add_argument(
        "--pretrain-steps",
        type=int,
        default=defaults.pretrain_steps,
        help="optimizer steps (default: %(default)s)",
    )
    pre.add_argument(
        "--pretrain-lr",
        type=float,
        default=defaults.pretrain_lr,
        help="peak learning rate (default: %(default)s)",
    )
    pre.add_argument(
        "--pretrain-batch-size",
        type=int,
        default=defaults.pretrain_batch_size,
        help="windows per step (default: %(default)s)",
    )

    fine = parser.add_argument_group("fine-tuning on the validation split (full and LoRA)")
    fine.add_argument(
        "--train-limit", type=int, default=None, help="use only the first N dialogues (default: all)"
    )
    fine.add_argument(
        "--batch-size",
        type=int,
        default=defaults.batch_size,
        help="dialogues per step (default: %(default)s)",
    )
    fine.add_argument(
        "--label-smoothing", type=float, default=defaults.label_smoothing, help="(default: %(default)s)"
    )
    fine.add_argument(
        "--finetune-dropout",
        type=float,
        default=None,
        help="dropout while fine-tuning (default: the model's)",
    )
    fine.add_argument(
        "--full-epochs", type=float, default=defaults.full_epochs, help="(default: %(default)s)"
    )
    fine.add_argument(
        "--full-steps", type=int, default=defaults.full_steps, help="steps; overrides epochs when > 0"
    )
    fine.add_argument("--full-lr", type=float, default=defaults.full_lr, help="(default: %(default)s)")
    fine.add_argument(
        "--lora-epochs", type=float, default=defaults.lora_epochs, help="(default: %(default)s)"
    )
    fine.add_argument(
        "--lora-steps", type=int, default=defaults.lora_steps, help="steps; overrides epochs when > 0"
    )
    fine.add_argument("--lora-lr", type=float, default=defaults.lora_lr, help="(default: %(default)s)")
    fine.add_argument("--lora-r", type=int, default=defaults.lora_r, help="LoRA rank (default: %(default)s)")
    fine.add_argument(
        "--lora-alpha", type=int, default=defaults.lora_alpha, help="LoRA alpha (default: %(default)s)"
    )

    dec = parser.add_argument_group("decoding defaults written to every generation_config.json")
    dec.add_argument("--num-beams", type=int, default=defaults.num_beams, help="(default: %(default)s)")
    dec.add_argument(
        "--no-repeat-ngram-size",
        type=int,
        default=defaults.no_repeat_ngram_size,
        help="(default: %(default)s)",
    )
    dec.add_argument(
        "--repetition-penalty", type=float, default=defaults.repetition_penalty, help="(default: %(default)s)"
    )
    dec.add_argument(
        "--length-penalty", type=float, default=defaults.length_penalty, help="(default: %(default)s)"
    )
    dec.add_argument(
        "--max-new-tokens", type=int, default=defaults.max_new_tokens, help="(default: %(default)s)"
    )
    dec.add_argument(
        "--min-new-tokens", type=int, default=defaults.min_new_tokens, help="(default: %(default)s)"
    )

    ev = parser.add_argument_group("evaluation report")
    ev.add_argument("--eval-split", default=defaults.eval_split, help="split to score (default: %(default)s)")
    ev.add_argument(
        "--eval-limit", type=int, default=None, help="score only the first N dialogues (default: all)"
    )
    ev.add_argument("--skip-eval", action="store_true", help="build the models without the report")
    return parser


def options_from_args(args: argparse.Namespace) -> MiniOptions:
    """Map parsed arguments onto :class:`MiniOptions` (same names, dashes as underscores)."""
    values = vars(args)
    output = values.pop("output")
    if output is None:
        from core.config import load_config

        output = str(Path(load_config(preset="mini").checkpoints) / "mini")
    return MiniOptions(output=str(Path(output).expanduser().absolute()), **values)


def main(argv: Sequence[str] | None = None) -> int:
    """CLI entry point; returns the exit status."""
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(name)s: %(message)s")
    args = build_parser().parse_args(argv)
    try:
        options = options_from_args(args).validate()
    except ValueError as err:
        print(f"error: {err}", file=sys.stderr)
        return 2
    record = build(options)
    parts = ", ".join(f"{k} {v:.0f} s" for k, v in record["seconds"].items())
    print(f"mini preset built in {record['total_seconds']:.0f} s ({parts}) -> {options.output}")
    for name, scores in record.get("rouge", {}).items():
        print(f"  {name:>8}: ROUGE-1 {scores['rouge1']:.3f}  ROUGE-L {scores['rougeL']:.3f}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
