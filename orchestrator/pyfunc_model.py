"""The registered model: an MLflow pyfunc that serves an adapter at any rank, under any rule.

Logged as *models from code* (this file is the model's code; nothing is pickled):

    model = mlflow.pyfunc.load_model("models:/mlora-tiny@recommended")
    model.predict(["Question: ...\\nAnswer: "], params={"rank": 4, "rule": "svd", "max_new_tokens": 32})

Artifacts: `adapter/` (mlora_config.json + mlora_adapter.safetensors, full rank) and, for
builtin:tiny and local base models, `base_model/` (self-contained). For hub models the model
config records the id and revision instead; for a builtin converted from an installed package
(builtin:smollm2-135m-instruct) the id and the package file's version + sha256, which must
match the serving machine's install. `rank` and `rule` default to the recommended ones (the
signature's param defaults); rules: truncate | prefix | svd (mlora_core/layer.py). Prompts are
formatted as in training (mlora_core.data.tokenize.prompt_ids: the chat template when the model has one).
"""
from __future__ import annotations

import mlflow
from mlflow.pyfunc import PythonModel


class MatryoshkaAdapterModel(PythonModel):
    def load_context(self, context):
        from mlora_core import load_adapter
        from mlora_core.models import load_registered_base

        cfg = context.model_config or {}
        self.model, self.tokenizer = load_registered_base(context.artifacts.get("base_model"), cfg["base_model_id"],
                                                          cfg.get("base_model_source"), cfg.get("base_model_revision"))
        self.model.eval()
        load_adapter(self.model, context.artifacts["adapter"])
        self.default_rank = int(cfg["recommended_rank"])
        self.default_rule = cfg.get("recommended_rule", "truncate")
        self.max_rank = int(cfg["max_rank"])

    def predict(self, context, model_input: list[str], params: dict | None = None) -> list[str]:
        from mlora_core import set_rank
        from mlora_core.scoring.generate import generate

        params = params or {}
        rank = int(params.get("rank") or self.default_rank)
        if not 1 <= rank <= self.max_rank:
            raise ValueError(f"rank must be in 1..{self.max_rank}, got {rank}")
        set_rank(self.model, rank, params.get("rule") or self.default_rule)
        texts, _ = generate(self.model, self.tokenizer, [str(x) for x in model_input],
                            int(params.get("max_new_tokens") or 32))
        return texts


mlflow.models.set_model(MatryoshkaAdapterModel())
