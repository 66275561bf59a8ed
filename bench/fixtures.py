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


def base_config() -> object:
    """flan-t5-base's architecture (``T5Config``) with an untied ``lm_head``."""
    from transformers import T5Config

    config = T5Config(
        vocab_size=BASE_VOCAB,
        d_model=768,
        d_kv=64,
        d_ff=2048,
        num_layers=12,
        num_decoder_layers=12,
        num_heads=12,
        feed_forward_proj="gated-gelu",
        decoder_start_token_id=0,
        pad_token_id=0,
        eos_token_id=1,
        tie_word_embeddings=False,  # T5 v1.1 (flan-t5): decoder outputs are not rescaled
    )
    return config


def untie_lm_head(model: object) -> None:
    """Give ``lm_head`` its own weights, as flan-t5-base has (transformers 5 ties T5's by force)."""
    head = torch.empty_like(model.lm_head.weight).normal_(0, model.config.initializer_factor)
    model.lm_head.weight = torch.nn.Parameter(head)
    model.config.tie_word_embeddings = False


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
    from peft import LoraConfig, TaskType, get_peft_model
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
            lora = get_peft_model(
                model,
                LoraConfig(
                    task_type=TaskType.SEQ_2_SEQ_LM,
                    r=LORA_RANK,
                    lora_alpha=LORA_ALPHA,
                    target_modules=list(LORA_TARGETS),
                    lora_dropout=0.05,
                ),
            )
            with torch.no_grad():  # B starts at zero (a no-op adapter); make it matter
                for pname, param in lora.named_parameters():
                    if "lora_B" in pname:
                        param.normal_(0, 0.02)
            lora.peft_config["default"].base_model_name_or_path = str(paths["original"])
            lora.save_pretrained(paths["lora"])
        del model
    done.write_text(json.dumps({"seconds": round(time.perf_counter() - start, 1)}), encoding="utf-8")
    logger.info("built base-shape checkpoints in %.0f s", time.perf_counter() - start)
    return result


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
