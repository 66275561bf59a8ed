"""The ROUGE report: bootstrap, baselines, controls (pure functions) and the evaluate command."""

from __future__ import annotations

import csv
import json
from pathlib import Path
from typing import Any

import numpy as np
import pytest

from core.config import MODEL_NAMES, GenerationSettings, load_config
from core.data import Dialogue, load_split
from core.evaluation import (
    BASELINES,
    TEMPLATE_SUMMARY,
    bootstrap_indices,
    build_report,
    derangement,
    first_line_summary,
    mean_ci,
    paired_difference,
    report_markdown,
    score_table,
    template_summary,
)
from core.metrics import ROUGE_CONVENTIONS, ROUGE_TYPES, rouge
from core.models import available_cores
from train import evaluate as evaluate_cli

IMPROVEMENTS = ("full_vs_original", "lora_vs_original", "lora_vs_full")


def assert_stat(stat: Any) -> None:
    assert set(stat) == {"mean", "ci95"}
    assert isinstance(stat["mean"], float)
    lo, hi = stat["ci95"]
    assert isinstance(lo, float) and isinstance(hi, float)
    assert lo <= hi


def assert_summary_shape(summary: dict[str, Any], models: tuple[str, ...] = MODEL_NAMES) -> None:
    """The documented ``summary.json`` shape, key for key."""
    assert isinstance(summary["preset"], str) and isinstance(summary["split"], str)
    assert isinstance(summary["n"], int) and summary["n"] > 0
    assert summary["rouge_conventions"] == ROUGE_CONVENTIONS
    assert list(summary["models"]) == list(models)
    assert set(summary["improvement_pp"]) == set(IMPROVEMENTS)
    assert set(summary["baselines"]) == {"template", "first_line"}
    assert list(summary["controls"]) == list(models)
    for group in ("models", "baselines", "controls"):
        for metrics in summary[group].values():
            assert list(metrics) == list(ROUGE_TYPES)
            for stat in metrics.values():
                assert_stat(stat)
    for metrics in summary["improvement_pp"].values():
        assert list(metrics) == list(ROUGE_TYPES)
        assert all(isinstance(v, float) for v in metrics.values())
    # Extras other tools rely on (the mini preset's quality bar).
    assert set(summary["distinct_fraction"]) >= set(models)
    for metrics in summary["control_gap"].values():
        for stat in metrics.values():
            assert_stat(stat)


@pytest.mark.parametrize("n", [2, 3, 7, 250])
def test_derangement_has_no_fixed_points_and_is_fixed(n: int) -> None:
    perm = derangement(n)
    assert sorted(perm) == list(range(n))
    assert all(perm[i] != i for i in range(n))
    assert derangement(n) == perm
    assert derangement(n, seed=1) != perm or n <= 3


def test_derangement_needs_two_items() -> None:
    with pytest.raises(ValueError, match="at least 2"):
        derangement(1)


def test_bootstrap_intervals() -> None:
    rng = np.random.default_rng(0)
    values = rng.uniform(0, 1, size=60)
    indices = bootstrap_indices(60, 500, seed=3)
    stat = mean_ci(values, indices)
    assert stat["ci95"][0] < stat["mean"] < stat["ci95"][1]
    assert mean_ci(values, bootstrap_indices(60, 500, seed=3)) == stat  # fixed seed: same interval
    assert mean_ci(np.full(60, 0.3), indices)["ci95"] == pytest.approx([0.3, 0.3])
    # Paired: a constant shift has a zero-width CI, unlike the CIs of the two systems.
    diff = paired_difference(values + 0.1, values, indices)
    assert diff["mean"] == pytest.approx(0.1)
    assert diff["ci95"] == pytest.approx([0.1, 0.1])
    with pytest.raises(ValueError, match="dialogues"):
        mean_ci(values[:10], indices)


def test_baselines() -> None:
    assert template_summary("#Person1#: anything") == TEMPLATE_SUMMARY
    assert first_line_summary("\n  #Person1#: Hi there.\n#Person2#: Hello.") == "#Person1#: Hi there."
    assert first_line_summary("") == ""


def fake_records(n: int) -> list[Dialogue]:
    """Synthetic dialogues (tests never copy DialogSum text)."""
    words = ["apple", "river", "ticket", "doctor", "garden", "laptop", "pizza", "train"]
    return [
        Dialogue(
            id=f"d{i}",
            dialogue=f"#Person1#: Do you like the {words[i % 8]}?\n#Person2#: Yes, the {words[i % 8]} is fine.",
            references=(f"#Person1# and #Person2# talk about the {words[i % 8]}.",),
        )
        for i in range(n)
    ]


