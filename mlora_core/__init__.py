"""mlora_core: MatryoshkaLoRA / LoRA / DyLoRA adapters, training, per-rank evaluation, cost.

Usable alone; knows nothing of Ray or MLflow.

    import mlora_core as mc
    model = mc.add_adapters(model, mc.AdapterConfig(method="matryoshka", rank=16))
    ...train...
    mc.set_rank(model, 4)                 # use the first 4 components only (rule="svd": best rank-4)
    mc.save_adapter(model, "out/r4", rank=4)   # PEFT-loadable LoRA of rank 4
"""
from .aurac import aurac
from .config import LLAMA_TARGETS, AdapterConfig, powers_of_two_upto
from .export import load_adapter, read_adapter_config, save_adapter
from .inject import (
    AdapterSummary,
    adapter_config,
    adapter_layers,
    adapter_summary,
    add_adapters,
    find_target_modules,
    merge_adapters,
    merge_and_unload,
    sample_train_rank,
    set_example_p,
    set_rank,
    unmerge_adapters,
)
from .layer import AdapterLayer, svd_factors
from .methods import METHODS, OBJECTIVES, RULES
from .p_schedule import p_vector, rank_weights, scale

__all__ = [
    "AdapterConfig", "AdapterLayer", "AdapterSummary", "adapter_config", "LLAMA_TARGETS", "METHODS", "OBJECTIVES",
    "RULES", "add_adapters", "adapter_layers", "adapter_summary", "aurac", "find_target_modules", "load_adapter",
    "merge_adapters", "merge_and_unload", "p_vector", "powers_of_two_upto", "rank_weights", "read_adapter_config",
    "sample_train_rank", "save_adapter", "scale", "set_example_p", "set_rank", "svd_factors", "unmerge_adapters",
]
