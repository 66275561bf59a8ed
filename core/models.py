"""Loading the three models of a preset, with the base weights held once.

``original`` and ``lora`` share one in-memory T5: the LoRA adapter is injected into the base
with peft, and the original's rows run with the adapter switched off (peft's mixed-adapter
batches, ``adapter_names=["__base__", ...]``). ``full`` is a separate set of weights.

A model that fails to load is recorded with a clear error and the others keep serving.
"""

from __future__ import annotations

import json
import logging
import os
import threading
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import torch

from core.checkpoints import CheckpointNotFoundError, fetch_checkpoint, hub_location
from core.config import (
    MODEL_NAMES,
    ArenaConfig,
    ensure_offline_if_unreachable,
    is_local_path,
    missing_checkpoint_hint,
)
from core.jsonfile import read_json_object
from core.precision import (
    PRECAST_ATTRIBUTE,
    PREQUANTIZED_ATTRIBUTE,
    all_finite,
    bf16_layer_paths,
    cpu_has_native_bf16,
    int8_kernel_available,
    int8_layer_paths,
    int8_weights_pay_off,
    quantize_decoder,
    read_safetensors,
    release_freed_memory,
    store_dense_in_bf16,
)

logger = logging.getLogger(__name__)

BASE_ADAPTER = "__base__"  # peft's name for "no adapter" in a mixed-adapter batch
LORA_ADAPTER = "lora"


class ModelLoadError(RuntimeError):
    """A checkpoint is missing, broken or mismatched; the message names the path and cause."""


@dataclass
class LoadedModel:
    """One servable model: the module to call ``generate`` on and how to call it."""

    name: str
    location: str
    model: Any  # transformers model or peft.PeftModel
    tokenizer: Any
    generation_defaults: dict[str, Any]
    lock: threading.Lock
    adapter_name: str | None = None  # set for rows that go through the shared peft model
    warning: str | None = None
    cpu_threads: int | None = None  # intra-op threads every generate call runs with (CPU only)

    @property
    def device(self) -> torch.device:
        return next(self.model.parameters()).device


def use_threads(loaded: LoadedModel) -> None:
    """Give the calling thread the model set's intra-op thread count (``ARENA_THREADS``).

    torch keeps that count per OS thread (OpenMP), and a thread started before the models
    loaded - the app loads them in a background thread - still has the default (every core):
    slower on a shared host, and the same dialogue summed in another order there.
    """
    if loaded.cpu_threads is not None and torch.get_num_threads() != loaded.cpu_threads:
        torch.set_num_threads(loaded.cpu_threads)


@dataclass
class ModelSet:
    """The loaded models of a preset plus the error of each one that failed."""

    config: ArenaConfig
    models: dict[str, LoadedModel] = field(default_factory=dict)
    errors: dict[str, str] = field(default_factory=dict)

    def status(self, name: str) -> str:
        """A one-line state of a model for the UI: ok, warning or the load error."""
        if name in self.errors:
            return f"unavailable: {self.errors[name]}"
        warning = self.models[name].warning
        if warning:
            return f"loaded with a warning: {warning}"
        hub = hub_location(self.models[name].location)
        return f"loaded from the Hub: {hub}" if hub else "loaded"


def resolve_device(device: str) -> torch.device:
    """``auto`` picks CUDA when present, else the CPU."""
    if device == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    if device.startswith("cuda") and not torch.cuda.is_available():
        raise ModelLoadError(f"device {device!r} requested but CUDA is not available")
    return torch.device(device)


DTYPE_CHOICES = "float32, bfloat16, int8, float32-int8 or auto"
INT8_DTYPES = ("int8", "float32-int8")  # int8 decoder weights, asked for by name


