"""All configuration in one place: presets, generation settings, data and storage locations.

Precedence (lowest to highest): preset defaults, environment variables, explicit overrides
(CLI flags call :func:`load_config` with keyword overrides).

Environment variables (all optional):

======================  ==========================================================
``ARENA_PRESET``        ``flan-t5-base`` or ``mini``; unset = choose automatically
``ARENA_ORIGINAL``      hub id or local path of the original (base) model
``ARENA_FULL``          fully fine-tuned model: directory or Hub repo id (``owner/name[@revision]``)
``ARENA_LORA``          LoRA adapter (applied on top of the original): directory or Hub repo id
``ARENA_DATA``          DialogSum: hub id or local directory (``validation.jsonl``...)
``ARENA_DEVICE``        ``cpu``, ``cuda`` or ``auto`` (default)
``ARENA_DTYPE``         ``float32``, ``bfloat16``, ``int8`` (bf16 with int8 decoder weights),
                        ``float32-int8`` (``int8``'s stored weights, fp32 compute) or ``auto``
                        (default: bf16 on CUDA; int8 decoder weights on an x86 CPU with AVX2, with
                        bf16 compute where it has hardware bf16, fp32 otherwise; fp32 elsewhere)
``ARENA_THREADS``       CPU threads per generate call (default 1: see ``core.models.cpu_threads``)
``ARENA_MAX_NEW_TOKENS``  generation length cap (default 200)
``ARENA_NUM_BEAMS``     beams for beam search (default: the model's generation_config)
``ARENA_GENERATION_TIMEOUT_S``  seconds one ``generate`` call may run in the app (default 60;
                        ``0`` = no limit); past it the summary so far is shown, marked as cut
``ARENA_VOTES_DB``      SQLite file for human-evaluation votes (default: ``/data/votes.sqlite`` when
                        ``/data``, a Space's persistent storage, is writable; else ``data/votes.sqlite``)
``ARENA_VOTES_REPO``    Hub dataset (``owner/name``) every vote is also appended to (``core.vote_sync``)
``ARENA_CHECKPOINTS``   root of ``checkpoints/`` (default: the project's own)
``ARENA_AGREEMENT_METRIC``  ROUGE variant set against the votes (``core.agreement``; default rougeL)
``ARENA_ADAPTERS``      extra LoRA adapters on the original's base: ``name=location,...``
                        (directory or Hub repo id each); one extra column per name
``ARENA_DREAM``         DREAM directory for the mini preset's pre-training (default:
                        ``../shared/dream`` when present; empty = none)
======================  ==========================================================
"""

from __future__ import annotations

import os
import re
import socket
import sys
import threading
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path

PROJECT_ROOT = Path(__file__).resolve().parent.parent
MODEL_NAMES: tuple[str, ...] = ("original", "full", "lora")


class _Labels(dict):
    """Display names; an extra adapter (``ARENA_ADAPTERS``) is shown as "LoRA <its name>"."""

    def __missing__(self, name: str) -> str:
        return f"LoRA {name}"


MODEL_LABELS: dict[str, str] = _Labels(
    {
        "original": "Original",
        "full": "Full fine-tune",
        "lora": "LoRA",
    }
)
ADAPTER_NAME = re.compile(r"^[A-Za-z][A-Za-z0-9_-]{0,31}$")  # also a peft adapter name and a JSON key
PRESETS: tuple[str, ...] = ("flan-t5-base", "mini")
# Where a Hugging Face Space mounts its persistent storage; tests pass another root.
SPACE_PERSISTENT_ROOT = Path("/data")
# The command that produces each fine-tuned checkpoint of a preset at its default location.
TRAIN_COMMANDS: dict[tuple[str, str], str] = {
    ("flan-t5-base", "full"): "python -m train.full --bf16",
    ("flan-t5-base", "lora"): "python -m train.lora --bf16",
    ("mini", "full"): "python -m train.mini",
    ("mini", "lora"): "python -m train.mini",
}
DEFAULT_HUB_DATA = "knkarthick/dialogsum"
HUB_HOST = "huggingface.co"

