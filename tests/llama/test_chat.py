"""helpers.llama.chat: the Llama 2 chat template, the SFT loss, the margin loss, reward models and their use."""

import pytest
import torch
import torch.nn.functional as F
from transformers import LlamaForSequenceClassification
from transformers.utils.chat_template_utils import render_jinja_template

from helpers.checks import assert_close
from helpers.llama.chat import (
    B_INST,
    B_SYS,
    E_INST,
    E_SYS,
    IGNORE_INDEX,
    MARGINS,
    PREFERENCE_LEVELS,
    ByteTokenizer,
    LlamaBody,
    RewardModel,
    batched_hidden_states,
    best_of_n,
    chat_sft_example,
    combine_rewards,
    continuation_hidden_states,
    encode_llama2_dialog,
    fold_system_prompt,
    last_token_hidden,
    last_token_index,
    llama_hidden_states,
    margin_ranking_loss,
    pad_batch,
    preference_margin,
    run_blocks,
    sft_labels,
    sft_loss,
)
from helpers.llama.model import Llama, LlamaConfig, llama_to_hf

TOK = ByteTokenizer()

# The chat template of meta-llama/Llama-2-7b-chat-hf (tokenizer_config.json): an independent reference.
LLAMA2_CHAT_TEMPLATE = (
    "{% if messages[0]['role'] == 'system' %}{% set loop_messages = messages[1:] %}"
    "{% set system_message = messages[0]['content'] %}{% else %}{% set loop_messages = messages %}"
    "{% set system_message = false %}{% endif %}{% for message in loop_messages %}"
    "{% if (message['role'] == 'user') != (loop.index0 % 2 == 0) %}"
    "{{ raise_exception('Conversation roles must alternate user/assistant/user/assistant/...') }}{% endif %}"
    "{% if loop.index0 == 0 and system_message != false %}"
    "{% set content = '<<SYS>>\\n' + system_message + '\\n<</SYS>>\\n\\n' + message['content'] %}"
    "{% else %}{% set content = message['content'] %}{% endif %}"
    "{% if message['role'] == 'user' %}{{ bos_token + '[INST] ' + content.strip() + ' [/INST]' }}"
    "{% elif message['role'] == 'assistant' %}{{ ' '  + content.strip() + ' ' + eos_token }}{% endif %}{% endfor %}"
)

SYSTEM = {"role": "system", "content": "Answer in one word."}
DIALOG = [SYSTEM, {"role": "user", "content": " Name a noble gas. "}, {"role": "assistant", "content": "Neon."},
          {"role": "user", "content": "And a metal?"}, {"role": "assistant", "content": " Lithium.\n"}]


pytestmark = pytest.mark.usefixtures("one_thread")  # tiny tensors: one thread (tests/conftest.py)


def encode(dialog):
    return encode_llama2_dialog(dialog, TOK.encode, TOK.bos_id, TOK.eos_id)


def tiny_config(**overrides):
    fields = dict(vocab_size=TOK.vocab_size, hidden_size=16, intermediate_size=32, num_hidden_layers=2,
                  num_attention_heads=4, num_key_value_heads=2, max_position_embeddings=256)
    fields.update(overrides)
    return LlamaConfig(**fields)


# ---------------------------------------------------------------------------------------------------------------
# Tokenizer and template


def test_constants_are_metas():
    assert (B_INST, E_INST, B_SYS, E_SYS) == ("[INST]", "[/INST]", "<<SYS>>\n", "\n<</SYS>>\n\n")
    assert IGNORE_INDEX == -100


def test_byte_tokenizer_round_trip_and_specials():
    text = "Héllo, 周期表!\n"
    assert TOK.encode(text) == list(text.encode("utf-8"))
    assert TOK.decode(TOK.encode(text)) == text
    assert TOK.decode([TOK.bos_id, 72, 105, TOK.eos_id, TOK.pad_id]) == "<s>Hi</s>"
    assert TOK.decode(torch.tensor([72, 105])) == "Hi"
    assert max(TOK.encode("<s></s>")) < 256  # special tokens are ids only, never text
    assert TOK.vocab_size == 259


