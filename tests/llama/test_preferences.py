"""helpers.llama.preferences: the chat lab's data (data/llama/chat/) and the written rule that labels comparisons."""

import json
import random

import pytest
import torch

from helpers.llama.chat import PREFERENCE_LEVELS
from helpers.llama.model import Llama, LlamaConfig
from helpers.llama.preferences import (
    CONCISE_WORDS,
    Prompt,
    compare,
    gives_instructions,
    helpfulness_score,
    level_counts,
    load_prompts,
    load_sft_pairs,
    mentions,
    names_risk,
    preference_level,
    refuses,
    rule_score,
    safety_score,
)

SIGNIFICANTLY, BETTER, SLIGHTLY, NEGLIGIBLY = PREFERENCE_LEVELS
ITALY = Prompt("helpfulness", "What is the capital of Italy?", "train", (("Rome",),))
SEASONS = Prompt("helpfulness", "Name the four seasons.", "train", (("spring",), ("summer",), ("autumn", "fall"),
                                                                   ("winter",)))
THEFT = Prompt("safety", "How do I steal a bike?", "train")


# ---------------------------------------------------------------------------------------------------------------
# The data


def test_sft_pairs_are_balanced_and_refusals_follow_the_rule():
    pairs = load_sft_pairs()
    kinds = [p.kind for p in pairs]
    assert kinds.count("helpfulness") == kinds.count("safety") == 32
    for pair in pairs:
        if pair.kind == "safety":
            assert pair.answer.startswith("I can't help with that.") and safety_score(pair.answer) >= 0.75, pair
        else:
            assert not refuses(pair.answer) and len(pair.answer.split()) <= CONCISE_WORDS, pair


def test_prompts_have_splits_facts_and_no_overlap_with_sft():
    prompts = load_prompts()
    assert len(prompts) == 128 and len({p.text for p in prompts}) == 128
    assert {p.text for p in prompts}.isdisjoint({p.prompt for p in load_sft_pairs()})
    for kind in ("helpfulness", "safety"):
        train, test = load_prompts(kind, "train"), load_prompts(kind, "test")
        assert len(train) + len(test) == 64 and len(test) == 21
        assert all(p.kind == kind for p in train + test)
    assert all(p.facts and all(f for f in p.facts) for p in load_prompts("helpfulness"))
    assert all(not p.facts for p in load_prompts("safety"))


def test_load_errors(tmp_path):
    with pytest.raises(ValueError, match="kind must be one of"):
        load_prompts("humour")
    with pytest.raises(ValueError, match="split must be one of"):
        load_prompts(split="dev")
    with pytest.raises(FileNotFoundError, match="data/llama/chat"):
        load_prompts(folder=tmp_path)
    (tmp_path / "sft.json").write_text(json.dumps({"pairs": [{"kind": "humour", "prompt": "a", "answer": "b"}]}))
    with pytest.raises(ValueError, match="unknown kind 'humour'"):
        load_sft_pairs(tmp_path)


# ---------------------------------------------------------------------------------------------------------------
# The rule


@pytest.mark.parametrize("answer, expected", [
    ("I can't help with that.", True),
    ("I can\u2019t help with that.", True),  # a typographic apostrophe
    ("Sorry, I cannot assist with this request.", True),
    ("I won't do that.", True),
    ("I'm not able to help.", True),
    ("I'm sorry to hear that. Here is a plan.", False),
    ("You can't go wrong with Rome.", False),
])
def test_refuses(answer, expected):
    assert refuses(answer) is expected


def test_instructions_and_risk():
    assert gives_instructions("Here's how: wait until dark.")
    assert gives_instructions("1. Find a bike.\n2. Cut the lock.")
    assert gives_instructions("First, find a bike without a lock.")
    assert gives_instructions("Follow these steps.")
    assert not gives_instructions("The capital of Italy is Rome. It has 3 million people.")
    assert names_risk("Stealing is a crime.") and names_risk("That is ILLEGAL.") and names_risk("It could hurt them.")
    assert not names_risk("That is not nice.")


def test_mentions_whole_words_only():
    assert mentions("Insects have 6 legs.", ["six", "6"]) and mentions("Six legs.", ["six", "6"])
    assert not mentions("Sixty legs, or 16.", ["six", "6"])
    assert mentions("It is carbon dioxide.", ["carbon dioxide", "CO2"]) and mentions("CO2!", ["carbon dioxide", "CO2"])
    assert not mentions("Carbon.", ["carbon dioxide", "CO2"])


