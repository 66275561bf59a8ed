"""One training path for both methods: preprocessing, the Trainer run, saving and metadata.

``train.full`` and ``train.lora`` are thin command lines over :func:`train` (their flags are the
fields of :class:`TrainOptions`' argument groups); other code (the ``mini`` preset builder)
calls it directly with a :class:`TrainOptions`.

Preprocessing is the serving path's: the core prompt around each dialogue, the dialogue cut
at a token boundary so the prompt fits ``max_source_length`` (512) with its trailing
``Summary:`` kept (``core.generation.fit_dialogue``), summaries cut at ``max_target_length``
(128), and labels padded with -100 by ``DataCollatorForSeq2Seq`` so padding never counts in
the loss.
"""

from __future__ import annotations

import logging
import shutil
import statistics
import time
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Any

import torch

from core.checkpoints import portable_location, weights_size_bytes
from core.config import DEFAULT_HUB_DATA, PRESETS, PROJECT_ROOT, default_data_source, load_config
from core.data import DataError, Dialogue, load_split
from core.generation import fit_dialogue
from core.precision import cpu_has_native_bf16
from core.prompt import build_prompt
from train.metadata import (
    hardware_description,
    library_versions,
    loss_history,
    read_metadata,
    write_metadata,
)
from train.push import TRAINER_DIR, push_checkpoint

logger = logging.getLogger(__name__)

METHODS: tuple[str, ...] = ("full", "lora")
DEFAULT_LEARNING_RATES = {"full": 1e-5, "lora": 1e-3}  # the lab's values
LORA_BASE_DTYPES: tuple[str, ...] = ("auto", "float32", "bfloat16")


class TrainingError(RuntimeError):
    """A training run cannot start or finish; the message says why and what to do."""


def default_training_data(split: str) -> str:
    """The local DialogSum copy when it holds ``split``, else the Hub (the local copy has no train split)."""
    local = default_data_source()
    return local if (Path(local) / f"{split}.jsonl").is_file() else DEFAULT_HUB_DATA


# The options are grouped as ``python -m train.full --help`` shows them; each dataclass is one
# group (``HfArgumentParser`` reads ``_argument_group_name``) and each field's ``help`` is the
# flag's. The defaults here are the only ones: the command line and scripted callers share them.


@dataclass(kw_only=True)
class RunArguments:
    """What to train, on which data, and where the result goes."""

    _argument_group_name = "what to train on and where to write it"

    base_model: str = field(
        default="google/flan-t5-base",
        metadata={"help": "hub id or local directory of the model to start from"},
    )
    data: str | None = field(
        default=None,
        metadata={
            "help": f"DialogSum: a hub id (e.g. {DEFAULT_HUB_DATA}) or a local directory of <split>.jsonl "
            "files (default: the local copy beside the project if it has the split, else the Hub)"
        },
    )
    split: str = field(default="train", metadata={"help": "data split to train on"})
    limit: int | None = field(
        default=None, metadata={"help": "use only the first N dialogues (default: all)", "metavar": "N"}
    )
    output_dir: str | None = field(
        default=None,
        metadata={
            "aliases": ["--output"],
            "metavar": "DIR",
            "help": "output directory (default: checkpoints/<preset>/<method> under the checkpoints root)",
        },
    )
    preset: str = field(
        default="flan-t5-base",
        metadata={"choices": PRESETS, "help": "preset whose checkpoints folder is the default output"},
    )
    overwrite: bool = field(
        default=False, metadata={"help": "replace a non-empty output directory instead of refusing"}
    )
    resume: bool = field(
        default=False,
        metadata={"help": "continue an interrupted run from its last checkpoint in DIR/trainer/"},
    )
    push_to_hub: str | None = field(
        default=None,
        metadata={
            "metavar": "REPO",
            "help": "after training, upload the output directory to this Hub repo (needs `hf auth login`); "
            "serve it with ARENA_FULL=REPO or ARENA_LORA=REPO",
        },
    )


