"""Instruction tasks over dialogue text: the mini preset's small "Flan" stage.

Flan-T5 followed instructions about a text before anyone fine-tuned it on DialogSum; the mini
original gets the same kind of start. Each task below pairs an instruction with a target that
cannot be written without reading the dialogue (names and objects mentioned, what one speaker
said first, a missing turn, answers to DREAM's questions), so the decoder learns to write whole
phrases *and* to copy from the encoder. None of them uses a DialogSum summary: the original
must never see one. Every task has its own instruction, and none is "Summarize ...", so the
summary prompt stays new to the original.

DREAM (``../shared/dream``, read through a path setting) adds 6,297 dialogues and 9,837
reading-comprehension questions; without it the tasks run on DialogSum's dialogue text alone.
"""

from __future__ import annotations

import json
import logging
import math
import random
import re
from collections import Counter
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from pathlib import Path

logger = logging.getLogger(__name__)

ANSWER_CUE = "\n\nAnswer: "
SPEAKER = re.compile(r"^(#Person\d+#):\s*(.*)$")
WORD = re.compile(r"[A-Za-z][A-Za-z'-]*[A-Za-z]|[A-Za-z]")
# Function words never count as "things mentioned" (a short list is enough: rare words win on idf).
_STOPWORD_TEXT = """a about above after again against all also am an and any are as at be because been before
    being below between both but by can could did do does doing don down during each few for from
    further get got had has have having he her here hers herself him himself his how i if in into
    is it its itself just know let like ll me more most much must my myself no nor not now of off
    oh ok okay on once only or other our ours ourselves out over own please re really right s same
    say see she should so some such sure t than thank thanks that the their theirs them themselves
    then there these they think this those through to too under until up us ve very want was way
    we well were what when where which while who whom why will with would yeah yes you your yours
    yourself yourselves go going good great one two time well"""
STOPWORDS = frozenset(_STOPWORD_TEXT.split())


@dataclass(frozen=True)
class DreamDialogue:
    """One DREAM dialogue (speakers already renamed ``#PersonN#``) with its questions."""

    id: str
    dialogue: str
    questions: tuple[tuple[str, tuple[str, ...], str], ...]  # (question, choices, answer)


def load_dream(directory: str | Path) -> list[DreamDialogue]:
    """Read ``dialogues.jsonl`` of a DREAM directory; a clear ``FileNotFoundError`` if absent."""
    path = Path(directory).expanduser() / "dialogues.jsonl"
    if not path.is_file():
        raise FileNotFoundError(
            f"no DREAM data at {path} (expected dialogues.jsonl; see shared/dream/README.md)"
        )
    rows = []
    with path.open(encoding="utf-8") as handle:
        for number, line in enumerate(handle, 1):
            if not line.strip():
                continue
            try:
                row = json.loads(line)
                questions = tuple(
                    (q["question"], tuple(q["choices"]), q["answer"]) for q in row.get("questions", [])
                )
                rows.append(DreamDialogue(str(row["id"]), str(row["dialogue"]).strip(), questions))
            except (ValueError, KeyError, TypeError) as err:
                raise ValueError(f"{path}:{number}: malformed DREAM row ({err})") from err
    return rows


def turns(dialogue: str) -> list[tuple[str, str]]:
    """``[(speaker, text)]`` of a ``#PersonN#: text`` dialogue (lines without a tag are skipped)."""
    out = []
    for line in dialogue.splitlines():
        match = SPEAKER.match(line.strip())
        if match and match.group(2).strip():
            out.append((match.group(1), match.group(2).strip()))
    return out


def content_words(text: str) -> list[str]:
    """Words of ``text`` that can carry content: no speaker tags, no stopwords, not one letter."""
    text = re.sub(r"#Person\d+#", " ", text)
    # Contractions ("you've") are function words in disguise.
    return [w for w in WORD.findall(text) if len(w) > 2 and "'" not in w and w.lower() not in STOPWORDS]


def document_frequencies(dialogues: Iterable[str]) -> tuple[Counter, int]:
    """How many dialogues each lower-cased content word occurs in, and the number of dialogues."""
    counts: Counter = Counter()
    total = 0
    for dialogue in dialogues:
        counts.update({w.lower() for w in content_words(dialogue)})
        total += 1
    return counts, total


