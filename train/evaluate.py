"""``python -m train.evaluate``: score a preset's three models on a DialogSum split with ROUGE.

Writes to the output directory (default ``checkpoints/<preset>/eval``):

* ``predictions.csv`` - one row per dialogue: id, references (JSON list), each model's summary
  and ROUGE-1/2/L/Lsum, the two baselines, and each model's control scores;
* ``summary.json``    - means with 95% paired bootstrap CIs, improvements in percentage points,
  baselines and controls (see :func:`core.evaluation.build_report` for the shape);
* ``report.md``       - the same as readable tables; ``rouge.png`` - the app's Benchmark chart
  (``core.charts.benchmark_figure``: bars with 95% CIs);
* ``generations.jsonl`` - the generation cache: a summary already generated for the same model
  weights, decoding settings and dialogue is never generated again (re-runs are instant).
"""

from __future__ import annotations

import argparse
import csv
import dataclasses
import hashlib
import json
import logging
import sys
import time
from collections.abc import Hashable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from core.charts import benchmark_figure
from core.config import (
    MODEL_LABELS,
    MODEL_NAMES,
    PRESETS,
    ArenaConfig,
    GenerationSettings,
    is_local_path,
    load_config,
)
from core.data import SPLITS, DataError, Dialogue, load_split
from core.evaluation import (
    BASELINES,
    BOOTSTRAP_RESAMPLES,
    BOOTSTRAP_SEED,
    ScoreTable,
    build_report,
    report_markdown,
    score_table,
)
from core.generation import effective_kwargs, summarize_all
from core.metrics import ROUGE_TYPES
from core.models import LoadedModel, ModelSet, available_cores, load_model_set
from core.reports import normalise_report
from core.summaries import MAX_INPUT_TOKENS, Summary
from train.metadata import portable_location

logger = logging.getLogger(__name__)

CACHE_FILE = "generations.jsonl"
OUTPUT_FILES = ("predictions.csv", "summary.json", "report.md", "rouge.png")
FINGERPRINT_FILES = ("generation_config.json", "config.json", "adapter_config.json")


def _file_digest(path: Path) -> str:
    digest = hashlib.sha256()
    with path.open("rb") as handle:
        for chunk in iter(lambda: handle.read(1 << 20), b""):
            digest.update(chunk)
    return digest.hexdigest()


def location_fingerprint(location: str) -> str:
    """What identifies a model's weights: a content hash of a local directory's weights and configs.

    A retrained checkpoint at the same path gets a new fingerprint, so the cache never serves
    summaries of the old weights. Hub ids are identified by name.
    """
    if not is_local_path(location):
        return f"hub:{location}"
    path = Path(location).expanduser()
    if not path.is_dir():
        return f"missing:{location}"
    digest = hashlib.sha256()
    for item in sorted(path.iterdir()):
        if item.is_file() and (item.suffix in (".safetensors", ".bin") or item.name in FINGERPRINT_FILES):
            digest.update(item.name.encode())
            digest.update(_file_digest(item).encode())
    return digest.hexdigest()


def model_fingerprint(loaded: LoadedModel, config: ArenaConfig) -> str:
    """The fingerprint of what produces ``loaded``'s summaries (a LoRA row: base + adapter)."""
    parts = [location_fingerprint(loaded.location)]
    if loaded.name == "lora":
        parts.append(location_fingerprint(config.models.original))
    return "+".join(parts)


def dialogue_hash(text: str) -> str:
    return hashlib.sha256(text.encode("utf-8")).hexdigest()[:16]