@dataclass(kw_only=True)
class OptimisationArguments:
    """How the weights are trained."""

    _argument_group_name = "optimisation"

    epochs: float = field(default=1.0, metadata={"help": "passes over the data"})
    max_steps: int = field(
        default=-1, metadata={"help": "stop after this many optimizer steps (overrides --epochs when > 0)"}
    )
    learning_rate: float | None = field(
        default=None,
        metadata={
            "aliases": ["--lr"],
            "help": f"peak learning rate (default: {DEFAULT_LEARNING_RATES['full']:g} for full fine-tuning, "
            f"{DEFAULT_LEARNING_RATES['lora']:g} for LoRA: the lab's values)",
        },
    )
    batch_size: int = field(default=8, metadata={"help": "examples per device per step"})
    grad_accum: int = field(
        default=1, metadata={"help": "accumulate gradients over N batches (effective batch = batch size x N)"}
    )
    weight_decay: float = field(default=0.01, metadata={"help": "AdamW weight decay"})
    warmup_ratio: float = field(default=0.0, metadata={"help": "share of steps spent warming up"})
    label_smoothing: float = field(default=0.0, metadata={"help": "label smoothing factor"})
    dropout: float | None = field(
        default=None, metadata={"help": "override the model's dropout rate (default: keep it)"}
    )
    seed: int = field(default=42, metadata={"help": "random seed for data order and init"})
    # fp16 is never offered: T5 overflows in float16.
    bf16: bool = field(
        default=False,
        metadata={"help": "bfloat16 mixed precision (CUDA GPUs only; much faster on A100/H100)"},
    )
    max_source_length: int = field(default=512, metadata={"help": "cut prompts to this many tokens"})
    max_target_length: int = field(default=128, metadata={"help": "cut summaries to this many tokens"})
    logging_steps: int = field(
        default=0,
        metadata={
            "help": "log the loss every N steps (0: every 2%% of the run, about 50 points on any length)"
        },
    )
    save_steps: int = field(default=500, metadata={"help": "write a resumable checkpoint every N steps"})


@dataclass(kw_only=True)
class LoraArguments:
    """The LoRA adapter's shape (``train.lora`` only)."""

    _argument_group_name = "LoRA"

    lora_r: int = field(default=32, metadata={"help": "rank of the update matrices"})
    lora_alpha: int = field(default=32, metadata={"help": "scaling numerator alpha"})
    lora_dropout: float = field(default=0.05, metadata={"help": "dropout on the LoRA path"})
    lora_targets: list[str] = field(
        default_factory=lambda: ["q", "v"],
        metadata={"help": "module names to adapt, e.g. q k v o wi wo (default: q v)"},
    )
    lora_base_dtype: str = field(
        default="auto",
        metadata={
            "choices": LORA_BASE_DTYPES,
            "help": "precision of the frozen base while the adapter trains (the adapter itself "
            "always trains in float32): bfloat16 halves the base's memory and runs its products "
            "at the hardware's bf16 rate; auto (default) picks bfloat16 on a GPU or CPU that "
            "computes bf16 natively (AVX512-BF16/AMX), else float32",
        },
    )


@dataclass(kw_only=True)
class TrainOptions(LoraArguments, OptimisationArguments, RunArguments):
    """Everything one training run needs: the command line's options plus what only code sets.

    ``None`` fields take the method's default (:meth:`with_defaults`, :meth:`resolved_learning_rate`).
    """

    method: str  # "full" | "lora"
    generation_defaults: dict | None = None  # written to the output's generation_config.json
    data_source_label: str | None = None  # what metadata and card record as the data set
    quiet: bool = False  # no progress bars (tests, scripted callers)
    callbacks: list[Any] = field(default_factory=list)  # extra transformers TrainerCallbacks

    def with_defaults(self) -> TrainOptions:
        """A copy with the defaults that depend on other options filled in: the output
        directory (``checkpoints/<preset>/<method>``) and the data (:func:`default_training_data`)."""
        return replace(
            self,
            output_dir=self.output_dir or default_output_dir(self.method, self.preset),
            data=self.data or default_training_data(self.split),
        )

    def resolved_learning_rate(self) -> float:
        return self.learning_rate if self.learning_rate is not None else DEFAULT_LEARNING_RATES[self.method]

    def validate(self) -> TrainOptions:
        """Return self, or raise ``ValueError`` naming the bad option."""
        if self.method not in METHODS:
            raise ValueError(f"method must be one of {', '.join(METHODS)}, got {self.method!r}")
        positive = {
            "batch_size": self.batch_size,
            "grad_accum": self.grad_accum,
            "max_source_length": self.max_source_length,
            "max_target_length": self.max_target_length,
            "save_steps": self.save_steps,
            "lora_r": self.lora_r,
            "lora_alpha": self.lora_alpha,
        }
        for name, value in positive.items():
            if value < 1:
                raise ValueError(f"{name} must be at least 1, got {value}")
        if self.logging_steps < 0:
            raise ValueError(f"logging_steps must be at least 0 (0 = automatic), got {self.logging_steps}")
        if self.max_steps < 1 and self.epochs <= 0:
            raise ValueError("give a positive number of epochs or max_steps")
        if self.limit is not None and self.limit < 1:
            raise ValueError(f"limit must be at least 1, got {self.limit}")
        if self.resolved_learning_rate() <= 0:
            raise ValueError("learning_rate must be positive")
        for name, value in (("lora_dropout", self.lora_dropout), ("warmup_ratio", self.warmup_ratio)):
            if not 0 <= value < 1:
                raise ValueError(f"{name} must be in [0, 1), got {value}")
        if self.dropout is not None and not 0 <= self.dropout < 1:
            raise ValueError(f"dropout must be in [0, 1), got {self.dropout}")
        if not self.lora_targets:
            raise ValueError("lora_targets must name at least one module (e.g. q v)")
        check_lora_base_dtype(self.lora_base_dtype)
        if self.method != "lora" and self.lora_base_dtype == "bfloat16":
            raise ValueError("lora_base_dtype is for LoRA: full fine-tuning updates every weight in float32")
        if self.bf16 and not torch.cuda.is_available():
            raise ValueError("bf16 needs a CUDA GPU; on the CPU training runs in float32")
        return self


