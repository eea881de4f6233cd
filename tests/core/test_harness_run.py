"""A run whose test set is lm-eval tasks (RunConfig.eval_harness): trained, then scored by the harness
at every (rank, rule) in memory; the primary curve is the first task's first metric, every curve is
in the result, validation stays our own (held out of the training data)."""
import json
import math

import pytest

from mlora_core.config import AdapterConfig
from mlora_core.data.tasks import TaskConfig
from mlora_core.run import RunConfig, run
from mlora_core.train import TrainConfig

pytest.importorskip("lm_eval")
from mlora_core.scoring.harness import HarnessConfig  # noqa: E402
from tests.harness_tasks import write_tasks  # noqa: E402

pytestmark = pytest.mark.usefixtures("one_thread")


def test_a_run_scores_its_test_set_with_the_harness(tmp_path):
    write_tasks(tmp_path / "tasks", 8)
    config = RunConfig(
        train_task=TaskConfig("synthetic", split="train", n=64, holdout=8),
        val_task=TaskConfig("synthetic", split="train", holdout=8, held_out=True),
        adapter=AdapterConfig(rank=4, eval_ranks=(1, 4)), train=TrainConfig(steps=2, batch_size=8, warmup_steps=0),
        eval_rules=("truncate", "prefix"),
        eval_harness=HarnessConfig(("sciq_local", "prices_local"), limit=6, include_path=str(tmp_path / "tasks")))
    assert RunConfig.from_dict(json.loads(json.dumps(config.to_dict()))) == config
    result = run(config, tmp_path / "out", log=lambda *_: None)
    assert list(result.curves) == ["truncate", "prefix"]
    assert result.curve.metric == "sciq_local/acc" and result.curve.ranks == (1, 4) and result.curve.n_examples == 6
    assert all(math.isnan(x) for x in result.curve.eval_loss)         # the harness reports no loss
    assert result.val_curves["truncate"].metric == "exact_match"       # validation: our own, its own metric
    saved = json.loads((tmp_path / "out" / "result.json").read_text())
    assert set(saved["harness_curves"]) == {"sciq_local/acc", "sciq_local/acc_norm",   # (written with sorted keys)
                                            "prices_local/exact_match,strict-match"}
    assert saved["curves"]["truncate"]["accuracy"] == saved["harness_curves"]["sciq_local/acc"]["truncate"]["accuracy"]
    assert result.cost.eval_tokens > 0 and result.cost.eval_seconds > 0