# Bounds for user-facing generation settings; the UI and the API both reject values outside.
MAX_NEW_TOKENS_RANGE = (1, 512)
NUM_BEAMS_RANGE = (1, 8)
# A public server's budget per generate call: a 512-token, 8-beam request on flan-t5-base
# would otherwise hold one of the app's two generation slots for minutes.
DEFAULT_GENERATION_TIMEOUT_S = 60.0


@dataclass(frozen=True)
class GenerationSettings:
    """Decoding overrides. ``None`` keeps the model's own ``generation_config.json`` value."""

    max_new_tokens: int | None = 200
    num_beams: int | None = None
    min_new_tokens: int | None = None

    def validate(self) -> GenerationSettings:
        """Return self, or raise ``ValueError`` naming the allowed range."""
        checks = (
            ("max_new_tokens", self.max_new_tokens, MAX_NEW_TOKENS_RANGE),
            ("num_beams", self.num_beams, NUM_BEAMS_RANGE),
        )
        for name, value, (lo, hi) in checks:
            if value is None:
                continue
            if isinstance(value, bool) or not isinstance(value, int) or not lo <= value <= hi:
                raise ValueError(f"{name} must be an integer from {lo} to {hi}, got {value!r}")
        if self.min_new_tokens is not None and self.min_new_tokens < 0:
            raise ValueError(f"min_new_tokens must be >= 0, got {self.min_new_tokens!r}")
        return self

    def as_generate_kwargs(self) -> dict[str, int]:
        """The non-``None`` settings, ready for ``model.generate(**kwargs)``."""
        values = {
            "max_new_tokens": self.max_new_tokens,
            "num_beams": self.num_beams,
            "min_new_tokens": self.min_new_tokens,
        }
        return {k: v for k, v in values.items() if v is not None}


@dataclass(frozen=True)
class ModelLocations:
    """Where the three models of a preset live (hub id or local path each)."""

    original: str
    full: str
    lora: str

    def as_dict(self) -> dict[str, str]:
        return {"original": self.original, "full": self.full, "lora": self.lora}


@dataclass(frozen=True)
class ArenaConfig:
    """Everything the app, the scripts and the benchmark need to know."""

    preset: str
    preset_reason: str
    models: ModelLocations
    data: str
    generation: GenerationSettings = field(default_factory=GenerationSettings)
    device: str = "auto"
    dtype: str = "auto"
    threads: int | None = None  # CPU intra-op threads; None = core.models.DEFAULT_CPU_THREADS
    generation_timeout_s: float | None = DEFAULT_GENERATION_TIMEOUT_S  # per generate call; None = none
    votes_db: str = str(PROJECT_ROOT / "data" / "votes.sqlite")
    checkpoints: str = str(PROJECT_ROOT / "checkpoints")
    agreement_metric: str = "rougeL"  # rouge1, rouge2, rougeL or rougeLsum
    adapters: tuple[tuple[str, str], ...] = ()  # extra LoRA adapters: (name, location), in order

    @property
    def model_names(self) -> tuple[str, ...]:
        """Every column served: the three models, then each extra adapter."""
        return MODEL_NAMES + tuple(name for name, _ in self.adapters)

    votes_repo: str = ""  # Hub dataset the votes are also appended to; "" = none
    persistent_root: str | None = None  # writable persistent storage found (a Space's /data), if any

    @property
    def report_dir(self) -> Path:
        """Where ``train.evaluate`` writes this preset's report by default."""
        return Path(self.checkpoints) / self.preset / "eval"


def preset_models(preset: str, checkpoints: str | Path) -> ModelLocations:
    """Default model locations of a named preset."""
    root = Path(checkpoints)
    if preset == "flan-t5-base":
        return ModelLocations(
            original="google/flan-t5-base",
            full=str(root / "flan-t5-base" / "full"),
            lora=str(root / "flan-t5-base" / "lora"),
        )
    if preset == "mini":
        return ModelLocations(
            original=str(root / "mini" / "original"),
            full=str(root / "mini" / "full"),
            lora=str(root / "mini" / "lora"),
        )
    raise ValueError(f"unknown preset {preset!r}; choose one of {', '.join(PRESETS)}")