def test_controls_score_against_another_dialogue() -> None:
    records = fake_records(8)
    copying = [f"They talk about the {r.dialogue.split()[5]}" for r in records]
    constant = ["#Person1# and #Person2# talk about food."] * len(records)
    table = score_table(records, {"original": constant, "full": copying, "lora": copying})
    perm = table.permutation
    assert perm is not None and all(perm[i] != i for i in range(8))
    for i in range(8):
        assert table.controls["full"][i] == rouge(copying[i], records[perm[i]].references)
    summary = build_report(table, "test", "synthetic", resamples=200)
    assert_summary_shape(summary)
    # A model that ignores its input scores the same on its own and on other references.
    assert summary["control_gap"]["original"]["rouge1"]["mean"] == pytest.approx(0.0, abs=1e-12)
    assert summary["control_gap"]["full"]["rouge1"]["ci95"][0] > 0
    assert summary["distinct_fraction"]["original"] == pytest.approx(1 / 8)
    assert summary["distinct_fraction"]["full"] == 1.0
    gain = summary["models"]["full"]["rouge1"]["mean"] - summary["models"]["original"]["rouge1"]["mean"]
    assert summary["improvement_pp"]["full_vs_original"]["rouge1"] == pytest.approx(100 * gain)
    assert summary["improvement_pp"]["lora_vs_full"]["rouge1"] == pytest.approx(0.0)
    report = report_markdown(summary)
    for needle in (
        "Baselines",
        "template",
        "first line",
        "Controls",
        "own minus control",
        "full vs original",
    ):
        assert needle in report


def test_template_baseline_on_the_test_split(data_dir: str) -> None:
    records = load_split(data_dir, "test", limit=40)
    table = score_table(records, {"original": [r.reference for r in records]})
    template = np.mean([row["rouge1"] for row in table.scores["template"]])
    assert 0 < template < np.mean([row["rouge1"] for row in table.scores["original"]])


def test_unlabelled_records_are_refused() -> None:
    records = [Dialogue("u1", "#Person1#: Hi.", ())]
    with pytest.raises(ValueError, match="no reference"):
        score_table(records, {"original": ["x"]})


@pytest.fixture(scope="module")
def evaluated(
    tmp_path_factory: pytest.TempPathFactory, tiny_checkpoints: dict[str, str], data_dir: str
) -> tuple[Path, int, dict[str, str]]:
    """The evaluate command over 5 test dialogues of the tiny models."""
    out = tmp_path_factory.mktemp("eval")
    argv = [
        "--preset", "mini", "--original", tiny_checkpoints["original"], "--full", tiny_checkpoints["full"],
        "--lora", tiny_checkpoints["lora"], "--data", data_dir, "--split", "test", "--limit", "5",
        "--output", str(out), "--device", "cpu", "--bootstrap", "200", "--batch-size", "3",
    ]  # fmt: skip
    code = evaluate_cli.main(argv)
    return out, code, tiny_checkpoints


def test_evaluate_writes_the_four_files(evaluated: tuple[Path, int, dict[str, str]]) -> None:
    out, code, _ = evaluated
    assert code == 0
    for name in ("predictions.csv", "summary.json", "report.md", "rouge.png"):
        assert (out / name).is_file() and (out / name).stat().st_size > 0, name
    assert (out / "rouge.png").read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    summary = json.loads((out / "summary.json").read_text())
    assert_summary_shape(summary)
    assert (summary["preset"], summary["split"], summary["n"]) == ("mini", "test", 5)
    assert summary["cache"] == {"reused": 0, "generated": 15}
    report = (out / "report.md").read_text()
    assert "Baselines" in report and "own minus control" in report
    # the input-use measure: own vs shuffled dialogue loss for every model, in both files
    assert set(summary["input_use"]) == set(MODEL_NAMES)
    for row in summary["input_use"].values():
        for key in ("own_loss", "shuffled_loss", "gap"):
            assert_stat(row[key])
        assert row["n"] == 5 and row["reads_input"] == (row["gap"]["ci95"][0] > 0)
    assert "Input use: teacher-forced loss" in report


def test_input_use_can_be_skipped(tmp_path: Path, tiny_checkpoints: dict[str, str], data_dir: str) -> None:
    config = load_config(env={}, preset="mini", data=data_dir, device="cpu", **tiny_checkpoints)
    summary = evaluate_cli.evaluate(
        config, "test", 2, tmp_path, resamples=50, progress=False, input_use_check=False
    )
    assert "input_use" not in summary
    assert "Input use" not in (tmp_path / "report.md").read_text()