def resolve_dtype(dtype: str, device: torch.device) -> torch.dtype:
    """The compute dtype; fp16 is refused (T5 overflows in fp16).

    ``auto`` is bf16 on CUDA and on CPUs with hardware bf16, else fp32. ``int8`` computes in
    bf16, ``float32-int8`` in fp32 over the same stored weights: int8 decoder layers
    (:func:`use_int8_weights`), the other large weights in bf16 (:func:`load_model_set`).
    """
    table = {
        "float32": torch.float32,
        "fp32": torch.float32,
        "bfloat16": torch.bfloat16,
        "bf16": torch.bfloat16,
        "int8": torch.bfloat16,
        "float32-int8": torch.float32,
    }
    if dtype in ("float16", "fp16", "half"):
        raise ModelLoadError("float16 is not supported: T5 overflows in fp16; use bfloat16 or float32")
    if dtype == "auto":
        fast_bf16 = device.type == "cuda" or (device.type == "cpu" and cpu_has_native_bf16())
        return torch.bfloat16 if fast_bf16 else torch.float32
    if dtype not in table:
        raise ModelLoadError(f"unknown dtype {dtype!r}; choose {DTYPE_CHOICES}")
    return table[dtype]


# One intra-op thread per generate call. Batch-1 decoding is a chain of ~1,000 small ops per
# token; splitting each across threads costs a synchronization per op, and when another
# process holds a core (a shared host) every op waits for it: measured by ``python -m bench``
# on a busy 2-core machine, one thread generated 3-6x faster than two.
DEFAULT_CPU_THREADS = 1


def available_cores() -> int:
    """CPU cores this process may run on (its affinity mask, where the OS has one)."""
    return len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else os.cpu_count() or 1


def cpu_threads(config: ArenaConfig) -> int:
    """Intra-op threads for CPU generation: ``ARENA_THREADS`` or :data:`DEFAULT_CPU_THREADS`."""
    threads = config.threads if config.threads is not None else DEFAULT_CPU_THREADS
    if threads < 1:
        raise ModelLoadError(f"ARENA_THREADS must be at least 1, got {threads}")
    return threads


def use_int8_weights(dtype: str, device: torch.device) -> bool:
    """Whether decoder weights are stored in int8 (see :mod:`core.precision`).

    ``auto`` turns it on where it is measured to win (:func:`core.precision.int8_weights_pay_off`:
    an x86 CPU with AVX2, bf16 compute where the CPU has it, fp32 elsewhere), with a quarter of
    fp32's decoder weight memory. ``int8`` and ``float32-int8`` ask for it explicitly (CPU only).
    """
    if dtype in INT8_DTYPES:
        if device.type != "cpu" or not int8_kernel_available():
            raise ModelLoadError(f"dtype {dtype} needs a CPU with PyTorch's int8 weight kernel, not {device}")
        return True
    return dtype == "auto" and device.type == "cpu" and int8_weights_pay_off()


def _check_local_dir(location: str, required: tuple[str, ...], what: str) -> None:
    path = Path(location).expanduser()
    if not path.is_dir():
        raise ModelLoadError(f"{what} directory not found: {path}")
    missing = [name for name in required if not (path / name).is_file()]
    if missing:
        raise ModelLoadError(f"{what} at {path} is incomplete: missing {', '.join(missing)}")


def _describe(err: BaseException) -> str:
    lines = [line.strip() for line in str(err).strip().splitlines() if line.strip()]
    # "Error(s) in loading state_dict for X:" says nothing alone; the cause is on the next line.
    text = " ".join(lines[:2]) if len(lines) > 1 and lines[0].endswith(":") else (lines[0] if lines else "")
    return f"{type(err).__name__}: {text}"[:400]


# Files that carry a tokenizer's vocabulary. Without one, AutoTokenizer silently builds an
# empty-vocabulary tokenizer from config.json alone and the model answers with nothing.
TOKENIZER_FILES = (
    "tokenizer.json", "spiece.model", "tokenizer.model", "sentencepiece.bpe.model", "vocab.json", "vocab.txt",
)  # fmt: skip