def default_data_source() -> str:
    """The local DialogSum copy beside the project if present, else the Hub mirror."""
    local = PROJECT_ROOT.parent / "shared" / "dialogsum"
    return str(local) if (local / "test.jsonl").is_file() else DEFAULT_HUB_DATA


def default_dream_source() -> str:
    """``ARENA_DREAM``, else the DREAM copy beside the project if present, else "" (none).

    DREAM's dialogues and questions feed only the mini preset's pre-training (``train.mini``).
    """
    configured = os.environ.get("ARENA_DREAM")
    if configured is not None:
        return configured
    local = PROJECT_ROOT.parent / "shared" / "dream"
    return str(local) if (local / "dialogues.jsonl").is_file() else ""


def is_local_path(location: str) -> bool:
    """True when ``location`` names something on disk rather than a hub id."""
    return Path(location).expanduser().exists() or location.startswith((".", "/", "~"))


def persistent_storage(root: str | Path | None = None) -> Path | None:
    """``root`` (default :data:`SPACE_PERSISTENT_ROOT`) when it is a writable directory, else ``None``."""
    path = Path(SPACE_PERSISTENT_ROOT if root is None else root)
    return path if path.is_dir() and os.access(path, os.W_OK | os.X_OK) else None


def default_votes_db(persistent_root: str | Path | None = None) -> str:
    """The votes file on persistent storage when there is some (a Space's ``/data``), else in the project."""
    storage = persistent_storage(persistent_root)
    return str((storage or PROJECT_ROOT / "data") / "votes.sqlite")


def missing_checkpoint_hint(config: ArenaConfig, name: str) -> str | None:
    """How to produce the ``full``/``lora`` checkpoint of the live preset, when it is configured at the
    preset's default location and is not there yet (``None`` otherwise)."""
    command = TRAIN_COMMANDS.get((config.preset, name))
    default = getattr(preset_models(config.preset, config.checkpoints), name, None)
    location = config.models.as_dict().get(name)
    if command is None or location != default or Path(location).exists():
        return None
    return f"not trained yet: `{command}` writes it to {location} (README: Train your own)"


def _offline_requested(env: dict[str, str]) -> bool:
    flags = (env.get("HF_HUB_OFFLINE", ""), os.environ.get("HF_HUB_OFFLINE", ""))
    return any(flag.strip().lower() in ("1", "true", "yes", "on") for flag in flags)


def _checkpoint_present(path: str) -> bool:
    p = Path(path)
    return p.is_dir() and any((p / name).is_file() for name in ("config.json", "adapter_config.json"))


def choose_preset(
    checkpoints: str | Path, env: dict[str, str], hub_online: Callable[[], bool] | None = None
) -> tuple[str, str]:
    """Pick the preset and say why.

    ``flan-t5-base`` wins when its fine-tuned checkpoints exist (or were configured through
    ``ARENA_FULL``/``ARENA_LORA``), and on a connected first run: when ``hub_online()`` says the
    Hub is reachable, the real Flan-T5 is served even before anything is fine-tuned (the two
    fine-tuned columns then say which command produces them). Otherwise the embedded ``mini``
    preset. ``hub_online`` is called only when nothing else decides (``None``: never).
    """
    requested = env.get("ARENA_PRESET", "").strip()
    if requested:
        if requested not in PRESETS:
            raise ValueError(f"ARENA_PRESET={requested!r} is not one of {', '.join(PRESETS)}")
        return requested, f"{requested} preset: chosen by ARENA_PRESET"
    if env.get("ARENA_FULL") or env.get("ARENA_LORA"):
        return "flan-t5-base", "flan-t5-base preset: checkpoints configured by ARENA_FULL/ARENA_LORA"
    base = preset_models("flan-t5-base", checkpoints)
    if _checkpoint_present(base.full) and _checkpoint_present(base.lora):
        return (
            "flan-t5-base",
            f"flan-t5-base preset: fine-tuned checkpoints found in {Path(base.full).parent}",
        )
    if hub_online is not None and hub_online():
        return (
            "flan-t5-base",
            f"flan-t5-base preset: the Hub is reachable, so the real {base.original} is served; its "
            f"fine-tuned checkpoints are not in {Path(base.full).parent} yet (`{TRAIN_COMMANDS['flan-t5-base', 'full']}` "
            f"and `{TRAIN_COMMANDS['flan-t5-base', 'lora']}` make them; ARENA_PRESET=mini serves the embedded "
            "mini models instead)",
        )
    return (
        "mini",
        f"mini preset: flan-t5-base checkpoints not found in {Path(base.full).parent} "
        "(the mini models are small T5s trained here from scratch, not Flan-T5)",
    )


