"""Checkpoints with flan-t5-base's exact shape and random weights, for benchmarking.

Latency and memory do not depend on weight values, so a random T5 with the real shape
(247,577,856 parameters, untied ``lm_head``) stands in for flan-t5-base, which can't be
downloaded here. The three checkpoints are laid out like a preset, so the benchmark loads
them through the app's own loader (:func:`core.models.load_model_set`).
"""

from __future__ import annotations

import json
import logging
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch

from core.config import ArenaConfig, GenerationSettings, ModelLocations, default_data_source
from core.data import load_split
from core.prompt import build_prompt

logger = logging.getLogger(__name__)

BASE_PARAMETERS = 247_577_856  # google/flan-t5-base, untied lm_head
BASE_VOCAB = 32128
INPUT_TOKENS = 256
OUTPUT_TOKENS = 50
LORA_RANK = 32
LORA_ALPHA = 32
LORA_TARGETS = ("q", "v")

# Random weights rarely emit EOS; pinning the length makes every run decode the same work.
FORCED_SETTINGS = GenerationSettings(max_new_tokens=OUTPUT_TOKENS, min_new_tokens=OUTPUT_TOKENS, num_beams=1)


@dataclass(frozen=True)
class BenchCheckpoints:
    """Where the benchmark's three models live, and the dialogues it feeds them."""

    root: Path
    original: str
    full: str
    lora: str
    data: str

    def config(self, **overrides: Any) -> ArenaConfig:
        """An app configuration pointing at these checkpoints (``dtype``/``device``/``threads``)."""
        return ArenaConfig(
            preset="flan-t5-base",
            preset_reason="benchmark: random weights with flan-t5-base's shape",
            models=ModelLocations(original=self.original, full=self.full, lora=self.lora),
            data=self.data,
            generation=FORCED_SETTINGS,
            device=overrides.get("device", "cpu"),
            dtype=overrides.get("dtype", "auto"),
            threads=overrides.get("threads"),
            votes_db=str(self.root / "votes.sqlite"),
            checkpoints=str(self.root),
        )


def t5_config(vocab_size: int, d_model: int, d_kv: int, d_ff: int, layers: int, heads: int) -> Any:
    """A gated-GELU T5 (v1.1 / flan-t5 style) ``T5Config`` with an untied ``lm_head`` and T5's ids."""
    from transformers import T5Config

    return T5Config(
        vocab_size=vocab_size,
        d_model=d_model,
        d_kv=d_kv,
        d_ff=d_ff,
        num_layers=layers,
        num_decoder_layers=layers,
        num_heads=heads,
        feed_forward_proj="gated-gelu",
        decoder_start_token_id=0,
        pad_token_id=0,
        eos_token_id=1,
        tie_word_embeddings=False,  # T5 v1.1 (flan-t5): decoder outputs are not rescaled
    )


def base_config() -> Any:
    """flan-t5-base's architecture (``T5Config``) with an untied ``lm_head``."""
    return t5_config(BASE_VOCAB, d_model=768, d_kv=64, d_ff=2048, layers=12, heads=12)


def tiny_t5_config(vocab_size: int) -> Any:
    """A T5 small enough to train for a few steps in a test."""
    config = t5_config(vocab_size, d_model=32, d_kv=8, d_ff=64, layers=2, heads=4)
    config.tie_word_embeddings = False  # transformers 5 forces tying in __init__; flan-t5 is untied
    return config


def untie_lm_head(model: Any) -> None:
    """Give ``lm_head`` its own weights, as flan-t5-base has (transformers 5 ties T5's by force)."""
    head = torch.empty_like(model.lm_head.weight).normal_(0, model.config.initializer_factor)
    model.lm_head.weight = torch.nn.Parameter(head)
    model.config.tie_word_embeddings = False


def save_lora_adapter(
    model: Any, directory: Path, base: Path, rank: int, alpha: int, b_std: float, dropout: float = 0.0
) -> None:
    """Wrap ``model`` (in place) in a q/v LoRA adapter whose B matrices are drawn with ``b_std``
    (peft starts B at zero, a no-op adapter) and save the adapter, recording ``base``."""
    from peft import LoraConfig, TaskType, get_peft_model

    config = LoraConfig(
        task_type=TaskType.SEQ_2_SEQ_LM,
        r=rank,
        lora_alpha=alpha,
        target_modules=list(LORA_TARGETS),
        lora_dropout=dropout,
    )
    lora = get_peft_model(model, config)
    with torch.no_grad():
        for name, param in lora.named_parameters():
            if "lora_B" in name:
                param.normal_(0, b_std)
    lora.peft_config["default"].base_model_name_or_path = str(base)
    lora.save_pretrained(directory)


def padded_tokenizer(texts: list[str], vocab_pieces: int = BASE_VOCAB - 100) -> object:
    """A DialogSum-trained T5 tokenizer padded with never-used pieces to ``BASE_VOCAB`` ids.

    DialogSum's few hundred dialogues support only ~5k sentencepiece pieces, but a random
    model emits ids anywhere in its 32,128-row vocabulary, and every one must decode.
    """
    from transformers import T5Tokenizer

    from train.tokenizer import train_tokenizer

    trained = train_tokenizer(texts, vocab_size=4000)
    vocab = [tuple(p) for p in json.loads(trained.backend_tokenizer.to_str())["model"]["vocab"]]
    vocab += [(f"▁zz{i}", -99.0) for i in range(vocab_pieces - len(vocab))]
    return T5Tokenizer(vocab=vocab, extra_ids=100)


