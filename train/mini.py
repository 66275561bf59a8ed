"""``python -m train.mini``: build the mini preset - the whole study, offline, on a CPU.

Four steps, each with a progress bar, from nothing but a DialogSum directory:

1. a sentencepiece tokenizer fitted on validation dialogues and summaries and unlabeled
   dialogues (never the test split);
2. ``original``: a small T5 trained from scratch on the validation and unlabeled *dialogues*
   (never the summaries: it must not learn to summarize): first a copy stage (repeat a turn),
   then T5's span corruption mixed with whole-text reconstruction;
3. ``full`` and ``lora``: fine-tuned on the validation split by ``train.common.train`` - the
   same prompt, collator, metadata and model cards as the flan-t5-base preset;
4. the evaluation report on the test split (``train.evaluate``) in ``OUTPUT/eval``.

Every model directory carries its decoding defaults in ``generation_config.json``. Weights are
stored in bfloat16 (they load as float32) so the whole preset stays small enough to ship.
``OUTPUT/build.json`` records the options, the time of each step and the machine's load.
"""

from __future__ import annotations

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

from core.config import DEFAULT_HUB_DATA, default_data_source, default_dream_source
from train.pretrain import ModelSize

logger = logging.getLogger("train.mini")

STEPS: tuple[str, ...] = ("tokenizer", "original", "full", "lora", "eval")
BUILD_FILE = "build.json"


def _option(default: Any, help: str) -> Any:
    """A dataclass field with the help text ``--help`` prints (HfArgumentParser reads it)."""
    if callable(default):
        return field(default_factory=default, metadata={"help": help})
    return field(default=default, metadata={"help": help})


@dataclass
class MiniOptions:
    """Everything ``train.mini`` builds from; the defaults are the shipped recipe."""

    # data and output
    data: str = _option(default_data_source, "DialogSum directory or hub id")
    dream: str = _option(
        default_dream_source,
        "DREAM directory (dialogues.jsonl) read with --tasks; empty = DialogSum text only",
    )
    output: str | None = _option(None, "where to write the preset (default: checkpoints/mini)")
    overwrite: bool = _option(False, "replace an existing build in --output")
    seed: int = _option(0, "seed of every random step")
    threads: int = _option(0, "torch CPU threads; 0 = torch's default")
    quiet: bool = _option(False, "no progress bars")
    # tokenizer and model shape
    vocab_size: int = _option(2000, "sentencepiece pieces")
    d_model: int = _option(ModelSize.d_model, "hidden size")
    d_ff: int = _option(ModelSize.d_ff, "feed-forward size (gated-GELU)")
    num_layers: int = _option(ModelSize.num_layers, "encoder and decoder layers each")
    num_heads: int = _option(ModelSize.num_heads, "attention heads")
    dropout: float = _option(ModelSize.dropout, "dropout rate while pre-training")
    # pre-training (the original model)
    tasks: bool = _option(
        False,
        "mix the dialogue instruction tasks (train.tasks, with DREAM's dialogues and questions) into "
        "pre-training; off in the shipped recipe (see the README's table of recipes tried)",
    )
    denoisers: str = _option(
        "0.15:3:1,0.3:3:1:full", "span-corruption mixture: density:mean_span[:weight[:full]], comma separated"
    )
    denoise_repeat: int = _option(1, "times the span-corruption windows appear in the mixture")
    copy_steps: int = _option(1500, "steps of a first stage that only copies short turns (0: none)")
    copy_batch_size: int = _option(32, "sentences per copy-stage step")
    max_length: int = _option(256, "tokens per span-corruption window")
    pretrain_steps: int = _option(400, "pre-training optimizer steps")
    pretrain_lr: float = _option(1e-3, "pre-training peak learning rate")
    pretrain_batch_size: int = _option(16, "pre-training examples per step")
    # fine-tuning on the validation split (both methods)
    holdout: int = _option(
        0, "keep the last N validation dialogues out of fine-tuning (to tune the recipe on them)"
    )
    train_limit: int | None = _option(None, "fine-tune on only the first N validation dialogues")
    batch_size: int = _option(16, "dialogues per fine-tuning step")
    warmup_ratio: float = _option(0.05, "fine-tuning warm-up, a fraction of the steps")
    label_smoothing: float = _option(0.1, "fine-tuning label smoothing")
    finetune_dropout: float | None = _option(None, "dropout while fine-tuning (default: the model's)")
    full_epochs: float = _option(6.0, "full fine-tuning epochs")
    full_steps: int = _option(-1, "full fine-tuning steps; overrides epochs when > 0")
    full_lr: float = _option(1e-3, "full fine-tuning learning rate")
    lora_epochs: float = _option(6.0, "LoRA epochs")
    lora_steps: int = _option(-1, "LoRA steps; overrides epochs when > 0")
    lora_lr: float = _option(3e-3, "LoRA learning rate")
    lora_r: int = _option(32, "LoRA rank")
    lora_alpha: int = _option(32, "LoRA alpha")
    lora_base_dtype: str = _option(
        "float32",
        "LoRA's frozen base precision: float32 (the shipped build's), bfloat16 or auto, as in train.lora",
    )
    # decoding defaults (every model's generation_config.json)
    num_beams: int = _option(4, "beams")
    no_repeat_ngram_size: int = _option(3, "no repeated n-grams of this size")
    repetition_penalty: float = _option(1.0, "repetition penalty")
    encoder_repetition_penalty: float = _option(1.0, "> 1 favours words of the dialogue (copying)")
    length_penalty: float = _option(1.0, "beam-search length penalty")
    max_new_tokens: int = _option(60, "summary length cap in tokens")
    min_new_tokens: int = _option(0, "summary minimum length in tokens")
    # evaluation report
    eval_split: str = _option("test", "split the report scores")
    eval_limit: int | None = _option(None, "score only the first N dialogues (default: all)")
    skip_eval: bool = _option(False, "build the models without the report")

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
        from train.common import check_lora_base_dtype

        check_lora_base_dtype(self.lora_base_dtype)  # refused now, not after the first stages
        GenerationSettings(max_new_tokens=self.max_new_tokens, num_beams=self.num_beams).validate()
        return self