def test_byte_tokenizer_rejects_ids_outside_the_vocabulary():
    with pytest.raises(ValueError, match="outside the vocabulary"):
        TOK.decode([259])


def test_single_turn_equals_hand_written_ids_and_labels():
    ids, labels = encode([{"role": "user", "content": "Hi"}, {"role": "assistant", "content": "Hello!"}])
    assert ids == [256] + list(b"[INST] Hi [/INST] Hello! ") + [257]
    assert labels == [-100] * (1 + len(b"[INST] Hi [/INST]")) + list(b" Hello! ") + [257]


def test_final_user_turn_is_a_prompt_without_labels():
    ids, labels = encode([{"role": "user", "content": "  Hi  "}])
    assert ids == [256] + list(b"[INST] Hi [/INST]")
    assert labels == [-100] * len(ids)


def test_system_prompt_is_folded_into_the_first_user_turn():
    ids, _ = encode(DIALOG[:2])
    assert TOK.decode(ids) == "<s>[INST] <<SYS>>\nAnswer in one word.\n<</SYS>>\n\n Name a noble gas. [/INST]"
    turns = fold_system_prompt(DIALOG)
    assert [t["role"] for t in turns] == ["user", "assistant", "user", "assistant"]
    assert turns[0]["content"] == B_SYS + SYSTEM["content"] + E_SYS + DIALOG[1]["content"]


def test_labels_are_the_answers_with_eos_and_nothing_else():
    ids, labels = encode(DIALOG)
    assert len(ids) == len(labels)
    kept = [i for i, label in zip(ids, labels, strict=True) if label != IGNORE_INDEX]
    assert TOK.decode(kept) == " Neon. </s> Lithium. </s>"
    assert all(label in (IGNORE_INDEX, i) for i, label in zip(ids, labels, strict=True))
    assert ids.count(TOK.bos_id) == 2 and ids.count(TOK.eos_id) == 2


@pytest.mark.parametrize("end", [2, 3, 4, 5])
def test_template_equals_the_hugging_face_llama2_chat_template(end):
    dialog = DIALOG[:end]
    rendered, _ = render_jinja_template([dialog], chat_template=LLAMA2_CHAT_TEMPLATE, bos_token="<s>", eos_token="</s>")
    assert TOK.decode(encode(dialog)[0]) == rendered[0]


def test_template_without_system_prompt_equals_hugging_face():
    dialog = DIALOG[1:]
    rendered, _ = render_jinja_template([dialog], chat_template=LLAMA2_CHAT_TEMPLATE, bos_token="<s>", eos_token="</s>")
    assert TOK.decode(encode(dialog)[0]) == rendered[0]


def test_a_tokenizer_that_merges_across_the_boundary_is_refused():
    def one_token_per_string(text):  # merges prompt and answer into one token: no boundary to find
        return [len(text)]

    with pytest.raises(ValueError, match="prompt/answer boundary is not a token boundary"):
        encode_llama2_dialog(DIALOG[1:3], one_token_per_string, 1, 2)


@pytest.mark.parametrize(("dialog", "message"), [
    ([], "the dialog is empty"),
    ([{"role": "user"}], "exactly the keys 'role' and 'content'"),
    (["hi"], "exactly the keys 'role' and 'content'"),
    ([{"role": "bot", "content": "hi"}], "has role 'bot'; the roles are"),
    ([{"role": "user", "content": 3}], "content must be a str"),
    ([{"role": "user", "content": "a"}, {"role": "user", "content": "b"}],
     "message 1 has role 'user' where 'assistant'"),
    ([{"role": "assistant", "content": "a"}], "message 0 has role 'assistant' where 'user'"),
    ([SYSTEM, {"role": "user", "content": "a"}, {"role": "user", "content": "b"}],
     "message 2 has role 'user' where 'assistant'"),
    ([SYSTEM], "a system message must be followed by a user message"),
    ([SYSTEM, SYSTEM], "a system message must be followed by a user message"),
    ([{"role": "user", "content": "a [/INST] b"}], "template tag '[/INST]'"),
    ([{"role": "user", "content": "<<SYS>> x"}], "template tag '<<SYS>>'"),
])
def test_malformed_dialogs_raise_clear_errors(dialog, message):
    with pytest.raises(ValueError, match=message.replace("[", r"\[").replace("]", r"\]")):
        encode(dialog)


