"""One benchmark measurement in its own process: ``python -m bench.worker TASK SPEC_JSON``.

Each task prints its result as one JSON line on stdout (last line). Peak memory (``VmHWM``)
is only meaningful in a fresh process, which is why every task runs in one.
"""

from __future__ import annotations

import dataclasses
import json
import logging
import math
import os
import statistics
import sys
import tempfile
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import torch

from bench.fixtures import FORCED_SETTINGS, INPUT_TOKENS, OUTPUT_TOKENS, BenchCheckpoints, long_dialogue
from bench.rss import current_rss_bytes, peak_rss_bytes

logger = logging.getLogger("bench.worker")


def _checkpoints(spec: dict[str, Any]) -> BenchCheckpoints:
    root = Path(spec["root"])
    return BenchCheckpoints(
        root, str(root / "original"), str(root / "full"), str(root / "lora"), spec["data"]
    )


def _load(
    spec: dict[str, Any], names: tuple[str, ...], dtype: str | None = None, report: bool = False
) -> Any:
    from core.models import load_model_set

    checkpoints = _checkpoints(spec)
    config = checkpoints.config(dtype=dtype or spec["dtype"], threads=spec.get("threads"))
    if report:  # as train.evaluate loads them: its own thread default
        from train.evaluate import report_config

        config = report_config(config)
    if spec.get("adapters"):  # extra adapters on the original's base, as ARENA_ADAPTERS adds them
        config = dataclasses.replace(config, adapters=tuple((n, loc) for n, loc in spec["adapters"]))
    model_set = load_model_set(config, names=names)
    if model_set.errors:
        raise RuntimeError(f"benchmark models failed to load: {model_set.errors}")
    return model_set


def _timed(fn: Callable[[], Any]) -> float:
    start = time.perf_counter()
    fn()
    return time.perf_counter() - start


def _one_model(model_set: Any, dialogue: str, name: str = "full") -> Callable[[], Any]:
    from core.generation import summarize_many

    def run() -> Any:
        (rows,) = list(summarize_many(model_set, [dialogue], FORCED_SETTINGS, names=(name,)))
        if rows[0].error:
            raise RuntimeError(rows[0].error)
        return rows

    return run


def checkpoint_fp32_bytes(directory: Path) -> int:
    """Bytes of a checkpoint's weights at fp32: its tensors' element counts from the safetensors
    header (no tensor is read), times 4."""
    from safetensors import safe_open

    count = 0
    with safe_open(str(directory / "model.safetensors"), framework="pt") as reader:
        for key in reader.keys():  # noqa: SIM118 - safe_open is not iterable
            count += math.prod(reader.get_slice(key).get_shape())
    return 4 * count


def _summarize_or_raise(model_set: Any, dialogue: str, settings: Any, names: tuple[str, ...]) -> None:
    """One comparison through the app's ``summarize``; a model's error fails the measurement."""
    from core.generation import summarize

    errors = [r.error for r in summarize(model_set, dialogue, settings, names=names) if r.error]
    if errors:
        raise RuntimeError(errors[0])


def task_memory(spec: dict[str, Any]) -> dict[str, Any]:
    """P1: load ``names`` as the app does, summarize one dialogue, report peak RSS (load included)
    and the fp32 bytes of one model's weights (the ``full`` checkpoint)."""
    names = tuple(spec["names"])
    start = time.perf_counter()
    model_set = _load(spec, names)
    load_s = time.perf_counter() - start
    load_rss, load_peak = current_rss_bytes(), peak_rss_bytes()
    dialogue = long_dialogue(spec["data"], next(iter(model_set.models.values())).tokenizer)
    _summarize_or_raise(model_set, dialogue, FORCED_SETTINGS, names)
    return {
        "names": list(names),
        "peak_rss": peak_rss_bytes(),
        "load_s": load_s,
        "load_rss": load_rss,
        "load_peak_rss": load_peak,
        "weights_fp32_bytes": checkpoint_fp32_bytes(Path(spec["root"]) / "full"),
    }