class GenerationCache:
    """Summaries already generated, in an append-only JSONL file (survives a killed run).

    A :class:`core.generation.BatchCache`: :func:`core.generation.summarize_all` reads and fills it.
    """

    def __init__(self, path: Path) -> None:
        self.path = path
        self.entries: dict[str, dict[str, Any]] = {}
        self.ids: dict[str, str] = {}  # key -> dialogue id, written alongside for people reading the file
        if path.is_file():
            with path.open(encoding="utf-8") as handle:
                for number, line in enumerate(handle, start=1):
                    try:
                        entry = json.loads(line)
                        self.entries[entry["key"]] = entry
                    except (json.JSONDecodeError, KeyError, TypeError):
                        logger.warning("%s:%d: skipping a damaged cache line", path, number)

    @staticmethod
    def key(fingerprint: str, kwargs: dict[str, Any], max_input_tokens: int, record: Dialogue) -> str:
        """Hash of (model weights, decoding settings, input limit, dialogue id and text)."""
        blob = json.dumps(
            [
                fingerprint,
                sorted(kwargs.items()),
                max_input_tokens,
                record.id,
                dialogue_hash(record.dialogue),
            ],
            default=str,
        )
        return hashlib.sha256(blob.encode()).hexdigest()

    def get(self, key: Hashable) -> Summary | None:
        """The stored summary under ``key``, or ``None``."""
        entry = self.entries.get(str(key))
        if entry is None or not isinstance(entry.get("text"), str):
            return None
        return Summary(
            model=str(entry.get("model", "")),
            text=entry["text"],
            seconds=float(entry.get("seconds") or 0.0),
            input_tokens=int(entry.get("input_tokens") or 0),
            truncated_tokens=int(entry.get("truncated_tokens") or 0),
        )

    def put_many(self, items: Sequence[tuple[Hashable, Summary]]) -> None:
        """Store new summaries and append them to the file at once."""
        if not items:
            return
        self.path.parent.mkdir(parents=True, exist_ok=True)
        with self.path.open("a", encoding="utf-8") as handle:
            for key, summary in items:
                entry = {
                    "key": str(key),
                    "model": summary.model,
                    "id": self.ids.get(str(key)),
                    "text": summary.text,
                    "seconds": round(summary.seconds, 4),
                    "input_tokens": summary.input_tokens,
                    "truncated_tokens": summary.truncated_tokens,
                }
                self.entries[entry["key"]] = entry
                handle.write(json.dumps(entry, ensure_ascii=False) + "\n")

    def __len__(self) -> int:
        return len(self.entries)


def generate_all(
    model_set: ModelSet,
    records: Sequence[Dialogue],
    settings: GenerationSettings,
    cache: GenerationCache,
    batch_size: int = 8,
    max_input_tokens: int = MAX_INPUT_TOKENS,
    progress: bool = True,
) -> tuple[dict[str, list[str]], dict[str, int], dict[str, Any]]:
    """Each loaded model's summary of every record, generating only what the cache lacks.

    Returns (summaries per model, generation errors per model, statistics). The loop is
    :func:`core.generation.summarize_all` (the app's fresh evaluation runs the same one);
    this adds the file cache's keys (model weights' fingerprint, settings, dialogue) and a
    progress bar.
    """
    from tqdm.auto import tqdm

    names = [n for n in MODEL_NAMES if n in model_set.models]
    kwargs = {n: effective_kwargs(model_set.models[n], settings) for n in names}
    prints = {n: model_fingerprint(model_set.models[n], model_set.config) for n in names}
    keys = {
        n: [GenerationCache.key(prints[n], kwargs[n], max_input_tokens, r) for r in records] for n in names
    }
    cache.ids.update({k: r.id for n in names for k, r in zip(keys[n], records, strict=True)})
    bar = tqdm(desc="summarizing", unit="dialogue", disable=not progress)

    def advance(done: int, total: int) -> None:
        bar.total = total
        bar.update(done - bar.n)

    result = summarize_all(
        model_set, [r.dialogue for r in records], settings, names,
        cache=cache, key=lambda name, i: keys[name][i], batch_size=batch_size,
        max_input_tokens=max_input_tokens, progress=advance,
    )  # fmt: skip
    bar.close()
    for name, messages in result.errors.items():
        logger.error("%s failed on %d dialogues, e.g.: %s", name, len(messages), messages[0])
    errors = {n: len(result.errors.get(n, [])) for n in names}
    stats = {"cached": result.cached, "generated": result.generated, "seconds": round(result.seconds, 3)}
    return result.texts, errors, {**stats, "generation": {n: kwargs[n] for n in names}}


def prediction_rows(table: ScoreTable) -> list[dict[str, Any]]:
    """One ``predictions.csv`` row per dialogue."""
    rows = []
    for i, ident in enumerate(table.ids):
        row: dict[str, Any] = {
            "id": ident,
            "references": json.dumps(list(table.references[i]), ensure_ascii=False),
        }
        for name in [*table.models, *BASELINES]:
            row[f"{name}_summary"] = table.predictions[name][i]
            for metric in ROUGE_TYPES:
                row[f"{name}_{metric}"] = round(table.scores[name][i][metric], 6)
        if table.permutation is not None:
            row["control_id"] = table.ids[table.permutation[i]]
            for name in table.models:
                for metric in ROUGE_TYPES:
                    row[f"{name}_control_{metric}"] = round(table.controls[name][i][metric], 6)
        rows.append(row)
    return rows


