"""Pre-training of a small T5 from scratch (the mini preset's ``original``).

Two kinds of examples are mixed in one ``Trainer`` run:

- T5 span corruption on dialogue text: transformers ships T5's span-corruption collator only
  for Flax, in an example script, so :class:`SpanCorruptionCollator` re-implements it for
  PyTorch: random noise spans are replaced by sentinels ``<extra_id_N>`` and the target lists
  the sentinels each followed by the tokens they hid (Raffel et al. 2020, section 3.1.4). A
  mixture of denoisers can be given; a denoiser marked ``full`` asks for the whole text back.
  Span corruption teaches the language of the dialogues, but its targets are sentinel-led
  fragments that a decoder can mostly guess without reading the input.
- instruction pairs (``train.tasks``): whole-phrase targets that can only be written by reading
  the dialogue, which is what teaches the decoder to copy from the encoder.

Everything else is transformers' machinery: ``T5ForConditionalGeneration`` trained with the
``Trainer``; the model is saved with ``save_pretrained`` (safetensors).
"""

from __future__ import annotations

import json
import logging
import math
import shutil
import time
from collections.abc import Sequence
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import torch

from train.metadata import (
    ARENA_FILE,
    CARD_FILE,
    hardware_description,
    library_versions,
    loss_history,
    weights_size_bytes,
)

logger = logging.getLogger(__name__)

LABEL_PAD = -100  # ignored by the loss, like DataCollatorForSeq2Seq's label padding


@dataclass(frozen=True)
class Denoiser:
    """One span-corruption setting: the fraction of tokens hidden and the mean span length."""

    noise_density: float
    mean_span_length: float
    weight: float = 1.0
    # False: T5's span corruption (the target lists only the hidden spans). True: the target is
    # the whole original text (the T5 paper's "BERT-style"/BART-style variant), which teaches
    # the decoder to copy from the encoder as well as to fill the gaps.
    reconstruct: bool = False

    def __post_init__(self) -> None:
        if not 0.0 < self.noise_density < 1.0:
            raise ValueError(f"noise_density must be in (0, 1), got {self.noise_density}")
        if self.mean_span_length < 1.0:
            raise ValueError(f"mean_span_length must be >= 1, got {self.mean_span_length}")
        if self.weight <= 0:
            raise ValueError(f"weight must be > 0, got {self.weight}")


# T5's own objective (15 %, spans of 3) plus a long-span denoiser that forces phrase writing.
DEFAULT_DENOISERS: tuple[Denoiser, ...] = (Denoiser(0.15, 3.0, 1.0),)


def parse_denoisers(spec: str) -> tuple[Denoiser, ...]:
    """Parse ``"0.15:3:1,0.15:3:1:full"``: density:mean_span[:weight[:full]], comma separated.

    A trailing ``full`` makes that denoiser's target the whole original text.
    """
    denoisers = []
    for part in spec.split(","):
        fields = [f for f in part.strip().split(":") if f]
        reconstruct = bool(fields) and fields[-1] == "full"
        if reconstruct:
            fields = fields[:-1]
        if len(fields) not in (2, 3):
            raise ValueError(f"denoiser {part!r} must read density:mean_span[:weight[:full]], e.g. 0.15:3:1")
        try:
            values = [float(f) for f in fields]
        except ValueError as err:
            raise ValueError(f"denoiser {part!r} has a non-numeric field") from err
        denoisers.append(Denoiser(*values, reconstruct=reconstruct))
    if not denoisers:
        raise ValueError("at least one denoiser is needed")
    return tuple(denoisers)


