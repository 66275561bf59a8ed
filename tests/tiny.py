"""Tiny offline checkpoints for tests: a real tokenizer and real (random) T5 weights.

Hub models can't be fetched here, so tests build their own and go through the same loading
code users run. Weights are random but seeded, so outputs are reproducible.
"""

from __future__ import annotations

from pathlib import Path

import torch
from peft import LoraConfig, TaskType, get_peft_model
from transformers import GenerationConfig, T5Config, T5ForConditionalGeneration

from core.data import load_split
from train.tokenizer import train_tokenizer


def tiny_t5_config(vocab_size: int) -> T5Config:
    """A T5 small enough to train for a few steps in a test."""
    config = T5Config(
        vocab_size=vocab_size,
        d_model=32,
        d_kv=8,
        d_ff=64,
        num_layers=2,
        num_decoder_layers=2,
        num_heads=4,
        feed_forward_proj="gated-gelu",
        decoder_start_token_id=0,
        pad_token_id=0,
        eos_token_id=1,
        tie_word_embeddings=False,
    )
    config.tie_word_embeddings = False  # transformers 5 forces tying in __init__; flan-t5 is untied
    return config


def build_tiny_checkpoints(root: Path, data_dir: str, seed: int = 0) -> dict[str, str]:
    """Write ``original``, ``full`` and ``lora`` tiny checkpoints under ``root``."""
    records = load_split(data_dir, "validation", limit=200)
    tokenizer = train_tokenizer(
        [r.dialogue for r in records] + [r.reference for r in records], vocab_size=600
    )
    torch.manual_seed(seed)
    model = T5ForConditionalGeneration(tiny_t5_config(len(tokenizer)))
    model.generation_config = GenerationConfig(
        decoder_start_token_id=0, pad_token_id=0, eos_token_id=1, max_new_tokens=20
    )
    paths = {name: str(root / name) for name in ("original", "full", "lora")}
    model.save_pretrained(paths["original"])
    tokenizer.save_pretrained(paths["original"])

    full = T5ForConditionalGeneration.from_pretrained(paths["original"])
    with torch.no_grad():
        for param in full.parameters():
            param.add_(torch.randn_like(param) * 0.5)
    full.save_pretrained(paths["full"])
    tokenizer.save_pretrained(paths["full"])

    base = T5ForConditionalGeneration.from_pretrained(paths["original"])
    lora = get_peft_model(
        base, LoraConfig(task_type=TaskType.SEQ_2_SEQ_LM, r=4, lora_alpha=8, target_modules=["q", "v"])
    )
    with torch.no_grad():  # B starts at zero (a no-op adapter); make it matter
        for name, param in lora.named_parameters():
            if "lora_B" in name:
                param.normal_(0, 0.5)
    lora.peft_config["default"].base_model_name_or_path = paths["original"]
    lora.save_pretrained(paths["lora"])
    return paths
