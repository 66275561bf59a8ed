"""What each model of a preset costs: parameters, trainable share, size on disk, training run.

The training scripts leave ``arena.json`` beside each checkpoint (``train/metadata.py``), read
here through :mod:`core.checkpoints`. A checkpoint without it - the original model, or one
trained elsewhere - still gets a card: parameters are counted from the safetensors headers
(no weights are loaded) and the size from the weight files. Missing facts are ``None`` and shown as "n/a", never invented.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from core.checkpoints import (
    cached_checkpoint,
    hub_location,
    location_metadata,
    read_metadata,
    weights_size_bytes,
)
from core.config import MODEL_LABELS, ArenaConfig
from core.jsonfile import read_json_object

logger = logging.getLogger(__name__)


@dataclass
class ModelCard:
    """The facts the Models tab shows for one model (``None`` = unknown)."""

    name: str
    label: str
    location: str
    method: str | None = None
    base_model: str | None = None
    total_params: int | None = None
    trainable_params: int | None = None
    size_on_disk_bytes: int | None = None
    examples: int | None = None
    steps: int | None = None
    epochs: float | None = None
    wall_time_s: float | None = None
    hardware: str | None = None
    precision: str | None = None  # e.g. "float32", "float32, bfloat16 frozen base" (LoRA)
    final_train_loss: float | None = None
    seed: int | None = None
    loss_history: list[tuple[float, float]] = field(default_factory=list)
    has_metadata: bool = False
    note: str | None = None  # why facts are missing, for the reader

    @property
    def trainable_share(self) -> float | None:
        """Trainable parameters as a fraction of all parameters served."""
        if self.trainable_params is None or not self.total_params:
            return None
        return self.trainable_params / self.total_params


def local_dir(location: str) -> Path | None:
    """The directory holding ``location``'s files: itself, or its Hub cache snapshot (offline;
    ``owner/name@rev`` names a revision)."""
    return cached_checkpoint(location)


def count_safetensors_params(directory: Path) -> int | None:
    """Parameters in the ``*.safetensors`` files of ``directory`` (read from headers only)."""
    from safetensors import safe_open

    files = sorted(directory.glob("*.safetensors"))
    if not files:
        return None
    total = 0
    try:
        for path in files:
            # numpy, not pt: only shapes are read, and "pt" would import torch for the page (P6)
            with safe_open(str(path), framework="numpy") as handle:
                for key in handle.keys():  # noqa: SIM118 - safe_open is not a mapping
                    shape = handle.get_slice(key).get_shape()
                    count = 1
                    for dim in shape:
                        count *= int(dim)
                    total += count
    except Exception as err:  # noqa: BLE001 - a broken file must not break the page
        logger.warning("could not count parameters in %s: %s", directory, err)
        return None
    return total


def _loss_history(raw: Any) -> list[tuple[float, float]]:
    points = []
    if isinstance(raw, list):
        for item in raw:
            if isinstance(item, dict) and isinstance(item.get("loss"), (int, float)):
                step = item.get("step", len(points))
                if isinstance(step, (int, float)):
                    points.append((float(step), float(item["loss"])))
    return points


def _int(value: Any) -> int | None:
    return int(value) if isinstance(value, (int, float)) and not isinstance(value, bool) else None


def _float(value: Any) -> float | None:
    return float(value) if isinstance(value, (int, float)) and not isinstance(value, bool) else None


def card_for(name: str, location: str, base_location: str | None = None) -> ModelCard:
    """Build one model's card from its ``arena.json``, falling back to its files."""
    card = ModelCard(name=name, label=MODEL_LABELS[name], location=location)
    directory = local_dir(location)
    hub = hub_location(location)
    if directory is None:
        card.note = (
            f"Hub repo {hub} is not in the local Hub cache" if hub else f"checkpoint not found: {location}"
        )
        return card
    # A Hub repo's arena.json is asked for by name (hf_hub_download), so that its absence is known.
    meta, absent = location_metadata(location) if hub else (read_metadata(directory), None)
    if meta:
        card.has_metadata = True
        card.method = meta.get("method") if isinstance(meta.get("method"), str) else None
        card.base_model = meta.get("base_model") if isinstance(meta.get("base_model"), str) else None
        card.total_params = _int(meta.get("total_params"))
        card.trainable_params = _int(meta.get("trainable_params"))
        card.size_on_disk_bytes = _int(meta.get("size_on_disk_bytes"))
        card.examples = _int(meta.get("examples"))
        card.steps = _int(meta.get("steps"))
        card.epochs = _float(meta.get("epochs"))
        card.wall_time_s = _float(meta.get("wall_time_s"))
        card.hardware = str(meta["hardware"]) if meta.get("hardware") else None
        card.precision = meta["precision"] if isinstance(meta.get("precision"), str) else None
        card.final_train_loss = _float(meta.get("final_train_loss"))
        card.seed = _int(meta.get("seed"))
        card.loss_history = _loss_history(meta.get("loss_history"))
    else:
        card.note = f"{absent or 'no training metadata (arena.json)'}; figures computed from the files"
    if card.size_on_disk_bytes is None:
        card.size_on_disk_bytes = weights_size_bytes(directory) or None
    adapter = (directory / "adapter_config.json").is_file()
    if card.method is None:
        card.method = "lora" if adapter else ("pretrained" if name == "original" else None)
    if card.base_model is None and adapter:
        card.base_model = adapter_base_model(directory)
    if card.total_params is None:
        own = count_safetensors_params(directory)
        if adapter and own is not None:
            base_dir = local_dir(base_location) if base_location else None
            base = count_safetensors_params(base_dir) if base_dir else None
            card.trainable_params = card.trainable_params if card.trainable_params is not None else own
            card.total_params = base + own if base is not None else None
        else:
            card.total_params = own
    if card.trainable_params is None and name == "original" and not card.has_metadata:
        card.trainable_params = 0  # served as released: nothing trained here
    return card


