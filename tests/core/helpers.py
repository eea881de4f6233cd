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


def tiny_llama(tok, seed: int = 0, layers: int = 2, hidden: int = 48, max_positions: int = 256):
    """A random Llama sized for `tok` (the builtin tokenizer in most tests), special tokens set."""
    torch.manual_seed(seed)
    cfg = tf.LlamaConfig(vocab_size=len(tok), hidden_size=hidden, intermediate_size=2 * hidden,
                         num_hidden_layers=layers, num_attention_heads=4, num_key_value_heads=2,
                         max_position_embeddings=max_positions, pad_token_id=tok.pad_token_id,
                         bos_token_id=tok.bos_token_id, eos_token_id=tok.eos_token_id)
    return tf.LlamaForCausalLM(cfg).eval()


def fit(model, data, config, pad_id, log=lambda *_: None, **kw):
    """mlora_core.train.train with the adapter config that `model` was adapted with."""
    import mlora_core as mc
    from mlora_core.train import Hooks, train
    return train(model, mc.adapter_config(model), data, config, pad_id, hooks=Hooks(log=log), **kw)
