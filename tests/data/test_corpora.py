"""What every JSON corpus loader shares: detection from its files, and malformed JSON reported with the
file it came from. Each corpus's own records, states and errors are tested in test_corpora_<name>.py."""

from __future__ import annotations

import pytest

from spokentod.data import corpora
from spokentod.errors import DataError

DETECT = [
    ("multiwoz/mwz21_convlab2/val.json", "multiwoz21"),
    ("multiwoz/mwz21_convlab2", "multiwoz21"),
    ("multiwoz/mwz21_original_format_examples_dialogstudio.json", "multiwoz21"),
    ("multiwoz/mwz22/examples_dialogstudio.json", "multiwoz22"),
    ("salesbot/salesbot1", "salesbot1"),
    ("salesbot/salesbot1/simulators_examples.json", "salesbot1"),
    ("salesbot/salesbot2/MSGD_dataset.json", "salesbot2"),
    ("salesbot/salesbot2/test_tod_in_the_end.json", "salesbot2-sharegpt"),
    ("sgd", "sgd"),
    ("sgd/dev", "sgd"),
    ("sgd/test/dialogues_009.json", "sgd"),
]

MALFORMED = [  # (corpus, file name its loader expects, JSON cut short)
    ("dialogstudio", "converted_examples.json", '{"A--train--1": {'),
    ("multiwoz21", "d.json", '{"A1": {"log": ['),
    ("multiwoz22", "dialogues_001.json", '[{"dialogue_id": '),
    ("salesbot1", "sb1.json", "[1,"),
    ("salesbot2", "msgd.json", "[{"),
    ("salesbot2-sharegpt", "sharegpt.json", '[{"id": "x", '),
    ("sgd", "dialogues_001.json", "[{"),
]


@pytest.mark.parametrize(("path", "name"), DETECT)
def test_detect(data_dir, path, name):
    assert corpora.detect(data_dir / path) == name


@pytest.mark.parametrize(("corpus", "name", "text"), MALFORMED)
def test_malformed_json_names_the_file(tmp_path, corpus, name, text):
    p = tmp_path / name
    p.write_text(text)
    with pytest.raises(DataError, match="malformed JSON") as e:
        corpora.load(corpus, p)
    assert e.value.problems[0].file == str(p)
