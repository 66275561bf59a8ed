"""The one instruction prompt shared by training and serving."""

from __future__ import annotations

PROMPT_HEAD = "Summarize the following conversation.\n\n"
PROMPT_TAIL = "\n\nSummary: "


def build_prompt(dialogue: str) -> str:
    """Wrap a dialogue in the lab's instruction prompt.

    Training (``train/``) and serving (``core.generation``) both call this, so a model is
    always asked the question it was taught to answer.
    """
    return f"{PROMPT_HEAD}{dialogue.strip()}{PROMPT_TAIL}"


def clean_text(text: str) -> str:
    """Normalise user text: unify newlines, drop NUL and other control characters.

    Tabs and newlines survive (dialogues put one turn per line); everything else below U+0020
    and DEL would only confuse the tokenizer or the browser. Lone surrogates (U+D800-U+DFFF,
    which JSON's ``\\ud800`` escapes can deliver through the API) are dropped too: the tokenizer
    raises on them.
    """
    text = text.replace("\r\n", "\n").replace("\r", "\n")
    return "".join(
        ch
        for ch in text
        if ch in "\n\t" or (ord(ch) >= 32 and ord(ch) != 127 and not 0xD800 <= ord(ch) <= 0xDFFF)
    )