def test_pad_batch_pads_on_the_right():
    ids, mask = pad_batch([[1, 2, 3], [4]], pad_value=9)
    assert ids.tolist() == [[1, 2, 3], [4, 9, 9]] and mask.tolist() == [[1, 1, 1], [1, 0, 0]]
    assert ids.dtype == mask.dtype == torch.long
    with pytest.raises(ValueError, match="at least one sequence"):
        pad_batch([], 0)
    with pytest.raises(ValueError, match="every sequence is empty"):
        pad_batch([[], []], 0)


# ---------------------------------------------------------------------------------------------------------------
# SFT loss


@pytest.fixture(scope="module")
def tiny_llama():
    torch.manual_seed(0)
    return Llama(tiny_config()).eval()


def test_sft_loss_equals_transformers_causal_lm_loss(tiny_llama):
    hf = llama_to_hf(tiny_llama)
    encoded = [encode(DIALOG), encode(DIALOG[1:3]), encode(DIALOG[1:4])]
    ids, _ = pad_batch([e[0] for e in encoded], TOK.pad_id)
    labels, _ = pad_batch([e[1] for e in encoded], IGNORE_INDEX)
    with torch.no_grad():
        assert_close(sft_loss(tiny_llama(ids), labels), hf(input_ids=ids, labels=labels).loss, atol=1e-5, rtol=1e-5)


def test_sft_loss_is_the_mean_over_answer_tokens():
    logits = torch.randn(2, 5, 7, generator=torch.Generator().manual_seed(1))
    labels = torch.tensor([[-100, -100, 3, 4, -100], [-100, 1, -100, -100, -100]])
    terms = [-logits[0, 1].log_softmax(-1)[3], -logits[0, 2].log_softmax(-1)[4], -logits[1, 0].log_softmax(-1)[1]]
    assert_close(sft_loss(logits, labels), torch.stack(terms).mean())


def test_sft_loss_gives_no_gradient_to_prompt_positions(tiny_llama):
    ids, labels = encode(DIALOG)
    logits = tiny_llama(torch.tensor([ids])).detach().requires_grad_(True)
    sft_loss(logits, torch.tensor([labels])).backward()
    has_grad = logits.grad[0].abs().sum(-1) > 0
    assert has_grad.tolist() == [label != IGNORE_INDEX for label in labels[1:]] + [False]


def test_sft_loss_errors():
    with pytest.raises(ValueError, match=r"need logits \(B, T, V\) and labels \(B, T\)"):
        sft_loss(torch.zeros(2, 3), torch.zeros(2, 3, dtype=torch.long))
    with pytest.raises(ValueError, match=r"need logits \(B, T, V\) and labels \(B, T\)"):
        sft_loss(torch.zeros(2, 3, 5), torch.zeros(2, 4, dtype=torch.long))
    with pytest.raises(ValueError, match="no answer token to learn"):
        sft_loss(torch.zeros(1, 3, 5), torch.tensor([[1, -100, -100]]))