def task_serving_memory(spec: dict[str, Any]) -> dict[str, Any]:
    """P1S: RSS of the three-model set as it serves ``spec['dialogues']`` test dialogues (every one
    a new input length), one comparison each, with short summaries: what the shape caches of the
    bf16 products keep. ``spec['cache_entries']`` overrides the bound ``core`` sets (before the
    first bf16 product, which is when oneDNN reads it). Growth is taken over the second half (the
    first dialogues fill the caches' entries), each reading after ``malloc_trim``, so it counts
    what is held, not heap pages glibc keeps mapped after a free."""
    from core import ONEDNN_CACHE_VARIABLES
    from core.config import GenerationSettings
    from core.data import load_split
    from core.precision import release_freed_memory

    def held_rss() -> int:
        release_freed_memory()
        return current_rss_bytes()

    if spec.get("cache_entries"):
        for variable in ONEDNN_CACHE_VARIABLES:
            os.environ[variable] = str(spec["cache_entries"])
    names = ("original", "full", "lora")
    model_set = _load(spec, names)
    records = load_split(spec["data"], "test", limit=spec["dialogues"])
    short = GenerationSettings(max_new_tokens=8)
    half = len(records) // 2
    rss = {"loaded": held_rss()}
    for served, record in enumerate(records, start=1):
        _summarize_or_raise(model_set, record.dialogue, short, names)
        if served in (half, len(records)):  # a trim costs ~1 s on this heap: only where read
            rss["half" if served == half else "end"] = held_rss()
    return {
        "cache_entries": os.environ.get("LRU_CACHE_CAPACITY"),
        "dialogues": len(records),
        "lengths": len({len(r.dialogue) for r in records}),
        "rss": rss,
        "growth_per_dialogue": (rss["end"] - rss["half"]) / (len(records) - half),
    }


def task_latency(spec: dict[str, Any]) -> dict[str, Any]:
    """P2 + P3: all three summaries vs one batch-1 generate, and the measured physical floor."""
    from bench.floor import (
        best_matmul_rates,
        floor_seconds,
        memory_read_bandwidth,
        model_work,
        served_matmul_dtype,
    )
    from core.generation import CONCURRENT_GROUPS, summarize_many

    repeats = spec["repeats"]
    model_set = _load(spec, ("original", "full", "lora"))
    full = model_set.models["full"]
    dialogue = long_dialogue(spec["data"], full.tokenizer)
    one = _one_model(model_set, dialogue)

    def three(concurrent: bool) -> Callable[[], None]:
        def run() -> None:
            results = [
                r
                for rows in summarize_many(model_set, [dialogue], FORCED_SETTINGS, concurrent=concurrent)
                for r in rows
            ]
            if any(r.error for r in results):
                raise RuntimeError(next(r.error for r in results if r.error))

        return run

    one()  # warm-up (first-call allocations, kernel selection)
    singles, triples, triples_other = [], [], []
    for _ in range(repeats):  # interleaved, so a burst of load elsewhere hits all alike
        singles.append(_timed(one))
        triples.append(_timed(three(CONCURRENT_GROUPS)))  # the app's default
        triples_other.append(_timed(three(not CONCURRENT_GROUPS)))
    threads = torch.get_num_threads()
    cores = os.cpu_count() or 1
    other_threads = 2 if threads == 1 and cores > 1 else 1
    for loaded in model_set.models.values():  # the app's thread setting against the alternative
        loaded.cpu_threads = other_threads  # each generate call applies it (core.models.use_threads)
    single_other = statistics.median(_timed(one) for _ in range(max(1, repeats - 1)))
    # The floor is the machine's best: measured with one thread and with every core.
    # The one-time FLOPs run in the dtype the encoder computes in (int8 is the decoder's, per token).
    served_dtype = served_matmul_dtype(full.model)
    counts = sorted({1, cores})
    bandwidth = 0.0
    for count in counts:
        torch.set_num_threads(count)
        bandwidth = max(bandwidth, memory_read_bandwidth())
    torch.set_num_threads(threads)
    rates = best_matmul_rates((torch.float32, torch.bfloat16, served_dtype), counts)
    rate_fp32, rate_bf16, served_rate = rates[torch.float32], rates[torch.bfloat16], rates[served_dtype]
    work = model_work(full.model, INPUT_TOKENS)
    floor_fp32 = floor_seconds(work, OUTPUT_TOKENS, bandwidth, rate_fp32, 4.0)
    served_bytes_per_param = work.per_token_bytes_served / work.per_token_params
    floor_served = floor_seconds(work, OUTPUT_TOKENS, bandwidth, served_rate, served_bytes_per_param)
    return {
        "single_s": statistics.median(singles),
        "three_s": statistics.median(triples),
        "singles": singles,
        "triples": triples,
        "concurrent_groups": CONCURRENT_GROUPS,
        "three_other_s": statistics.median(triples_other),
        "triples_other": triples_other,
        "bandwidth": bandwidth,
        "matmul_fp32": rate_fp32,
        "matmul_bf16": rate_bf16,
        "matmul_served": served_rate,
        "served_dtype": str(served_dtype).removeprefix("torch."),
        "work": work.as_dict(),
        "floor_fp32_s": floor_fp32,
        "floor_served_s": floor_served,
        "served_bytes_per_param": served_bytes_per_param,
        "threads": threads,
        "other_threads": other_threads,
        "single_other_threads_s": single_other,
    }