def _env_int(env: dict[str, str], name: str) -> int | None:
    raw = env.get(name, "").strip()
    if not raw:
        return None
    try:
        return int(raw)
    except ValueError as err:
        raise ValueError(f"{name} must be an integer, got {raw!r}") from err


def _env_timeout(env: dict[str, str], name: str) -> float | None:
    """A time budget in seconds from ``env``: unset = the default, ``0`` = no limit."""
    raw = env.get(name, "").strip()
    if not raw:
        return DEFAULT_GENERATION_TIMEOUT_S
    try:
        value = float(raw)
    except ValueError as err:
        raise ValueError(f"{name} must be a number of seconds, got {raw!r}") from err
    if value < 0 or value != value:  # NaN is not a budget
        raise ValueError(f"{name} must be >= 0 (0 = no limit), got {raw!r}")
    return value or None


def load_config(
    env: dict[str, str] | None = None,
    *,
    preset: str | None = None,
    original: str | None = None,
    full: str | None = None,
    lora: str | None = None,
    data: str | None = None,
    device: str | None = None,
    dtype: str | None = None,
    max_new_tokens: int | None = None,
    num_beams: int | None = None,
    votes_db: str | None = None,
    persistent_root: str | Path | None = None,
    threads: int | None = None,
) -> ArenaConfig:
    """Build the configuration from preset defaults, the environment and explicit overrides.

    With no preset requested and no fine-tuned checkpoints, the Hub is probed (once per
    process, at most ~1.5 s, never when ``HF_HUB_OFFLINE`` is set): see :func:`choose_preset`.
    ``persistent_root`` replaces ``/data`` as the persistent storage looked for (tests).
    """
    env = dict(os.environ if env is None else env)
    checkpoints = env.get("ARENA_CHECKPOINTS") or str(PROJECT_ROOT / "checkpoints")
    if preset:
        env["ARENA_PRESET"] = preset
    if full or lora:
        env.setdefault("ARENA_FULL", full or "")
        env.setdefault("ARENA_LORA", lora or "")
    chosen, reason = choose_preset(
        checkpoints, env, hub_online=lambda: not _offline_requested(env) and hub_reachable()
    )
    storage = persistent_storage(persistent_root)
    defaults = preset_models(chosen, checkpoints)
    models = ModelLocations(
        original=original or env.get("ARENA_ORIGINAL") or defaults.original,
        full=full or env.get("ARENA_FULL") or defaults.full,
        lora=lora or env.get("ARENA_LORA") or defaults.lora,
    )
    env_tokens = _env_int(env, "ARENA_MAX_NEW_TOKENS")
    generation = GenerationSettings(
        max_new_tokens=max_new_tokens or env_tokens or 200,
        num_beams=num_beams or _env_int(env, "ARENA_NUM_BEAMS"),
    ).validate()
    config = ArenaConfig(
        preset=chosen,
        preset_reason=reason,
        models=models,
        data=data or env.get("ARENA_DATA") or default_data_source(),
        generation=generation,
        device=device or env.get("ARENA_DEVICE") or "auto",
        dtype=dtype or env.get("ARENA_DTYPE") or "auto",
        threads=threads if threads is not None else _env_int(env, "ARENA_THREADS"),
        generation_timeout_s=_env_timeout(env, "ARENA_GENERATION_TIMEOUT_S"),
        votes_db=votes_db or env.get("ARENA_VOTES_DB") or default_votes_db(persistent_root),
        checkpoints=checkpoints,
        votes_repo=env.get("ARENA_VOTES_REPO", "").strip(),
        persistent_root=str(storage) if storage else None,
        agreement_metric=_agreement_metric(env),
        adapters=parse_adapters(env.get("ARENA_ADAPTERS", "")),
    )
    return config


