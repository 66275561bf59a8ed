"""Broken parts take one column down, never the app (issue 6).

Every case breaks one model's files in a private copy of the tiny checkpoints and loads the
preset through :func:`core.models.load_model_set`, the code the app runs at start-up. Expected:
nothing raises, the broken model's error names its path and the cause, the other models still
summarize, and the original never runs with a half-applied adapter (its output equals a base
loaded on its own). The last test does the same through a running app's ``/compare``.
"""

from __future__ import annotations

import json
import shutil
from collections.abc import Callable
from pathlib import Path

import pytest
import torch
from transformers import AutoModelForSeq2SeqLM, AutoTokenizer

from core.config import MODEL_NAMES, GenerationSettings, load_config
from core.generation import fit_dialogue, summarize
from core.model_cards import model_cards
from core.models import load_model_set
from core.prompt import build_prompt

SETTINGS = GenerationSettings(max_new_tokens=8)
NEW_TOKENS = 8


def _truncate(path: Path) -> None:
    data = path.read_bytes()
    path.write_bytes(data[: len(data) // 2])


def _garbage(path: Path) -> None:
    path.write_bytes(b"\x93NOT A SAFETENSORS FILE\x00" * 512)


def _corrupt_tensor_bytes(path: Path) -> None:
    """Keep the header valid, overwrite the end of the tensor data (0xFF bytes read as NaN)."""
    data = bytearray(path.read_bytes())
    data[-4096:] = b"\xff" * 4096
    path.write_bytes(bytes(data))


def _drop_tokenizer(directory: Path) -> None:
    for file in directory.glob("tokenizer*"):
        file.unlink()


def _foreign_tokenizer(directory: Path) -> None:
    """A tokenizer with more ids than the model has embeddings (belongs to another model)."""
    tokenizer = AutoTokenizer.from_pretrained(directory)
    tokenizer.add_tokens([f"extra_token_{i}" for i in range(64)])
    tokenizer.save_pretrained(directory)


def _adapter_for_wider_base(directory: Path) -> None:
    """A LoRA adapter trained on a T5 with another d_model: its matrices don't fit the base."""
    from peft import LoraConfig, TaskType, get_peft_model
    from transformers import T5ForConditionalGeneration

    from bench.fixtures import tiny_t5_config

    recorded = json.loads((directory / "adapter_config.json").read_text())["base_model_name_or_path"]
    config = tiny_t5_config(600)
    config.d_model, config.d_kv = 48, 12
    torch.manual_seed(1)
    peft_model = get_peft_model(
        T5ForConditionalGeneration(config),
        LoraConfig(task_type=TaskType.SEQ_2_SEQ_LM, r=4, lora_alpha=8, target_modules=["q", "v"]),
    )
    # Same recorded base name, so only the shapes give it away.
    peft_model.peft_config["default"].base_model_name_or_path = recorded
    shutil.rmtree(directory)
    peft_model.save_pretrained(directory, save_embedding_layers=False)


def _garbage_json(path: Path) -> None:
    path.write_text('{"model_type": "t5", "d_model": ', encoding="utf-8")


def _binary(path: Path) -> None:
    """Bytes that are not even UTF-8 (a disk error, a botched copy)."""
    path.write_bytes(b"\xff\xfe\x93\x00garbage\x81" * 64)


def on(name: str, damage: Callable[[Path], None]) -> Callable[[Path], None]:
    """Damage the file ``name`` of a checkpoint directory."""
    return lambda directory: damage(directory / name)


# (model broken, what is done to its copy, text the error must contain besides the path)
BREAKAGES: dict[str, tuple[str, Callable[[Path], None], str]] = {
    "full-missing-directory": ("full", lambda d: shutil.rmtree(d), "not found"),
    "full-truncated-safetensors": ("full", on("model.safetensors", _truncate), "SafetensorError"),
    "full-garbage-safetensors": ("full", on("model.safetensors", _garbage), "SafetensorError"),
    "full-corrupt-tensor-data": ("full", on("model.safetensors", _corrupt_tensor_bytes), "NaN or infinite"),
    "full-missing-tokenizer": ("full", _drop_tokenizer, "tokenizer missing"),
    "full-tokenizer-of-another-model": ("full", _foreign_tokenizer, "belongs to another model"),
    "full-broken-config-json": ("full", on("config.json", _garbage_json), "valid JSON"),
    "original-missing-directory": ("original", lambda d: shutil.rmtree(d), "not found"),
    "original-truncated-safetensors": ("original", on("model.safetensors", _truncate), "SafetensorError"),
    "original-missing-tokenizer": ("original", _drop_tokenizer, "tokenizer missing"),
    "original-broken-generation-config": (
        "original",
        on("generation_config.json", _garbage_json),
        "not valid JSON",
    ),
    "lora-missing-directory": ("lora", lambda d: shutil.rmtree(d), "not found"),
    "lora-missing-weights": ("lora", lambda d: (d / "adapter_model.safetensors").unlink(), "incomplete"),
    "lora-truncated-safetensors": ("lora", on("adapter_model.safetensors", _truncate), "SafetensorError"),
    "lora-garbage-safetensors": ("lora", on("adapter_model.safetensors", _garbage), "SafetensorError"),
    "lora-corrupt-tensor-data": (
        "lora",
        on("adapter_model.safetensors", _corrupt_tensor_bytes),
        "NaN or infinite",
    ),
    "lora-shape-mismatch": ("lora", _adapter_for_wider_base, "size mismatch"),
    "lora-broken-adapter-config": ("lora", on("adapter_config.json", _garbage_json), "unreadable"),
    "lora-binary-adapter-config": ("lora", on("adapter_config.json", _binary), "unreadable"),
    "lora-adapter-config-not-an-object": (
        "lora",
        lambda d: (d / "adapter_config.json").write_text("[1, 2]"),
        "expected a JSON object",
    ),
    "original-binary-generation-config": (
        "original",
        on("generation_config.json", _binary),
        "not valid JSON",
    ),
    "full-binary-tokenizer": ("full", on("tokenizer.json", _binary), "tokenizer could not be loaded"),
}


@pytest.fixture(scope="module")
def dialogue(data_dir: str) -> str:
    from core.data import load_split

    return load_split(data_dir, "test", limit=1)[0].dialogue


def _plain_generate(location: str, dialogue: str) -> str:
    """The model at ``location`` loaded on its own with plain transformers, no peft (fp32, so
    the model sets under test load in fp32 too: the bf16/int8 fast path has its own tests)."""
    tokenizer = AutoTokenizer.from_pretrained(location)
    model = AutoModelForSeq2SeqLM.from_pretrained(location).eval()
    inputs = tokenizer(build_prompt(fit_dialogue(tokenizer, dialogue).dialogue), return_tensors="pt")
    with torch.inference_mode():
        out = model.generate(**inputs, max_new_tokens=NEW_TOKENS, do_sample=False)
    return tokenizer.decode(out[0], skip_special_tokens=True).strip()


@pytest.fixture(scope="module")
def expected(tiny_checkpoints: dict[str, str], dialogue: str) -> dict[str, str]:
    """Original and full summaries from separately loaded models: what healthy columns say."""
    return {name: _plain_generate(tiny_checkpoints[name], dialogue) for name in ("original", "full")}


def _broken_copy(tiny: dict[str, str], tmp_path: Path, name: str, breakage: Callable[[Path], None]) -> dict:
    """Locations where ``name`` points at a broken private copy; the others stay healthy."""
    copy = tmp_path / name
    shutil.copytree(tiny[name], copy)
    breakage(copy)
    return {**tiny, name: str(copy)}


@pytest.mark.parametrize("case", list(BREAKAGES))
def test_a_broken_part_takes_down_only_its_column(
    case: str, tiny_checkpoints: dict[str, str], tmp_path: Path, dialogue: str, expected: dict[str, str]
) -> None:
    broken, breakage, cause = BREAKAGES[case]
    locations = _broken_copy(tiny_checkpoints, tmp_path, broken, breakage)
    config = load_config({}, preset="mini", device="cpu", dtype="float32", **locations)
    models = load_model_set(config)  # must not raise
    assert set(model_cards(config)) == set(MODEL_NAMES)  # nor may the Models tab's cards

    down = {"original", "lora"} if broken == "original" else {broken}  # lora needs the original
    assert set(models.errors) == down, models.errors
    assert locations[broken] in models.errors[broken]
    assert cause in models.errors[broken]
    assert models.status(broken).startswith("unavailable: ")

    results = {s.model: s for s in summarize(models, dialogue, SETTINGS)}
    for name in ("original", "full", "lora"):
        if name in down:
            assert results[name].error == models.errors[name] and results[name].text == ""
        else:
            assert results[name].error is None and results[name].text, name
    for name in ("original", "full"):
        if name not in down:  # the original never runs with a half-applied adapter
            assert results[name].text == expected[name], name
    if "lora" not in down:
        assert results["lora"].text != results["original"].text


def test_adapter_recording_another_base_is_served_with_a_visible_warning(
    tiny_checkpoints: dict[str, str], tmp_path: Path, dialogue: str, expected: dict[str, str]
) -> None:
    def rename_base(directory: Path) -> None:
        path = directory / "adapter_config.json"
        config = json.loads(path.read_text())
        config["base_model_name_or_path"] = "google/flan-t5-large"
        path.write_text(json.dumps(config))

    locations = _broken_copy(tiny_checkpoints, tmp_path, "lora", rename_base)
    config = load_config({}, preset="mini", device="cpu", dtype="float32", **locations)
    models = load_model_set(config)  # must not raise
    assert set(model_cards(config)) == set(MODEL_NAMES)  # nor may the Models tab's cards
    assert models.errors == {}
    status = models.status("lora")
    assert status.startswith("loaded with a warning") and "google/flan-t5-large" in status
    assert locations["lora"] in status
    results = {s.model: s for s in summarize(models, dialogue, SETTINGS)}
    assert all(r.error is None and r.text for r in results.values())
    assert results["original"].text == expected["original"]
    assert results["lora"].text != results["original"].text


@pytest.mark.slow
def test_app_starts_with_broken_parts_and_compare_reports_each_column(
    tiny_checkpoints: dict[str, str], tmp_path: Path, dialogue: str
) -> None:
    """The running app: a truncated full model, a mismatched adapter, unreadable metadata and
    evaluation report; it starts, and the original still serves."""
    pytest.importorskip("gradio_client")
    from gradio_client import Client

    from tests.conftest import start_app

    locations = _broken_copy(tiny_checkpoints, tmp_path, "full", lambda d: _truncate(d / "model.safetensors"))
    locations = _broken_copy(locations, tmp_path, "lora", _adapter_for_wider_base)
    locations = _broken_copy(locations, tmp_path, "original", lambda d: _binary(d / "arena.json"))
    checkpoints = tmp_path / "checkpoints"
    (checkpoints / "mini" / "eval").mkdir(parents=True)
    _binary(checkpoints / "mini" / "eval" / "summary.json")  # the Benchmark tab's report
    server = start_app(locations, str(tmp_path / "votes.sqlite"), str(checkpoints), tmp_path / "logs")
    try:
        client = Client(server.url, verbose=False)
        result = client.predict(dialogue, "", api_name="/compare")
        payload = json.loads(result) if isinstance(result, str) else result
        columns = payload["models"]
        assert columns["original"]["error"] is None and columns["original"]["summary"]
        assert locations["full"] in columns["full"]["error"] and "SafetensorError" in columns["full"]["error"]
        assert locations["lora"] in columns["lora"]["error"] and "size mismatch" in columns["lora"]["error"]
        assert columns["full"]["summary"] == "" and columns["lora"]["summary"] == ""
        assert columns["original"]["rouge"] is None  # no reference given: absent, not zero
    finally:
        server.stop()


def test_corrupt_data_and_report_files_are_clear_errors(tmp_path: Path) -> None:
    """Not checkpoints, but read at start-up too: bytes that aren't UTF-8 name the file."""
    from core.data import DataError, read_jsonl
    from core.inputs import InputError
    from core.reports import read_report

    data = tmp_path / "validation.jsonl"
    data.write_bytes(b'{"fname": "a", "dialogue": "hi", "summary": "s"}\n' + b"\xff\xfe\x93\n")
    with pytest.raises(DataError, match=r"validation\.jsonl: not UTF-8"):
        read_jsonl(data)
    _binary(tmp_path / "summary.json")
    with pytest.raises(InputError, match=r"summary\.json is unreadable"):
        read_report(tmp_path)
