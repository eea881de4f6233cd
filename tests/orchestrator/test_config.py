"""Bad experiment configs: exit 2, one line per problem naming its key path, nothing written."""
from __future__ import annotations

import pytest
import yaml

from orchestrator.cli import main
from orchestrator.load import ConfigError, load_experiment, parse_experiment

from .conftest import ROOT, mlora

GOOD = {"name": "t", "model": "builtin:tiny", "adapter": {"rank": 8}, "output_dir": "OUT"}

BAD = [  # (override applied to GOOD, expected key path in the error)
    ({"nmae": "typo"}, "nmae"),
    ({"adapter": {"rank": 0}}, "adapter.rank"),
    ({"adapter": {"rank": "sixteen"}}, "adapter.rank"),
    ({"adapter": {"rank": 8, "eval_ranks": [1, 16]}}, "adapter.eval_ranks"),
    ({"adapter": {"rank": 8, "scaling": "cubic"}}, "adapter.scaling"),
    ({"adapter": {"rank": 8, "dropout": 1.5}}, "adapter.dropout"),
    ({"arms": {"lora": {"ranks": [1, 32]}}}, "arms.lora.ranks"),
    ({"arms": {"matryoshka": {"p_schedules": ["spiral"]}}}, "arms.matryoshka.p_schedules"),
    ({"arms": {"matryoshka": {"objectives": ["summed", "stratified"], "p_schedules": {"summed": ["diag"]}}}},
     "arms.matryoshka.p_schedules"),
    ({"arms": {"dylora": {"lrs": [-1e-3]}}}, "arms.dylora.lrs.0"),
    ({"lrs": []}, "lrs"),
    ({"seeds": [-1]}, "seeds.0"),
    ({"training": {"steps": -5}}, "training.steps"),
    ({"training": {"batch_size": 8, "warmup": 3}}, "training.warmup"),
    ({"resources": {"workers_per_trial": 0}}, "resources.workers_per_trial"),
    ({"resources": {"gpus_per_worker": -1}}, "resources.gpus_per_worker"),
    ({"tasks": {"train": {"name": "mnist"}}}, "tasks.train.name"),
    ({"cost": {"price_per_device_hour": "cheap"}}, "cost.price_per_device_hour"),
    ({"model": "/nonexistent/model/dir"}, "model"),
    ({"model": "builtin:huge"}, "model"),
    ({"early_stopping": {"asha": True, "reduction_factor": 1}}, "early_stopping.reduction_factor"),
    ({"arms": {"lora": {"budgets": [0]}}}, "arms.lora.budgets.0"),
    ({"arms": {"dylora": {"budgets": [2, 2]}}}, "arms.dylora.budgets"),
    ({"arms": {"matryoshka": {"budgets": {"sumed": [1]}}}}, "arms.matryoshka.budgets"),
]


@pytest.mark.parametrize("override,key", BAD, ids=[k for _, k in BAD])
def test_bad_config_exits_2_with_key_path(tmp_path, capsys, override, key):
    out = tmp_path / "out"
    cfg = tmp_path / "bad.yaml"
    cfg.write_text(yaml.safe_dump({**GOOD, **override, "output_dir": str(out)}))
    for command in ("validate", "plan", "sweep"):
        assert main([command, str(cfg)]) == 2
        err = capsys.readouterr().err
        lines = err.strip().splitlines()
        assert len(lines) == 1 and lines[0].startswith(f"mlora: error: {cfg}: {key}:"), err
        assert "Traceback" not in err
    assert not out.exists()  # nothing written


def test_every_problem_is_reported_at_once(tmp_path, capsys):
    cfg = tmp_path / "bad.yaml"
    cfg.write_text(yaml.safe_dump({**GOOD, "lrs": [0], "training": {"steps": 0}, "extra": 1}))
    assert main(["validate", str(cfg)]) == 2
    err = capsys.readouterr().err
    for key in ("lrs.0:", "training.steps:", "extra:"):
        assert key in err


@pytest.mark.parametrize("text,where", [("name: [unclosed", "line 1"), ("- just\n- a list\n", "(top level)"),
                                        ("", "(top level)")])
