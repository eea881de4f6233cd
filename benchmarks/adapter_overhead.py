"""Adapter cost, side by side in one run (figures 1, 2, 3 and 7 of the performance issue).

    1. Matryoshka train step / LoRA train step (same max rank, same model)      goal <= 1.02
    2. our LoRA fwd+bwd / PEFT LoRA fwd+bwd (same rank, targets, data)          goal <= 1.00
    3. merged rank-k forward / base forward                                     goal <= 1.01
       unmerged rank-k forward / base forward                                   (reported)
    7. FLOP utilisation of a train step vs this CPU's measured matmul peak      (reported)

Model: a random Llama (d=256, 4 layers, vocab 512) -- big enough that matmuls dominate,
small enough for 2 cores. Usage: python benchmarks/adapter_overhead.py [--quick]
"""
from __future__ import annotations

import copy
import sys

import torch
from _common import interleaved, record

import mlora_core as mc
from mlora_core.cost import flop_model

QUICK = "--quick" in sys.argv
RANK, BATCH, WIDTH = 16, 8, 128
TARGETS = ["q_proj", "k_proj", "v_proj", "o_proj", "gate_proj", "up_proj", "down_proj"]


def base_model():
    from transformers import LlamaConfig, LlamaForCausalLM
    torch.manual_seed(0)
    cfg = LlamaConfig(vocab_size=512, hidden_size=256, intermediate_size=768, num_hidden_layers=4,
                      num_attention_heads=8, num_key_value_heads=8, max_position_embeddings=WIDTH)
    return LlamaForCausalLM(cfg).eval()


def train_step_fn(model, ids):
    params = [p for p in model.parameters() if p.requires_grad]
    opt = torch.optim.AdamW(params, lr=1e-4)

    def step():
        loss = model(input_ids=ids, labels=ids).loss
        loss.backward()
        opt.step()
        opt.zero_grad(set_to_none=True)
    return step


def main() -> None:
    torch.manual_seed(0)
    ids = torch.randint(0, 512, (BATCH, WIDTH))
    repeats = 3 if QUICK else 9
    base = base_model()
    lora = mc.add_adapters(copy.deepcopy(base), mc.AdapterConfig(method="lora", rank=RANK, target_modules=TARGETS))
    mat = mc.add_adapters(copy.deepcopy(base), mc.AdapterConfig(method="matryoshka", rank=RANK, target_modules=TARGETS))
    for m in (lora, mat):
        for layer in dict(mc.adapter_layers(m)).values():  # non-zero B: a realistic, trained-looking adapter
            torch.nn.init.normal_(layer.lora_B, std=0.02)
        m.train()

    # 1. Matryoshka vs LoRA train step
    t = interleaved({"lora": train_step_fn(lora, ids), "matryoshka": train_step_fn(mat, ids)}, repeats)
    record("adapter_overhead", "1. Matryoshka step / LoRA step (r=16)", t["matryoshka"] / t["lora"], "<= 1.02",
           seconds=t)

    # 2. ours vs PEFT, fwd+bwd (no optimizer: the layer is what differs)
    from peft import LoraConfig, get_peft_model
    peft = get_peft_model(copy.deepcopy(base), LoraConfig(r=RANK, lora_alpha=RANK, target_modules=TARGETS,
                                                          lora_dropout=0.0))
    peft.train()

    def fwd_bwd(model):
        def f():
            model(input_ids=ids, labels=ids).loss.backward()
            model.zero_grad(set_to_none=True)
        return f
    t = interleaved({"peft": fwd_bwd(peft), "ours": fwd_bwd(lora)}, repeats)
    record("adapter_overhead", "2. our LoRA fwd+bwd / PEFT LoRA fwd+bwd (r=16)", t["ours"] / t["peft"], "<= 1.00",
           seconds=t)

    # 3. inference at rank k: merged and unmerged vs the base
    k = 4
    unmerged = copy.deepcopy(mat).eval()
    mc.set_rank(unmerged, k)
    merged = copy.deepcopy(mat).eval()
    mc.merge_adapters(merged, rank=k)

    def fwd(model):
        def f():
            with torch.no_grad():
                model(input_ids=ids)
        return f
    t = interleaved({"base": fwd(base), "merged": fwd(merged), "unmerged": fwd(unmerged)}, repeats)
    record("adapter_overhead", f"3. merged rank-{k} forward / base forward", t["merged"] / t["base"], "<= 1.01",
           seconds=t)
    record("adapter_overhead", f"3. unmerged rank-{k} forward / base forward", t["unmerged"] / t["base"],
           "reported", seconds=t)

    # 7. FLOP utilisation: achieved train-step FLOP/s vs a large fp32 matmul on this CPU
    n = 1024
    a, b = torch.randn(n, n), torch.randn(n, n)
    mm = interleaved({"mm": lambda: torch.mm(a, b)}, repeats)["mm"]
    peak = 2 * n ** 3 / mm
    step = interleaved({"step": train_step_fn(mat, ids)}, repeats)["step"]
    achieved = flop_model(mat).train_step(BATCH, WIDTH, RANK) / step
    record("adapter_overhead", "7. train-step FLOP/s / measured matmul peak", achieved / peak, "reported",
           achieved_gflops=achieved / 1e9, peak_gflops=peak / 1e9)


if __name__ == "__main__":
    main()