def model_cards(config: ArenaConfig) -> dict[str, ModelCard]:
    """Cards for the preset's three models, then each extra adapter (``ARENA_ADAPTERS``), in display order."""
    locations = {**config.models.as_dict(), **dict(config.adapters)}
    return {
        name: card_for(name, locations[name], base_location=locations["original"])
        for name in config.model_names
    }


def human_bytes(size: int | None) -> str:
    """``1536`` -> ``"1.5 KB"``; ``None`` -> ``"n/a"``."""
    if size is None:
        return "n/a"
    value = float(size)
    for unit in ("B", "KB", "MB", "GB"):
        if value < 1024 or unit == "GB":
            return f"{int(value)} B" if unit == "B" else f"{value:.1f} {unit}"
        value /= 1024
    return f"{value:.1f} GB"  # pragma: no cover


def human_count(count: int | None) -> str:
    """``247_577_856`` -> ``"247.6 M"``; ``None`` -> ``"n/a"``."""
    if count is None:
        return "n/a"
    for threshold, suffix in ((1e9, "B"), (1e6, "M"), (1e3, "K")):
        if count >= threshold:
            return f"{count / threshold:.1f} {suffix}"
    return str(count)


def lora_headline(cards: dict[str, ModelCard]) -> str | None:
    """One sentence on LoRA's cost versus the full fine-tune, when both are known."""
    lora, full = cards.get("lora"), cards.get("full")
    if lora is None or full is None:
        return None
    parts = []
    if lora.trainable_share is not None:
        parts.append(
            f"LoRA trains **{100 * lora.trainable_share:.2f}%** of the parameters "
            f"({human_count(lora.trainable_params)} of {human_count(lora.total_params)})"
        )
    if lora.size_on_disk_bytes and full.size_on_disk_bytes:
        parts.append(
            f"ships **{human_bytes(lora.size_on_disk_bytes)}** instead of "
            f"**{human_bytes(full.size_on_disk_bytes)}** "
            f"({full.size_on_disk_bytes / lora.size_on_disk_bytes:.0f}x smaller)"
        )
    return " and ".join(parts) if parts else None


def adapter_base_model(directory: Path) -> str | None:
    """The base model an adapter's ``adapter_config.json`` names (peft's
    ``base_model_name_or_path``), or None where it names none or is unreadable - the model
    loader reports a broken config. Read as JSON: peft (and torch with it) is not imported for
    a page that only describes the adapter."""
    data = read_json_object(directory / "adapter_config.json", on_error="ignore") or {}
    base = data.get("base_model_name_or_path")
    return base if isinstance(base, str) and base else None