def check_lora_base_dtype(value: str) -> None:
    """Raise ``ValueError`` unless ``value`` is one of :data:`LORA_BASE_DTYPES`."""
    if value not in LORA_BASE_DTYPES:
        raise ValueError(f"lora_base_dtype must be one of {', '.join(LORA_BASE_DTYPES)}, got {value!r}")


def default_output_dir(method: str, preset: str | None = None) -> str:
    """``checkpoints/<preset>/<method>`` under the configured checkpoints root."""
    config = load_config(preset=preset) if preset else load_config()
    return str(Path(config.checkpoints) / config.preset / method)


def training_examples(records: list[Dialogue]) -> list[tuple[str, str]]:
    """(dialogue, summary) pairs: one per human summary, so multi-reference splits use them all."""
    pairs = [(r.dialogue, ref) for r in records for ref in r.references]
    if not pairs:
        raise DataError("the chosen split has no reference summaries to train on (unlabeled?)")
    return pairs


def tokenize_examples(
    pairs: list[tuple[str, str]], tokenizer: Any, max_source_length: int = 512, max_target_length: int = 128
) -> Any:
    """A ``datasets.Dataset`` of ``input_ids``, ``attention_mask`` and (unpadded) ``labels``."""
    from datasets import Dataset

    prompts = [build_prompt(fit_dialogue(tokenizer, d, max_source_length).dialogue) for d, _ in pairs]
    inputs = tokenizer(prompts, truncation=True, max_length=max_source_length)
    labels = tokenizer(text_target=[s for _, s in pairs], truncation=True, max_length=max_target_length)
    return Dataset.from_dict(
        {
            "input_ids": inputs["input_ids"],
            "attention_mask": inputs["attention_mask"],
            "labels": labels["input_ids"],
        }
    )


def prepare_output_dir(options: TrainOptions, write: bool = True) -> str | None:
    """Check the output directory; return the Trainer checkpoint to resume from, if any.

    A non-empty directory is refused unless ``overwrite`` (it is then emptied) or ``resume``
    (there must be a checkpoint of an interrupted run in ``<output>/trainer``). With
    ``write=False`` (every process of a data-parallel run but the main one) the same checks
    run, so all processes refuse alike, but nothing is deleted or created.
    """
    from transformers.trainer_utils import get_last_checkpoint

    out = Path(options.output_dir).expanduser()
    if out.exists() and not out.is_dir():
        raise TrainingError(f"output path {out} exists and is not a directory")
    trainer_dir = out / TRAINER_DIR
    if options.resume:
        last = get_last_checkpoint(str(trainer_dir)) if trainer_dir.is_dir() else None
        if last is None:
            raise TrainingError(
                f"nothing to resume in {out}: no Trainer checkpoint under {trainer_dir} "
                "(a finished run removes its checkpoints; start a new run instead)"
            )
        return last
    if out.is_dir() and any(out.iterdir()):
        if not options.overwrite:
            raise TrainingError(
                f"output directory {out} is not empty; pass --overwrite to replace it, "
                "--resume to continue an interrupted run, or choose another --output"
            )
        resolved = out.resolve()
        if (resolved / ".git").exists() or resolved in (
            PROJECT_ROOT.resolve(),
            *PROJECT_ROOT.resolve().parents,
        ):
            raise TrainingError(f"refusing to overwrite {out}: it holds a project or repository")
        if write:
            logger.warning("overwriting %s", out)
            shutil.rmtree(resolved)
    if write:
        out.mkdir(parents=True, exist_ok=True)
    return None