def random_spans_noise_mask(
    length: int, noise_density: float, mean_span_length: float, rng: np.random.Generator
) -> np.ndarray:
    """A boolean mask of ``length`` with noise spans, as in T5's ``random_spans_noise_mask``.

    The number of noise tokens and spans is fixed by the density and mean span length; the
    span lengths are a random partition, and noise and non-noise spans alternate, starting
    with non-noise (so the text never begins with a sentinel).
    """
    if length < 2:
        return np.zeros(length, dtype=bool)
    num_noise = round(length * noise_density)
    num_noise = min(max(num_noise, 1), length - 1)
    num_spans = max(1, round(num_noise / mean_span_length))
    num_spans = min(num_spans, num_noise, length - num_noise)
    num_clean = length - num_noise

    def partition(total: int, parts: int) -> np.ndarray:
        # Random composition of `total` into `parts` positive integers.
        cuts = np.sort(rng.choice(np.arange(1, total), size=parts - 1, replace=False)) if parts > 1 else []
        bounds = np.concatenate([[0], cuts, [total]])
        return np.diff(bounds)

    noise_lengths = partition(num_noise, num_spans)
    clean_lengths = partition(num_clean, num_spans)
    mask = np.zeros(length, dtype=bool)
    position = 0
    for clean, noise in zip(clean_lengths, noise_lengths, strict=True):
        position += int(clean)
        mask[position : position + int(noise)] = True
        position += int(noise)
    return mask


def corrupt(ids: Sequence[int], mask: np.ndarray, sentinels: Sequence[int], eos_id: int) -> tuple[list, list]:
    """Replace each noise span of ``ids`` by the next sentinel; the target lists what was hidden."""
    inputs: list[int] = []
    targets: list[int] = []
    span = -1
    for position, token in enumerate(ids):
        if mask[position]:
            if position == 0 or not mask[position - 1]:
                span += 1
                if span >= len(sentinels):
                    raise ValueError(f"more noise spans than sentinels ({len(sentinels)})")
                inputs.append(sentinels[span])
                targets.append(sentinels[span])
            targets.append(int(token))
        else:
            inputs.append(int(token))
    return [*inputs, eos_id], [*targets, eos_id]


@dataclass
class SpanCorruptionCollator:
    """Turn token-id sequences into T5 span-corruption batches (``input_ids``/``labels``).

    Features are dicts with ``input_ids`` (no EOS). Each sequence draws one denoiser by
    weight. The random generator is seeded and advanced in call order, so a run with a fixed
    seed and a single-process data loader sees the same corruptions every time.
    """

    tokenizer: Any
    denoisers: tuple[Denoiser, ...] = DEFAULT_DENOISERS
    seed: int = 0
    pad_to_multiple_of: int | None = None
    _rng: np.random.Generator = field(init=False, repr=False)
    _sentinels: list[int] = field(init=False, repr=False)

    def __post_init__(self) -> None:
        self._rng = np.random.default_rng(self.seed)
        names = [f"<extra_id_{i}>" for i in range(100)]
        ids = self.tokenizer.convert_tokens_to_ids(names)
        unk = self.tokenizer.unk_token_id
        self._sentinels = [i for i in ids if i is not None and i != unk]
        if not self._sentinels:
            raise ValueError("the tokenizer has no <extra_id_N> sentinel tokens")
        weights = np.array([d.weight for d in self.denoisers], dtype=float)
        self._weights = weights / weights.sum()

    def __call__(self, features: list[dict[str, Any]]) -> dict[str, torch.Tensor]:
        pairs = []
        for feature in features:
            ids = list(feature["input_ids"])
            if feature.get("labels"):  # an instruction pair: already (input, target), no noise
                pairs.append((ids, list(feature["labels"])))
                continue
            denoiser = self.denoisers[int(self._rng.choice(len(self.denoisers), p=self._weights))]
            mask = random_spans_noise_mask(
                len(ids), denoiser.noise_density, denoiser.mean_span_length, self._rng
            )
            inputs, targets = corrupt(ids, mask, self._sentinels, self.tokenizer.eos_token_id)
            if denoiser.reconstruct:
                targets = [*ids, self.tokenizer.eos_token_id]
            pairs.append((inputs, targets))
        pad = self.tokenizer.pad_token_id
        return {
            "input_ids": _pad([p[0] for p in pairs], pad, self.pad_to_multiple_of),
            "attention_mask": _pad([[1] * len(p[0]) for p in pairs], 0, self.pad_to_multiple_of),
            "labels": _pad([p[1] for p in pairs], LABEL_PAD, self.pad_to_multiple_of),
        }


def _pad(rows: list[list[int]], value: int, multiple: int | None) -> torch.Tensor:
    width = max(len(r) for r in rows)
    if multiple:
        width = math.ceil(width / multiple) * multiple
    return torch.tensor([r + [value] * (width - len(r)) for r in rows], dtype=torch.long)