def check_finite(model: Any, location: str, only: str = "") -> None:
    """Refuse weights holding NaN/inf: safetensors has no checksum, so bytes corrupted inside
    the tensor data load without complaint and only show up as empty or garbage output."""
    for name, param in model.named_parameters():
        if param.numel() > 1 and not any(param.stride()):
            continue  # a placeholder for a layer kept compact (core.precision): checked as read
        if only in name and not all_finite(param):
            raise ModelLoadError(f"weights at {location} are corrupt: {name} holds NaN or infinite values")


def load_tokenizer(location: str) -> Any:
    """Load a tokenizer from a hub id or directory; errors name the location."""
    from transformers import AutoTokenizer

    if is_local_path(location):
        _check_local_dir(location, (), "tokenizer")
        if not any((Path(location).expanduser() / name).is_file() for name in TOKENIZER_FILES):
            raise ModelLoadError(
                f"tokenizer missing at {location}: none of {', '.join(TOKENIZER_FILES)} found"
            )
    try:
        return AutoTokenizer.from_pretrained(location)
    except Exception as err:
        raise ModelLoadError(f"tokenizer could not be loaded from {location}: {_describe(err)}") from err


def _from_state_dict(location: str, state: dict[str, Any], dtype: torch.dtype, extra: dict[str, Any]) -> Any:
    """``from_pretrained`` of a local checkpoint over tensors already read (same config, generation
    config and key handling; the tensors become the parameters without a copy)."""
    from transformers import AutoConfig, AutoModelForSeq2SeqLM, GenerationConfig

    config = AutoConfig.from_pretrained(location)
    try:
        generation = GenerationConfig.from_pretrained(location)
    except OSError:  # no (or an unreadable) generation_config.json: from config.json, as transformers does
        generation = GenerationConfig.from_pretrained(
            location, config_file_name="config.json", _from_model_config=True
        )
    model_class = AutoModelForSeq2SeqLM._model_mapping[type(config)]
    model = model_class.from_pretrained(
        None, config=config, state_dict=state, dtype=dtype, generation_config=generation, **extra
    )
    model.config.name_or_path = model.name_or_path = location  # peft records it as the adapter's base
    return model


def load_seq2seq(
    location: str, device: torch.device, dtype: torch.dtype, int8: bool = False, bf16_storage: bool = False
) -> Any:
    """Load a seq2seq LM (fp32/bf16) in eval mode; errors name the location and cause.

    ``int8``: the caller serves int8 decoder weights and calls :func:`quantize_decoder` on the
    model before it generates; a local safetensors checkpoint then has those layers quantized
    as they are read (the model holds placeholders for them until then), so the dense decoder
    never sits in memory (python -m bench, P1). ``bf16_storage``: likewise the dense layers
    :func:`store_dense_in_bf16` will store in bf16 are cast to bf16 as they are read.
    """
    from transformers import AutoModelForSeq2SeqLM

    if is_local_path(location):
        _check_local_dir(location, ("config.json",), "model")
    try:
        # Eager attention on the CPU: with padded batches, T5's position bias + mask sends SDPA
        # to a slow path (measured: a padded batch of 8 generated 1.15-1.5x faster eager; batch 1 even).
        extra = {"attn_implementation": "eager"} if device.type == "cpu" else {}
        int8_layers: dict[str, Any] | None = {} if int8 else None
        bf16_layers: dict[str, Any] | None = {} if bf16_storage else None
        state = None
        if is_local_path(location):
            int8_paths, bf16_paths = _compact_layer_paths(location) if int8 or bf16_storage else ((), ())
            state = read_safetensors(
                Path(location).expanduser(), dtype,
                int8_layers, frozenset(int8_paths), bf16_layers, frozenset(bf16_paths),
            )  # fmt: skip
        if state is None:
            model = AutoModelForSeq2SeqLM.from_pretrained(location, dtype=dtype, **extra)
        else:  # already in the serving dtype: no memory-mapped fp32 copy during the load
            model = _from_state_dict(location, state, dtype, extra)
            del state
    except Exception as err:
        raise ModelLoadError(f"model could not be loaded from {location}: {_describe(err)}") from err
    check_finite(model, location)
    if int8_layers:
        setattr(model, PREQUANTIZED_ATTRIBUTE, int8_layers)
    if bf16_layers:
        setattr(model, PRECAST_ATTRIBUTE, bf16_layers)
    return model.to(device).eval()