def test_sft_labels_mask_prompts_and_padding():
    ids = torch.tensor([[5, 6, 7, 8], [5, 6, 0, 0]])
    labels = sft_labels(ids, [2, 1], torch.tensor([[1, 1, 1, 1], [1, 1, 0, 0]]))
    assert labels.tolist() == [[-100, -100, 7, 8], [-100, 6, -100, -100]]
    assert sft_labels(ids, torch.tensor([3, 0])).tolist() == [[-100, -100, -100, 8], [5, 6, 0, 0]]
    encoded = [encode(DIALOG[1:3]), encode(DIALOG[3:5])]  # single turns: labels are -100 then the answer
    padded, mask = pad_batch([e[0] for e in encoded], TOK.pad_id)
    prompt_lengths = [e[1].count(IGNORE_INDEX) for e in encoded]
    expected = pad_batch([e[1] for e in encoded], IGNORE_INDEX)[0]
    assert sft_labels(padded, prompt_lengths, mask).tolist() == expected.tolist()
    with pytest.raises(ValueError, match=r"prompt_lengths must have shape \(batch,\) = \(2,\)"):
        sft_labels(ids, [1, 2, 3])
    with pytest.raises(ValueError, match="must have the shape of input_ids"):
        sft_labels(ids, [1, 2], torch.ones(2, 3))
    with pytest.raises(ValueError, match=r"input_ids must have shape \(batch, seq\)"):
        sft_labels(ids[0], [1])


class ChatMLTokenizer:
    """Bytes as ids, <|im_start|> = 1000 and <|im_end|> = 1001 (EOS), and a ChatML template with a default system."""

    eos_token_id = 1001
    SPECIAL = {"<|im_start|>": 1000, "<|im_end|>": 1001}

    def apply_chat_template(self, messages, tokenize=False, add_generation_prompt=False):
        if messages[0]["role"] != "system":
            messages = [{"role": "system", "content": "Be kind."}] + list(messages)
        text = "".join(f"<|im_start|>{m['role']}\n{m['content']}<|im_end|>\n" for m in messages)
        return text + ("<|im_start|>assistant\n" if add_generation_prompt else "")

    def encode(self, text, add_special_tokens=False):
        ids = []
        while text:
            special = next((s for s in self.SPECIAL if text.startswith(s)), None)
            ids += [self.SPECIAL[special]] if special else list(text[0].encode())
            text = text[len(special):] if special else text[1:]
        return ids


def test_chat_sft_example_in_a_chatml_template():
    tok = ChatMLTokenizer()
    ids, prompt_length = chat_sft_example(tok, "Hi?", "Hello.")
    prompt = tok.encode("<|im_start|>system\nBe kind.<|im_end|>\n<|im_start|>user\nHi?<|im_end|>\n"
                        "<|im_start|>assistant\n")
    assert ids == prompt + list(b"Hello.") + [1001] and prompt_length == len(prompt)  # no newline after EOS
    ids, prompt_length = chat_sft_example(tok, "Hi?", "Hello.", system="Be brief.")
    assert ids[:prompt_length] == tok.encode(tok.apply_chat_template(
        [{"role": "system", "content": "Be brief."}, {"role": "user", "content": "Hi?"}], add_generation_prompt=True))


def test_chat_sft_example_errors():
    class Merging(ChatMLTokenizer):  # merges "\nH" into one token: the boundary is lost
        def encode(self, text, add_special_tokens=False):
            ids = super().encode(text)
            return [i for k, i in enumerate(ids) if not (i == 10 and k + 1 < len(ids) and ids[k + 1] == 72)]

    with pytest.raises(ValueError, match="not a token boundary"):
        chat_sft_example(Merging(), "Hi?", "Hello.")

    class NoEos(ChatMLTokenizer):
        eos_token_id = 7

    with pytest.raises(ValueError, match="no end-of-turn token"):
        chat_sft_example(NoEos(), "Hi?", "Hello.")


def test_run_blocks_in_two_parts_equals_the_whole_stack(tiny_llama):
    tokens = torch.randint(0, 256, (2, 9), generator=torch.Generator().manual_seed(3))
    with torch.no_grad():
        first = run_blocks(tiny_llama, tiny_llama.embed_tokens(tokens), tiny_llama.layers[:1])
        both = tiny_llama.norm(run_blocks(tiny_llama, first, tiny_llama.layers[1:]))
        assert_close(both, llama_hidden_states(tiny_llama, tokens))


