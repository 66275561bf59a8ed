"""``python -m bench``: speed and memory of the arena on flan-t5-base's real shape.

Builds random-weight checkpoints with flan-t5-base's exact shape (latency and memory don't
depend on weight values) in a temporary directory, then measures - each in a fresh process,
through the app's own loader (``core.models.load_model_set``) and generation
(``core.generation.summarize``/``summarize_many``), with input 256 tokens and output forced
to 50 tokens:

  P1  peak RSS of the app's three-model set / one model alone          (goal <= 2.1)
      and / fp32 bytes of one model's weights, load included (P1_memory_per_weights, <= 1.5)
  P1A peak RSS with two extra LoRA adapters (ARENA_ADAPTERS) / without (goal <= 1.05)
  P1S RSS growth per new dialogue length while serving test dialogues, bounded shape caches
      (core's default) / oneDNN's own bound (P1S_served_growth_ratio; no goal: it was unbounded;
      null where oneDNN's own caches did not grow)
  P2  all three summaries of one dialogue / one batch-1 generate       (goal <= 1.5)
  P3  one batch-1 generate / its physical floor measured in this run   (goal <= 1.6), and /
      the floor at the precision served: bytes read per token at the measured bandwidth +
      one-time FLOPs at the measured matmul rate of the served dtype (P3_served_floor_ratio, <= 2.5)
  P4  report throughput batched / one dialogue at a time               (goal >= 3)
  P5  LoRA / full training step time and peak RSS (batch 4)            (goal <= 0.5, <= 0.6)
      (full trains in fp32; LoRA's frozen base as train.lora's --lora-base-dtype: auto by default)
  P6  seconds from ``python app.py`` (offline, default preset) to HTTP 200  (goal <= 6)

It prints a table and, as its last line, one JSON object with the P-figures. Ratios are taken
within one run, so they hold on a busy machine; absolute seconds do not.

Examples:
    python -m bench                       # everything (~6-10 min on 2 CPU cores)
    python -m bench --quick               # fewer repeats and dialogues (development)
    python -m bench --only P2,P3          # some figures only
    python -m bench --workdir /tmp/bench  # keep and reuse the built checkpoints
    python -m bench --dtype float32       # the app path at another precision
    python -m bench --only P5 --lora-base-dtype float32   # LoRA on an fp32 frozen base
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

from bench import report_steps
from bench.child import run_json_module

FIGURES = ("P1", "P1A", "P1S", "P2", "P3", "P4", "P5", "P6")
# Issue 14's goals; P1_memory_ratio and P3_floor_ratio are the first round's figures, kept.
GOALS = {
    "P1_memory_ratio": ("<=", 2.1),
    "P1_memory_per_weights": ("<=", 1.5),
    "P1_adapters_memory_ratio": ("<=", 1.05),
    "P2_compare_ratio": ("<=", 1.5),
    "P3_floor_ratio": ("<=", 1.6),
    "P3_served_floor_ratio": ("<=", 2.5),
    "P4_eval_speedup": (">=", 3.0),
    "P5_lora_step_ratio": ("<=", 0.5),
    "P5_lora_memory_ratio": ("<=", 0.6),
    "P6_cold_start_s": ("<=", 6.0),
}
PROJECT_ROOT = Path(__file__).resolve().parent.parent
COLD_START_CAP_S = 120.0
GIB = 1024**3
# P1S's reference growth below which there is nothing to bound (the unbounded caches grew
# 2.34 MB per dialogue where the bound was introduced; RSS noise is a fraction of a MB).
P1S_MIN_GROWTH = 0.5 * 2**20


def build_parser() -> argparse.ArgumentParser:
    from train.common import LORA_BASE_DTYPES, LoraArguments

    parser = argparse.ArgumentParser(
        prog="python -m bench",
        description=(
            "Measure the arena's speed and memory (P1-P6 of the performance issue) on models "
            "with flan-t5-base's shape and random weights. Prints a table, then one JSON line."
        ),
        formatter_class=argparse.RawDescriptionHelpFormatter,
        epilog=__doc__.split("Examples:")[1] if __doc__ else None,
    )
    parser.add_argument("--only", default=",".join(FIGURES), help="comma-separated figures, e.g. P2,P3")
    parser.add_argument("--quick", action="store_true", help="fewer repeats, dialogues and steps")
    parser.add_argument("--workdir", help="where to build (and reuse) the checkpoints; default: a temp dir")
    parser.add_argument("--data", help="DialogSum directory or hub id (default: the project's)")
    parser.add_argument(
        "--dtype",
        default="auto",
        help="precision of the app path: auto (default), float32, bfloat16, int8, float32-int8",
    )
    parser.add_argument("--no-variants", action="store_true", help="skip the P3 precision comparison")
    parser.add_argument("--dialogues", type=int, help="P4 dialogues (default 24, quick 8)")
    parser.add_argument("--batch-sizes", default="8", help="P4 batch sizes to try (default 8)")
    parser.add_argument(
        "--gradient-checkpointing", action="store_true", help="P5 with gradient checkpointing (both methods)"
    )
    parser.add_argument(
        "--lora-base-dtype",
        default=LoraArguments.lora_base_dtype,  # train.lora's own default and choices
        choices=LORA_BASE_DTYPES,
        help="P5: the frozen base's precision while LoRA trains (train.lora --lora-base-dtype)",
    )
    return parser


def _env() -> dict[str, str]:
    env = dict(os.environ)
    env.update(
        HF_HUB_OFFLINE="1", HF_HUB_DISABLE_TELEMETRY="1", GRADIO_ANALYTICS_ENABLED="False",
        TOKENIZERS_PARALLELISM="false", PYTHONPATH=str(PROJECT_ROOT),
    )  # fmt: skip
    return env


def growth_ratio(bounded: float, reference: float) -> float | None:
    """P1S: RSS growth per dialogue with core's cache bound / with oneDNN's own, or ``None`` where
    the reference grew less than :data:`P1S_MIN_GROWTH` (a ratio of two noise figures: -0.87 MB
    over -0.01 MB read 58.19 on a CPU whose fp32 products never touch oneDNN's caches)."""
    return bounded / reference if reference >= P1S_MIN_GROWTH else None


def run_worker(task: str, spec: dict[str, Any], log: Path) -> dict[str, Any]:
    """Run ``bench.worker`` in a fresh process and return its JSON result."""
    spec_json = json.dumps(spec)
    return run_json_module("bench.worker", [task, spec_json], _env(), log, f"{task} {spec_json}")


def cold_start(log: Path, cap_s: float = COLD_START_CAP_S) -> dict[str, Any]:
    """P6: seconds from launching ``python app.py`` offline until its page answers HTTP 200."""
    from bench.app_process import AppStartError, launch_app
    from core.config import load_config

    reason = load_config(env={k: v for k, v in os.environ.items() if k.startswith("ARENA_")}).preset_reason
    with tempfile.TemporaryDirectory() as tmp:
        with log.open("a", encoding="utf-8") as out:
            out.write("\n=== cold start: python app.py\n")
        app = launch_app(
            log,
            TOKENIZERS_PARALLELISM="false",
            PYTHONPATH=str(PROJECT_ROOT),
            ARENA_VOTES_DB=str(Path(tmp) / "votes.sqlite"),
        )
        seconds, status = None, "served"
        try:
            seconds = app.wait_until_serving(cap_s, poll_s=0.2)
        except AppStartError as err:
            exited = err.exit_code is not None
            status = f"app exited with code {err.exit_code}" if exited else "did not serve"
        finally:
            app.stop()
    return {"seconds": seconds if seconds is not None else cap_s, "status": status, "preset": reason}


def _goal_text(key: str, value: float | None) -> str:
    if value is None:
        return "not measured"
    op, target = GOALS[key]
    met = value <= target if op == "<=" else value >= target
    return f"goal {op} {target:g}: {'met' if met else 'MISSED'}"


def _goal_row(rows: list[tuple[str, str, str]], key: str, value: float) -> None:
    """A P-figure's row: its value and whether it meets its goal."""
    _row(rows, key, f"{value:.2f}", _goal_text(key, value))


def _row(rows: list[tuple[str, str, str]], name: str, value: str, note: str = "") -> None:
    rows.append((name, value, note))
    print(f"  {name:<44} {value:>12}  {note}", flush=True)


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    only = {part.strip().upper() for part in args.only.split(",") if part.strip()}
    unknown = only - set(FIGURES)
    if unknown:
        print(f"error: unknown figure(s) {', '.join(sorted(unknown))}; choose from {', '.join(FIGURES)}")
        return 2
    os.environ.update(HF_HUB_OFFLINE="1", HF_HUB_DISABLE_TELEMETRY="1")
    from bench.fixtures import build_checkpoints
    from core.config import default_data_source

    quick = args.quick
    data = args.data or default_data_source()
    workdir = Path(args.workdir) if args.workdir else Path(tempfile.mkdtemp(prefix="arena-bench-"))
    workdir.mkdir(parents=True, exist_ok=True)
    log = workdir / "bench.log"
    figures: dict[str, float | None] = dict.fromkeys(GOALS)
    rows: list[tuple[str, str, str]] = []
    started = time.perf_counter()
    load_before = os.getloadavg()[0]
    print(f"python -m bench: {os.cpu_count()} CPUs, load average {load_before:.1f}; log: {log}", flush=True)
    try:
        needs_models = bool(only - {"P6"})
        if needs_models:
            t0 = time.perf_counter()
            checkpoints = build_checkpoints(workdir / "checkpoints", data)
            _row(
                rows,
                "build base-shape checkpoints (s)",
                f"{time.perf_counter() - t0:.1f}",
                "247,577,856 params",
            )
            spec = {
                "root": str(checkpoints.root),
                "data": data,
                "dtype": args.dtype,
                "repeats": 2 if quick else 3,
            }

        if "P1" in only:
            one = run_worker("memory", {**spec, "names": ["full"]}, log)
            three = run_worker("memory", {**spec, "names": ["original", "full", "lora"]}, log)
            figures["P1_memory_ratio"] = three["peak_rss"] / one["peak_rss"]
            figures["P1_memory_per_weights"] = three["peak_rss"] / three["weights_fp32_bytes"]
            _row(rows, "P1 peak RSS, one model (GiB)", f"{one['peak_rss'] / GIB:.2f}", f"dtype {args.dtype}")
            _row(rows, "P1 peak RSS, three-model set (GiB)", f"{three['peak_rss'] / GIB:.2f}")
            _row(
                rows,
                "P1 RSS after load / peak, three-model set (GiB)",
                f"{three['load_rss'] / GIB:.2f} / {three['load_peak_rss'] / GIB:.2f}",
                f"load {three['load_s']:.1f} s",
            )
            _row(rows, "P1 fp32 weights of one model (GiB)", f"{three['weights_fp32_bytes'] / GIB:.2f}")
            _goal_row(rows, "P1_memory_ratio", figures["P1_memory_ratio"])
            _goal_row(rows, "P1_memory_per_weights", figures["P1_memory_per_weights"])

        if "P1A" in only:
            # Both sides load and summarize as the app does (every column in one mixed batch),
            # each in a fresh process; the extra adapters have the preset LoRA's rank and targets.
            made = run_worker("adapters", {**spec, "names": ["extra1", "extra2"]}, log)["adapters"]
            names = ["original", "full", "lora"]
            without = three if "P1" in only else run_worker("memory", {**spec, "names": names}, log)
            extra = run_worker(
                "memory", {**spec, "names": names + [n for n, _ in made], "adapters": made}, log
            )
            figures["P1_adapters_memory_ratio"] = extra["peak_rss"] / without["peak_rss"]
            _row(rows, "P1A peak RSS, three-model set (GiB)", f"{without['peak_rss'] / GIB:.2f}")
            _row(
                rows, "P1A peak RSS, + two adapters (GiB)", f"{extra['peak_rss'] / GIB:.2f}", "r=32 q/v each"
            )
            _goal_row(rows, "P1_adapters_memory_ratio", figures["P1_adapters_memory_ratio"])

        if "P1S" in only:
            # RSS held per new dialogue (bench.worker.task_serving_memory), on the app's code and
            # with oneDNN's own bound of 1,024 entries per cache.
            count = 30 if quick else 80
            grown = {}
            for label, entries in (("bounded", None), ("oneDNN's own", 1024)):
                served = run_worker(
                    "serving_memory", {**spec, "dialogues": count, "cache_entries": entries}, log
                )
                rss = served["rss"]
                grown[label] = served["growth_per_dialogue"]
                _row(
                    rows,
                    f"P1S RSS held, growth per dialogue, {label} caches (MB)",
                    f"{grown[label] / 2**20:.2f}",
                    f"{served['dialogues']} test dialogues, {served['lengths']} lengths, "
                    f"{served['cache_entries']} entries; {rss['loaded'] / GIB:.2f} -> "
                    f"{rss['half'] / GIB:.2f} -> {rss['end'] / GIB:.2f} GiB",
                )
            ratio = figures["P1S_served_growth_ratio"] = growth_ratio(grown["bounded"], grown["oneDNN's own"])
            _row(
                rows,
                "P1S_served_growth_ratio",
                "-" if ratio is None else f"{ratio:.2f}",
                "oneDNN's own caches grew < 0.5 MB per dialogue: nothing to bound" if ratio is None else "",
            )

        if only & {"P2", "P3"}:
            # P2 swings most with other load on the host (1.45 and 1.86 in two runs of the same
            # code, three repeats each): more interleaved repeats for its medians.
            lat = run_worker("latency", {**spec, "repeats": 3 if quick else 7}, log)
            single = lat["single_s"]
            _row(
                rows,
                "batch-1 generate, 256 in / 50 out (s)",
                f"{single:.2f}",
                f"{lat['threads']} threads, dtype {args.dtype}",
            )
            _row(
                rows,
                f"  same at {lat['other_threads']} threads (s)",
                f"{lat['single_other_threads_s']:.2f}",
                "thread setting check",
            )
            if "P2" in only:
                figures["P2_compare_ratio"] = lat["three_s"] / single
                mode = "groups at once" if lat["concurrent_groups"] else "groups one after another"
                other = "one after another" if lat["concurrent_groups"] else "at once"
                _row(rows, "all three summaries, one dialogue (s)", f"{lat['three_s']:.2f}", mode)
                _row(rows, f"  same, groups {other} (s)", f"{lat['three_other_s']:.2f}", "concurrency check")
                _goal_row(rows, "P2_compare_ratio", figures["P2_compare_ratio"])
            if "P3" in only:
                work = lat["work"]
                _row(rows, "memory read bandwidth (GB/s)", f"{lat['bandwidth'] / 1e9:.1f}", "measured now")
                _row(
                    rows,
                    "matmul rate fp32 / bf16 (GFLOP/s)",
                    f"{lat['matmul_fp32'] / 1e9:.0f} / {lat['matmul_bf16'] / 1e9:.0f}",
                    "measured now",
                )
                _row(
                    rows,
                    "matmul rate, dtype served (GFLOP/s)",
                    f"{lat['matmul_served'] / 1e9:.0f}",
                    f"{lat['served_dtype']} (what the encoder computes in)",
                )
                _row(
                    rows,
                    "per-token weights (M params)",
                    f"{work['per_token_params'] / 1e6:.1f}",
                    "decoder (less cross k/v) + lm_head",
                )
                _row(
                    rows, "one-time compute (GFLOP)", f"{work['once_flops'] / 1e9:.1f}", "encoder + cross k/v"
                )
                _row(rows, "floor, fp32 as shipped (s)", f"{lat['floor_fp32_s']:.2f}")
                _row(
                    rows,
                    "floor, precision served (s)",
                    f"{lat['floor_served_s']:.2f}",
                    f"{lat['served_bytes_per_param']:.2f} B/param",
                )
                figures["P3_floor_ratio"] = single / lat["floor_fp32_s"]
                _goal_row(rows, "P3_floor_ratio", figures["P3_floor_ratio"])
                figures["P3_served_floor_ratio"] = single / lat["floor_served_s"]
                _goal_row(rows, "P3_served_floor_ratio", figures["P3_served_floor_ratio"])
                if not args.no_variants and not quick:
                    # Every precision the app offers, so the table shows why auto picked its own.
                    for variant in ("float32", "bfloat16", "int8", "float32-int8"):
                        if variant == args.dtype:
                            continue
                        res = run_worker("variant", {**spec, "variant": variant, "repeats": 2}, log)
                        _row(
                            rows,
                            f"  batch-1 generate at {variant} (s)",
                            f"{res['single_s']:.2f}",
                            f"{res['single_s'] / lat['floor_fp32_s']:.2f} x floor (other process)",
                        )

        if "P4" in only:
            # Several batches, as a report has: with one batch (8 dialogues, the first round's
            # setting) length sorting cannot act and every row is padded to the longest (177 to
            # 497 tokens), which hid what batching gains (P4 1.08 with 8 dialogues, 1.50 with 24).
            dialogues = args.dialogues or (8 if quick else 24)
            batch_sizes = [int(b) for b in args.batch_sizes.split(",")]
            ev = run_worker("eval", {**spec, "dialogues": dialogues, "batch_sizes": batch_sizes}, log)
            best = min(batch_sizes, key=lambda b: ev[f"batched_{b}_s"])
            figures["P4_eval_speedup"] = ev["one_at_a_time_s"] / ev[f"batched_{best}_s"]
            _row(
                rows,
                f"report, {dialogues} dialogues x 3 models, one at a time (s)",
                f"{ev['one_at_a_time_s']:.1f}",
                f"{ev['threads']} threads (train.evaluate's default)",
            )
            for b in batch_sizes:
                runs = ", ".join(f"{r:.1f}" for r in ev[f"batched_{b}_runs"])
                _row(
                    rows,
                    f"report, batch size {b} (s)",
                    f"{ev[f'batched_{b}_s']:.1f}",
                    f"mean of {runs} (before, after)",
                )
            _goal_row(rows, "P4_eval_speedup", figures["P4_eval_speedup"])

        if "P5" in only:
            steps = 2 if quick else 3
            train_spec = {
                **spec, "steps": steps, "batch_size": 4, "label_tokens": 48,
                "gradient_checkpointing": args.gradient_checkpointing,
                "lora_base_dtype": args.lora_base_dtype,
            }  # fmt: skip
            full = run_worker("train", {**train_spec, "method": "full"}, log)
            lora = run_worker("train", {**train_spec, "method": "lora"}, log)
            figures["P5_lora_step_ratio"] = lora["step_s"] / full["step_s"]
            figures["P5_lora_memory_ratio"] = lora["peak_rss"] / full["peak_rss"]
            gc = "on" if args.gradient_checkpointing else "off"
            _row(
                rows,
                "train step full / LoRA (s)",
                f"{full['step_s']:.2f} / {lora['step_s']:.2f}",
                f"batch 4, 1 thread, LoRA base {lora['lora_base_dtype']} "
                f"(--lora-base-dtype {args.lora_base_dtype}), grad. checkpointing {gc}",
            )
            _row(
                rows,
                "train peak RSS full / LoRA (GiB)",
                f"{full['peak_rss'] / GIB:.2f} / {lora['peak_rss'] / GIB:.2f}",
            )
            _goal_row(rows, "P5_lora_step_ratio", figures["P5_lora_step_ratio"])
            _goal_row(rows, "P5_lora_memory_ratio", figures["P5_lora_memory_ratio"])
            report_steps.add_rows(_row, rows, data, quick, _env(), log)  # train()'s own step time

        if "P6" in only:
            cs = cold_start(log)
            figures["P6_cold_start_s"] = cs["seconds"]
            _row(rows, "P6_cold_start_s", f"{cs['seconds']:.1f}", f"{cs['status']}; {cs['preset']}")
    finally:
        if not args.workdir:
            shutil.rmtree(workdir / "checkpoints", ignore_errors=True)
    print(
        f"done in {time.perf_counter() - started:.0f} s; load average {load_before:.1f} before, "
        f"{os.getloadavg()[0]:.1f} after (ratios compare measurements taken in this run)",
        flush=True,
    )
    print(json.dumps({k: (round(v, 3) if v is not None else None) for k, v in figures.items()}))
    return 0


if __name__ == "__main__":
    sys.exit(main())