def _compact_layer_paths(location: str) -> tuple[list[str], list[str]]:
    """The layers :func:`quantize_decoder` and :func:`store_dense_in_bf16` will convert, from
    the model's structure alone (built on the meta device: no weights). ``lm_head`` only where
    config.json unties it from the embeddings (flan-t5): a tied head is the embedding matrix,
    which the encoder needs dense (transformers 5's ``T5Config`` reports every T5 as tied, so
    the file is read)."""
    from transformers import AutoConfig, AutoModelForSeq2SeqLM

    config = AutoConfig.from_pretrained(location)
    with torch.device("meta"):
        skeleton = AutoModelForSeq2SeqLM.from_config(config)
    declared = read_json_object(Path(location).expanduser() / "config.json", on_error="ignore") or {}
    untied = declared.get("tie_word_embeddings") is False
    return [p for p in int8_layer_paths(skeleton) if untied or p != "lm_head"], bf16_layer_paths(skeleton)


def check_vocab(tokenizer: Any, model: Any, location: str) -> None:
    """Refuse a tokenizer whose ids run past the model's embedding table (a tokenizer from
    another model): generation would fail on every request instead of once at start-up."""
    rows = model.get_input_embeddings().num_embeddings
    if len(tokenizer) > rows:
        raise ModelLoadError(
            f"tokenizer at {location} has {len(tokenizer)} tokens but the model has only {rows} "
            "embeddings: the tokenizer belongs to another model"
        )


# Decoding settings a checkpoint may carry; the rest of its generation config is the model's.
GENERATION_KEYS = (
    "max_new_tokens", "num_beams", "no_repeat_ngram_size", "repetition_penalty",
    "length_penalty", "min_new_tokens", "early_stopping", "encoder_no_repeat_ngram_size",
    "encoder_repetition_penalty",
)  # fmt: skip


def generation_defaults(location: str, model: Any) -> dict[str, Any]:
    """Decoding defaults from a model's (or adapter's) ``generation_config.json``.

    Read with ``GenerationConfig.from_pretrained``; without the file, the loaded model's own
    generation config. Only settings the file (or model) sets are returned: transformers 5
    leaves every unset one ``None``.
    """
    from transformers import GenerationConfig

    path = Path(location) / "generation_config.json"
    if path.is_file():
        try:
            config = GenerationConfig.from_pretrained(location)
        except OSError as err:  # transformers' answer to bad JSON and to bytes that aren't UTF-8
            raise ModelLoadError(f"{path} is unreadable: not valid JSON ({_describe(err)})") from err
        except Exception as err:
            raise ModelLoadError(f"{path} is unreadable: expected a JSON object ({_describe(err)})") from err
    else:
        config = getattr(model, "generation_config", None)
    raw = config.to_dict() if config is not None else {}
    return {k: raw[k] for k in GENERATION_KEYS if raw.get(k) is not None}


def adapter_config(adapter_dir: str) -> Any:
    """The ``PeftConfig`` in ``adapter_dir``; :class:`ModelLoadError` naming the file if broken."""
    from peft import PeftConfig

    path = Path(adapter_dir) / "adapter_config.json"
    try:
        return PeftConfig.from_pretrained(adapter_dir)
    except (json.JSONDecodeError, UnicodeDecodeError) as err:
        raise ModelLoadError(
            f"adapter config {path} is unreadable: not valid JSON ({_describe(err)})"
        ) from err
    except Exception as err:  # valid JSON that is no adapter config (e.g. a list)
        raise ModelLoadError(
            f"adapter config {path} is unreadable: expected a JSON object holding a PEFT config "
            f"({_describe(err)})"
        ) from err


