"""Tiny random-initialised models of real Hugging Face architectures (no downloads)."""
import torch
import transformers as tf

SMALL = dict(vocab_size=64, hidden_size=32, intermediate_size=64, num_hidden_layers=2,
             num_attention_heads=4, num_key_value_heads=2, max_position_embeddings=64)

ARCHS = {
    "llama": (lambda: tf.LlamaForCausalLM(tf.LlamaConfig(**SMALL)),
              ["q_proj", "k_proj", "v_proj", "o_proj", "gate_proj", "up_proj", "down_proj"]),
    "qwen2": (lambda: tf.Qwen2ForCausalLM(tf.Qwen2Config(**SMALL)),
              ["q_proj", "k_proj", "v_proj", "o_proj", "gate_proj", "up_proj", "down_proj"]),
    "mistral": (lambda: tf.MistralForCausalLM(tf.MistralConfig(**SMALL)),
                ["q_proj", "v_proj", "down_proj"]),
    "gpt2": (lambda: tf.GPT2LMHeadModel(tf.GPT2Config(vocab_size=64, n_embd=32, n_layer=2, n_head=4,
                                                       n_positions=64)),
             ["c_attn", "c_proj", "c_fc"]),
}


def tiny_model(arch: str, seed: int = 0):
    torch.manual_seed(seed)
    factory, targets = ARCHS[arch]
    return factory().eval(), targets
