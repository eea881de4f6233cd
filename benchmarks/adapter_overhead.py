"""Adapter cost, side by side in one run (figures 1, 2, 3 and 7 of the performance issue).

    1. Matryoshka train step / LoRA train step (same max rank, same model)      goal <= 1.02
    2. our LoRA fwd+bwd / PEFT LoRA fwd+bwd (same rank, targets, data)          goal <= 1.00
    3. merged rank-k forward / base forward                                     goal <= 1.01
       unmerged rank-k forward / base forward                                   (reported)
    7. FLOP utilisation of a train step vs this CPU's measured matmul peak      (reported)

Model: a random Llama (d=256, 4 layers, vocab 512) -- big enough that matmuls dominate,
small enough for 2 cores. With --cuda: a random Llama of Llama-3.2-1B's shape (d=2048, 16
layers, GQA 32/8 heads, vocab 128256) with bf16 base weights, fp32 adapters and bf16 autocast,
as `mlora_core.run` trains on a GPU, at the paper's rank 32 and batch 4 x 512; figure 7 is
then MFU against the GPU's measured bf16 matmul peak.

    python benchmarks/adapter_overhead.py [--quick] [--cuda] [--compile]

--compile adds: torch.compile'd Matryoshka train step / eager train step (training.compile).
"""
from __future__ import annotations

import contextlib
import copy
import sys
import time

import torch
from _common import interleaved, record

import mlora_core as mc
from mlora_core.cost import flop_model

QUICK = "--quick" in sys.argv
CUDA = "--cuda" in sys.argv
COMPILE = "--compile" in sys.argv
DEVICE = torch.device("cuda" if CUDA else "cpu")
if CUDA:  # the paper's 1B setting: Llama-3.2-1B's shape, rank 32, per-device batch 4
    RANK, BATCH, WIDTH, VOCAB = 32, 4, 512, 128256
    SHAPE = dict(hidden_size=2048, intermediate_size=8192, num_hidden_layers=16, num_attention_heads=32,
                 num_key_value_heads=8, tie_word_embeddings=True)
    WHERE = ", 1B-shaped Llama, bf16, " + torch.cuda.get_device_name(0)
else:
    RANK, BATCH, WIDTH, VOCAB = 16, 8, 128, 512
    SHAPE = dict(hidden_size=256, intermediate_size=768, num_hidden_layers=4, num_attention_heads=8,
                 num_key_value_heads=8)
    WHERE = ""
TARGETS = ["q_proj", "k_proj", "v_proj", "o_proj", "gate_proj", "up_proj", "down_proj"]


def base_model():
    from transformers import LlamaConfig, LlamaForCausalLM
    torch.manual_seed(0)
    cfg = LlamaConfig(vocab_size=VOCAB, max_position_embeddings=WIDTH, **SHAPE)
    with torch.device(DEVICE):
        # as mlora_core.run loads a base: bf16 on a GPU (the adapters it gets are fp32), fp32 on CPU
        return LlamaForCausalLM(cfg).to(torch.bfloat16 if CUDA else torch.float32).eval()


def autocast():
    return torch.autocast("cuda", dtype=torch.bfloat16) if CUDA else contextlib.nullcontext()


def train_step_fn(model, ids):
    params = [p for p in model.parameters() if p.requires_grad]
    opt = torch.optim.AdamW(params, lr=1e-4)

    def step():
        with autocast():
            loss = model(input_ids=ids, labels=ids).loss
        loss.backward()
        opt.step()
        opt.zero_grad(set_to_none=True)
    return step


