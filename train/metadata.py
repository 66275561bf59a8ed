"""What a training run leaves beside its weights: ``arena.json`` and a Hub-format model card.

``arena.json`` is the machine-readable record the demo's Models tab reads (method, base model,
parameter counts, size on disk, data, steps, losses, wall time, hardware, library versions).
``README.md`` is a model card with the YAML front matter the Hugging Face Hub expects
(``base_model``, ``datasets``, ``library_name``, ``tags``), so ``--push-to-hub`` publishes a
page that says what the checkpoint is.

The readers (``read_metadata``, ``weights_size_bytes``, ``portable_location``) live in
:mod:`core.checkpoints`, since the app reads what training writes; they are re-exported here
for the training scripts.
"""

from __future__ import annotations

import json
import math
import platform
from importlib import metadata as importlib_metadata
from pathlib import Path
from typing import Any

from core.checkpoints import (  # noqa: F401 - portable_location is re-exported for the scripts
    ARENA_FILE,
    portable_location,
    read_metadata,
    weights_size_bytes,
)
from core.config import DEFAULT_HUB_DATA, is_local_path
from core.model_cards import human_bytes

CARD_FILE = "README.md"
LIBRARIES: tuple[str, ...] = ("torch", "transformers", "peft", "accelerate", "datasets", "tokenizers")
METHOD_TITLES = {"full": "full fine-tune", "lora": "LoRA adapter"}


def library_versions() -> dict[str, str]:
    """Installed versions of the libraries a checkpoint depends on."""
    versions = {"python": platform.python_version()}
    for name in LIBRARIES:
        try:
            versions[name] = importlib_metadata.version(name)
        except importlib_metadata.PackageNotFoundError:
            versions[name] = "not installed"
    return versions


def hardware_description() -> str:
    """GPU name when training ran on CUDA, else the CPU and core count."""
    import os

    import torch

    if torch.cuda.is_available():
        return f"{torch.cuda.get_device_name(0)} (CUDA {torch.version.cuda})"
    cpu = platform.processor() or platform.machine() or "CPU"
    return f"CPU: {cpu}, {os.cpu_count()} cores, {torch.get_num_threads()} torch threads"


def dataset_ids(meta: dict[str, Any]) -> list[str]:
    """Hub data set ids for the card's front matter (a local copy is DialogSum's mirror)."""
    label = meta.get("data_source") or ""
    return [label] if label and not is_local_path(label) and "/" in label else [DEFAULT_HUB_DATA]


def loss_history(log_history: list[dict[str, Any]]) -> list[dict[str, float]]:
    """``[{step, loss}]`` from a Trainer's ``state.log_history`` (finite training-loss entries only)."""
    return [
        {"step": int(entry["step"]), "loss": float(entry["loss"])}
        for entry in log_history
        if "loss" in entry and "step" in entry and math.isfinite(float(entry["loss"]))
    ]


def write_metadata(directory: str | Path, meta: dict[str, Any]) -> None:
    """Write ``arena.json`` and the model card ``README.md`` into ``directory``."""
    directory = Path(directory)
    (directory / ARENA_FILE).write_text(json.dumps(meta, indent=2, sort_keys=False) + "\n", encoding="utf-8")
    (directory / CARD_FILE).write_text(model_card(meta), encoding="utf-8")


def update_metadata(directory: str | Path, **changes: Any) -> dict[str, Any]:
    """Re-measure the weights' size (e.g. after converting them to bf16), apply ``changes``,
    and rewrite ``arena.json`` and the card. Raises ``FileNotFoundError`` without ``arena.json``."""
    meta = read_metadata(directory)
    if meta is None:
        raise FileNotFoundError(f"no readable {ARENA_FILE} in {directory}")
    meta.update(changes)
    meta["size_on_disk_bytes"] = weights_size_bytes(directory)
    write_metadata(directory, meta)
    return meta


def _yaml_str(value: str) -> str:
    return json.dumps(value)  # a JSON string is a valid YAML scalar and quotes anything odd