def task_variant(spec: dict[str, Any]) -> dict[str, Any]:
    """One batch-1 generate of the full model at another precision (``spec['variant']``)."""
    model_set = _load(spec, ("full",), dtype=spec["variant"])
    dialogue = long_dialogue(spec["data"], model_set.models["full"].tokenizer)
    one = _one_model(model_set, dialogue)
    one()
    times = [_timed(one) for _ in range(spec["repeats"])]
    return {"variant": spec["variant"], "single_s": statistics.median(times), "times": times}


def task_eval(spec: dict[str, Any]) -> dict[str, Any]:
    """P4: the report's generation path (``train.evaluate.generate_all``), batched vs one at a time."""
    from core.data import load_split
    from train.evaluate import GenerationCache, generate_all

    model_set = _load(spec, ("original", "full", "lora"), report=True)
    records = load_split(spec["data"], "test", limit=spec["dialogues"])
    threads = model_set.models["full"].cpu_threads
    results: dict[str, Any] = {"dialogues": len(records), "threads": threads}
    with tempfile.TemporaryDirectory() as tmp:

        def run(batch_size: int, label: str) -> float:
            cache = GenerationCache(Path(tmp) / f"{label}.jsonl")  # empty: every summary is generated
            start = time.perf_counter()
            _, errors, _ = generate_all(
                model_set, records, FORCED_SETTINGS, cache, batch_size, progress=False
            )
            if any(errors.values()):
                raise RuntimeError(f"generation errors: {errors}")
            return time.perf_counter() - start

        generate_all(
            model_set, records[:1], FORCED_SETTINGS, GenerationCache(Path(tmp) / "w.jsonl"), 1, progress=False
        )
        # Each batch size runs before and after the one-at-a-time run and counts at the mean of
        # the two, so a host whose speed drifts over the minutes a report takes moves both sides
        # (a batched report once read 97 s here, and 58-60 s minutes later in another process).
        before = {b: run(b, f"b{b}") for b in spec["batch_sizes"]}
        results["one_at_a_time_s"] = run(1, "one")
        after = {b: run(b, f"b{b}-again") for b in reversed(spec["batch_sizes"])}
        for b in spec["batch_sizes"]:
            results[f"batched_{b}_s"] = (before[b] + after[b]) / 2
            results[f"batched_{b}_runs"] = [before[b], after[b]]
    return results


