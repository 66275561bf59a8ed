"""Does a model read its input? Teacher-forced loss with the dialogue's own text vs another's.

A summarizer that uses the dialogue assigns its references a lower loss when it is given that
dialogue than when it is given another one (a fixed derangement, as for ROUGE's controls). A
model that ignores its input (a "constant template" model) scores both the same. This needs one
forward pass per example instead of beam search, so it steers experiments in minutes.

For each model: ``own_loss`` and ``shuffled_loss`` (mean token cross-entropy of the first
reference), and ``gap`` = shuffled - own with a paired bootstrap CI. A gap above zero, with its
interval above zero, means the model reads its input.
"""

from __future__ import annotations

import logging
from collections.abc import Callable, Sequence
from typing import Any

import numpy as np
import torch

from core.data import Dialogue
from core.evaluation import bootstrap_indices, derangement, mean_ci, paired_difference
from core.generation import fit_dialogue
from core.models import LoadedModel
from core.prompt import build_prompt
from core.summaries import MAX_INPUT_TOKENS

logger = logging.getLogger(__name__)

MAX_TARGET_TOKENS = 128  # the training scripts' max_target_length


def reference_losses(
    loaded: LoadedModel,
    dialogues: Sequence[str],
    references: Sequence[str],
    batch_size: int = 16,
    max_input_tokens: int = MAX_INPUT_TOKENS,
    progress: Callable[[int], None] | None = None,
) -> list[float]:
    """Mean token cross-entropy of each reference given the prompt built from its dialogue.

    ``loaded`` may be a row of a shared peft model (its ``adapter_name`` picks the adapter, as
    in generation). Losses are per example, averaged over that reference's tokens.
    """
    if len(dialogues) != len(references):
        raise ValueError(f"{len(dialogues)} dialogues for {len(references)} references")
    tokenizer = loaded.tokenizer
    losses: list[float] = []
    for start in range(0, len(dialogues), batch_size):
        chunk = range(start, min(start + batch_size, len(dialogues)))
        prompts = [
            build_prompt(fit_dialogue(tokenizer, dialogues[i], max_input_tokens).dialogue) for i in chunk
        ]
        encoded = tokenizer(
            prompts, return_tensors="pt", padding=True, truncation=True, max_length=max_input_tokens
        ).to(loaded.device)
        labels = tokenizer(
            text_target=[references[i] for i in chunk],
            return_tensors="pt",
            padding=True,
            truncation=True,
            max_length=MAX_TARGET_TOKENS,
        )["input_ids"].to(loaded.device)
        labels[labels == tokenizer.pad_token_id] = -100
        extra: dict[str, Any] = {}
        if loaded.adapter_name is not None:
            extra["adapter_names"] = [loaded.adapter_name] * len(chunk)
        with loaded.lock, torch.inference_mode():
            logits = loaded.model(**encoded, labels=labels, **extra).logits.float()
        token_loss = torch.nn.functional.cross_entropy(
            logits.transpose(1, 2), labels, ignore_index=-100, reduction="none"
        )
        counts = (labels != -100).sum(dim=1).clamp(min=1)
        losses.extend((token_loss.sum(dim=1) / counts).tolist())
        if progress is not None:
            progress(len(chunk))
    return losses


def input_use(
    models: Sequence[LoadedModel],
    records: Sequence[Dialogue],
    batch_size: int = 16,
    resamples: int = 1000,
    seed: int = 0,
    progress: Callable[[int], None] | None = None,
) -> dict[str, dict[str, Any]]:
    """``{model: {own_loss, shuffled_loss, gap}}`` on the records' first references.

    Each figure is ``{"mean", "ci95"}``; ``gap`` is the paired difference shuffled - own. The
    shuffled dialogue of record ``i`` is record ``derangement(n)[i]``'s, the same pairing the
    ROUGE controls use.
    """
    labelled = [r for r in records if r.references]
    if len(labelled) < 2:
        raise ValueError("the input-use measure needs at least two dialogues with references")
    references = [r.references[0] for r in labelled]
    own = [r.dialogue for r in labelled]
    perm = derangement(len(labelled))
    shuffled = [labelled[j].dialogue for j in perm]
    indices = bootstrap_indices(len(labelled), resamples, seed)
    result: dict[str, dict[str, Any]] = {}
    for loaded in models:
        own_losses = reference_losses(loaded, own, references, batch_size, progress=progress)
        other_losses = reference_losses(loaded, shuffled, references, batch_size, progress=progress)
        gap = paired_difference(other_losses, own_losses, indices)
        result[loaded.name] = {
            "own_loss": mean_ci(own_losses, indices),
            "shuffled_loss": mean_ci(other_losses, indices),
            "gap": gap,
            "reads_input": bool(gap["ci95"][0] > 0),
            "n": len(labelled),
        }
        logger.info(
            "%s: loss own %.3f, shuffled %.3f, gap %.3f [%.3f, %.3f]",
            loaded.name,
            float(np.mean(own_losses)),
            float(np.mean(other_losses)),
            gap["mean"],
            *gap["ci95"],
        )
    return result
