"""Training scripts on tiny models: loss goes down, outputs load through core, metadata is complete."""

from __future__ import annotations

import json
import shutil
from collections.abc import Iterator
from pathlib import Path
from typing import Any, ClassVar

import pytest
import torch
import yaml
from safetensors import safe_open
from transformers import AutoModelForSeq2SeqLM, TrainerCallback

from core.checkpoints import ARENA_FILE, portable_location, read_metadata
from core.config import DEFAULT_HUB_DATA, PROJECT_ROOT, GenerationSettings, default_data_source, load_config
from core.generation import summarize_many
from core.models import load_model_set
from tests import test_hub
from train import cli, common, push
from train.common import TRAINER_DIR, TrainingError, TrainOptions, train
from train.metadata import CARD_FILE, update_metadata

hub_cache = test_hub.hub_cache  # fixture: an empty offline Hub cache under a temporary HF_HOME

REQUIRED_META = (
    "method", "base_model", "trainable_params", "total_params", "size_on_disk_bytes", "examples",
    "steps", "epochs", "wall_time_s", "hardware", "final_train_loss", "loss_history", "seed",
    "data_source", "data_split", "library_versions", "learning_rate", "world_size", "global_batch_size",
)  # fmt: skip


@pytest.fixture(scope="module")
def one_thread() -> Iterator[None]:
    """One torch thread: on a small shared CI machine, two threads contend and run far slower."""
    before = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(before)


def tiny_options(method: str, base: str, output: Path, data_dir: str, **overrides: Any) -> TrainOptions:
    """A few quick steps on the same small batch, so the loss must fall."""
    values: dict[str, Any] = {
        "method": method,
        "base_model": base,
        "output_dir": str(output),
        "data": data_dir,
        "split": "validation",
        "limit": 4,
        "batch_size": 4,
        "max_steps": 5,
        "learning_rate": 1e-2,
        "logging_steps": 1,
        "max_source_length": 128,
        "max_target_length": 32,
        "lora_r": 4,
        "lora_alpha": 8,
        "quiet": True,
        "generation_defaults": {"max_new_tokens": 12},
    }
    values.update(overrides)
    return TrainOptions(**values)


@pytest.fixture(scope="module")
def trained(
    tmp_path_factory: pytest.TempPathFactory,
    tiny_checkpoints: dict[str, str],
    data_dir: str,
    one_thread: None,
) -> dict[str, Any]:
    """One full and one LoRA run on the tiny base, with their metadata."""
    root = tmp_path_factory.mktemp("trained")
    base = tiny_checkpoints["original"]
    runs: dict[str, Any] = {"base": base}
    for method in ("full", "lora"):
        out = root / method
        runs[method] = {"dir": out, "meta": train(tiny_options(method, base, out, data_dir))}
    return runs


@pytest.mark.parametrize("method", ["full", "lora"])
def test_training_lowers_the_loss(trained: dict[str, Any], method: str) -> None:
    history = trained[method]["meta"]["loss_history"]
    assert [h["step"] for h in history] == [1, 2, 3, 4, 5]
    assert history[-1]["loss"] < history[0]["loss"]
    assert trained[method]["meta"]["final_train_loss"] == history[-1]["loss"]


def test_outputs_load_through_core_and_generate(trained: dict[str, Any], data_dir: str) -> None:
    config = load_config(
        env={},
        preset="mini",
        original=trained["base"],
        full=str(trained["full"]["dir"]),
        lora=str(trained["lora"]["dir"]),
        data=data_dir,
        device="cpu",
    )
    model_set = load_model_set(config)
    assert model_set.errors == {}
    assert model_set.models["full"].generation_defaults["max_new_tokens"] == 12
    assert model_set.models["lora"].generation_defaults["max_new_tokens"] == 12
    assert model_set.models["lora"].warning is None  # adapter records the base it was trained on
    results = {
        batch[0].model: batch
        for batch in summarize_many(
            model_set, ["#Person1#: Hi.\n#Person2#: Hello."], GenerationSettings(None)
        )
    }
    for name in ("original", "full", "lora"):
        assert results[name][0].error is None
        assert results[name][0].text.strip()