def tokenize_pairs(
    tokenizer: Any,
    pairs: Sequence[tuple[str, str]],
    max_source_length: int = 512,
    max_target_length: int = 64,
) -> tuple[list[list[int]], list[list[int]]]:
    """Token ids (with EOS) of instruction pairs; inputs and targets cut at their maximum length."""
    if not pairs:
        return [], []
    inputs = tokenizer([p[0] for p in pairs], truncation=True, max_length=max_source_length)["input_ids"]
    targets = tokenizer(text_target=[p[1] for p in pairs], truncation=True, max_length=max_target_length)
    return inputs, targets["input_ids"]


def chunk_texts(tokenizer: Any, texts: Sequence[str], max_length: int) -> list[list[int]]:
    """Tokenize ``texts`` (no EOS) and cut each into windows of at most ``max_length`` tokens.

    Windows shorter than 8 tokens (the tail of a long text) are dropped: too short to corrupt.
    Room is left for the sentinels and EOS the collator adds.
    """
    window = max(8, max_length - 1)
    chunks = []
    for text in texts:
        ids = tokenizer(text, add_special_tokens=False)["input_ids"]
        for start in range(0, len(ids), window):
            piece = ids[start : start + window]
            if len(piece) >= 8:
                chunks.append(piece)
    return chunks


@dataclass
class ModelSize:
    """The shape of the small T5 (gated-GELU feed-forward like T5 v1.1 / Flan-T5)."""

    d_model: int = 192
    d_ff: int = 512
    num_layers: int = 3
    num_decoder_layers: int = 3
    num_heads: int = 4
    d_kv: int = 48
    # 0, not T5's 0.1: with dropout this small model never learned to copy its input within a
    # CPU build's steps; without, copying emerges after ~1,000 steps (README, recipes tried).
    dropout: float = 0.0
    tie_word_embeddings: bool = True


def build_model(tokenizer: Any, size: ModelSize, seed: int) -> Any:
    """A freshly initialised T5 with the tokenizer's vocabulary, seeded for reproducibility.

    Embeddings are tied on purpose (transformers 5's ``T5Config`` ties them by default): a
    small model saves a vocabulary-sized matrix, and the output layer then scores tokens
    with the same vectors the encoder reads, which favours copying words from the input.
    """
    from transformers import GenerationConfig, T5Config, T5ForConditionalGeneration

    config = T5Config(
        vocab_size=len(tokenizer),
        d_model=size.d_model,
        d_kv=size.d_kv,
        d_ff=size.d_ff,
        num_layers=size.num_layers,
        num_decoder_layers=size.num_decoder_layers,
        num_heads=size.num_heads,
        feed_forward_proj="gated-gelu",
        dropout_rate=size.dropout,
        decoder_start_token_id=tokenizer.pad_token_id,
        pad_token_id=tokenizer.pad_token_id,
        eos_token_id=tokenizer.eos_token_id,
        tie_word_embeddings=size.tie_word_embeddings,
    )
    config.tie_word_embeddings = size.tie_word_embeddings  # __init__ may force it; be explicit
    torch.manual_seed(seed)
    model = T5ForConditionalGeneration(config)
    model.generation_config = GenerationConfig(
        decoder_start_token_id=tokenizer.pad_token_id,
        pad_token_id=tokenizer.pad_token_id,
        eos_token_id=tokenizer.eos_token_id,
    )
    return model


@dataclass
class PretrainOptions:
    """Settings of one span-corruption pre-training run."""

    output_dir: str
    size: ModelSize = field(default_factory=ModelSize)
    denoisers: tuple[Denoiser, ...] = DEFAULT_DENOISERS
    max_length: int = 256
    epochs: float = 30.0
    max_steps: int = -1
    learning_rate: float = 2e-3
    batch_size: int = 16
    warmup_ratio: float = 0.05
    weight_decay: float = 0.01
    seed: int = 0
    logging_steps: int = 20
    save_dtype: str = "bfloat16"
    quiet: bool = False  # no progress bars
    generation_defaults: dict | None = None  # written to the output's generation_config.json
    data_source_label: str = "knkarthick/dialogsum"  # what arena.json and the card record
    # Instruction pairs (train.tasks) mixed with the span-corruption windows, and how many times
    # the windows are repeated in that mixture (the pairs outnumber them otherwise).
    tasks: Sequence[tuple[str, str]] = ()
    denoise_repeat: int = 1
    init_from: str | None = None  # continue this saved model instead of starting from scratch
    init_label: str | None = None  # what arena.json and the card say init_from was
    max_source_length: int = 512  # instruction inputs (a whole dialogue and its instruction)
    max_target_length: int = 64