def _dream_label(dream: str) -> str | None:
    """DREAM by name (a local copy is still DREAM), or None when the build had none."""
    return "nlpdata/dream (filtered, see shared/dream/README.md)" if dream else None


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


def fine_tuning_limit(available: int, options: MiniOptions) -> int:
    """How many validation dialogues (from the first) the fine-tunes train on."""
    limit = available - options.holdout
    if options.train_limit is not None:
        limit = min(limit, options.train_limit)
    if limit < 1:
        raise ValueError(
            f"no validation dialogues left to fine-tune on ({available} - holdout {options.holdout})"
        )
    return limit


def store_bf16(directory: Path) -> None:
    """Re-save a full model's weights in bfloat16; ``update_metadata`` refreshes arena.json and the card."""
    import torch
    from transformers import AutoModelForSeq2SeqLM

    from train.metadata import update_metadata

    model = AutoModelForSeq2SeqLM.from_pretrained(str(directory), dtype=torch.float32)
    for weights in directory.glob("*.safetensors"):
        weights.unlink()
    model.to(torch.bfloat16).save_pretrained(str(directory))
    update_metadata(directory, storage_dtype="bfloat16")


def default_output() -> str:
    """``checkpoints/mini`` under the configured checkpoints root (``ARENA_CHECKPOINTS``)."""
    from core.config import load_config

    return str(Path(load_config(preset="mini").checkpoints) / "mini")