def test_batched_hidden_states_equal_one_at_a_time(tiny_llama):
    g = torch.Generator().manual_seed(4)
    sequences = [torch.randint(0, 256, (n,), generator=g).tolist() for n in (7, 2, 11, 5, 3)]
    calls = []

    def body(tokens):
        calls.append(tuple(tokens.shape))
        return llama_hidden_states(tiny_llama, tokens)

    hidden, mask = batched_hidden_states(body, sequences, TOK.pad_id, batch_size=2)
    assert hidden.shape == (5, 11, tiny_llama.config.hidden_size) and mask.sum(1).tolist() == [7, 2, 11, 5, 3]
    assert calls == [(2, 3), (2, 7), (1, 11)]  # sorted by length: little padding
    for row, s in enumerate(sequences):
        with torch.no_grad():
            assert_close(hidden[row, :len(s)], llama_hidden_states(tiny_llama, torch.tensor([s]))[0])
        assert float(hidden[row, len(s):].abs().sum()) == 0.0
    with pytest.raises(ValueError, match="at least one sequence"):
        batched_hidden_states(body, [], 0)


def test_continuation_hidden_states_equal_the_whole_sequences(tiny_llama):
    prompt, continuations = [256, 72, 105, 33], [[1, 2, 3], [4], [5, 6, 7, 8, 9]]
    hidden, mask = continuation_hidden_states(tiny_llama, prompt, continuations, TOK.pad_id)
    assert hidden.shape == (3, 5, tiny_llama.config.hidden_size) and mask.sum(1).tolist() == [3, 1, 5]
    for row, c in enumerate(continuations):
        with torch.no_grad():
            whole = llama_hidden_states(tiny_llama, torch.tensor([prompt + c]))[0, len(prompt):]
        assert_close(hidden[row, :len(c)], whole)
    with pytest.raises(ValueError, match="none of them empty"):
        continuation_hidden_states(tiny_llama, prompt, [[1], []])


def test_last_token_hidden_right_and_left_padding():
    hidden = torch.arange(2 * 4 * 3, dtype=torch.float32).view(2, 4, 3)
    mask = torch.tensor([[1, 1, 0, 0], [0, 1, 1, 1]])
    assert last_token_hidden(hidden, mask).tolist() == [hidden[0, 1].tolist(), hidden[1, 3].tolist()]
    with pytest.raises(ValueError, match=r"need hidden \(B, T, d\) and attention_mask \(B, T\)"):
        last_token_hidden(hidden, mask[:, :3])


# ---------------------------------------------------------------------------------------------------------------
# Preferences and the margin loss


def test_preference_levels_and_margin_table_are_llama2_table_27():
    assert PREFERENCE_LEVELS == ("significantly better", "better", "slightly better", "negligibly better / unsure")
    assert [MARGINS["small"][level] for level in PREFERENCE_LEVELS] == pytest.approx([1, 2 / 3, 1 / 3, 0])
    assert [MARGINS["large"][level] for level in PREFERENCE_LEVELS] == [3, 2, 1, 0]


def test_preference_margin_looks_up_levels():
    margins = preference_margin(["better", "negligibly better / unsure", "significantly better"], "large")
    assert margins.tolist() == [2.0, 0.0, 3.0] and margins.dtype == torch.float32
    assert preference_margin([], "small").shape == (0,)
    with pytest.raises(ValueError, match="scale must be one of"):
        preference_margin(["better"], "medium")
    with pytest.raises(ValueError, match="unknown preference level 'much better'"):
        preference_margin(["better", "much better"])


def test_margin_loss_at_zero_equals_logsigmoid_and_bce():
    g = torch.Generator().manual_seed(2)
    rc, rr = 3 * torch.randn(32, generator=g), 3 * torch.randn(32, generator=g)
    assert_close(margin_ranking_loss(rc, rr), -F.logsigmoid(rc - rr).mean())
    assert_close(margin_ranking_loss(rc, rr, 0.0), F.binary_cross_entropy_with_logits(rc - rr, torch.ones(32)))