def _same_base(recorded: str, loaded: str) -> bool:
    if not recorded or recorded == loaded:
        return True
    rec_hub, cur_hub = hub_location(recorded), hub_location(loaded)
    if rec_hub is not None and cur_hub is not None:  # one repo, whatever revision
        return rec_hub.repo_id == cur_hub.repo_id
    rec, cur = Path(recorded).expanduser(), Path(loaded).expanduser()
    if rec.exists() and cur.exists():
        return rec.resolve() == cur.resolve()
    # Paths recorded on another machine: compare their last two components.
    return rec.parts[-2:] == cur.parts[-2:]


def adapter_base_warning(adapter_dir: str, base_location: str) -> str | None:
    """Say so when an adapter records a different base model than the one loaded."""
    recorded = adapter_config(adapter_dir).base_model_name_or_path or ""
    if _same_base(str(recorded), base_location):
        return None
    return f"adapter {adapter_dir} was trained on {recorded!r} but is applied to {base_location!r}"


def _has_lora_layers(model: Any) -> bool:
    from peft.tuners.lora import LoraLayer

    return any(isinstance(m, LoraLayer) for m in model.modules())


def attach_lora(base: Any, adapter_dir: str, base_location: str) -> tuple[Any, str | None]:
    """Inject the adapter at ``adapter_dir`` into ``base`` (in place); return the peft model."""
    from peft import PeftModel

    _check_local_dir(adapter_dir, ("adapter_config.json",), "LoRA adapter")
    if not any((Path(adapter_dir) / n).is_file() for n in ("adapter_model.safetensors", "adapter_model.bin")):
        raise ModelLoadError(
            f"LoRA adapter at {adapter_dir} is incomplete: missing adapter_model.safetensors"
        )
    warning = adapter_base_warning(adapter_dir, base_location)
    try:
        peft_model = PeftModel.from_pretrained(
            base, adapter_dir, adapter_name=LORA_ADAPTER, is_trainable=False
        )
    except Exception as err:
        raise ModelLoadError(
            f"LoRA adapter at {adapter_dir} does not fit the base: {_describe(err)}"
        ) from err
    check_finite(peft_model, adapter_dir, only="lora_")
    return peft_model.eval(), warning


def _adapter_dir(location: str) -> str:
    """An adapter's local directory (a Hub id fetched into the cache), checked to be complete."""
    try:
        directory = str(fetch_checkpoint(location))
    except CheckpointNotFoundError as err:
        raise ModelLoadError(str(err)) from err
    _check_local_dir(directory, ("adapter_config.json",), "LoRA adapter")
    if not any((Path(directory) / n).is_file() for n in ("adapter_model.safetensors", "adapter_model.bin")):
        raise ModelLoadError(f"LoRA adapter at {directory} is incomplete: missing adapter_model.safetensors")
    return directory