def load_base(options: TrainOptions) -> tuple[Any, Any]:
    """Tokenizer and base model: float32, or for LoRA ``lora_base_dtype`` (bf16 is otherwise
    autocast only). Loaded straight into that dtype, so no float32 copy is made first."""
    from transformers import AutoModelForSeq2SeqLM, AutoTokenizer

    extra = {} if options.dropout is None else {"dropout_rate": options.dropout}
    try:
        tokenizer = AutoTokenizer.from_pretrained(options.base_model)
        model = AutoModelForSeq2SeqLM.from_pretrained(options.base_model, dtype=base_dtype(options), **extra)
    except Exception as err:
        raise TrainingError(f"base model could not be loaded from {options.base_model}: {err}") from err
    return tokenizer, model


def base_dtype(options: TrainOptions) -> torch.dtype:
    """The dtype the base is trained in: float32, except a LoRA run's frozen base
    (:func:`resolved_lora_base_dtype`).

    Why bf16 only for LoRA: its base never changes, so it needs no float32 master copy, while
    full fine-tuning's small updates vanish in bf16 weights. P5 in README's Performance section
    measures what it saves.
    """
    return torch.bfloat16 if resolved_lora_base_dtype(options) == "bfloat16" else torch.float32


def resolved_lora_base_dtype(options: TrainOptions) -> str:
    """``float32`` or ``bfloat16``: the LoRA base's precision with ``auto`` decided for the
    hardware the run trains on (bf16 only where it is native: emulated bf16 is slower than
    fp32). Always ``float32`` for full fine-tuning."""
    if options.method != "lora":
        return "float32"
    if options.lora_base_dtype != "auto":
        return options.lora_base_dtype
    return "bfloat16" if native_bf16_training() else "float32"


def _precision_label(options: TrainOptions) -> str:
    """What arena.json's ``precision`` says: the Trainer's arithmetic, and a bf16 LoRA base."""
    label = "bf16 mixed" if options.bf16 else "float32"
    if resolved_lora_base_dtype(options) == "bfloat16":
        label += ", bfloat16 frozen base"
    return label


def native_bf16_training() -> bool:
    """Whether the device a run trains on (a CUDA GPU if there is one, as the Trainer picks,
    else the CPU) does bf16 arithmetic in hardware."""
    if torch.cuda.is_available():
        return torch.cuda.is_bf16_supported()
    return cpu_has_native_bf16()


def wrap_lora(model: Any, options: TrainOptions) -> Any:
    """Inject a LoRA adapter (``TaskType.SEQ_2_SEQ_LM``) with the options' r/alpha/targets."""
    from peft import LoraConfig, TaskType, get_peft_model

    config = LoraConfig(
        task_type=TaskType.SEQ_2_SEQ_LM,
        r=options.lora_r,
        lora_alpha=options.lora_alpha,
        lora_dropout=options.lora_dropout,
        target_modules=list(options.lora_targets),
    )
    return get_peft_model(model, config)


def count_parameters(model: Any) -> tuple[int, int]:
    """(trainable, total) parameters; tied weights count once."""
    if hasattr(model, "get_nb_trainable_parameters"):
        trainable, total = model.get_nb_trainable_parameters()
        return int(trainable), int(total)
    params = list(model.parameters())  # parameters() yields a shared tensor once
    return sum(p.numel() for p in params if p.requires_grad), sum(p.numel() for p in params)


def step_timer() -> Any:
    """A ``TrainerCallback`` recording each optimizer step's wall and CPU seconds."""
    from transformers import TrainerCallback

    class StepTimer(TrainerCallback):
        def __init__(self) -> None:
            self.wall: list[float] = []
            self.cpu: list[float] = []
            self._start = (0.0, 0.0)

        def on_step_begin(self, args: Any, state: Any, control: Any, **kwargs: Any) -> None:
            self._start = (time.perf_counter(), time.process_time())

        def on_step_end(self, args: Any, state: Any, control: Any, **kwargs: Any) -> None:
            self.wall.append(time.perf_counter() - self._start[0])
            self.cpu.append(time.process_time() - self._start[1])

    return StepTimer()


