"""The streaming chunker: a short first chunk (clause mark or word count), whole sentences after it."""

from __future__ import annotations

import random

import pytest

from spokentod.systems.cascade import playback_stall
from spokentod.systems.sentences import ChunkPolicy, sentence_chunks


def words(text: str) -> list[str]:
    """Word by word with the trailing space, as a streaming tokenizer hands them out."""
    return [w + " " for w in text.split(" ")]


def chunks(pieces, **policy) -> list[str]:
    return list(sentence_chunks(pieces, ChunkPolicy(**policy) if policy else None))


def test_first_chunk_ends_at_the_first_clause_mark_then_whole_sentences():
    text = "Sure, I can help with that. What city are you in? Great."
    got = chunks(words(text))
    assert got == ["Sure,", "I can help with that.", "What city are you in?", "Great."]
    assert " ".join(got) == text


@pytest.mark.parametrize("mark", [",", ";", ":", " —", "—", " -", " –"])
def test_each_clause_mark_ends_the_first_chunk(mark):
    text = f"Right{mark} the hotel has two rooms left tonight. Book now?"
    assert chunks(words(text))[0] == f"Right{mark}"


def test_first_sentence_end_wins_when_it_comes_before_a_clause_mark():
    assert chunks(words("Hello! Well, the hotel is full."))[:2] == ["Hello!", "Well, the hotel is full."]


def test_first_chunk_is_cut_after_n_words_without_a_mark():
    text = "The Grand Hotel downtown has a lovely rooftop bar with a view over the whole city. Shall I book?"
    assert chunks(words(text), first_chunk_words=4)[0] == "The Grand Hotel downtown"
    assert chunks(words(text), first_chunk_words=6)[0] == "The Grand Hotel downtown has a lovely"  # not on "a"
    got = chunks(words(text), first_chunk_words=4)
    assert got[1:] == ["has a lovely rooftop bar with a view over the whole city.", "Shall I book?"]
    assert " ".join(got) == text


def test_word_count_cut_does_not_end_on_a_function_word_but_goes_at_most_two_words_on():
    text = "I think that the very best of the options is the second one."
    # 3rd word "that", 4th "the", 5th "very" are glue words: two more at most, so it ends after "very"
    assert chunks(words(text), first_chunk_words=3)[0] == "I think that the very"


def test_a_mark_inside_the_first_n_words_comes_first():
    text = "Okay, the Grand Hotel downtown has rooms."
    assert chunks(words(text), first_chunk_words=4)[0] == "Okay,"


@pytest.mark.parametrize("text", [
    "It costs 10,000 dollars per night at the Grand.",
    "Check in at 10:30 tomorrow morning at the Grand.",
    "The rating is 4.5 out of five at the Grand.",
    "Ask Mr. Smith at the front desk tonight please.",
])
def test_numbers_times_and_abbreviations_are_never_cut(text):
    # the number split across pieces the way a tokenizer would hand it over
    pieces = [p for w in words(text) for p in ((w[:3], w[3:]) if any(c.isdigit() for c in w) else (w,))]
    got = chunks(pieces, first_chunk_words=0)
    assert got == [text]


def test_a_mark_counts_only_once_the_white_space_after_it_arrived():
    got = list(sentence_chunks(iter(["It is 10,", "000 a night", "."])))
    assert got == ["It is 10,000 a night."]


@pytest.mark.parametrize("text, expected", [
    ("", []),
    ("   ", []),
    ("Hi.", ["Hi."]),
    ("Ok", ["Ok"]),
    ("Sure thing", ["Sure thing"]),
    ("Of course! Anything else?", ["Of course!", "Anything else?"]),
])
def test_short_replies(text, expected):
    assert chunks(words(text) if text else []) == expected


def test_later_chunks_are_whole_sentences_short_ones_joined_long_ones_cut_at_a_clause():
    text = "Sure. Great. Fine then. And do you have a price range in mind for the hotel tonight, or not? Ok."
    got = chunks(words(text))
    assert got == ["Sure.", "Great. Fine then.",
                   "And do you have a price range in mind for the hotel tonight,", "or not? Ok."]


def test_first_chunk_rule_off_gives_whole_sentences():
    text = "Sure! I can help with that. What city are you in? Great."
    got = chunks(words(text), first_chunk_words=0, first_min_words=3)
    assert got == ["Sure! I can help with that.", "What city are you in?", "Great."]


@pytest.mark.parametrize("text", [
    "That's a great example of how you can have a fun and relaxing day, but also have a full day. I'm sure",
    "It costs $10,000 at 10:30, or 3.5 percent. Mr. Smith agrees, e.g. today.",
    "Well—let's see: the Grand (downtown) has rooms; \"the Ritz.\" does not! Okay?",
])
def test_chunks_do_not_depend_on_how_the_stream_is_split(text):
    expected = chunks([text])
    assert " ".join(expected).split() == text.split()
    for seed in range(30):
        rng, pieces, i = random.Random(seed), [], 0
        while i < len(text):
            j = i + rng.randint(1, 7)
            pieces.append(text[i:j])
            i = j
        assert chunks(pieces) == expected, pieces


def test_policy_from_config_checks_its_fields():
    assert ChunkPolicy.from_config(None) == ChunkPolicy()
    assert ChunkPolicy.from_config({"first_chunk_words": 3}).first_chunk_words == 3
    with pytest.raises(ValueError, match="unknown chunking option"):
        ChunkPolicy.from_config({"first_words": 3})
    with pytest.raises(ValueError, match="non-negative"):
        ChunkPolicy(first_chunk_words=-1)
    assert ChunkPolicy().identity()["first_chunk_words"] == 5


def test_playback_stall_counts_the_listener_waiting_between_chunks():
    assert playback_stall([]) == 0.0
    assert playback_stall([(1.0, 2.0)]) == 0.0
    # chunk 1 plays 1.0-3.0; chunk 2 is ready at 2.5: no wait; chunk 3 ready at 6.0, playback free at 4.0
    assert playback_stall([(1.0, 2.0), (2.5, 1.0), (6.0, 1.0)]) == pytest.approx(2.0)
    assert playback_stall([(1.0, 2.0), (3.05, 1.0)], gap=0.1) == pytest.approx(0.0)
    assert playback_stall([(1.0, 2.0), (3.5, 1.0)], gap=0.1) == pytest.approx(0.4)
