"""The one prompt format that training, scoring and generation share (tasks.prompt_ids), with and
without a chat template. Built on the builtin tokenizer (no model, no package): fast tier."""
from __future__ import annotations

import pytest
import torch
from transformers import LlamaConfig, LlamaForCausalLM

from mlora_core.builtin_model import build_tokenizer
from mlora_core.data.example import Example
from mlora_core.data.tokenize import prompt_ids, render_prompt, tokenize
from mlora_core.scoring.generate import generate

# a ChatML template (SmolLM2's shape) written with the builtin vocabulary's tokens
CHATML = ("{% for m in messages %}<s>{{ m['role'] }}\n{{ m['content'] }}</s>\n{% endfor %}"
          "{% if add_generation_prompt %}<s>assistant\n{% endif %}")
EXAMPLE = Example(prompt="Question: Mia asks: how much is the bax?\nAnswer: ", completion="#### 62", answer="62")


@pytest.fixture
def chat_tok():
    tok = build_tokenizer()
    tok.chat_template = CHATML
    return tok


def test_without_a_template_the_prompt_is_bos_plus_the_text():
    tok = build_tokenizer()
    [ids] = prompt_ids(tok, [EXAMPLE.prompt])
    assert ids == [tok.bos_token_id] + tok(EXAMPLE.prompt, add_special_tokens=False)["input_ids"]
    assert ids == tok(EXAMPLE.prompt)["input_ids"]  # what the tokenizer itself adds (generation used that)
    data = tokenize(tok, [EXAMPLE], max_length=64)
    assert data.input_ids[0] == ids + tok("#### 62", add_special_tokens=False)["input_ids"] + [tok.eos_token_id]


def test_with_a_template_the_prompt_is_one_user_turn_and_no_extra_bos(chat_tok):
    text = render_prompt(chat_tok, EXAMPLE.prompt)
    assert text == "<s>user\nQuestion: Mia asks: how much is the bax?\nAnswer:</s>\n<s>assistant\n"
    [ids] = prompt_ids(chat_tok, [EXAMPLE.prompt])
    assert ids == chat_tok(text, add_special_tokens=False)["input_ids"] and ids.count(chat_tok.bos_token_id) == 2
    data = tokenize(chat_tok, [Example(EXAMPLE.prompt, " blue")], max_length=64)
    answer = [t for t in data.labels[0] if t != -100]
    assert data.input_ids[0][:len(ids)] == ids and chat_tok.decode(answer) == "blue</s>"  # leading space dropped


def chain_model(tok):
    """A 1-layer Llama whose next token depends only on the last one (attention and MLP write
    nothing): after a space or a newline comes "b", after "b" a newline."""
    torch.manual_seed(0)
    model = LlamaForCausalLM(LlamaConfig(vocab_size=len(tok), hidden_size=32, intermediate_size=64,
                                         num_hidden_layers=1, num_attention_heads=4, num_key_value_heads=2,
                                         tie_word_embeddings=False, pad_token_id=tok.pad_token_id)).eval()
    space, newline, b = (tok.convert_tokens_to_ids(t) for t in (" ", "\n", "b"))
    with torch.no_grad():
        layer = model.model.layers[0]
        layer.self_attn.o_proj.weight.zero_()
        layer.mlp.down_proj.weight.zero_()
        emb, head = model.model.embed_tokens.weight, model.lm_head.weight
        head.zero_()
        for i, t in enumerate((space, newline, b)):   # orthogonal: the hidden state names its token
            emb[t] = 0.0
            emb[t, i] = 8.0
        head[b, 0] = head[b, 1] = head[newline, 2] = 1.0
    return model


def test_generation_reads_the_training_prompt_and_keeps_every_line_of_a_chat_answer(chat_tok):
    """generate() feeds prompt_ids; a chat answer runs to EOS or max_new_tokens, newlines included
    (GSM8K's worked solutions are multi-line); a plain answer stops at its first newline."""
    plain_tok = build_tokenizer()
    model = chain_model(plain_tok)
    assert generate(model, plain_tok, [EXAMPLE.prompt], max_new_tokens=5)[0] == ["b"]
    assert generate(model, chat_tok, [EXAMPLE.prompt], max_new_tokens=5)[0] == ["b\nb\nb"]
    seen = []
    model.register_forward_pre_hook(lambda m, a, kw: seen.append(kw["input_ids"][0].tolist()), with_kwargs=True)
    generate(model, chat_tok, [EXAMPLE.prompt], max_new_tokens=1)
    assert seen[0] == prompt_ids(chat_tok, [EXAMPLE.prompt])[0]   # the tokens training saw before the answer


def test_a_dated_template_renders_the_same_every_day():
    tok = build_tokenizer()
    tok.chat_template = ("{% if not date_string is defined %}{% set date_string = strftime_now('%d %b %Y') %}"
                         "{% endif %}Today Date: {{ date_string }}\n{{ messages[0]['content'] }}")
    assert render_prompt(tok, "Question: hi?") == "Today Date: 26 Jul 2024\nQuestion: hi?"