def test_not_a_mapping_or_not_yaml(tmp_path, capsys, text, where):
    cfg = tmp_path / "bad.yaml"
    cfg.write_text(text)
    assert main(["validate", str(cfg)]) == 2
    assert where in capsys.readouterr().err


def test_missing_config_file(tmp_path, capsys):
    assert main(["sweep", str(tmp_path / "nope.yaml")]) == 2
    assert "no such file" in capsys.readouterr().err


def test_shipped_experiments_validate():
    from orchestrator.plan import plan, search_groups
    paths = sorted((ROOT / "experiments").glob("*.yaml"))
    for path in paths:   # each is named after its file (its output dir and MLflow experiment) and plans trials
        exp = load_experiment(path)
        assert exp.name == path.stem and (plan(exp) or search_groups(exp)), path
    assert len(paths) >= 10


def test_console_script_exit_code(tmp_path):
    cfg = tmp_path / "bad.yaml"
    cfg.write_text(yaml.safe_dump({**GOOD, "adapter": {"rank": -1}, "output_dir": str(tmp_path / "o")}))
    proc = mlora("validate", cfg, timeout=120)
    assert proc.returncode == 2
    assert "adapter.rank:" in proc.stderr and "Traceback" not in proc.stderr


def test_priced_devices_per_worker_are_its_gpus_or_its_cpu_cores():
    from orchestrator.plan import estimate, plan, run_config
    exp = load_experiment(ROOT / "experiments" / "tiny.yaml")
    def with_resources(**res):
        return exp.model_copy(update={"resources": exp.resources.model_copy(update=res)})
    one, two, gpu = with_resources(cpus_per_worker=1), with_resources(cpus_per_worker=2), \
        with_resources(cpus_per_worker=8, gpus_per_worker=1)
    spec = plan(exp)[0]
    assert [run_config(e, spec).devices_per_worker for e in (one, two, gpu)] == [1, 2, 1]
    # the estimate prices the same compute plus each trial's start-up on every device it holds
    e1, e2 = estimate(one, [spec])[0], estimate(two, [spec])[0]
    startup_hours = exp.cost.startup_seconds / 3600
    assert e2.device_hours - e1.device_hours == pytest.approx(startup_hours)


def test_training_settings_reach_the_run_and_survive_its_json_round_trip():
    from mlora_core.run import RunConfig
    from orchestrator.plan import plan, run_config
    exp = load_experiment(ROOT / "experiments" / "tiny.yaml")
    compiled = exp.model_copy(update={"training": exp.training.model_copy(update={"compile": True})})
    rc = run_config(compiled, plan(compiled)[0])
    assert rc.train.compile is True and run_config(exp, plan(exp)[0]).train.compile is False
    assert RunConfig.from_dict(rc.to_dict()).train == rc.train  # what a Ray trial receives


def test_plan_estimate_exact_in_passes_budget_and_price():
    from orchestrator.plan import estimate, plan
    exp = parse_experiment({"name": "e", "adapter": {"rank": 16, "train_ranks": [1, 4, 16], "eval_ranks": [1, 4, 16]},
                            "arms": {"matryoshka": {"objectives": ["stratified", "per_rank"],
                                                    "budgets": {"stratified": [1, 3], "per_rank": [1]}},
                                     "lora": {"ranks": [16]}},
                            "cost": {"effective_tflops": 0.5, "startup_seconds": 10, "price_per_device_hour": 2.0}})
    trials = plan(exp)
    est = {t.arm: e for t, e in zip(trials, estimate(exp, trials))}
    one = est["matryoshka-stratified-diag-r16"].train_flops
    assert one == est["lora-r16"].train_flops                          # one forward at rank 16, like LoRA-16
    assert est["matryoshka-stratified-diag-r16-x3"].train_flops == 3 * one   # budget 3: three times the steps
    assert est["matryoshka-per_rank-diag-r16"].train_flops == 3 * one        # |R| = 3 passes a step
    for e in est.values():   # 1 CPU device: compute at the effective rate + start-up, then the price
        assert e.device_hours == pytest.approx((e.train_flops / 0.5e12 + 10) / 3600)
        assert e.dollars == pytest.approx(2.0 * e.device_hours)


@pytest.mark.parametrize("budgets,detail", [([1, -1], "(item 1: input should be greater than 0)"),
                                            ({"sumed": [1]}, "(key 'sumed': input should be 'summed', ")])