def task_train(spec: dict[str, Any]) -> dict[str, Any]:
    """P5: training steps of one method with the project's trainer settings, batch 4."""
    from datasets import Dataset
    from transformers import DataCollatorForSeq2Seq, Seq2SeqTrainer

    from train.common import (
        TrainOptions,
        _training_arguments,
        load_base,
        resolved_lora_base_dtype,
        step_timer,
        wrap_lora,
    )

    checkpoints = _checkpoints(spec)
    method = spec["method"]
    # Same intra-op threads for both methods; one thread keeps a step's time steady when other
    # processes share the cores (two threads stall on every op's barrier there).
    torch.set_num_threads(spec.get("train_threads") or 1)
    with tempfile.TemporaryDirectory() as tmp:
        options = TrainOptions(
            method=method,
            base_model=checkpoints.original,
            output_dir=str(Path(tmp) / method),
            data=spec["data"],
            max_steps=spec["steps"],
            batch_size=spec["batch_size"],
            logging_steps=1,
            save_steps=10_000,
            quiet=True,
            **({"lora_base_dtype": spec["lora_base_dtype"]} if method == "lora" else {}),
        ).validate()
        tokenizer, model = load_base(options)
        if method == "lora":
            model = wrap_lora(model, options)
        generator = torch.Generator().manual_seed(0)
        rows = spec["batch_size"] * spec["steps"]
        inputs = torch.randint(3, len(tokenizer) - 100, (rows, INPUT_TOKENS), generator=generator)
        labels = torch.randint(3, len(tokenizer) - 100, (rows, spec["label_tokens"]), generator=generator)
        dataset = Dataset.from_dict(
            {
                "input_ids": inputs.tolist(),
                "attention_mask": torch.ones_like(inputs).tolist(),
                "labels": labels.tolist(),
            }
        )
        args = _training_arguments(options, Path(tmp) / "trainer")
        args.gradient_checkpointing = bool(spec.get("gradient_checkpointing"))
        timer = step_timer()
        trainer = Seq2SeqTrainer(
            model=model,
            args=args,
            data_collator=DataCollatorForSeq2Seq(
                tokenizer, model=model, label_pad_token_id=-100, padding=True
            ),
            train_dataset=dataset,
            processing_class=tokenizer,
            callbacks=[timer],
        )
        trainer.train()
    steady = timer.wall[1:] or timer.wall  # the first step pays one-off allocations
    return {
        "method": method,
        "step_s": statistics.median(steady),
        "steps": timer.wall,
        "peak_rss": peak_rss_bytes(),
        "gradient_checkpointing": args.gradient_checkpointing,
        "lora_base_dtype": resolved_lora_base_dtype(options),  # "auto" decided on this machine
    }


def task_adapters(spec: dict[str, Any]) -> dict[str, Any]:
    """Write the extra LoRA adapters P1's adapter figure loads (``spec['names']``), once.

    Same rank, targets and dtype as the preset's own LoRA (``bench.fixtures.LORA_RANK``), each
    with other random weights, on the base-shape original.
    """
    from transformers import T5ForConditionalGeneration

    from bench.fixtures import LORA_ALPHA, LORA_RANK, save_lora_adapter

    original = Path(_checkpoints(spec).original)
    made = []
    for i, name in enumerate(spec["names"]):
        directory = Path(spec["root"]) / "adapters" / name
        if not (directory / "adapter_model.safetensors").is_file():
            torch.manual_seed(100 + i)
            base = T5ForConditionalGeneration.from_pretrained(original)
            save_lora_adapter(base, directory, original, LORA_RANK, LORA_ALPHA, 0.02, 0.05)
        made.append([name, str(directory)])
    return {"adapters": made}


TASKS: dict[str, Callable[[dict[str, Any]], dict[str, Any]]] = {
    "memory": task_memory,
    "serving_memory": task_serving_memory,
    "adapters": task_adapters,
    "latency": task_latency,
    "variant": task_variant,
    "eval": task_eval,
    "train": task_train,
}


def main(argv: list[str] | None = None) -> int:
    argv = sys.argv[1:] if argv is None else argv
    if len(argv) != 2 or argv[0] not in TASKS:
        print(f"usage: python -m bench.worker {{{','.join(TASKS)}}} SPEC_JSON", file=sys.stderr)
        return 2
    logging.basicConfig(level=os.environ.get("BENCH_LOG", "WARNING"))
    result = TASKS[argv[0]](json.loads(argv[1]))
    print(json.dumps(result))
    return 0


if __name__ == "__main__":
    sys.exit(main())
