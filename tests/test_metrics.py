from __future__ import annotations

import pytest

from core.metrics import ROUGE_TYPES, overlap_spans, rouge


def test_rouge_matches_hand_computed_values() -> None:
    # prediction: the cat sat on the mat / reference: the cat is on the mat
    # unigrams: 5 of 6 match both ways; bigrams: the-cat, on-the, the-mat = 3 of 5;
    # LCS "the cat on the mat" = 5 of 6.
    scores = rouge("the cat sat on the mat", ["the cat is on the mat"])
    assert scores == pytest.approx({"rouge1": 5 / 6, "rouge2": 3 / 5, "rougeL": 5 / 6, "rougeLsum": 5 / 6})


def test_rouge_is_unstemmed_and_lowercases_speaker_tags() -> None:
    # "#Person1#" tokenizes to "person1"; without stemming "talks" != "talk".
    scores = rouge("#Person1# talks", "person1 talk")
    assert scores["rouge1"] == pytest.approx(0.5)


def test_precision_and_recall_differ_for_unequal_lengths() -> None:
    # 2 matching unigrams; P = 2/2, R = 2/4 -> F = 2PR/(P+R) = 2/3
    assert rouge("cat mat", "the cat the mat")["rouge1"] == pytest.approx(2 / 3)


def test_several_references_take_the_best_per_metric() -> None:
    refs = ["a b c d", "a x b y"]
    scores = rouge("a b x y", refs)
    # rouge1 best: ref 2 (4 of 4); rouge2 best: ref 1 has "a b" (1 of 3) vs ref 2 "x y" (1 of 3).
    assert scores["rouge1"] == pytest.approx(1.0)
    assert scores["rouge2"] == pytest.approx(1 / 3)
    assert rouge("a b x y", refs[:1])["rouge1"] == pytest.approx(0.5)


def test_missing_reference_is_absent_not_zero() -> None:
    assert rouge("anything", []) is None
    assert rouge("anything", ["", "  "]) is None
    assert rouge("anything", "") is None


def test_no_overlap_scores_zero() -> None:
    assert rouge("alpha beta", "gamma delta") == dict.fromkeys(ROUGE_TYPES, 0.0)


def test_overlap_spans_label_shared_words_and_join_back() -> None:
    summary = "#Person1# asks Tom about the party."
    spans = overlap_spans(summary, ["Person1 invites Tom to a party"])
    assert "".join(text for text, _ in spans) == summary
    labelled = {text.strip(" .") for text, label in spans if label == "overlap"}
    assert labelled == {"#Person1#", "Tom", "party"}
    assert [label for _, label in spans] == ["overlap", None, "overlap", None, "overlap"]


def test_overlap_spans_without_reference_mark_nothing() -> None:
    assert overlap_spans("hello there", []) == [("hello there", None)]
    assert overlap_spans("", ["x"]) == []
