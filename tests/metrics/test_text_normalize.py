from spokentod.metrics.text import basic_normalize, normalize_for_wer


def test_times_and_spelled_numbers_agree():
    assert normalize_for_wer("A table at seven thirty.") == normalize_for_wer("a table at 7:30")


def test_contractions_punctuation_case():
    assert normalize_for_wer("I'd like TWO tickets, please!") == "i would like 2 tickets please"


def test_ampersand_and_basic_fallback():
    assert normalize_for_wer("rock & roll") == "rock and roll"
    assert basic_normalize("Rock & Roll!") == "rock and roll"