def test_predictions_csv_rows_recompute(evaluated: tuple[Path, int, dict[str, str]]) -> None:
    out, _, _ = evaluated
    with (out / "predictions.csv").open(encoding="utf-8", newline="") as handle:
        rows = list(csv.DictReader(handle))
    assert len(rows) == 5
    summary = json.loads((out / "summary.json").read_text())
    row = rows[2]
    references = json.loads(row["references"])
    assert len(references) >= 2  # the test split has several human summaries
    for name in (*MODEL_NAMES, *BASELINES):
        recomputed = rouge(row[f"{name}_summary"], references)
        for metric in ROUGE_TYPES:
            assert float(row[f"{name}_{metric}"]) == pytest.approx(recomputed[metric], abs=1e-6)
    mean = np.mean([float(r["lora_rouge1"]) for r in rows])
    assert summary["models"]["lora"]["rouge1"]["mean"] == pytest.approx(mean, abs=1e-5)
    controls = {r["id"]: r for r in rows}
    control_refs = json.loads(controls[row["control_id"]]["references"])
    assert row["control_id"] != row["id"]
    assert float(row["full_control_rouge1"]) == pytest.approx(
        rouge(row["full_summary"], control_refs)["rouge1"], abs=1e-6
    )


def test_rerun_reuses_the_generation_cache(
    evaluated: tuple[Path, int, dict[str, str]], data_dir: str
) -> None:
    out, _, tiny = evaluated
    config = load_config(
        env={}, preset="mini", original=tiny["original"], full=tiny["full"], lora=tiny["lora"],
        data=data_dir, device="cpu",
    )  # fmt: skip
    first = json.loads((out / "summary.json").read_text())
    again = evaluate_cli.evaluate(config, "test", 5, out, resamples=200, progress=False)
    assert again["cache"] == {"reused": 15, "generated": 0}
    assert again["models"] == first["models"]
    shorter = evaluate_cli.evaluate(
        config, "test", 6, out, GenerationSettings(max_new_tokens=4), resamples=200, progress=False
    )
    assert shorter["cache"] == {"reused": 0, "generated": 18}  # other settings: generated anew
    assert shorter["generation"]["full"]["max_new_tokens"] == 4


@pytest.mark.parametrize(("env", "expected"), [({}, None), ({"ARENA_THREADS": "1"}, 1)])
def test_reports_generate_on_every_core_unless_threads_are_configured(
    tmp_path: Path, tiny_checkpoints: dict[str, str], data_dir: str, monkeypatch, env, expected
) -> None:
    loaded, load = [], evaluate_cli.load_model_set

    def spy(config, *args, **kwargs):
        loaded.append(load(config, *args, **kwargs))
        return loaded[-1]

    monkeypatch.setattr(evaluate_cli, "load_model_set", spy)
    config = load_config(env=env, preset="mini", data=data_dir, device="cpu", **tiny_checkpoints)
    evaluate_cli.evaluate(config, "test", 2, tmp_path, resamples=50, progress=False, input_use_check=False)
    (model_set,) = loaded
    threads = {m.cpu_threads for m in model_set.models.values()}
    assert threads == {expected or available_cores()}


def test_evaluate_threads_flag_reaches_the_config(tmp_path: Path, monkeypatch, capsys) -> None:
    seen = []

    def stop(config, *args, **kwargs):
        seen.append(config)
        raise RuntimeError("stopped by the test")

    monkeypatch.setattr(evaluate_cli, "evaluate", stop)
    assert evaluate_cli.main(["--threads", "3", "--output", str(tmp_path)]) == 2
    assert seen[0].threads == 3
    assert evaluate_cli.main(["--threads", "0", "--output", str(tmp_path)]) == 2
    assert "--threads must be at least 1" in capsys.readouterr().err
    assert len(seen) == 1  # refused before anything ran


def test_evaluate_refuses_bad_input(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    assert evaluate_cli.main(["--limit", "0", "--output", str(tmp_path)]) == 2
    assert "--limit" in capsys.readouterr().err
    with pytest.raises(SystemExit):
        evaluate_cli.main(["--split", "unlabeled"])


def test_evaluate_flags_come_from_the_options_dataclass() -> None:
    (options,) = evaluate_cli.build_parser().parse_args_into_dataclasses(
        args=["--batch-size", "3", "--skip-input-use", "--split", "validation"]
    )
    assert options == evaluate_cli.EvaluateOptions(batch_size=3, skip_input_use=True, split="validation")
    (defaults,) = evaluate_cli.build_parser().parse_args_into_dataclasses(args=[])
    assert defaults == evaluate_cli.EvaluateOptions()  # one set of defaults