def parse_adapters(raw: str) -> tuple[tuple[str, str], ...]:
    """``"r4=checkpoints/mini/lora-r4,r8=owner/repo"`` -> ``(("r4", ...), ("r8", ...))``.

    Names are short identifiers (letters, digits, ``_``, ``-``), unique and none of the three
    models' names; ``ValueError`` says which entry is wrong.
    """
    adapters: list[tuple[str, str]] = []
    for entry in (part.strip() for part in raw.split(",")):
        if not entry:
            continue
        name, sep, location = (x.strip() for x in entry.partition("="))
        if not sep or not location:
            raise ValueError(f"ARENA_ADAPTERS entry {entry!r} must be name=location")
        if not ADAPTER_NAME.match(name) or name in MODEL_NAMES or name.startswith("__"):
            raise ValueError(
                f"ARENA_ADAPTERS name {name!r} must be a short identifier (letters, digits, _ or -, "
                f"starting with a letter) other than {', '.join(MODEL_NAMES)}"
            )
        if name in dict(adapters):
            raise ValueError(f"ARENA_ADAPTERS names {name!r} twice")
        adapters.append((name, location))
    return tuple(adapters)


def _agreement_metric(env: dict[str, str]) -> str:
    from core.metrics import ROUGE_TYPES  # lazy: only the variant names, not the scorer

    metric = env.get("ARENA_AGREEMENT_METRIC", "").strip() or "rougeL"
    if metric not in ROUGE_TYPES:
        raise ValueError(f"ARENA_AGREEMENT_METRIC must be one of {', '.join(ROUGE_TYPES)}, got {metric!r}")
    return metric


# Cache of the reachability probe: the answer cannot change fast enough to matter in one run.
_HUB_REACHABLE: dict[str, bool] = {}
_HUB_LOCK = threading.Lock()


def hub_reachable(timeout_s: float = 1.5) -> bool:
    """Whether the Hugging Face Hub answers a TCP connect within ``timeout_s``.

    DNS resolution can itself hang on a closed network, so the probe runs in a daemon thread
    and is abandoned after the timeout.
    """
    with _HUB_LOCK:
        if HUB_HOST in _HUB_REACHABLE:
            return _HUB_REACHABLE[HUB_HOST]
        result: list[bool] = []

        def probe() -> None:
            try:
                with socket.create_connection((HUB_HOST, 443), timeout=timeout_s):
                    result.append(True)
            except OSError:
                result.append(False)

        thread = threading.Thread(target=probe, daemon=True)
        thread.start()
        thread.join(timeout_s + 0.2)
        _HUB_REACHABLE[HUB_HOST] = bool(result and result[0])
        return _HUB_REACHABLE[HUB_HOST]


def ensure_offline_if_unreachable(config: ArenaConfig) -> bool:
    """Set ``HF_HUB_OFFLINE=1`` when the Hub cannot be reached, so loads fail fast.

    Nothing is probed when every model and the data are local paths, or when the user already
    chose offline mode. Returns whether offline mode is on afterwards.
    """
    if os.environ.get("HF_HUB_OFFLINE", "").lower() in ("1", "true", "yes", "on"):
        _set_offline()
        return True
    locations = [*config.models.as_dict().values(), config.data, *(loc for _, loc in config.adapters)]
    if all(is_local_path(loc) for loc in locations) or not hub_reachable():
        _set_offline()
        return True
    return False


def _set_offline() -> None:
    os.environ["HF_HUB_OFFLINE"] = "1"
    # huggingface_hub reads the variable once at import; update the live constant too.
    constants = sys.modules.get("huggingface_hub.constants")
    if constants is not None:
        constants.HF_HUB_OFFLINE = True