def test_margin_loss_with_margins_equals_shifted_bce():
    g = torch.Generator().manual_seed(3)
    rc, rr = torch.randn(16, generator=g), torch.randn(16, generator=g)
    m = preference_margin([PREFERENCE_LEVELS[i % 4] for i in range(16)], "large")
    assert_close(margin_ranking_loss(rc, rr, m), F.binary_cross_entropy_with_logits(rc - rr - m, torch.ones(16)))
    assert_close(margin_ranking_loss(rc, rr, 1.0), -F.logsigmoid(rc - rr - 1.0).mean())


def test_margin_loss_is_finite_for_large_gaps_and_has_gradients():
    rc = torch.tensor([500.0, -500.0], requires_grad=True)
    loss = margin_ranking_loss(rc, torch.zeros(2))
    assert torch.isfinite(loss) and loss.item() == pytest.approx(250.0)
    loss.backward()
    assert rc.grad.tolist() == pytest.approx([0.0, -0.5])


def test_margin_loss_shape_error():
    with pytest.raises(ValueError, match="must have the same shape"):
        margin_ranking_loss(torch.zeros(3), torch.zeros(4))


# ---------------------------------------------------------------------------------------------------------------
# Reward models


def test_llama_hidden_states_equals_transformers_and_gives_the_logits(tiny_llama):
    hf = llama_to_hf(tiny_llama)
    tokens = torch.randint(0, 256, (3, 9), generator=torch.Generator().manual_seed(4))
    with torch.no_grad():
        h = llama_hidden_states(tiny_llama, tokens)
        assert_close(h, hf.model(tokens).last_hidden_state)
        assert_close(tiny_llama.lm_head(h), tiny_llama(tokens))
    with pytest.raises(ValueError, match=r"tokens must have shape \(batch, seq\)"):
        llama_hidden_states(tiny_llama, tokens[0])


def test_llama_body_shares_weights_and_has_no_lm_head(tiny_llama):
    body = LlamaBody(tiny_llama)
    assert not any(name.startswith("lm_head") for name in body.state_dict())
    assert body.embed_tokens.weight is tiny_llama.embed_tokens.weight
    tokens = torch.randint(0, 256, (2, 5), generator=torch.Generator().manual_seed(5))
    with torch.no_grad():
        assert_close(body(tokens), llama_hidden_states(tiny_llama, tokens))


def test_last_token_index_for_right_and_left_padding():
    mask = torch.tensor([[1, 1, 0, 0], [1, 1, 1, 1], [0, 0, 1, 1], [1, 0, 0, 0]])  # right, none, left, right
    assert last_token_index(mask).tolist() == [1, 3, 3, 0]
    with pytest.raises(ValueError, match="has no real token"):
        last_token_index(torch.tensor([[1, 0], [0, 0]]))
    with pytest.raises(ValueError, match=r"attention_mask must have shape \(batch, seq\)"):
        last_token_index(torch.tensor([1, 1]))


@pytest.fixture(scope="module")
def reward_setup(tiny_llama):
    torch.manual_seed(6)
    rm = RewardModel(LlamaBody(tiny_llama), tiny_llama.config.hidden_size).eval()
    sequences = [encode(DIALOG)[0], encode(DIALOG[1:3])[0], [5, 6, 7]]
    tokens, mask = pad_batch(sequences, TOK.pad_id)
    return rm, sequences, tokens, mask


def test_reward_model_equals_transformers_sequence_classification(tiny_llama, reward_setup):
    rm, _, tokens, mask = reward_setup
    hf_config = tiny_llama.config.to_hf()
    hf_config.num_labels, hf_config.pad_token_id = 1, TOK.pad_id
    hf = LlamaForSequenceClassification(hf_config).eval()
    hf.model.load_state_dict(llama_to_hf(tiny_llama).model.state_dict())
    with torch.no_grad():
        hf.score.weight.copy_(rm.score.weight)
        assert_close(rm(tokens, mask), hf(input_ids=tokens, attention_mask=mask).logits.squeeze(-1))


