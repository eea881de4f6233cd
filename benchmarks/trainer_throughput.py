"""Training tokens/s: mlora_core's loop / Hugging Face Trainer + PEFT LoRA (figure 4), goal >= 1.0.

Same model (a random Llama of builtin:tiny's shape with its tokenizer), same data (the
synthetic task, tokenized once by mlora_core.data.tokenize), same batch, rank, targets, optimizer
(AdamW), steps and threads; the two runs alternate (ours, HF, ours, HF) and the median of
each side is compared. Tokens = non-padding tokens seen.

    python benchmarks/trainer_throughput.py [--quick]
"""
from __future__ import annotations

import copy
import statistics
import sys
import tempfile
import time

import torch
from _common import record

import mlora_core as mc
from mlora_core.builtin_model import RECIPES, _model_config, build_tokenizer
from mlora_core.data.tasks import TaskConfig, load_examples
from mlora_core.data.tokenize import collate, tokenize
from mlora_core.train import Hooks, TrainConfig, train

QUICK = "--quick" in sys.argv
STEPS, BATCH, RANK = (20 if QUICK else 60), 16, 16
TARGETS = ["q_proj", "k_proj", "v_proj", "o_proj", "gate_proj", "up_proj", "down_proj"]


def main() -> None:
    from peft import LoraConfig, get_peft_model
    from transformers import LlamaForCausalLM, Trainer, TrainingArguments

    tok = build_tokenizer()
    torch.manual_seed(0)
    base = LlamaForCausalLM(_model_config(RECIPES["tiny"], tok)).eval()
    data = tokenize(tok, load_examples(TaskConfig("synthetic", split="train", n=STEPS * BATCH)), 128)
    tokens = sum(len(x) for x in data.input_ids)

    def ours() -> float:
        model = mc.add_adapters(copy.deepcopy(base), mc.AdapterConfig(method="lora", rank=RANK, target_modules=TARGETS))
        t = time.perf_counter()
        train(model, mc.adapter_config(model), data, TrainConfig(steps=STEPS, batch_size=BATCH, lr=1e-3, warmup_steps=0,
              max_length=128, schedule="linear", log_every=10**9), tok.pad_token_id, hooks=Hooks(log=lambda *_: None))
        return tokens / (time.perf_counter() - t)

    rows = [{"input_ids": i, "labels": lab} for i, lab in zip(data.input_ids, data.labels)]

    def hf() -> float:
        model = get_peft_model(copy.deepcopy(base), LoraConfig(r=RANK, lora_alpha=RANK, target_modules=TARGETS,
                                                               lora_dropout=0.0))
        with tempfile.TemporaryDirectory() as out:
            args = TrainingArguments(out, per_device_train_batch_size=BATCH, max_steps=STEPS, learning_rate=1e-3,
                                     lr_scheduler_type="linear", warmup_steps=0, report_to=[], save_strategy="no",
                                     logging_steps=10**9, use_cpu=True, dataloader_num_workers=0,
                                     disable_tqdm=True, max_grad_norm=1.0, seed=0)
            trainer = Trainer(model=model, args=args, train_dataset=rows,
                              data_collator=lambda b: collate([r["input_ids"] for r in b], [r["labels"] for r in b],
                                                              tok.pad_token_id))
            t = time.perf_counter()
            trainer.train()
            return tokens / (time.perf_counter() - t)

    ours_tps, hf_tps = [], []
    for _ in range(2 if QUICK else 3):
        ours_tps.append(ours())
        hf_tps.append(hf())
    o, h = statistics.median(ours_tps), statistics.median(hf_tps)
    record("trainer_throughput", "4. mlora_core train tok/s / HF Trainer+PEFT tok/s", o / h, ">= 1.0",
           ours_tok_s=o, hf_tok_s=h, steps=STEPS, batch=BATCH, threads=torch.get_num_threads())


if __name__ == "__main__":
    main()