def build_checkpoints(root: Path, data: str | None = None, seed: int = 0) -> BenchCheckpoints:
    """Write ``original``, ``full`` (another random draw) and a LoRA adapter under ``root``.

    Reuses what an earlier call left in ``root``.
    """
    from transformers import GenerationConfig, T5ForConditionalGeneration

    data = data or default_data_source()
    root = Path(root)
    paths = {name: root / name for name in ("original", "full", "lora")}
    done = root / "complete.json"
    result = BenchCheckpoints(root, *(str(paths[n]) for n in ("original", "full", "lora")), data)
    if done.is_file():
        return result
    start = time.perf_counter()
    records = [*load_split(data, "validation"), *load_split(data, "unlabeled")]
    tokenizer = padded_tokenizer([r.dialogue for r in records] + [x for r in records for x in r.references])
    assert len(tokenizer) == BASE_VOCAB, len(tokenizer)

    generation = GenerationConfig(decoder_start_token_id=0, pad_token_id=0, eos_token_id=1)
    for name, offset in (("original", 0), ("full", 1)):
        torch.manual_seed(seed + offset)
        model = T5ForConditionalGeneration(base_config())
        untie_lm_head(model)
        count = sum(p.numel() for p in model.parameters())
        if count != BASE_PARAMETERS:
            raise RuntimeError(f"base-shape model has {count:,} parameters, expected {BASE_PARAMETERS:,}")
        model.generation_config = generation
        model.save_pretrained(paths[name])
        tokenizer.save_pretrained(paths[name])
        if name == "original":
            torch.manual_seed(seed + 2)
            save_lora_adapter(model, paths["lora"], paths["original"], LORA_RANK, LORA_ALPHA, 0.02, 0.05)
        del model
    done.write_text(json.dumps({"seconds": round(time.perf_counter() - start, 1)}), encoding="utf-8")
    logger.info("built base-shape checkpoints in %.0f s", time.perf_counter() - start)
    return result


def build_tiny_checkpoints(root: Path, data_dir: str, seed: int = 0) -> dict[str, str]:
    """Tiny random T5 ``original``, ``full`` and ``lora`` checkpoints under ``root`` (for tests and
    ``bench.load --tiny``): a real DialogSum-trained tokenizer, seeded weights, reproducible outputs."""
    from transformers import GenerationConfig, T5ForConditionalGeneration

    from train.tokenizer import train_tokenizer

    records = load_split(data_dir, "validation", limit=200)
    tokenizer = train_tokenizer(
        [r.dialogue for r in records] + [r.reference for r in records], vocab_size=600
    )
    torch.manual_seed(seed)
    model = T5ForConditionalGeneration(tiny_t5_config(len(tokenizer)))
    model.generation_config = GenerationConfig(
        decoder_start_token_id=0, pad_token_id=0, eos_token_id=1, max_new_tokens=20
    )
    paths = {name: Path(root) / name for name in ("original", "full", "lora")}
    model.save_pretrained(paths["original"])
    tokenizer.save_pretrained(paths["original"])

    full = T5ForConditionalGeneration.from_pretrained(paths["original"])
    with torch.no_grad():
        for param in full.parameters():
            param.add_(torch.randn_like(param) * 0.5)
    full.save_pretrained(paths["full"])
    tokenizer.save_pretrained(paths["full"])

    base = T5ForConditionalGeneration.from_pretrained(paths["original"])
    save_lora_adapter(base, paths["lora"], paths["original"], rank=4, alpha=8, b_std=0.5)
    return {name: str(path) for name, path in paths.items()}


def tiny_app_env(paths: dict[str, str], checkpoints: str) -> dict[str, str]:
    """Environment variables that make ``python app.py`` serve the tiny checkpoints on the CPU."""
    return {
        "ARENA_PRESET": "mini",
        "ARENA_ORIGINAL": paths["original"],
        "ARENA_FULL": paths["full"],
        "ARENA_LORA": paths["lora"],
        "ARENA_CHECKPOINTS": checkpoints,
        "ARENA_DEVICE": "cpu",
    }


def long_dialogue(data: str, tokenizer: object, tokens: int = INPUT_TOKENS) -> str:
    """Real DialogSum turns, joined and cut so that the *prompt* is exactly ``tokens`` long."""
    from core.generation import fit_dialogue

    records = load_split(data, "validation", limit=20)
    text = "\n".join(r.dialogue for r in records)
    fitted = fit_dialogue(tokenizer, text, tokens)
    length = len(tokenizer(build_prompt(fitted.dialogue))["input_ids"])
    if length != tokens:  # a cut inside a word can re-tokenize one piece shorter
        logger.info("bench prompt is %d tokens (asked for %d)", length, tokens)
    return fitted.dialogue