def key_words(dialogue: str, df: Counter, total: int, limit: int = 8) -> list[str]:
    """The dialogue's most telling words (tf-idf), listed in order of first mention."""
    words = content_words(dialogue)
    tf = Counter(w.lower() for w in words)
    score = {w: tf[w] * math.log((1 + total) / (1 + df.get(w, 0))) for w in tf}
    best = set(sorted(score, key=lambda w: (-score[w], w))[:limit])
    seen: list[str] = []
    for word in words:
        if word.lower() in best and word.lower() not in {s.lower() for s in seen}:
            seen.append(word)
    return seen


def _first_sentence(text: str, max_words: int = 30) -> str:
    sentence = re.split(r"(?<=[.!?])\s+", text.strip())[0]
    return " ".join(sentence.split()[:max_words])


def copy_pair(text: str) -> tuple[str, str]:
    """One plain copying example: the instruction and the sentence, and the sentence back."""
    return f"Repeat the following sentence.\n\n{text}{ANSWER_CUE}", text


def _ask(instruction: str, dialogue: str, cue: str = ANSWER_CUE) -> str:
    return f"{instruction}\n\n{dialogue.strip()}{cue}"


def dialogue_tasks(dialogue: str, df: Counter, total: int, rng: random.Random) -> list[tuple[str, str]]:
    """The instruction pairs ``(input, target)`` one dialogue yields (none for a one-turn text)."""
    spoken = turns(dialogue)
    if len(spoken) < 2:
        return []
    pairs = []
    words = key_words(dialogue, df, total)
    if len(words) >= 3:
        pairs.append(
            (
                _ask("List the names and things mentioned in the following conversation.", dialogue),
                ", ".join(words),
            )
        )
    # Plain copying, on one short turn: the cheapest way to teach the decoder to read the encoder.
    short = [t for _, t in spoken if 3 <= len(t.split()) <= 30]
    for text in rng.sample(short, min(2, len(short))):
        pairs.append(copy_pair(text))
    speaker = rng.choice(sorted({s for s, _ in spoken}))
    first = next(text for s, text in spoken if s == speaker)
    pairs.append(
        (
            _ask(f"What does {speaker} say first in the following conversation?", dialogue),
            _first_sentence(first),
        )
    )
    # Gap turn (PEGASUS-style): hide the turn that shares most words with the rest and ask for it.
    if len(spoken) >= 4:
        vocab = [set(w.lower() for w in content_words(t)) for _, t in spoken]
        overlap = [
            len(v & set().union(*(o for j, o in enumerate(vocab) if j != i))) for i, v in enumerate(vocab)
        ]
        hidden = max(range(1, len(spoken)), key=lambda i: (overlap[i], -i))
        gapped = "\n".join(f"{s}: {'<extra_id_0>' if i == hidden else t}" for i, (s, t) in enumerate(spoken))
        pairs.append(
            (
                _ask("Write the missing turn <extra_id_0> of the following conversation.", gapped),
                f"{spoken[hidden][0]}: {_first_sentence(spoken[hidden][1], 40)}",
            )
        )
    return pairs


def copy_tasks(dialogues: Iterable[str], seed: int = 0) -> list[tuple[str, str]]:
    """Every short turn (3-30 words) as "repeat this sentence": pure copying, cheap to train on."""
    pairs = [
        copy_pair(text)
        for dialogue in dialogues
        for _, text in turns(dialogue)
        if 3 <= len(text.split()) <= 30
    ]
    random.Random(seed).shuffle(pairs)
    return pairs


def question_tasks(item: DreamDialogue) -> list[tuple[str, str]]:
    """DREAM's reading-comprehension questions as instruction pairs (answer as free text)."""
    pairs = []
    for question, choices, answer in item.questions:
        options = "; ".join(choices)
        prompt = (
            f"Answer the question about the following conversation.\n\n{item.dialogue}\n\n"
            f"Question: {question}\nOptions: {options}{ANSWER_CUE}"
        )
        pairs.append((prompt, answer))
    return pairs


def build_tasks(
    dialogues: Sequence[str], dream: Sequence[DreamDialogue] = (), seed: int = 0
) -> list[tuple[str, str]]:
    """Every instruction pair of ``dialogues`` and ``dream``, in a seeded order."""
    rng = random.Random(seed)
    texts = list(dialogues) + [d.dialogue for d in dream]
    df, total = document_frequencies(texts)
    pairs: list[tuple[str, str]] = []
    for text in texts:
        pairs.extend(dialogue_tasks(text, df, total, rng))
    for item in dream:
        pairs.extend(question_tasks(item))
    rng.shuffle(pairs)
    logger.info("built %d instruction pairs from %d dialogues", len(pairs), len(texts))
    return pairs