def attach_adapters(
    serving: Any,
    base: Any,
    adapters: tuple[tuple[str, str], ...],
    base_location: str,
    base_dir: str,
) -> tuple[Any, dict[str, tuple[str, dict[str, Any], str | None]], dict[str, str]]:
    """Load every extra adapter (``ARENA_ADAPTERS``) into the one peft model over ``base``.

    Each becomes one more named adapter of the same in-memory model (``load_adapter``), so it
    costs its own LoRA weights and no second copy of the base, and runs in the same mixed-adapter
    batch as the original and the main LoRA. ``serving`` is that peft model, or ``base`` itself
    when no adapter is attached yet. Returns ``(serving, loaded, errors)``: ``loaded`` maps a name
    to ``(directory, generation defaults, warning)``; a failing adapter is an error, never raised.
    """
    from peft import PeftModel

    loaded: dict[str, tuple[str, dict[str, Any], str | None]] = {}
    errors: dict[str, str] = {}
    for name, location in adapters:
        try:
            directory = _adapter_dir(location)
            warning = adapter_base_warning(directory, base_location)
            try:
                if isinstance(serving, PeftModel):
                    serving.load_adapter(
                        directory, adapter_name=name, is_trainable=False, low_cpu_mem_usage=True
                    )
                else:
                    serving = PeftModel.from_pretrained(
                        base, directory, adapter_name=name, is_trainable=False, low_cpu_mem_usage=True
                    )
            except Exception as err:
                raise ModelLoadError(
                    f"LoRA adapter at {location} does not fit the base: {_describe(err)}"
                ) from err
            for part in ("lora_A", "lora_B"):
                check_finite(serving, location, only=f"{part}.{name}.")
            defaults = {**generation_defaults(base_dir, base), **generation_defaults(directory, base)}
            loaded[name] = (directory, defaults, warning)
        except ModelLoadError as err:
            errors[name] = str(err)
            logger.error("adapter %s unavailable: %s", name, err)
            if isinstance(serving, PeftModel) and name in serving.peft_config:
                serving.delete_adapter(name)  # a half-loaded adapter must not stay in the model
    return serving.eval(), loaded, errors


def fetch_locations(
    locations: dict[str, str], names: tuple[str, ...] = MODEL_NAMES
) -> tuple[dict[str, str], dict[str, str]]:
    """``(directories, errors)``: the local directory of each model ``names`` needs (the original
    too when LoRA is asked for: the adapter sits on it), Hub ids fetched into the Hub cache
    (:func:`core.checkpoints.fetch_checkpoint`); a model that cannot be fetched gets an error
    naming its repo instead. Local paths pass through unchecked (the loaders check them)."""
    needed = [n for n in MODEL_NAMES if n in names or (n == "original" and "lora" in names)]
    dirs: dict[str, str] = {}
    errors: dict[str, str] = {}
    for name in needed:
        try:
            dirs[name] = str(fetch_checkpoint(locations[name]))
        except CheckpointNotFoundError as err:
            errors[name] = str(err)
    return dirs, errors


def compact_weights(model: Any, int8: bool, bf16_storage: bool) -> None:
    """Swap in the layers :func:`load_seq2seq` read compact (``int8``, ``bf16_storage``), in the
    order they need: the int8 decoder layers first, then the dense ones stored in bf16."""
    if int8:
        quantize_decoder(model)
    if bf16_storage:
        store_dense_in_bf16(model)


