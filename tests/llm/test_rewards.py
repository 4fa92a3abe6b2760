"""Utility-table rewards (paper eq. 3) and the classifier reward, against hand-worked values."""

from __future__ import annotations

import pytest

from rlsae.errors import RlsaeError
from rlsae.llm.rewards import (
    ClassifierReward,
    ClassifierRewardConfig,
    UtilityReward,
    UtilityRewardConfig,
    UtilityTable,
    split_words,
    utility_reward,
    vader_lexicon_path,
)


def test_vader_table_matches_lexicon_file():
    table = UtilityTable.vader()
    # Values read straight off vader_lexicon.txt, column 2.
    assert table.get("good") == pytest.approx(1.9)
    assert table.get("bad") == pytest.approx(-2.5)
    assert table.get("superb") == pytest.approx(3.1)
    assert table.get(":)") == pytest.approx(2.0)
    assert table.get("movie") == 0.0
    n_lines = sum(1 for line in vader_lexicon_path().read_text().splitlines() if line.strip())
    assert 7000 < len(table) <= n_lines


@pytest.mark.parametrize(
    ("text", "words"),
    [
        ("The film was GOOD, not bad!", ["the", "film", "was", "good", "not", "bad"]),
        ("(awful)... don't   watch", ["awful", "don't", "watch"]),
        ("well-made; 'great' :)", ["well-made", "great", ":)"]),
        ("  \n\t ", []),
        ("--- !!! good", ["good"]),
    ],
)
def test_split_words_hand_worked(text, words):
    assert UtilityTable.vader().split(text) == words


def test_split_words_without_table_strips_emoticons():
    assert split_words("nice :)") == ["nice"]


def test_utility_and_reward_hand_worked():
    table = UtilityTable.vader()
    # good 1.9 + bad -2.5 = -0.6; reward = -0.6 / 5 = -0.12
    assert table.utility("The film was GOOD, not bad!") == pytest.approx(-0.6)
    assert utility_reward("The film was GOOD, not bad!", table) == pytest.approx(-0.12)
    # superb 3.1 + great 3.1 + wonderful 2.7 = 8.9 -> 1.78
    assert utility_reward("Superb, great and wonderful.", table) == pytest.approx(1.78)
    assert table.abs_utility("good bad") == pytest.approx(4.4)


def test_reward_clip_and_scale():
    table = UtilityTable({"win": 30.0, "lose": -30.0})
    assert utility_reward("win win", table) == 10.0  # 60/5 = 12 clipped to 10
    assert utility_reward("lose lose", table) == -10.0
    assert utility_reward("win win", table, clip=None) == pytest.approx(12.0)
    assert utility_reward("win", table, scale=1.0, clip=50) == pytest.approx(30.0)


def test_reward_callable_prefix_and_completion():
    table = UtilityTable({"good": 2.0, "bad": -4.0})
    both = UtilityReward(UtilityRewardConfig(), table)
    only = UtilityReward(UtilityRewardConfig(completion_only=True), table)
    prefixes = ["a bad film, but", "the plot was goo"]
    completions = [" good acting", "d"]
    # prefix + completion: bad + good = -2 -> -0.4 ; "goo"+"d" joins into "good" -> 0.4
    assert both(prefixes, completions) == pytest.approx([-0.4, 0.4])
    # completion only: good -> 0.4 ; "d" -> 0
    assert only(prefixes, completions) == pytest.approx([0.4, 0.0])


def test_user_table_tsv(tmp_path):
    path = tmp_path / "u.tsv"
    path.write_text("# my table\nGreat\t2\n\nawful\t-3.5\textra column ignored\n")
    table = UtilityTable.from_tsv(path)
    assert table.utilities == {"great": 2.0, "awful": -3.5}
    assert table.utility("great, awful, GREAT") == pytest.approx(0.5)
    # round trip
    table.save_tsv(tmp_path / "v.tsv")
    assert UtilityTable.from_tsv(tmp_path / "v.tsv").utilities == table.utilities


@pytest.mark.parametrize(
    ("content", "lineno"),
    [("good\t1\nbad -2\n", 2), ("good\t1\n\nnice\tvery\n", 3), ("\tx\n", 1), ("a\tnan\n", 1)],
)
def test_malformed_table_names_line(tmp_path, content, lineno):
    path = tmp_path / "bad.tsv"
    path.write_text(content)
    with pytest.raises(RlsaeError, match=rf"bad.tsv:{lineno}: malformed") as e:
        UtilityTable.from_tsv(path)
    assert "\n" not in str(e.value)


def test_missing_and_empty_table(tmp_path):
    with pytest.raises(RlsaeError, match="not found"):
        UtilityTable.from_tsv(tmp_path / "nope.tsv")
    (tmp_path / "empty.tsv").write_text("# nothing\n")
    with pytest.raises(RlsaeError, match="no entries"):
        UtilityTable.from_tsv(tmp_path / "empty.tsv")


def test_classifier_reward_is_positive_logit(tiny_classifier):
    import torch

    path, model, tok = tiny_classifier
    reward = ClassifierReward(ClassifierRewardConfig(model=str(path), batch_size=2))
    assert reward.label_index == 1
    prefixes, completions = ["great", "awful film", "film"], [" film", " great", ""]
    got = reward(prefixes, completions)
    # Reference: the same saved model run directly, one text at a time (no padding).
    model.eval()
    want = []
    for p, c in zip(prefixes, completions, strict=True):
        enc = tok(p + c, return_tensors="pt")
        with torch.no_grad():
            want.append(model(**enc).logits[0, 1].item())
    assert got == pytest.approx(want, abs=1e-5)
    neg = ClassifierReward(ClassifierRewardConfig(model=str(path), positive_label="NEGATIVE"))
    assert neg.label_index == 0
    only = ClassifierReward(ClassifierRewardConfig(model=str(path), completion_only=True))
    assert only(["awful film"], [" great"]) == pytest.approx(reward(["great"], [""]), abs=1e-5)


def test_classifier_reward_bad_inputs(tiny_classifier, tmp_path):
    path, _, _ = tiny_classifier
    with pytest.raises(RlsaeError, match="not found"):
        ClassifierReward(ClassifierRewardConfig(model=str(tmp_path / "missing")))
    with pytest.raises(RlsaeError, match="not among"):
        ClassifierReward(ClassifierRewardConfig(model=str(path), positive_label="HAPPY"))