def test_a_union_key_answers_in_one_line_with_what_it_accepts(budgets, detail):
    """pydantic reports each member of `list | dict` on its own line (budgets.list[...].1, budgets.dict[...]):
    the user gets one line naming the key, what it accepts, and what is wrong."""
    with pytest.raises(ConfigError) as e:
        parse_experiment({**GOOD, "arms": {"matryoshka": {"budgets": budgets}}})
    (line,) = e.value.problems
    assert line.startswith("arms.matryoshka.budgets: must be a list of numbers > 0 ([1, 1.5, 3]), or such a list "
                           "per objective") and detail in line and "[" not in line.split(":")[0], line


def test_budgets_on_every_arm_reach_the_plan_the_steps_and_the_estimate():
    """A budget multiplies training.steps (rounded to a whole step) on any arm; each budget of an arm is
    an arm of its own (its id says x1.5), and the plan's LoRA grid is each rank at its least budget."""
    from orchestrator.plan import estimate, lora_grid, plan, run_config
    exp = parse_experiment({**GOOD, "adapter": {"rank": 4, "eval_ranks": [1, 4]}, "training": {"steps": 101},
                            "arms": {"lora": {"budgets": [1, 1.5, 3]}, "dylora": {"budgets": [2]},
                                     "matryoshka": {"objectives": ["stratified"], "budgets": [0.5]}}})
    trials = plan(exp)
    steps = {t.arm: run_config(exp, t).train.steps for t in trials}
    assert steps == {"matryoshka-stratified-diag-r4-x0.5": 50, "lora-r1": 101, "lora-r1-x1.5": 152, "lora-r1-x3": 303,
                     "lora-r4": 101, "lora-r4-x1.5": 152, "lora-r4-x3": 303, "dylora-r4-x2": 202}
    assert [t.arm for t in lora_grid(trials)] == ["lora-r1", "lora-r4"]
    est = {t.arm: e.train_flops for t, e in zip(trials, estimate(exp, trials))}
    assert est["lora-r4-x3"] == pytest.approx(3 * est["lora-r4"])


def test_schedules_and_budgets_per_objective_make_exactly_those_trials():
    """The default's arm: the paper's summed forward with its own P (diag) at 1x, stratified with
    the `top` rank weights at 2x (docs/findings.md section 8), and no crossing of the two."""
    from orchestrator.plan import plan
    exp = parse_experiment({**GOOD, "adapter": {"rank": 4, "train_ranks": [1, 2, 4], "eval_ranks": [1, 4]},
                            "arms": {"matryoshka": {"objectives": ["summed", "stratified"],
                                                    "p_schedules": {"summed": ["diag"], "stratified": ["top", "diag"]},
                                                    "budgets": {"summed": [1], "stratified": [2]}}}})
    assert [t.arm for t in plan(exp)] == ["matryoshka-summed-diag-r4", "matryoshka-stratified-top-r4-x2",
                                          "matryoshka-stratified-diag-r4-x2"]
    shipped = {t.arm for t in plan(load_experiment(ROOT / "experiments" / "tiny.yaml")) if t.method == "matryoshka"}
    assert shipped == {"matryoshka-summed-diag-r16", "matryoshka-stratified-top-r16-x2"}


def test_the_trial_record_round_trips_and_says_only_what_applies():
    from orchestrator.plan import RECORD_VERSION, TrialSpec
    lora = TrialSpec("lora", 4, 3e-3, 1, budget=1.5)
    mat = TrialSpec("matryoshka", 16, 1e-3, 0, "stratified", "diag", 3, sample=2)
    for spec in (lora, mat):
        assert TrialSpec.from_json(spec.to_json()) == spec
    assert (lora.arm, lora.trial_id) == ("lora-r4-x1.5", "lora-r4-x1.5-lr3e-03-s1")
    assert mat.trial_id == "matryoshka-stratified-diag-r16-x3-o02-lr1.00e-03-s0"
    assert lora.objective is None and lora.p_schedule is None and '"-"' not in lora.to_json()
    with pytest.raises(ValueError, match="trial record version"):
        TrialSpec.from_dict({**lora.as_dict(), "v": RECORD_VERSION + 1})