def load_model_set(config: ArenaConfig, names: tuple[str, ...] | None = None) -> ModelSet:
    """Load the preset's models (``names``; default: all of ``config.model_names``, the extra
    adapters of ``ARENA_ADAPTERS`` included); each failure is recorded in ``errors``, not raised."""
    names = tuple(config.model_names if names is None else names)
    extra = tuple((n, loc) for n, loc in config.adapters if n in names)
    ensure_offline_if_unreachable(config)
    device = resolve_device(config.device)
    dtype = resolve_dtype(config.dtype, device)
    int8 = use_int8_weights(config.dtype, device)
    # fp32 compute around int8 layers (a CPU without bf16): the dense weights int8 serves in bf16
    # are stored in bf16 too, and upcast per product (core.precision; python -m bench, P1).
    bf16_storage = int8 and dtype == torch.float32
    threads = cpu_threads(config) if device.type == "cpu" else None
    if threads is not None:
        torch.set_num_threads(threads)  # this thread and those started later (see the end)
    result = ModelSet(config=config)
    locations = config.models.as_dict()
    # Hub ids become their cached snapshot directories here; what cannot be fetched is that
    # column's error (and the original's is the LoRA column's too: it needs the base).
    dirs, unfetched = fetch_locations(locations, names + (("original",) if extra else ()))
    for name, message in unfetched.items():
        result.errors[name] = message
        logger.error("%s unavailable: %s", name, message)
    if "original" in unfetched and "lora" in names:
        result.errors["lora"] = f"needs the original model: {unfetched['original']}"
    for name, _ in extra if "original" in unfetched else ():
        result.errors[name] = f"needs the original model: {unfetched['original']}"

    base = base_tokenizer = None
    if ("original" in names or "lora" in names or extra) and "original" in dirs:
        try:
            base_tokenizer = load_tokenizer(dirs["original"])
            base = load_seq2seq(dirs["original"], device, dtype, int8, bf16_storage)
            check_vocab(base_tokenizer, base, locations["original"])
        except ModelLoadError as err:
            base = None  # loaded but refused (e.g. by check_vocab): serve neither original nor lora
            for name in ("original", "lora", *(n for n, _ in extra)):
                if name in names:
                    result.errors[name] = (
                        str(err) if name == "original" else f"needs the original model: {err}"
                    )
            logger.error("original model unavailable: %s", err)

    shared_lock = threading.Lock()  # one generate call at a time on the shared base
    if base is not None:
        serving, warning = base, None
        if "lora" in names and "lora" in dirs:
            try:
                serving, warning = attach_lora(base, dirs["lora"], locations["original"])
                result.models["lora"] = LoadedModel(
                    "lora", locations["lora"], serving, base_tokenizer,
                    {**generation_defaults(dirs["original"], base),
                     **generation_defaults(dirs["lora"], base)},
                    shared_lock, adapter_name=LORA_ADAPTER, warning=warning,
                )  # fmt: skip
            except ModelLoadError as err:
                result.errors["lora"] = str(err)
                logger.error("LoRA unavailable: %s", err)
                if _has_lora_layers(base):  # a half-applied adapter must not leak into original
                    base = load_seq2seq(dirs["original"], device, dtype, int8, bf16_storage)
                serving = base
        if extra:
            serving, adapters, failed = attach_adapters(
                serving, base, extra, locations["original"], dirs["original"]
            )
            result.errors.update(failed)
            for name, (_, defaults, adapter_warning) in adapters.items():
                result.models[name] = LoadedModel(
                    name, dict(extra)[name], serving, base_tokenizer, defaults, shared_lock,
                    adapter_name=name, warning=adapter_warning,
                )  # fmt: skip
        compact_weights(serving, int8, bf16_storage)  # after every adapter: peft wraps only nn.Linear
        if "original" in names:
            try:
                result.models["original"] = LoadedModel(
                    "original", locations["original"], serving, base_tokenizer,
                    generation_defaults(dirs["original"], base), shared_lock,
                    adapter_name=BASE_ADAPTER if serving is not base else None,
                )  # fmt: skip
            except ModelLoadError as err:  # e.g. a broken generation_config.json
                result.errors["original"] = str(err)
                logger.error("original model unavailable: %s", err)

    if "full" in names and "full" in dirs:
        try:
            tokenizer = load_tokenizer(dirs["full"])
            model = load_seq2seq(dirs["full"], device, dtype, int8, bf16_storage)
            check_vocab(tokenizer, model, locations["full"])
            compact_weights(model, int8, bf16_storage)
            result.models["full"] = LoadedModel(
                "full", locations["full"], model, tokenizer,
                generation_defaults(dirs["full"], model), threading.Lock(),
            )  # fmt: skip
        except ModelLoadError as err:
            result.errors["full"] = str(err)
            logger.error("full fine-tune unavailable: %s", err)
    for loaded in result.models.values():
        # torch keeps the count per OS thread (OpenMP): a thread started before this load (the
        # app loads in the background) would still generate on every core, so each call sets it.
        loaded.cpu_threads = threads
    release_freed_memory()  # what casting and quantizing freed goes back to the system
    for name in ("full", "lora"):  # a first run: say which command produces the missing checkpoint
        hint = missing_checkpoint_hint(config, name) if name in result.errors else None
        if hint:
            result.errors[name] = f"{result.errors[name]}; {hint}"
    return result