def build(options: MiniOptions) -> dict[str, Any]:
    """Run the four steps and return the build record (also written to ``build.json``)."""
    import torch

    from core.data import load_split
    from train.common import TrainOptions, train
    from train.pretrain import PretrainOptions, parse_denoisers, pretrain
    from train.tasks import build_tasks, copy_tasks, load_dream
    from train.tokenizer import train_tokenizer

    options.validate()
    denoisers = parse_denoisers(options.denoisers)
    if options.threads:
        torch.set_num_threads(options.threads)
    out = Path(options.output or default_output()).expanduser().absolute()
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
    limit = fine_tuning_limit(len(validation), options)
    dream = load_dream(options.dream) if options.tasks and options.dream else []
    if options.tasks and not dream:
        logger.warning("no DREAM data (--dream): instruction tasks on DialogSum's dialogue text alone")
    dialogues = [r.dialogue for r in validation] + [r.dialogue for r in unlabeled]
    dialogues += [d.dialogue for d in dream]
    summaries = [ref for r in validation[:limit] for ref in r.references]
    tokenizer = train_tokenizer(dialogues + summaries, vocab_size=options.vocab_size)
    timings["tokenizer"] = time.perf_counter() - step

    step = time.perf_counter()
    tasks = (
        build_tasks(dialogues[: len(dialogues) - len(dream)], dream, seed=options.seed)
        if options.tasks
        else []
    )
    logger.info(
        "[2/4] original: pre-training on %d dialogues (%d instruction pairs)", len(dialogues), len(tasks)
    )
    size = ModelSize(
        d_model=options.d_model,
        d_ff=options.d_ff,
        num_layers=options.num_layers,
        num_decoder_layers=options.num_layers,
        num_heads=options.num_heads,
        d_kv=options.d_model // options.num_heads,
        dropout=options.dropout,
    )
    common = {
        "size": size,
        "learning_rate": options.pretrain_lr,
        "seed": options.seed,
        "quiet": options.quiet,
        "generation_defaults": decoding,
        "data_source_label": data_label,
    }
    first_stage = None
    if options.copy_steps > 0:
        # Stage 1: plain copying of short turns, so the decoder learns to read the encoder before
        # the main stage (copying does not emerge from the mixture within a CPU budget).
        first_stage = out / "_copy_stage"
        copying = copy_tasks(dialogues, seed=options.seed)
        logger.info("[2/4] original, copy stage: %d steps on %d sentences", options.copy_steps, len(copying))
        pretrain(
            [],
            tokenizer,
            PretrainOptions(
                output_dir=str(first_stage),
                max_steps=options.copy_steps,
                batch_size=options.copy_batch_size,
                tasks=copying,
                max_source_length=64,
                save_dtype="float32",
                **common,
            ),
        )
    pretrain(
        dialogues,  # dialogue text only: the original is never shown a summary
        tokenizer,
        PretrainOptions(
            output_dir=str(out / "original"),
            init_from=str(first_stage) if first_stage else None,
            init_label=f"a copy stage of {options.copy_steps} steps" if first_stage else None,
            denoisers=denoisers,
            max_length=options.max_length,
            max_steps=options.pretrain_steps,
            batch_size=options.pretrain_batch_size,
            tasks=tasks,
            denoise_repeat=options.denoise_repeat,
            **common,
        ),
    )
    if first_stage is not None:
        shutil.rmtree(first_stage, ignore_errors=True)
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
                limit=limit,
                epochs=options.full_epochs if method == "full" else options.lora_epochs,
                max_steps=steps,
                learning_rate=options.full_lr if method == "full" else options.lora_lr,
                batch_size=options.batch_size,
                warmup_ratio=options.warmup_ratio,
                label_smoothing=options.label_smoothing,
                dropout=options.finetune_dropout,
                seed=options.seed,
                overwrite=True,
                lora_r=options.lora_r,
                lora_alpha=options.lora_alpha,
                **({"lora_base_dtype": options.lora_base_dtype} if method == "lora" else {}),
                logging_steps=0,  # TrainOptions: every 2% of the steps, so a short run still has a curve
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
        "options": {
            **asdict(options),
            "data": data_label,
            "dream": _dream_label(options.dream),
            "output": None,
        },
        "generation_defaults": decoding,
        "seconds": {k: round(v, 1) for k, v in timings.items()},
        "total_seconds": round(time.perf_counter() - started, 1),
        "load_average_before": [round(x, 2) for x in load_before],
        "load_average_after": [round(x, 2) for x in os.getloadavg()],
        "cpu_count": os.cpu_count(),
        "torch_threads": threads,
        "machine": platform.processor() or platform.machine(),
        "accelerator": torch.cuda.get_device_name() if torch.cuda.is_available() else None,
        "finished_at": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime()),
    }
    if summary is not None:
        record["rouge"] = {
            name: {m: round(v["mean"], 4) for m, v in scores.items()}
            for name, scores in summary.get("models", {}).items()
        }
    (out / BUILD_FILE).write_text(json.dumps(record, indent=2) + "\n", encoding="utf-8")
    return {**record, "output": str(out)}


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
        threads=options.threads or None,
    )
    return evaluate(
        config,
        split=options.eval_split,
        limit=options.eval_limit,
        output=out / "eval",
        progress=not options.quiet,
    )


DESCRIPTION = """Build the mini preset from a DialogSum directory, offline, on a CPU: a tokenizer, a
small T5 pre-trained from scratch (the 'original': a copy stage, then span corruption and
whole-text reconstruction on DialogSum dialogue text, optionally instruction tasks with DREAM; it
never sees a summary), its full fine-tune and
LoRA adapter trained on the validation split with train.full/train.lora's code, and the ROUGE
report on the test split. The defaults are the shipped recipe (see build.json for its time)."""

EPILOG = """examples:
  python -m train.mini --overwrite                    # rebuild checkpoints/mini
  python -m train.mini --output /tmp/mini --pretrain-steps 50 --full-epochs 2 --lora-epochs 2
  python -m train.mini --output /tmp/mini --holdout 50 --eval-split validation  # tune on validation
The test split is used only for the final report, never for training or the tokenizer."""


def build_parser() -> Any:
    """The command line: one flag per :class:`MiniOptions` field (``--pretrain-steps`` or ``--pretrain_steps``)."""
    import argparse

    from transformers import HfArgumentParser

    return HfArgumentParser(
        MiniOptions,
        prog="python -m train.mini",
        description=DESCRIPTION,
        epilog=EPILOG,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )


def parse_options(argv: Sequence[str] | None = None) -> MiniOptions:
    """Parse the command line into :class:`MiniOptions` (not yet validated)."""
    (options,) = build_parser().parse_args_into_dataclasses(args=argv)
    return options


def main(argv: Sequence[str] | None = None) -> int:
    """CLI entry point; returns the exit status."""
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(name)s: %(message)s")
    options = parse_options(argv)
    try:
        options.validate()
    except ValueError as err:
        print(f"error: {err}", file=sys.stderr)
        return 2
    record = build(options)
    parts = ", ".join(f"{k} {v:.0f} s" for k, v in record["seconds"].items())
    print(f"mini preset built in {record['total_seconds']:.0f} s ({parts}) -> {record['output']}")
    for name, scores in record.get("rouge", {}).items():
        print(f"  {name:>8}: ROUGE-1 {scores['rouge1']:.3f}  ROUGE-L {scores['rougeL']:.3f}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