def test_reward_model_reads_the_last_real_token_whatever_the_padding(reward_setup):
    rm, sequences, tokens, mask = reward_setup
    with torch.no_grad():
        batched = rm(tokens, mask)
        alone = torch.cat([rm(torch.tensor([s])) for s in sequences])
        by_lengths = rm(tokens, lengths=torch.tensor([len(s) for s in sequences]))
    assert batched.shape == (3,)
    assert_close(batched, alone)
    assert_close(by_lengths, batched)


def test_reward_model_head_is_a_scalar_without_bias(reward_setup):
    rm = reward_setup[0]
    assert rm.score.weight.shape == (1, rm.body.config.hidden_size) and rm.score.bias is None


def test_reward_model_errors(reward_setup):
    rm, _, tokens, mask = reward_setup
    with pytest.raises(ValueError, match="give attention_mask or lengths, not both"):
        rm(tokens, mask, lengths=torch.tensor([1, 1, 1]))
    with pytest.raises(ValueError, match="must have the shape of tokens"):
        rm(tokens, mask[:, :-1])
    with pytest.raises(ValueError, match="lengths must be"):
        rm(tokens, lengths=torch.tensor([0, 1, 1]))
    with pytest.raises(ValueError, match="lengths must be"):
        rm(tokens, lengths=torch.tensor([1, 1]))


def test_reward_model_trains_on_a_ranking():
    torch.manual_seed(7)
    rm = RewardModel(LlamaBody(Llama(tiny_config(num_hidden_layers=1))), 16)
    good, bad = torch.full((8, 4), 65), torch.full((8, 4), 66)  # "AAAA" is always preferred to "BBBB"
    optimiser = torch.optim.Adam(rm.parameters(), lr=1e-2)
    for _ in range(30):
        loss = margin_ranking_loss(rm(good), rm(bad), 1.0)
        optimiser.zero_grad()
        loss.backward()
        optimiser.step()
    assert bool((rm(good) - rm(bad) > 1.0).all())


# ---------------------------------------------------------------------------------------------------------------
# Using the reward models


def test_combine_rewards_follows_llama2():
    helpful = torch.tensor([0.9, 0.9, 0.3, 0.2, 0.6])
    safety = torch.tensor([0.8, 0.1, 0.7, 0.95, 0.15])
    is_safety = torch.tensor([False, False, True, False, False])
    assert combine_rewards(helpful, safety, is_safety).tolist() == pytest.approx([0.9, 0.1, 0.7, 0.2, 0.6])
    assert combine_rewards(helpful, safety, True).tolist() == pytest.approx(safety.tolist())
    assert combine_rewards(helpful, safety, False, threshold=0.9).tolist() == pytest.approx([0.8, 0.1, 0.7, 0.2, 0.15])


def test_combine_rewards_broadcasts_a_tag_per_prompt():
    helpful, safety = torch.full((2, 3), 0.5), torch.full((2, 3), 0.75)
    out = combine_rewards(helpful, safety, torch.tensor([True, False])[:, None])
    assert out.tolist() == [[0.75] * 3, [0.5] * 3]


def test_combine_rewards_threshold_error():
    with pytest.raises(ValueError, match="between 0 and 1"):
        combine_rewards(torch.zeros(1), torch.zeros(1), False, threshold=2.0)


def test_best_of_n_picks_the_first_highest_reward():
    rewards = torch.tensor([[0.1, 0.7, 0.7], [2.0, -1.0, 0.0]])
    assert best_of_n(rewards).tolist() == [1, 0]
    with pytest.raises(ValueError, match=r"rewards must have shape \(prompts, candidates\)"):
        best_of_n(torch.zeros(3))
    with pytest.raises(ValueError, match="at least one candidate"):
        best_of_n(torch.zeros(2, 0))