def test_lora_on_a_bf16_frozen_base_trains_a_float32_adapter(
    tiny_checkpoints: dict[str, str],
    data_dir: str,
    tmp_path: Path,
    one_thread: None,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """``--lora-base-dtype auto`` (the default) on hardware with native bf16: the base is held
    (and loaded) in bf16, the adapter trains and is saved in fp32, arena.json says so, and the
    app serves it on the base as shipped."""
    monkeypatch.setattr(common, "native_bf16_training", lambda: True)
    seen: dict[str, set[torch.dtype]] = {}

    class Dtypes(TrainerCallback):
        def on_train_begin(self, args: Any, state: Any, control: Any, model: Any = None, **_: Any) -> None:
            for name, param in model.named_parameters():
                seen.setdefault("adapter" if "lora_" in name else "base", set()).add(param.dtype)

    base = tiny_checkpoints["original"]
    out = tmp_path / "lora-bf16"
    options = tiny_options("lora", base, out, data_dir, callbacks=[Dtypes()])
    assert options.lora_base_dtype == "auto"
    meta = train(options)
    assert seen == {"base": {torch.bfloat16}, "adapter": {torch.float32}}
    assert meta["lora"]["base_dtype"] == "bfloat16"
    assert meta["precision"] == "float32, bfloat16 frozen base"
    history = meta["loss_history"]
    assert history[-1]["loss"] < history[0]["loss"]
    with safe_open(str(out / "adapter_model.safetensors"), "pt") as weights:
        names = weights.keys()
        assert names and {weights.get_tensor(k).dtype for k in names} == {torch.float32}
    config = load_config(env={}, preset="mini", original=base, lora=str(out), data=data_dir, device="cpu")
    model_set = load_model_set(config, names=("original", "lora"))
    assert model_set.errors == {}
    rows = [
        r
        for batch in summarize_many(
            model_set, ["#Person1#: Hi.\n#Person2#: Hello."], GenerationSettings(None), names=("lora",)
        )
        for r in batch
    ]
    assert rows[0].error is None and rows[0].text.strip()


def test_full_checkpoint_round_trips_untied_weights(trained: dict[str, Any]) -> None:
    """transformers 5 forces ``tie_word_embeddings``; the saved head must still come back as trained."""
    out = trained["full"]["dir"]
    reloaded = AutoModelForSeq2SeqLM.from_pretrained(str(out))
    base = AutoModelForSeq2SeqLM.from_pretrained(trained["base"])
    assert reloaded.config.scale_decoder_outputs == base.config.scale_decoder_outputs
    with safe_open(str(out / "model.safetensors"), "pt") as weights:
        for key in ("lm_head.weight", "shared.weight"):
            assert torch.equal(reloaded.state_dict()[key], weights.get_tensor(key))
    assert not torch.equal(reloaded.lm_head.weight, base.lm_head.weight)  # training changed it
    assert json.loads((out / "config.json").read_text())["use_cache"] is True


def test_lora_dir_holds_only_a_small_adapter(trained: dict[str, Any]) -> None:
    out = trained["lora"]["dir"]
    names = {p.name for p in out.iterdir()}
    assert {"adapter_config.json", "adapter_model.safetensors", ARENA_FILE, CARD_FILE} <= names
    assert not names & {"model.safetensors", "pytorch_model.bin", "config.json", TRAINER_DIR}
    lora, full = trained["lora"]["meta"], trained["full"]["meta"]
    assert lora["size_on_disk_bytes"] == (out / "adapter_model.safetensors").stat().st_size
    assert lora["size_on_disk_bytes"] < full["size_on_disk_bytes"] / 4
    assert lora["trainable_params"] < lora["total_params"] / 4
    assert full["trainable_params"] == full["total_params"]
    adapter = json.loads((out / "adapter_config.json").read_text())
    assert adapter["base_model_name_or_path"] == portable_location(trained["base"])
    assert adapter["task_type"] == "SEQ_2_SEQ_LM"
    assert sorted(adapter["target_modules"]) == ["q", "v"]
    assert not (trained["full"]["dir"] / TRAINER_DIR).exists()  # finished runs ship without checkpoints


@pytest.mark.parametrize("method", ["full", "lora"])
def test_metadata_and_model_card_are_complete(trained: dict[str, Any], method: str) -> None:
    out = trained[method]["dir"]
    meta = read_metadata(out)
    assert meta == trained[method]["meta"]
    missing = [k for k in REQUIRED_META if meta.get(k) in (None, "", [], {})]
    assert missing == []
    assert meta["method"] == method
    assert meta["examples"] == 4 and meta["steps"] == 5 and meta["data_split"] == "validation"
    assert {"torch", "transformers", "peft"} <= set(meta["library_versions"])
    # No machine-specific absolute paths: the data beside the project is recorded relatively.
    assert str(PROJECT_ROOT.parent) + "/" not in json.dumps(meta)
    card = (out / CARD_FILE).read_text()
    assert card.startswith("---\n")
    front = yaml.safe_load(card.split("---\n")[1])
    assert front["base_model"] == meta["base_model"]
    assert front["datasets"] and front["tags"]
    assert front["library_name"] == ("peft" if method == "lora" else "transformers")
    assert f"{meta['trainable_params']:,}" in card
    assert (meta["world_size"], meta["global_batch_size"]) == (1, 4)  # one process, batch 4
    assert "| Parallelism | one process |" in card and f"`python -m train.{method}`" in card


def test_update_metadata_remeasures_the_weights(trained: dict[str, Any], tmp_path: Path) -> None:
    import shutil

    copy = tmp_path / "lora"
    shutil.copytree(trained["lora"]["dir"], copy)
    with (copy / "adapter_model.safetensors").open("ab") as handle:
        handle.write(b"\0" * 1000)
    meta = update_metadata(copy, precision="bfloat16 weights")
    assert meta["size_on_disk_bytes"] == trained["lora"]["meta"]["size_on_disk_bytes"] + 1000
    assert read_metadata(copy) == meta and meta["precision"] == "bfloat16 weights"


def test_non_empty_output_dir_is_refused(trained: dict[str, Any], data_dir: str, tmp_path: Path) -> None:
    out = trained["full"]["dir"]
    before = sorted(p.name for p in out.iterdir())
    with pytest.raises(TrainingError, match=r"not empty.*--overwrite"):
        train(tiny_options("full", trained["base"], out, data_dir))
    with pytest.raises(TrainingError, match="nothing to resume"):
        train(tiny_options("full", trained["base"], out, data_dir, resume=True))
    assert sorted(p.name for p in out.iterdir()) == before
    assert (
        cli.main("full", ["--base-model", trained["base"], "--output", str(out), "--split", "validation"])
        == 2
    )


class SimulatedCrash(RuntimeError):
    pass


class Crash(TrainerCallback):
    """Kill the run after step 3 (after the step-2 checkpoint), like a dying machine would."""

    def on_step_end(self, args: Any, state: Any, control: Any, **kwargs: Any) -> None:
        if state.global_step == 3:
            raise SimulatedCrash("simulated crash")


def test_interrupted_run_resumes_and_overwrite_replaces(
    tiny_checkpoints: dict[str, str], data_dir: str, tmp_path: Path, one_thread: None
) -> None:
    out = tmp_path / "lora"
    options = tiny_options("lora", tiny_checkpoints["original"], out, data_dir, max_steps=4, save_steps=2)
    options.callbacks = [Crash()]
    with pytest.raises(SimulatedCrash):
        train(options)
    assert (out / TRAINER_DIR / "checkpoint-2").is_dir()
    meta = train(tiny_options("lora", tiny_checkpoints["original"], out, data_dir, max_steps=4, resume=True))
    assert meta["resumed_from_checkpoint"] is True
    assert meta["steps"] == 4
    assert [h["step"] for h in meta["loss_history"]][-1] == 4
    assert not (out / TRAINER_DIR).exists()
    meta = train(
        tiny_options("lora", tiny_checkpoints["original"], out, data_dir, max_steps=1, overwrite=True)
    )
    assert meta["steps"] == 1 and read_metadata(out)["steps"] == 1


def test_cli_defaults_are_the_labs(capsys: pytest.CaptureFixture[str]) -> None:
    args = cli.build_parser("lora").parse_args(["--output", "x"])
    options = cli.options_from_args("lora", args)
    assert options.resolved_learning_rate() == 1e-3
    assert (options.lora_r, options.lora_alpha, options.lora_dropout) == (32, 32, 0.05)
    assert list(options.lora_targets) == ["q", "v"]
    assert (options.max_source_length, options.max_target_length) == (512, 128)
    local = Path(default_data_source())
    expected = str(local) if (local / "train.jsonl").is_file() else DEFAULT_HUB_DATA
    assert options.data == expected  # the shipped local copy has no train split: the Hub's is used
    full = cli.options_from_args("full", cli.build_parser("full").parse_args(["--output", "x"]))
    assert full.resolved_learning_rate() == 1e-5 and full.base_model == "google/flan-t5-base"
    with pytest.raises(SystemExit) as exit_info:
        cli.build_parser("full").parse_args(["--help"])
    assert exit_info.value.code == 0
    text = capsys.readouterr().out
    for flag in ("--resume", "--overwrite", "--push-to-hub", "--bf16", "--grad-accum", "1e-05"):
        assert flag in text
    assert "--lora-r" not in text and "--max_steps" not in text  # LoRA flags only on train.lora


def test_cli_flags_of_before_the_dataclass_parser_still_parse() -> None:
    """Every flag the hand-written argparse parser accepted, with the values it produced."""
    argv = [
        "--base-model", "b", "--data", "d", "--split", "validation", "--limit", "4", "--output", "o",
        "--preset", "mini", "--overwrite", "--resume", "--push-to-hub", "me/repo", "--epochs", "2.5",
        "--max-steps", "7", "--lr", "0.5", "--batch-size", "3", "--grad-accum", "2",
        "--weight-decay", "0.1", "--warmup-ratio", "0.05", "--label-smoothing", "0.1", "--dropout", "0.2",
        "--seed", "9", "--max-source-length", "64", "--max-target-length", "16", "--logging-steps", "2",
        "--save-steps", "5", "--lora-r", "4", "--lora-alpha", "8", "--lora-dropout", "0.1",
        "--lora-targets", "q", "k", "v",
    ]  # fmt: skip
    options = cli.options_from_args("lora", cli.build_parser("lora").parse_args(argv))
    expected = TrainOptions(
        method="lora", base_model="b", data="d", split="validation", limit=4, output_dir="o",
        preset="mini", overwrite=True, resume=True, push_to_hub="me/repo", epochs=2.5, max_steps=7,
        learning_rate=0.5, batch_size=3, grad_accum=2, weight_decay=0.1, warmup_ratio=0.05,
        label_smoothing=0.1, dropout=0.2, seed=9, max_source_length=64, max_target_length=16,
        logging_steps=2, save_steps=5, lora_r=4, lora_alpha=8, lora_dropout=0.1, lora_targets=["q", "k", "v"],
    )  # fmt: skip
    assert options == expected
    spelled = cli.build_parser("full").parse_args(["--learning-rate", "0.25", "--output", "o"])
    assert cli.options_from_args("full", spelled).learning_rate == 0.25
    with pytest.raises(SystemExit):
        cli.build_parser("full").parse_args(["--lora-r", "4"])


@pytest.mark.parametrize("native", [True, False])
def test_lora_base_dtype_auto_is_bf16_only_where_the_hardware_computes_it(
    native: bool, monkeypatch: pytest.MonkeyPatch
) -> None:
    """``auto`` (the default) trains LoRA on a bf16 base only where bf16 is native (emulated
    bf16 is slower than fp32); explicit choices are kept; full fine-tuning is always fp32."""
    monkeypatch.setattr(common, "native_bf16_training", lambda: native)
    lora = TrainOptions(method="lora", base_model="b", output_dir="o").validate()
    assert lora.lora_base_dtype == "auto"
    expected = "bfloat16" if native else "float32"
    assert common.resolved_lora_base_dtype(lora) == expected
    assert common.base_dtype(lora) == {"bfloat16": torch.bfloat16, "float32": torch.float32}[expected]
    for chosen in ("float32", "bfloat16"):
        explicit = TrainOptions(method="lora", base_model="b", output_dir="o", lora_base_dtype=chosen)
        assert common.resolved_lora_base_dtype(explicit.validate()) == chosen
    full = TrainOptions(method="full", base_model="b", output_dir="o").validate()
    assert common.resolved_lora_base_dtype(full) == "float32" and common.base_dtype(full) == torch.float32


def test_native_bf16_training_asks_the_gpu_when_there_is_one(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(common, "cpu_has_native_bf16", lambda: True)
    monkeypatch.setattr(torch.cuda, "is_available", lambda: True)
    monkeypatch.setattr(torch.cuda, "is_bf16_supported", lambda *a, **k: False)
    assert common.native_bf16_training() is False  # a V100/T4: the GPU trains, not the CPU
    monkeypatch.setattr(torch.cuda, "is_bf16_supported", lambda *a, **k: True)
    assert common.native_bf16_training() is True
    monkeypatch.setattr(torch.cuda, "is_available", lambda: False)
    monkeypatch.setattr(common, "cpu_has_native_bf16", lambda: False)
    assert common.native_bf16_training() is False


def test_bad_options_are_refused_clearly() -> None:
    with pytest.raises(ValueError, match="method"):
        TrainOptions(method="qlora", base_model="b", output_dir="o").validate()
    with pytest.raises(ValueError, match="batch_size"):
        TrainOptions(method="full", base_model="b", output_dir="o", batch_size=0).validate()
    with pytest.raises(ValueError, match="lora_base_dtype is for LoRA"):
        TrainOptions(method="full", base_model="b", output_dir="o", lora_base_dtype="bfloat16").validate()
    with pytest.raises(ValueError, match="lora_base_dtype must be one of"):
        TrainOptions(method="lora", base_model="b", output_dir="o", lora_base_dtype="float16").validate()
    if not torch.cuda.is_available():
        with pytest.raises(ValueError, match="bf16 needs a CUDA GPU"):
            TrainOptions(method="full", base_model="b", output_dir="o", bf16=True).validate()


# ---------------------------------------------------------------------------- publishing to the Hub


class FakeHfApi:
    """``huggingface_hub.HfApi`` at its boundary: uploads land in a local "remote" folder."""

    remote_root: Path
    calls: ClassVar[list[tuple[str, str]]] = []

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        pass

    def create_repo(self, repo_id: str, exist_ok: bool = False, **kwargs: Any) -> None:
        assert exist_ok and kwargs.get("repo_type") in (None, "model")
        FakeHfApi.calls.append(("create_repo", repo_id))

    def upload_folder(
        self, *, folder_path: str, repo_id: str, ignore_patterns: list[str], **kwargs: Any
    ) -> None:
        import fnmatch
        import shutil

        FakeHfApi.calls.append(("upload_folder", repo_id))
        target = FakeHfApi.remote_root / repo_id
        for path in Path(folder_path).rglob("*"):
            relative = path.relative_to(folder_path).as_posix()
            if path.is_file() and not any(fnmatch.fnmatch(relative, p) for p in ignore_patterns):
                (target / relative).parent.mkdir(parents=True, exist_ok=True)
                shutil.copy2(path, target / relative)


@pytest.fixture
def fake_hub(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    import huggingface_hub

    FakeHfApi.remote_root = tmp_path / "remote"
    FakeHfApi.calls = []
    monkeypatch.setattr(huggingface_hub, "HfApi", FakeHfApi)
    return FakeHfApi.remote_root


def card_front(directory: Path) -> dict[str, Any]:
    return yaml.safe_load((directory / CARD_FILE).read_text().split("---\n")[1])


@pytest.mark.usefixtures("hub_cache")
def test_push_to_hub_uploads_what_the_app_reads_back(
    trained: dict[str, Any], data_dir: str, tmp_path: Path, fake_hub: Path, one_thread: None
) -> None:
    # LoRA through the training command's --push-to-hub; the full fine-tune pushed afterwards,
    # once an evaluation report of it exists (python -m train.push).
    meta = train(
        tiny_options(
            "lora", trained["base"], tmp_path / "lora", data_dir, max_steps=2, push_to_hub="me/arena-lora"
        )
    )
    full_dir = tmp_path / "full"
    shutil.copytree(trained["full"]["dir"], full_dir)
    full_meta = read_metadata(full_dir)
    report = tmp_path / "eval"
    report.mkdir()
    scores = {"rouge1": 0.41, "rouge2": 0.17, "rougeL": 0.33, "rougeLsum": 0.35}
    (report / "summary.json").write_text(
        json.dumps(
            {
                "split": "test", "n": 250, "created_at": "9999-01-01T00:00:00Z",
                "model_locations": {"full": portable_location(str(full_dir))},
                "models": {"full": {m: {"mean": v, "ci95": [v - 0.01, v + 0.01]} for m, v in scores.items()}},
            }
        )
    )  # fmt: skip
    assert push.main([str(full_dir), "me/arena-full", "--report", str(report)]) == 0
    assert FakeHfApi.calls == [
        ("create_repo", "me/arena-lora"), ("upload_folder", "me/arena-lora"),
        ("create_repo", "me/arena-full"), ("upload_folder", "me/arena-full"),
    ]  # fmt: skip

    lora, full = fake_hub / "me/arena-lora", fake_hub / "me/arena-full"
    common = {ARENA_FILE, CARD_FILE, "generation_config.json", "tokenizer_config.json"}
    lora_files = {p.name for p in lora.iterdir()}
    assert common | {"adapter_model.safetensors", "adapter_config.json"} <= lora_files
    assert TRAINER_DIR not in lora_files and "model.safetensors" not in lora_files
    assert common | {"model.safetensors", "config.json"} <= {p.name for p in full.iterdir()}
    assert read_metadata(lora)["steps"] == meta["steps"] == 2

    front = card_front(lora)
    assert front["library_name"] == "peft" and front["base_model"] == meta["base_model"]
    assert front["datasets"] == [DEFAULT_HUB_DATA] and "model-index" not in front  # no report of it
    assert 'PeftModel.from_pretrained(base, "me/arena-lora")' in (lora / CARD_FILE).read_text()
    front = card_front(full)
    assert front["library_name"] == "transformers" and front["base_model"] == full_meta["base_model"]
    (result,) = front["model-index"][0]["results"]
    assert result["task"]["type"] == "summarization" and result["dataset"]["split"] == "test"
    assert {m["name"]: m["value"] for m in result["metrics"]} == {
        "ROUGE-1": 0.41, "ROUGE-2": 0.17, "ROUGE-L": 0.33, "ROUGE-Lsum": 0.35,
    }  # fmt: skip

    # What was uploaded, served back from the Hub cache as repo ids.
    import huggingface_hub.constants

    cache = Path(huggingface_hub.constants.HF_HUB_CACHE)
    test_hub.put_in_hub_cache(cache, "me/arena-full", full)
    test_hub.put_in_hub_cache(cache, "me/arena-lora", lora)
    config = load_config(
        env={"ARENA_DEVICE": "cpu"}, original=trained["base"], full="me/arena-full", lora="me/arena-lora"
    )
    model_set = load_model_set(config)
    assert model_set.errors == {}
    assert model_set.models["lora"].generation_defaults["max_new_tokens"] == 12
    assert model_set.models["lora"].warning is None


def test_a_report_of_an_older_run_is_not_put_on_the_card(trained: dict[str, Any], tmp_path: Path) -> None:
    directory = trained["full"]["dir"]
    meta = read_metadata(directory)
    report = tmp_path / "eval"
    report.mkdir()
    raw = {
        "split": "test", "n": 3, "created_at": "2000-01-01T00:00:00Z",
        "model_locations": {"full": portable_location(str(directory))},
        "models": {"full": {"rouge1": {"mean": 0.5}}},
    }  # fmt: skip
    (report / "summary.json").write_text(json.dumps(raw))
    assert push.evaluation_for(directory, meta, report) is None
    raw["created_at"] = "9999-01-01T00:00:00Z"
    (report / "summary.json").write_text(json.dumps(raw))
    assert push.evaluation_for(directory, meta, report)["metrics"] == {"rouge1": 0.5}
    raw["model_locations"] = {"full": "checkpoints/elsewhere/full"}
    (report / "summary.json").write_text(json.dumps(raw))
    assert push.evaluation_for(directory, meta, report) is None


def test_push_refuses_an_incomplete_directory(
    trained: dict[str, Any], tmp_path: Path, fake_hub: Path
) -> None:
    copy = tmp_path / "lora"
    shutil.copytree(trained["lora"]["dir"], copy)
    (copy / "adapter_model.safetensors").unlink()
    with pytest.raises(push.PushError, match=r"missing adapter_model\.safetensors"):
        push.push_checkpoint(copy, "me/broken")
    assert FakeHfApi.calls == []