def save_model(model: Any, tokenizer: Any, out_dir: str | Path, dtype: str = "bfloat16") -> None:
    """``save_pretrained`` in ``dtype`` (bf16 halves the size; it loads back as fp32 when asked)."""
    target = {"bfloat16": torch.bfloat16, "float32": torch.float32}[dtype]
    original_dtype = next(model.parameters()).dtype
    model.to(target)
    try:
        model.save_pretrained(str(out_dir))
    finally:
        model.to(original_dtype)
    tokenizer.save_pretrained(str(out_dir))


def pretrain(texts: Sequence[str], tokenizer: Any, options: PretrainOptions) -> dict[str, Any]:
    """Pre-train a new small T5 on ``texts`` with span corruption and save it.

    The output directory gets the weights (safetensors, ``save_dtype``), the tokenizer,
    ``generation_config.json`` (with ``generation_defaults``), ``arena.json`` and a model card.
    Returns the ``arena.json`` metadata (steps, windows, wall time, loss history...).
    """
    from datasets import Dataset
    from transformers import Trainer, TrainingArguments, set_seed

    set_seed(options.seed)
    chunks = chunk_texts(tokenizer, texts, options.max_length)
    task_inputs, task_targets = tokenize_pairs(
        tokenizer, options.tasks, options.max_source_length, options.max_target_length
    )
    if not chunks and not task_inputs:
        raise ValueError("no pre-training text: every text was empty or shorter than 8 tokens")
    if options.init_from:  # a later stage of a curriculum continues an earlier stage's model
        from transformers import T5ForConditionalGeneration

        model = T5ForConditionalGeneration.from_pretrained(options.init_from, dtype=torch.float32)
    else:
        model = build_model(tokenizer, options.size, options.seed)
    total = sum(p.numel() for p in model.parameters())
    windows = chunks * max(1, options.denoise_repeat)
    logger.info(
        "pre-training a %.1fM-parameter T5 on %d windows and %d instruction pairs",
        total / 1e6, len(windows), len(task_inputs),
    )  # fmt: skip
    # Empty labels mark a window for the collator to corrupt; pairs carry their own target.
    dataset = Dataset.from_dict(
        {"input_ids": windows + task_inputs, "labels": [[] for _ in windows] + task_targets}
    )
    args = TrainingArguments(
        output_dir=str(Path(options.output_dir) / "_trainer"),
        per_device_train_batch_size=options.batch_size,
        learning_rate=options.learning_rate,
        num_train_epochs=options.epochs,
        max_steps=options.max_steps,
        warmup_steps=options.warmup_ratio,
        lr_scheduler_type="cosine",
        weight_decay=options.weight_decay,
        # a run shorter than the logging interval still records its loss
        logging_steps=min(options.logging_steps, options.max_steps)
        if options.max_steps > 0
        else options.logging_steps,
        save_strategy="no",
        report_to="none",
        seed=options.seed,
        data_seed=options.seed,
        use_cpu=not torch.cuda.is_available(),
        remove_unused_columns=False,  # the collator needs the raw input_ids column
        dataloader_num_workers=0,  # the collator's generator must advance in one process
        disable_tqdm=options.quiet,
    )
    collator = SpanCorruptionCollator(tokenizer, options.denoisers, seed=options.seed)
    trainer = Trainer(model=model, args=args, train_dataset=dataset, data_collator=collator)
    start = time.perf_counter()
    result = trainer.train()
    seconds = time.perf_counter() - start
    model = trainer.model
    model.config.use_cache = True  # the Trainer turns the KV cache off; generation wants it
    out = Path(options.output_dir)
    out.mkdir(parents=True, exist_ok=True)
    shutil.rmtree(args.output_dir, ignore_errors=True)  # nothing was saved there (save_strategy="no")
    for key, value in (options.generation_defaults or {}).items():
        setattr(model.generation_config, key, value)
    save_model(model, tokenizer, out, options.save_dtype)
    losses = loss_history(trainer.state.log_history)
    meta = {
        "method": "pretrained",
        "objective": "T5 span corruption (denoising)"
        + (" + dialogue instruction tasks (train.tasks)" if task_inputs else "")
        + ", trained from scratch",
        "denoisers": [asdict(d) for d in options.denoisers],
        "base_model": None,
        "architecture": {**asdict(options.size), "vocab_size": len(tokenizer)},
        "trainable_params": total,
        "total_params": total,
        "trainable_percent": 100.0,
        "size_on_disk_bytes": weights_size_bytes(out),
        "storage_dtype": options.save_dtype,
        "examples": len(windows) + len(task_inputs),
        "denoising_windows": len(windows),
        "initialised_from": options.init_label if options.init_from else None,
        "instruction_pairs": len(task_inputs),
        "texts": len(texts),
        "max_length": options.max_length,
        "steps": int(result.global_step),
        "epochs": float(trainer.state.epoch or 0.0),
        "wall_time_s": round(seconds, 3),
        "seconds_per_step": round(seconds / max(1, result.global_step), 4),
        "hardware": hardware_description(),
        "precision": "float32",
        "final_train_loss": losses[-1]["loss"] if losses else float(result.training_loss),
        "mean_train_loss": float(result.training_loss),
        "loss_history": losses,
        "seed": options.seed,
        "learning_rate": options.learning_rate,
        "batch_size": options.batch_size,
        "weight_decay": options.weight_decay,
        "warmup_ratio": options.warmup_ratio,
        "data_source": options.data_source_label,
        "generation_defaults": options.generation_defaults,
        "library_versions": library_versions(),
        "finished_at": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime()),
    }
    (out / ARENA_FILE).write_text(json.dumps(meta, indent=2) + "\n", encoding="utf-8")
    (out / CARD_FILE).write_text(pretrain_card(meta), encoding="utf-8")
    return meta