def write_predictions(path: Path, table: ScoreTable) -> None:
    """Write ``predictions.csv`` (UTF-8, header row, quoted as needed)."""
    rows = prediction_rows(table)
    with path.open("w", encoding="utf-8", newline="") as handle:
        writer = csv.DictWriter(handle, fieldnames=list(rows[0]))
        writer.writeheader()
        writer.writerows(rows)


def measure_input_use(
    model_set: ModelSet, records: Sequence[Dialogue], batch_size: int
) -> dict[str, Any] | None:
    """``core.input_use`` over the loaded models, or None when the split has too few references."""
    from core.input_use import input_use

    labelled = [r for r in records if r.references]
    if len(labelled) < 2:
        logger.warning("input-use measure skipped: fewer than two dialogues with references")
        return None
    start = time.perf_counter()
    result = input_use(list(model_set.models.values()), labelled, batch_size=max(batch_size, 8))
    logger.info("input-use measure in %.1f s", time.perf_counter() - start)
    return result


def evaluate(
    config: ArenaConfig,
    split: str = "test",
    limit: int | None = None,
    output: str | Path | None = None,
    settings: GenerationSettings | None = None,
    batch_size: int = 8,
    resamples: int = BOOTSTRAP_RESAMPLES,
    seed: int = BOOTSTRAP_SEED,
    progress: bool = True,
    input_use_check: bool = True,
) -> dict[str, Any]:
    """Generate (or reuse cached) summaries, score them and write the four report files.

    With ``input_use_check`` the report also holds each model's teacher-forced loss on the
    references with its own dialogue versus another's (``core.input_use``).

    Returns the ``summary.json`` document. ``settings`` defaults to no overrides: each model's
    own ``generation_config.json`` decides.
    """
    settings = (settings or GenerationSettings(max_new_tokens=None)).validate()
    out = Path(output) if output is not None else config.report_dir
    out.mkdir(parents=True, exist_ok=True)
    records = load_split(config.data, split, limit)
    if len(records) < 1:
        raise DataError(f"no dialogues in split {split!r} of {config.data}")
    model_set = load_model_set(report_config(config))
    if not model_set.models:
        raise RuntimeError(
            "no model could be loaded: " + "; ".join(f"{k}: {v}" for k, v in model_set.errors.items())
        )
    for name, error in model_set.errors.items():
        logger.warning("%s is left out of the report: %s", name, error)
    cache = GenerationCache(out / CACHE_FILE)
    summaries, errors, stats = generate_all(
        model_set, records, settings, cache, batch_size, progress=progress
    )
    table = score_table(records, summaries)
    use = measure_input_use(model_set, records, batch_size) if input_use_check else None
    summary = build_report(
        table,
        config.preset,
        split,
        resamples,
        seed,
        extra={
            "data": portable_location(config.data),
            "limit": limit,
            "model_locations": {n: portable_location(m.location) for n, m in model_set.models.items()},
            "generation": stats["generation"],
            "generation_errors": errors,
            "unavailable": dict(model_set.errors),
            "cache": {"reused": stats["cached"], "generated": stats["generated"]},
            "generation_seconds": stats["seconds"],
            **({"input_use": use} if use is not None else {}),
            "created_at": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime()),
        },
    )
    write_predictions(out / "predictions.csv", table)
    (out / "summary.json").write_text(json.dumps(summary, indent=2) + "\n", encoding="utf-8")
    (out / "report.md").write_text(report_markdown(summary, MODEL_LABELS), encoding="utf-8")
    chart = normalise_report(summary, source=str(out / "summary.json"))
    title = f"{summary['preset']} on {summary['split']} (n={summary['n']})"
    benchmark_figure(chart, title).savefig(out / "rouge.png")
    return summary


def report_config(config: ArenaConfig) -> ArenaConfig:
    """``config`` with a report's CPU threads: ``ARENA_THREADS`` (or ``--threads``) where set, else
    every core this process may use.

    The app runs one thread per generate call because it shares its host and answers one
    dialogue at a time (:data:`core.models.DEFAULT_CPU_THREADS`); a report runs alone, in batches
    whose products split well across cores (python -m bench, P4 on 2 cores: batches of 8 took
    17.0 s at two threads against 27.7 s at one, one dialogue at a time 36.0 s against 48.6 s).
    """
    if config.threads is not None:
        return config
    return dataclasses.replace(config, threads=available_cores())


def _flag(default: Any, help: str, **extra: Any) -> Any:
    """A dataclass field whose metadata HfArgumentParser turns into the flag's help (and choices)."""
    return field(default=default, metadata={"help": help, **extra})


