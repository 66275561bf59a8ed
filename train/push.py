"""Publish a trained checkpoint to the Hub so the app can serve it as ``ARENA_FULL``/``ARENA_LORA``.

``python -m train.full --push-to-hub REPO`` calls :func:`push_checkpoint` after training;
``python -m train.push DIR REPO`` publishes an existing output directory later, e.g. after
``python -m train.evaluate`` has scored it, so that the card carries the scores.

What is uploaded is what the app reads back: the weights (or, for LoRA, only the adapter), the
tokenizer, ``generation_config.json``, ``arena.json`` and a model card whose front matter has
``library_name``, ``base_model``, ``datasets`` and, when an evaluation report of this very
checkpoint exists, a ``model-index`` with its ROUGE scores.
"""

from __future__ import annotations

import argparse
import logging
import sys
from collections.abc import Sequence
from pathlib import Path
from typing import Any

from core.checkpoints import read_metadata
from core.jsonfile import JsonFileError, read_json_object
from core.metrics import ROUGE_TYPES
from train.metadata import CARD_FILE, model_card, portable_location

logger = logging.getLogger(__name__)

TRAINER_DIR = "trainer"  # train.common's resumable checkpoints: never published
REPORT_FILE = "summary.json"
TOKENIZER_FILES = ("tokenizer.json", "spiece.model", "tokenizer_config.json")
REQUIRED: dict[str, tuple[tuple[str, ...], ...]] = {
    # one file of each tuple must exist
    "full": (("model.safetensors", "model.safetensors.index.json"), ("config.json",)),
    "lora": (("adapter_model.safetensors",), ("adapter_config.json",)),
}


class PushError(RuntimeError):
    """The directory is not a complete checkpoint, or the Hub refused it; the message says which."""


def check_complete(directory: Path, meta: dict[str, Any]) -> None:
    """Refuse a directory the app could not serve back (names the missing file)."""
    method = meta.get("method")
    if method not in REQUIRED:
        raise PushError(f"{directory}/arena.json names no known method (full or lora): {method!r}")
    groups = (*REQUIRED[method], TOKENIZER_FILES, ("generation_config.json",), ("arena.json",))
    for group in groups:
        if not any((directory / name).is_file() for name in group):
            raise PushError(f"{directory} is incomplete: missing {' or '.join(group)}")


def evaluation_for(
    directory: Path, meta: dict[str, Any], report_dir: str | Path | None
) -> dict[str, Any] | None:
    """This checkpoint's scores from the report in ``report_dir``, or ``None``.

    Only a report that evaluated this directory (``model_locations``) after this training run
    finished counts: an older report scored a previous run written to the same place.
    """
    if report_dir is None:
        return None
    path = Path(report_dir) / REPORT_FILE
    try:
        report = read_json_object(path, on_error="raise")
    except JsonFileError as err:
        logger.warning("not adding evaluation results: %s", err)
        return None
    if report is None:
        return None
    method = meta["method"]
    evaluated = (report.get("model_locations") or {}).get(method)
    if evaluated not in (portable_location(str(directory)), str(directory)):
        logger.info("report %s evaluated %r, not %s: no scores on the card", path, evaluated, directory)
        return None
    if str(report.get("created_at", "")) < str(meta.get("finished_at", "")):
        logger.info("report %s predates this training run: no scores on the card", path)
        return None
    scores = (report.get("models") or {}).get(method) or {}
    metrics = {
        m: float(scores[m]["mean"])
        for m in ROUGE_TYPES
        if isinstance(scores.get(m), dict) and isinstance(scores[m].get("mean"), (int, float))
    }
    if not metrics:
        return None
    return {"split": report.get("split"), "n": report.get("n"), "dataset": None, "metrics": metrics}


def push_checkpoint(
    directory: str | Path, repo_id: str, *, report_dir: str | Path | None = None, api: Any = None
) -> dict[str, Any] | None:
    """Rewrite the card for ``repo_id`` (with the report's scores when they are this run's) and
    upload ``directory``; return the evaluation put on the card, if any."""
    from huggingface_hub import HfApi

    directory = Path(directory)
    meta = read_metadata(directory)
    if meta is None:
        raise PushError(f"{directory} has no readable arena.json: is it a train.full/train.lora output?")
    check_complete(directory, meta)
    evaluation = evaluation_for(directory, meta, report_dir)
    (directory / CARD_FILE).write_text(
        model_card(meta, repo_id=repo_id, evaluation=evaluation), encoding="utf-8"
    )
    api = api if api is not None else HfApi()
    try:
        api.create_repo(repo_id, exist_ok=True)
        api.upload_folder(
            folder_path=str(directory),
            repo_id=repo_id,
            ignore_patterns=[f"{TRAINER_DIR}/*"],
            commit_message=f"Upload {meta['method']} checkpoint from the dialogue-summary arena",
        )
    except Exception as err:
        raise PushError(f"upload of {directory} to {repo_id} failed: {err}") from err
    logger.info("pushed %s to https://huggingface.co/%s", directory, repo_id)
    return evaluation


def main(argv: Sequence[str] | None = None) -> int:
    """``python -m train.push DIR REPO [--report DIR]``."""
    parser = argparse.ArgumentParser(
        prog="python -m train.push",
        description="Upload a train.full/train.lora output directory to a Hub model repo (needs `hf auth "
        "login`). Serve it with ARENA_FULL=REPO or ARENA_LORA=REPO (optionally REPO@revision).",
    )
    parser.add_argument("directory", help="the output directory of python -m train.full or train.lora")
    parser.add_argument("repo", help="Hub model repo, owner/name (created when missing)")
    parser.add_argument(
        "--report",
        default=None,
        metavar="DIR",
        help="directory of a train.evaluate report (summary.json) whose scores of this checkpoint go "
        "into the card's model-index",
    )
    args = parser.parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="%(levelname)s %(name)s: %(message)s")
    try:
        evaluation = push_checkpoint(args.directory, args.repo, report_dir=args.report)
    except PushError as err:
        print(f"error: {err}", file=sys.stderr)
        return 2
    scored = " with evaluation results" if evaluation else ""
    print(f"pushed {args.directory} to https://huggingface.co/{args.repo}{scored}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