def pretrain_card(meta: dict[str, Any]) -> str:
    """A Hub-format model card for the span-corruption model (it was never taught to summarize)."""
    arch = meta["architecture"]
    denoisers = ", ".join(
        f"{d['noise_density']:.0%} of tokens in spans of ~{d['mean_span_length']:g}"
        for d in meta["denoisers"]
    )
    return "\n".join(
        [
            "---",
            "datasets:",
            f"- {meta['data_source']}",
            "library_name: transformers",
            "tags:",
            "- t5",
            "- span-corruption",
            "- dialogue-summary-arena",
            "---",
            "",
            "# Mini T5, span-corruption pre-trained (the mini preset's original model)",
            "",
            "A small T5 trained **from scratch** on DialogSum dialogue text (validation and unlabeled "
            "splits, never the test split) with T5's span-corruption objective. It knows the language "
            "of the dialogues but was **never taught to summarize**; it is not Flan-T5.",
            "",
            f"- Architecture: d_model {arch['d_model']}, d_ff {arch['d_ff']} (gated-GELU), "
            f"{arch['num_layers']}+{arch['num_decoder_layers']} layers, {arch['num_heads']} heads, "
            f"vocabulary {arch['vocab_size']}, tied embeddings: {arch['tie_word_embeddings']}",
            f"- Parameters: {meta['total_params']:,} (stored as {meta['storage_dtype']})",
            f"- Denoisers: {denoisers}",
            f"- Training: {meta['steps']} steps ({meta['epochs']:.1f} epochs over {meta['examples']} windows), "
            f"lr {meta['learning_rate']}, batch {meta['batch_size']}, seed {meta['seed']}, "
            f"{meta['wall_time_s']:.0f} s on {meta['hardware']}",
            f"- Final training loss: {meta['final_train_loss']:.3f}",
            *([f"- Continued from {meta['initialised_from']}"] if meta.get("initialised_from") else []),
            "",
            "Built by `python -m train.mini`.",
            "",
        ]
    )