def main() -> None:
    torch.manual_seed(0)
    ids = torch.randint(0, VOCAB, (BATCH, WIDTH), device=DEVICE)
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
    record("adapter_overhead", f"1. Matryoshka step / LoRA step (r={RANK}{WHERE})", t["matryoshka"] / t["lora"], "<= 1.02",
           seconds=t)

    # 2. ours vs PEFT, fwd+bwd (no optimizer: the layer is what differs)
    from peft import LoraConfig, get_peft_model
    peft = get_peft_model(copy.deepcopy(base), LoraConfig(r=RANK, lora_alpha=RANK, target_modules=TARGETS,
                                                          lora_dropout=0.0))
    peft.train()

    def fwd_bwd(model):
        def f():
            with autocast():
                loss = model(input_ids=ids, labels=ids).loss
            loss.backward()
            model.zero_grad(set_to_none=True)
        return f
    t = interleaved({"peft": fwd_bwd(peft), "ours": fwd_bwd(lora)}, repeats)
    record("adapter_overhead", f"2. our LoRA fwd+bwd / PEFT LoRA fwd+bwd (r={RANK}{WHERE})", t["ours"] / t["peft"], "<= 1.00",
           seconds=t)

    # 3. inference at rank k: merged and unmerged vs the base
    k = 4
    unmerged = copy.deepcopy(mat).eval()
    mc.set_rank(unmerged, k)
    merged = copy.deepcopy(mat).eval()
    mc.merge_adapters(merged, rank=k)

    def fwd(model):
        def f():
            with torch.no_grad(), autocast():
                model(input_ids=ids)
        return f
    t = interleaved({"base": fwd(base), "merged": fwd(merged), "unmerged": fwd(unmerged)}, repeats)
    record("adapter_overhead", f"3. merged rank-{k} forward / base forward{WHERE}", t["merged"] / t["base"], "<= 1.01",
           seconds=t)
    record("adapter_overhead", f"3. unmerged rank-{k} forward / base forward{WHERE}", t["unmerged"] / t["base"],
           "reported", seconds=t)

    # 7. FLOP utilisation: achieved train-step FLOP/s vs a large matmul on this device (fp32 on a CPU;
    # bf16 on a GPU, i.e. MFU against the peak this very GPU reaches, not the datasheet's)
    n = 8192 if CUDA else 1024
    a, b = (torch.randn(n, n, device=DEVICE, dtype=torch.bfloat16 if CUDA else torch.float32) for _ in range(2))
    mm = interleaved({"mm": lambda: torch.mm(a, b)}, repeats)["mm"]
    peak = 2 * n ** 3 / mm
    step = interleaved({"step": train_step_fn(mat, ids)}, repeats)["step"]
    step_flops = flop_model(mat).train_step(BATCH, WIDTH, RANK)
    achieved = step_flops / step
    extra = {}
    if CUDA:  # the share of a step's wall time the GPU spends in kernels; the rest is launch overhead
        from torch.profiler import ProfilerActivity, profile
        fn = train_step_fn(mat, ids)
        with profile(activities=[ProfilerActivity.CUDA]) as prof:
            for _ in range(3):
                fn()
            torch.cuda.synchronize()
        extra["gpu_busy"] = sum(e.self_device_time_total for e in prof.key_averages()) / 1e6 / 3 / step
    record("adapter_overhead", f"7. train-step FLOP/s / measured matmul peak{WHERE}", achieved / peak, "reported",
           achieved_gflops=achieved / 1e9, peak_gflops=peak / 1e9, step_seconds=step, **extra)

    if COMPILE:  # what training.compile buys: the same step through torch.compile (compiled in the warm-up)
        t0 = time.perf_counter()
        compiled = train_step_fn(torch.compile(mat), ids)
        compiled()
        compile_seconds = time.perf_counter() - t0
        t = interleaved({"eager": train_step_fn(mat, ids), "compiled": compiled}, repeats)
        record("adapter_overhead", f"7. compiled train step / eager train step{WHERE}", t["compiled"] / t["eager"],
               "reported", seconds=t, compile_seconds=compile_seconds,
               compiled_flop_util=step_flops / t["compiled"] / peak)


if __name__ == "__main__":
    main()