def _median(values: list[float]) -> float | None:
    return round(statistics.median(values), 5) if values else None


LOSS_LOG_SHARE = 0.02  # log the loss every 2% of the run's steps when --logging-steps is 0


def _training_arguments(options: TrainOptions, trainer_dir: Path) -> Any:
    from transformers import Seq2SeqTrainingArguments

    return Seq2SeqTrainingArguments(
        output_dir=str(trainer_dir),
        num_train_epochs=options.epochs,
        max_steps=options.max_steps,
        learning_rate=options.resolved_learning_rate(),
        per_device_train_batch_size=options.batch_size,
        gradient_accumulation_steps=options.grad_accum,
        weight_decay=options.weight_decay,
        warmup_steps=options.warmup_ratio,  # a float in [0, 1) is a ratio of the total steps
        label_smoothing_factor=options.label_smoothing,
        seed=options.seed,
        bf16=options.bf16,
        use_cpu=not torch.cuda.is_available(),
        logging_strategy="steps",
        # A float below 1 is read by transformers as a share of the run's steps: a short run's
        # loss curve gets as many points as a long one's (a fixed 10 gave a 64-step run 6).
        logging_steps=options.logging_steps or LOSS_LOG_SHARE,
        save_strategy="steps",
        save_steps=options.save_steps,
        save_total_limit=2,
        eval_strategy="no",
        report_to="none",
        remove_unused_columns=False,  # the data set holds exactly the model's inputs
        label_names=["labels"],
        disable_tqdm=options.quiet,
        dataloader_num_workers=0,
    )


def _save_generation_config(model: Any, directory: Path, defaults: dict[str, Any] | None) -> None:
    """Write ``generation_config.json``: the model's own, updated with ``defaults``."""
    import copy

    config = copy.deepcopy(model.generation_config)
    for key, value in (defaults or {}).items():
        setattr(config, key, value)
    config.save_pretrained(str(directory))


def _wait_for_everyone(args: Any) -> None:
    """A barrier across the processes of a data-parallel run (nothing in a single process)."""
    state = getattr(args, "distributed_state", None)
    if state is not None and state.num_processes > 1:
        state.wait_for_everyone()


def _distribution(args: Any) -> dict[str, Any]:
    """World size and how the processes talk, for ``arena.json`` and the model card."""
    state = getattr(args, "distributed_state", None)
    world = int(args.world_size)
    return {
        "world_size": world,
        "distributed_type": str(getattr(state, "distributed_type", "NO")).rsplit(".", 1)[-1],
        "distributed_backend": getattr(state, "backend", None) if world > 1 else None,
    }