@dataclass
class EvaluateOptions:
    """The flags of ``python -m train.evaluate``; ``None`` means the configured default."""

    preset: str | None = _flag(
        None, "which models (default: chosen automatically, as in the app)", choices=PRESETS
    )
    original: str | None = _flag(None, "override the original model (hub id or directory)")
    full: str | None = _flag(None, "override the fully fine-tuned model (directory or owner/name[@rev])")
    lora: str | None = _flag(None, "override the LoRA adapter (directory or owner/name[@rev])")
    data: str | None = _flag(None, "DialogSum hub id or local directory (default: local copy, else the Hub)")
    split: str = _flag("test", "split to score", choices=[s for s in SPLITS if s != "unlabeled"])
    limit: int | None = _flag(None, "score only the first N dialogues (default: all)")
    output: str | None = _flag(None, "output directory (default: checkpoints/<preset>/eval)")
    batch_size: int = _flag(8, "dialogues per generate call")
    max_new_tokens: int | None = _flag(None, "override every model's summary length cap")
    num_beams: int | None = _flag(None, "override every model's beam count")
    device: str | None = _flag(None, "cpu, cuda or auto (default: auto)")
    dtype: str | None = _flag(
        None,
        "float32, bfloat16, int8 (bf16 with int8 decoder weights), float32-int8 (int8's stored "
        "weights, fp32 compute) or auto (default: "
        "auto: bf16 on CUDA; int8 decoder weights on an x86 CPU with AVX2, computing in bf16 where "
        "it has hardware bf16, else in fp32; fp32 elsewhere)",
    )
    threads: int | None = _flag(
        None,
        "CPU threads per generate call (default: ARENA_THREADS if set, else every core: a report runs alone)",
    )
    bootstrap: int = _flag(BOOTSTRAP_RESAMPLES, "bootstrap resamples")
    seed: int = _flag(BOOTSTRAP_SEED, "bootstrap seed")
    skip_input_use: bool = _flag(
        False, "leave out the input-use measure (teacher-forced loss with own vs another dialogue)"
    )


def build_parser() -> Any:
    """The command line: one flag per :class:`EvaluateOptions` field (``--batch-size`` or ``--batch_size``)."""
    from transformers import HfArgumentParser

    return HfArgumentParser(
        EvaluateOptions,
        prog="python -m train.evaluate",
        description=(
            "Score the original, fully fine-tuned and LoRA models of a preset with ROUGE on a DialogSum "
            "split, with 95% bootstrap intervals, two baselines (a fixed template sentence and the "
            "dialogue's first line), controls (each model scored against another dialogue's "
            "references) and the input-use measure. Writes predictions.csv, summary.json, report.md "
            "and rouge.png; summaries already generated are reused from generations.jsonl in the "
            "output directory."
        ),
        epilog=(
            "examples:\n"
            "  python -m train.evaluate --preset flan-t5-base            # whole test split, on a GPU\n"
            "  python -m train.evaluate --preset mini --limit 50 --output /tmp/eval"
        ),
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )


def main(argv: Sequence[str] | None = None) -> int:
    (args,) = build_parser().parse_args_into_dataclasses(args=argv)
    logging.basicConfig(level=logging.INFO, format="%(levelname)s %(name)s: %(message)s")
    if args.limit is not None and args.limit < 1:
        print("error: --limit must be at least 1", file=sys.stderr)
        return 2
    if args.batch_size < 1:
        print("error: --batch-size must be at least 1", file=sys.stderr)
        return 2
    if args.threads is not None and args.threads < 1:
        print("error: --threads must be at least 1", file=sys.stderr)
        return 2
    try:
        config = load_config(
            preset=args.preset, original=args.original, full=args.full, lora=args.lora,
            data=args.data, device=args.device, dtype=args.dtype, threads=args.threads,
        )  # fmt: skip
        settings = GenerationSettings(max_new_tokens=args.max_new_tokens, num_beams=args.num_beams).validate()
        out = Path(args.output) if args.output else config.report_dir
        summary = evaluate(
            config, args.split, args.limit, out, settings, args.batch_size, args.bootstrap, args.seed,
            input_use_check=not args.skip_input_use,
        )  # fmt: skip
    except (DataError, ValueError, RuntimeError) as err:
        print(f"error: {err}", file=sys.stderr)
        return 2
    print((out / "report.md").read_text(encoding="utf-8"))
    r1 = {m: f"{s['rouge1']['mean']:.4f}" for m, s in summary["models"].items()}
    print(f"done: {summary['n']} dialogues, ROUGE-1 {r1}; files in {out}: {', '.join(OUTPUT_FILES)}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