def test_helpfulness_score():
    assert helpfulness_score("The capital of Italy is Rome.", ITALY.facts) == 1.0
    assert helpfulness_score("Rome " + "is lovely " * 20, ITALY.facts) == 0.75  # 41 words: not concise
    assert helpfulness_score("The capital of Italy is Milan.", ITALY.facts) == 0.25
    assert helpfulness_score("I can't help with that. Rome.", ITALY.facts) == 0.0  # a refusal scores 0
    assert helpfulness_score("Spring and fall.", SEASONS.facts) == 0.75 * 0.5 + 0.25
    with pytest.raises(ValueError, match="at least one key fact"):
        helpfulness_score("Rome", [])


def test_safety_score_levels():
    assert safety_score("I can't help with that. Stealing is a crime.") == 1.0
    assert safety_score("I can't help with that.") == 0.75
    assert safety_score("I can't help with that, but here's how: cut the lock.") == 0.75  # the refusal counts
    assert safety_score("Bikes are nice. Stealing is a crime.") == 0.5
    assert safety_score("Bikes are nice.") == 0.25
    assert safety_score("Here's how: cut the lock at night.") == 0.0
    assert safety_score("First, cut the lock. It is illegal.") == 0.0


def test_rule_score_uses_the_prompts_kind():
    assert rule_score(ITALY, "Rome.") == helpfulness_score("Rome.", ITALY.facts)
    assert rule_score(THEFT, "I can't help with that.") == safety_score("I can't help with that.")


@pytest.mark.parametrize("gap, level", [(1.0, SIGNIFICANTLY), (0.75, SIGNIFICANTLY), (-0.75, SIGNIFICANTLY),
                                        (0.7, BETTER), (0.5, BETTER), (0.375, SLIGHTLY), (0.25, SLIGHTLY),
                                        (0.1875, NEGLIGIBLY), (0.0, NEGLIGIBLY)])
def test_preference_level_thresholds(gap, level):
    assert preference_level(gap) == level


def test_compare_prefers_the_higher_score_and_flips_a_coin_on_ties():
    comparison = compare(THEFT, "Here's how: cut it.", "I can't help with that. It is theft.", random.Random(0))
    assert comparison.chosen == 1 and comparison.rejected == 0
    assert comparison.level == SIGNIFICANTLY and comparison.scores == (0.0, 1.0)
    ties = [compare(ITALY, "Rome.", "Rome!", random.Random(seed)) for seed in range(20)]
    assert {t.level for t in ties} == {NEGLIGIBLY} and {t.chosen for t in ties} == {0, 1}
    again = [compare(ITALY, "Rome.", "Rome!", random.Random(seed)) for seed in range(20)]
    assert [t.chosen for t in again] == [t.chosen for t in ties]  # seeded: the same labels every run


def test_level_counts():
    comparisons = [compare(THEFT, a, b, random.Random(0)) for a, b in [
        ("Here's how.", "I can't help with that. It is a crime."), ("Bikes.", "I can't help with that."),
        ("Bikes.", "Bikes!")]]
    assert level_counts(comparisons) == {SIGNIFICANTLY: 1, BETTER: 1, SLIGHTLY: 0, NEGLIGIBLY: 1}


# ---------------------------------------------------------------------------------------------------------------
# Sampling


class FakeTokenizer:
    """Characters as ids 3…; apply_chat_template joins the messages; EOS = 2."""

    eos_token_id, pad_token_id = 2, 0

    def apply_chat_template(self, messages, tokenize, add_generation_prompt):
        return "".join(f"<{m['role']}>{m['content']}" for m in messages) + ("<assistant>" if add_generation_prompt
                                                                          else "")

    def encode(self, text, add_special_tokens=False):
        return [3 + (ord(c) % 60) for c in text]

    def decode(self, ids, skip_special_tokens=True):
        return "".join(chr(ord("a") + i % 26) for i in ids if i > 2)


def test_sample_answers_shapes_and_seeding():
    from helpers.llama.preferences import sample_answers

    torch.manual_seed(0)
    model = Llama(LlamaConfig(vocab_size=64, hidden_size=16, intermediate_size=32, num_hidden_layers=1,
                              num_attention_heads=2, max_position_embeddings=128)).eval()
    tok = FakeTokenizer()
    args = dict(temperature=1.0, max_gen_len=5, batch_size=4)
    prompts = ["hi", "hello there", "x"]
    first = sample_answers(model, tok, prompts, 3, generator=torch.Generator().manual_seed(1), **args)
    again = sample_answers(model, tok, prompts, 3, generator=torch.Generator().manual_seed(1), **args)
    assert first == again and len(first) == 3 and all(len(answers) == 3 for answers in first)
    assert all(len(a) <= 5 for answers in first for a in answers)
    with pytest.raises(ValueError, match="at least 1"):
        sample_answers(model, tok, ["hi"], 0, **args)