def model_card(meta: dict[str, Any]) -> str:
    """A Hub model card (YAML front matter + Markdown) describing one training run."""
    method = meta["method"]
    library = "peft" if method == "lora" else "transformers"
    tags = ["summarization", "dialogsum", "dialogue-summary-arena", "t5"]
    tags.append("lora" if method == "lora" else "full-fine-tuning")
    front = [
        "---",
        f"base_model: {_yaml_str(meta['base_model'])}",
        "datasets:",
        *[f"- {_yaml_str(d)}" for d in dataset_ids(meta)],
        f"library_name: {library}",
        "pipeline_tag: summarization",
        "language:",
        "- en",
        "tags:",
        *[f"- {t}" for t in tags],
        "---",
    ]
    trainable, total = meta["trainable_params"], meta["total_params"]
    share = 100 * trainable / total if total else 0.0
    loss = meta.get("final_train_loss")
    if method == "lora":
        lora = meta.get("lora", {})
        how = (
            f"A LoRA adapter (r={lora.get('r')}, alpha={lora.get('alpha')}, dropout={lora.get('dropout')}, "
            f"target modules {', '.join(lora.get('target_modules', []))}) on `{meta['base_model']}`. "
            "Only the adapter is stored here; load it on top of the base model:"
        )
        usage = [
            "```python",
            "from peft import PeftModel",
            "from transformers import AutoModelForSeq2SeqLM, AutoTokenizer",
            "",
            f"base = AutoModelForSeq2SeqLM.from_pretrained({json.dumps(meta['base_model'])})",
            'model = PeftModel.from_pretrained(base, "path/to/this/adapter")',
            'tokenizer = AutoTokenizer.from_pretrained("path/to/this/adapter")',
            "```",
        ]
    else:
        how = f"All weights of `{meta['base_model']}` fine-tuned. Load it like any seq2seq model:"
        usage = [
            "```python",
            "from transformers import AutoModelForSeq2SeqLM, AutoTokenizer",
            "",
            'model = AutoModelForSeq2SeqLM.from_pretrained("path/to/this/model")',
            'tokenizer = AutoTokenizer.from_pretrained("path/to/this/model")',
            "```",
        ]
    rows = [
        ("Method", METHOD_TITLES.get(method, method)),
        ("Base model", f"`{meta['base_model']}`"),
        (
            "Data",
            f"`{meta.get('data_source')}` ({meta.get('data_split')} split, {meta.get('examples')} examples)",
        ),
        ("Trainable parameters", f"{trainable:,} of {total:,} ({share:.2f}%)"),
        ("Weights on disk", human_bytes(int(meta.get("size_on_disk_bytes", 0)))),
        ("Steps / epochs", f"{meta.get('steps')} / {meta.get('epochs'):.2f}"),
        ("Learning rate", f"{meta.get('learning_rate')}"),
        ("Effective batch size", f"{meta.get('batch_size')} x {meta.get('grad_accum')}"),
        ("Final training loss", "n/a" if loss is None else f"{loss:.4f}"),
        ("Wall time", f"{meta.get('wall_time_s', 0):.1f} s"),
        ("Hardware", str(meta.get("hardware"))),
        ("Seed", str(meta.get("seed"))),
    ]
    versions = ", ".join(f"{k} {v}" for k, v in meta.get("library_versions", {}).items())
    body = [
        "",
        f"# {METHOD_TITLES.get(method, method).capitalize()} of {meta['base_model']} for dialogue summarization",
        "",
        "Trained by the dialogue-summary arena (`python -m train."
        f"{method}`) on DialogSum with the prompt `Summarize the following conversation.` "
        "+ dialogue + `Summary:` (inputs cut at "
        f"{meta.get('max_source_length')} tokens, summaries at {meta.get('max_target_length')}).",
        "",
        how,
        "",
        *usage,
        "",
        "## Training run",
        "",
        "| | |",
        "|---|---|",
        *[f"| {k} | {v} |" for k, v in rows],
        "",
        f"Libraries: {versions}.",
        "",
        "The full record, including the per-step training loss, is in `arena.json`.",
        "",
    ]
    return "\n".join(front + body)
