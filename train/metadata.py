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


def hardware_description(world_size: int = 1) -> str:
    """GPU name when training ran on CUDA, else the CPU and core count; ``N x`` for N processes."""
    import os

    import torch

    if torch.cuda.is_available():
        gpu = f"{torch.cuda.get_device_name(0)} (CUDA {torch.version.cuda})"
        return f"{world_size} x {gpu}" if world_size > 1 else gpu
    cpu = platform.processor() or platform.machine() or "CPU"
    text = f"CPU: {cpu}, {os.cpu_count()} cores, {torch.get_num_threads()} torch threads"
    return f"{text}, {world_size} processes" if world_size > 1 else text


def parallelism_description(meta: dict[str, Any]) -> str:
    """How the run was spread: one process, or data-parallel over N (and through what)."""
    world = int(meta.get("world_size") or 1)
    if world <= 1:
        return "one process"
    how = meta.get("distributed_type") or "data-parallel"
    backend = f", {meta['distributed_backend']} backend" if meta.get("distributed_backend") else ""
    return (
        f"data-parallel over {world} processes (accelerate / torch DDP: {how}{backend}); each process "
        "trains on its own shard of every global batch and gradients are averaged"
    )


def launch_command(meta: dict[str, Any]) -> str:
    """The command line that ran this training (``accelerate launch`` when data-parallel)."""
    world = int(meta.get("world_size") or 1)
    module = f"-m train.{meta['method']}"
    return f"accelerate launch --num_processes {world} {module}" if world > 1 else f"python {module}"


def batch_description(meta: dict[str, Any]) -> str:
    """``8 per device x 2 accumulation steps x 4 processes = 64 examples per optimizer step``."""
    per_device, accum = meta.get("batch_size"), meta.get("grad_accum") or 1
    world = int(meta.get("world_size") or 1)
    total = meta.get("global_batch_size") or (per_device or 0) * accum * world
    return (
        f"{per_device} per device x {accum} accumulation step{'s' if accum != 1 else ''} x {world} "
        f"process{'es' if world != 1 else ''} = {total} examples per optimizer step"
    )


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


def model_index(name: str, evaluation: dict[str, Any]) -> list[str]:
    """The card's ``model-index`` YAML lines: the evaluation's mean ROUGE on DialogSum.

    ``evaluation`` is ``{"split", "n", "dataset", "metrics": {"rouge1": mean, ...}}`` (see
    :func:`train.push.evaluation_for`); values are F-measures in [0, 1].
    """
    labels = {"rouge1": "ROUGE-1", "rouge2": "ROUGE-2", "rougeL": "ROUGE-L", "rougeLsum": "ROUGE-Lsum"}
    lines = [
        "model-index:",
        f"- name: {_yaml_str(name)}",
        "  results:",
        "  - task:",
        "      type: summarization",
        "      name: Summarization",
        "    dataset:",
        "      name: DialogSum",
        f"      type: {_yaml_str(evaluation.get('dataset') or DEFAULT_HUB_DATA)}",
        f"      split: {_yaml_str(str(evaluation.get('split') or 'test'))}",
        "    metrics:",
    ]
    for metric, value in evaluation["metrics"].items():
        lines += [
            "    - type: rouge",
            f"      name: {_yaml_str(labels.get(metric, metric))}",
            f"      value: {float(value):.4f}",
        ]
    return lines


def evaluation_section(evaluation: dict[str, Any]) -> list[str]:
    """The card's results table: mean ROUGE F-measure on the evaluated split."""
    metrics = evaluation["metrics"]
    return [
        "## Evaluation",
        "",
        f"Mean ROUGE F-measure on DialogSum's {evaluation.get('split')} split ({evaluation.get('n')} "
        "dialogues, best score over the references), from `python -m train.evaluate`:",
        "",
        "| " + " | ".join(metrics) + " |",
        "|" + "---|" * len(metrics),
        "| " + " | ".join(f"{float(v):.4f}" for v in metrics.values()) + " |",
        "",
    ]


def model_card(
    meta: dict[str, Any], repo_id: str | None = None, evaluation: dict[str, Any] | None = None
) -> str:
    """A Hub model card (YAML front matter + Markdown) describing one training run.

    ``repo_id`` (when pushing) names the repo in the usage example; ``evaluation`` adds the
    report's scores to the card's ``model-index`` and a results table.
    """
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
        *(model_index(repo_id or f"{method}-{meta['base_model']}", evaluation) if evaluation else []),
        "---",
    ]
    here = json.dumps(repo_id or f"path/to/this/{'adapter' if method == 'lora' else 'model'}")
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
            f"model = PeftModel.from_pretrained(base, {here})",
            f"tokenizer = AutoTokenizer.from_pretrained({here})",
            "```",
        ]
    else:
        how = f"All weights of `{meta['base_model']}` fine-tuned. Load it like any seq2seq model:"
        usage = [
            "```python",
            "from transformers import AutoModelForSeq2SeqLM, AutoTokenizer",
            "",
            f"model = AutoModelForSeq2SeqLM.from_pretrained({here})",
            f"tokenizer = AutoTokenizer.from_pretrained({here})",
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
        ("Batch size", batch_description(meta)),
        ("Parallelism", parallelism_description(meta)),
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
        f"Trained by the dialogue-summary arena (`{launch_command(meta)}`) on DialogSum with the prompt `Summarize the following conversation.` "
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
        *(evaluation_section(evaluation) if evaluation else []),
    ]
    return "\n".join(front + body)