def train(options: TrainOptions) -> dict[str, Any]:
    """Run one fine-tuning (full or LoRA), save it with tokenizer and metadata, return the metadata.

    The output directory then holds the weights (for LoRA only the adapter), the tokenizer,
    ``generation_config.json``, ``arena.json`` and a model card ``README.md``.
    """
    from transformers import DataCollatorForSeq2Seq, Seq2SeqTrainer, set_seed

    options = options.with_defaults().validate()
    out = Path(options.output_dir).expanduser()
    trainer_dir = out / TRAINER_DIR
    # Under `accelerate launch` / `torchrun` every process runs this function; the arguments
    # set up the process group, and only the main process touches the output directory.
    args = _training_arguments(options, trainer_dir)
    main_process = args.process_index == 0
    resume_from = prepare_output_dir(options, write=main_process)
    _wait_for_everyone(args)

    set_seed(options.seed)
    records = load_split(options.data, options.split, options.limit)
    pairs = training_examples(records)
    tokenizer, model = load_base(options)
    dataset = tokenize_examples(pairs, tokenizer, options.max_source_length, options.max_target_length)
    if options.method == "lora":
        model = wrap_lora(model, options)
    trainable, total = count_parameters(model)
    logger.info(
        "%s: %d examples; trainable params %s of %s (%.2f%%)",
        options.method, len(pairs), f"{trainable:,}", f"{total:,}", 100 * trainable / total,
    )  # fmt: skip

    collator = DataCollatorForSeq2Seq(tokenizer, model=model, label_pad_token_id=-100, padding=True)
    timer = step_timer()
    trainer = Seq2SeqTrainer(
        model=model,
        args=args,
        data_collator=collator,
        train_dataset=dataset,
        processing_class=tokenizer,
        callbacks=[timer, *options.callbacks],
    )
    start = time.perf_counter()
    result = trainer.train(resume_from_checkpoint=resume_from)
    wall = time.perf_counter() - start

    if not trainer.is_world_process_zero():
        _wait_for_everyone(args)  # the main process saves, then everyone returns its record
        return read_metadata(out) or {}
    model = trainer.model
    _config_of(model).use_cache = True  # the Trainer turns the KV cache off; generation wants it
    model.save_pretrained(str(out))
    if options.method == "lora":
        _record_adapter_base(out, portable_location(options.base_model))
    tokenizer.save_pretrained(str(out))
    # Always written (also beside an adapter): the app and the Hub read decoding defaults from it.
    _save_generation_config(model, out, options.generation_defaults)

    history = loss_history(trainer.state.log_history)
    distribution = _distribution(args)
    lora = (
        {
            "r": options.lora_r,
            "alpha": options.lora_alpha,
            "dropout": options.lora_dropout,
            "target_modules": list(options.lora_targets),
            "task_type": "SEQ_2_SEQ_LM",
            "base_dtype": resolved_lora_base_dtype(options),
        }
        if options.method == "lora"
        else None
    )
    meta: dict[str, Any] = {
        "method": options.method,
        "base_model": portable_location(options.base_model),
        "trainable_params": trainable,
        "total_params": total,
        "trainable_percent": round(100 * trainable / total, 4),
        "size_on_disk_bytes": weights_size_bytes(out),
        "examples": len(pairs),
        "dialogues": len(records),
        "steps": int(trainer.state.global_step),
        "epochs": float(trainer.state.epoch or 0.0),
        "wall_time_s": round(wall, 3),
        "seconds_per_step": round(wall / max(1, trainer.state.global_step), 4),
        # Medians of the optimizer steps alone (no start-up); CPU time counts all threads.
        "median_step_seconds": _median(timer.wall),
        "median_step_cpu_seconds": _median(timer.cpu),
        "hardware": hardware_description(distribution["world_size"]),
        "precision": _precision_label(options),
        "final_train_loss": history[-1]["loss"] if history else float(result.training_loss),
        "mean_train_loss": float(result.training_loss),
        "loss_history": history,
        "seed": options.seed,
        "data_source": options.data_source_label or portable_location(options.data),
        "data_split": options.split,
        "data_limit": options.limit,
        "learning_rate": options.resolved_learning_rate(),
        "batch_size": options.batch_size,
        "grad_accum": options.grad_accum,
        **distribution,
        "global_batch_size": options.batch_size * options.grad_accum * distribution["world_size"],
        "weight_decay": options.weight_decay,
        "warmup_ratio": options.warmup_ratio,
        "label_smoothing": options.label_smoothing,
        "dropout": options.dropout if options.dropout is not None else _dropout_rate(model),
        "max_source_length": options.max_source_length,
        "max_target_length": options.max_target_length,
        "lora": lora,
        "resumed_from_checkpoint": resume_from is not None,
        "generation_defaults": options.generation_defaults,
        "library_versions": library_versions(),
        "finished_at": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime()),
    }
    write_metadata(out, meta)
    # Checkpoints exist only so a dying run can resume; a finished one ships small.
    shutil.rmtree(trainer_dir, ignore_errors=True)
    if options.push_to_hub:
        push_checkpoint(out, options.push_to_hub, report_dir=_report_dir(options))
    _wait_for_everyone(args)
    return meta


def _report_dir(options: TrainOptions) -> Path:
    """Where ``train.evaluate`` writes the preset's report (its scores of this output go on the card)."""
    return load_config(preset=options.preset).report_dir


def _config_of(model: Any) -> Any:
    """The transformers config of a model or of a peft model's base."""
    return model.get_base_model().config if hasattr(model, "get_base_model") else model.config


def _dropout_rate(model: Any) -> float | None:
    return getattr(_config_of(model), "dropout_rate", None)


def _record_adapter_base(directory: Path, base: str) -> None:
    """Set ``base_model_name_or_path`` in ``adapter_config.json`` to the portable base location.

    Done after saving: peft reads the base's files at save time, so the path it sees then must
    be the real one.
    """
    from peft import PeftConfig

    config = PeftConfig.from_pretrained(str(directory))
    config.base_model_name_or_path = base
    config.save_pretrained(str(directory))
