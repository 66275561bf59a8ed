"""The mini preset's instruction tasks (train/tasks.py) and the mini build's options."""

from __future__ import annotations

import json
import random
import re
from pathlib import Path

import pytest

from train.mini import MiniOptions, fine_tuning_limit, parse_options
from train.tasks import (
    STOPWORDS,
    build_tasks,
    content_words,
    copy_tasks,
    dialogue_tasks,
    document_frequencies,
    key_words,
    load_dream,
    question_tasks,
    turns,
)

DIALOGUE = (
    "#Person1#: Hi Maria, can we move the budget meeting to Thursday?\n"
    "#Person2#: Thursday works for me. Shall we meet in the library?\n"
    "#Person1#: Yes, the library at ten. Please bring the budget report.\n"
    "#Person2#: Sure, I will print the budget report tonight."
)
OTHERS = [
    "#Person1#: Where is the station?\n#Person2#: Turn left at the bank.",
    "#Person1#: I need a ticket.\n#Person2#: One way or return?",
    "#Person1#: The soup is cold.\n#Person2#: I am sorry, I will bring another soup.",
]


def test_turns_and_content_words_drop_tags_and_stopwords() -> None:
    assert turns(DIALOGUE)[0] == ("#Person1#", "Hi Maria, can we move the budget meeting to Thursday?")
    words = content_words(DIALOGUE)
    assert "Maria" in words and "budget" in words and "library" in words
    assert not any(w.startswith("#") or w.lower() in STOPWORDS or "'" in w for w in words)


def test_key_words_prefer_the_dialogues_own_rare_words_in_order_of_mention() -> None:
    df, total = document_frequencies([DIALOGUE, *OTHERS])
    # repeated words unique to this dialogue win; they are listed in order of first mention
    assert key_words(DIALOGUE, df, total, limit=4) == ["budget", "Thursday", "library", "report"]
    assert "Maria" in key_words(DIALOGUE, df, total, limit=8)


def test_dialogue_tasks_targets_come_from_the_dialogue_and_never_ask_for_a_summary() -> None:
    df, total = document_frequencies([DIALOGUE, *OTHERS])
    pairs = dialogue_tasks(DIALOGUE, df, total, random.Random(0))
    assert len(pairs) >= 4
    for prompt, target in pairs:
        assert "Summar" not in prompt, prompt
        assert target.strip(), prompt
        # every target word is read off the dialogue (copying is what these tasks teach)
        source = DIALOGUE
        for word in re.findall(r"[A-Za-z]+", target.replace("#Person", " ")):
            assert word in source, (word, prompt)
    gap = [p for p in pairs if "missing turn" in p[0]]
    assert gap and gap[0][1].split(": ", 1)[1] not in gap[0][0]  # the hidden turn is not in the input
    assert dialogue_tasks("#Person1#: Hello.", df, total, random.Random(0)) == []


def test_copy_tasks_repeat_every_short_turn() -> None:
    pairs = copy_tasks([DIALOGUE, "#Person1#: Hi.\n#Person2#: " + "word " * 40], seed=0)
    assert len(pairs) == 4  # the four turns of DIALOGUE; "Hi." and the 40-word turn are left out
    assert all(
        prompt.startswith("Repeat the following sentence.") and target in prompt for prompt, target in pairs
    )


def test_dream_is_read_from_its_directory_with_clear_errors(tmp_path: Path) -> None:
    with pytest.raises(FileNotFoundError, match=r"dialogues\.jsonl"):
        load_dream(tmp_path)
    row = {
        "id": "dream-train-1",
        "dialogue": "#Person1#: Is the shop open?\n#Person2#: Yes, until nine.",
        "questions": [{"question": "When does the shop close?", "choices": ["At 8", "At 9", "At 10"], "answer": "At 9"}],
    }  # fmt: skip
    (tmp_path / "dialogues.jsonl").write_text(json.dumps(row) + "\n", encoding="utf-8")
    (item,) = load_dream(tmp_path)
    ((prompt, answer),) = question_tasks(item)
    assert answer == "At 9" and "When does the shop close?" in prompt and "At 8; At 9; At 10" in prompt
    (tmp_path / "dialogues.jsonl").write_text('{"id": "x"}\n', encoding="utf-8")
    with pytest.raises(ValueError, match=r"dialogues\.jsonl:1"):
        load_dream(tmp_path)


def test_build_tasks_is_deterministic_for_a_seed() -> None:
    assert build_tasks([DIALOGUE, *OTHERS], seed=3) == build_tasks([DIALOGUE, *OTHERS], seed=3)
    assert build_tasks([DIALOGUE, *OTHERS], seed=3) != build_tasks([DIALOGUE, *OTHERS], seed=4)


def test_mini_flags_come_from_the_options_dataclass() -> None:
    options = parse_options(["--pretrain-steps", "7", "--tasks", "--holdout", "50", "--dream", ""])
    assert options.pretrain_steps == 7 and options.tasks is True and options.holdout == 50
    assert options.dream == ""
    assert parse_options([]).pretrain_steps == MiniOptions().pretrain_steps  # one set of defaults
    assert parse_options(["--pretrain_steps", "9"]).pretrain_steps == 9  # both spellings


def test_holdout_keeps_the_last_validation_dialogues_out_of_fine_tuning() -> None:
    assert fine_tuning_limit(500, MiniOptions(holdout=50)) == 450
    assert fine_tuning_limit(500, MiniOptions(holdout=50, train_limit=100)) == 100
    with pytest.raises(ValueError, match="no validation dialogues left"):
        fine_tuning_limit(10, MiniOptions(holdout=10))


def test_pretraining_mixes_pairs_and_windows_in_one_collator() -> None:
    from train.pretrain import LABEL_PAD, SpanCorruptionCollator
    from train.tokenizer import train_tokenizer

    tokenizer = train_tokenizer([DIALOGUE, *OTHERS] * 20, vocab_size=80)
    pair = {"input_ids": [5, 6, 7, 1], "labels": [8, 9, 1]}
    window = {"input_ids": list(range(10, 40)), "labels": []}
    batch = SpanCorruptionCollator(tokenizer, seed=0)([pair, window])
    assert batch["input_ids"][0, :4].tolist() == [5, 6, 7, 1]  # a pair passes through untouched
    assert batch["labels"][0, :3].tolist() == [8, 9, 1] and set(batch["labels"][0, 3:].tolist()) <= {
        LABEL_PAD
    }
    sentinel = tokenizer.convert_tokens_to_ids("<extra_id_0>")
    assert sentinel in batch["input_ids"][1].tolist()  # a window is corrupted
