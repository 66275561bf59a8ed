"""Train a small sentencepiece (unigram) tokenizer and wrap it as a transformers T5 tokenizer.

Speaker tags such as ``#Person1#`` are user-defined symbols, so they stay one piece each.
The ids follow T5's layout (pad 0, eos 1, unk 2) and 100 ``<extra_id_N>`` sentinels are
appended for span corruption.
"""

from __future__ import annotations

import io
import logging
from collections.abc import Iterable

import sentencepiece as spm
from transformers import T5Tokenizer

logger = logging.getLogger(__name__)

SPEAKER_TAGS: tuple[str, ...] = tuple(f"#Person{i}#" for i in range(1, 10))


def train_tokenizer(texts: Iterable[str], vocab_size: int = 6000) -> T5Tokenizer:
    """Fit a unigram sentencepiece model on ``texts`` and return a T5 tokenizer built on it."""
    model = io.BytesIO()
    spm.SentencePieceTrainer.train(
        sentence_iterator=iter([t for t in texts if t.strip()]),
        model_writer=model,
        vocab_size=vocab_size,
        model_type="unigram",
        character_coverage=1.0,
        pad_id=0,
        eos_id=1,
        unk_id=2,
        bos_id=-1,
        user_defined_symbols=list(SPEAKER_TAGS),
        num_threads=1,  # more threads make the piece scores depend on scheduling
        minloglevel=2,
    )
    processor = spm.SentencePieceProcessor(model_proto=model.getvalue())
    vocab = [(processor.id_to_piece(i), processor.get_score(i)) for i in range(processor.get_piece_size())]
    # User-defined pieces score 0 in the unigram model; keep them whole regardless of spacing.
    tokenizer = T5Tokenizer(vocab=vocab, extra_ids=100)
    logger.info("trained a %d-piece tokenizer (+100 sentinels)", processor.get_piece_size())
    return tokenizer
