"""The sweep's searcher (orchestrator/search.py) driven by hand: what it hands out and when, and how
it adopts trials from MLflow after a restore (real Optuna, real SQLite MLflow; no Ray cluster)."""
from __future__ import annotations

import pytest

from orchestrator import tracking
from orchestrator.load import parse_experiment
from orchestrator.messages import SweepRef, TrialContext
from orchestrator.plan import plan, run_config, search_groups, trial_params
from orchestrator.search import METRIC, SweepSearcher


def experiment(**search):
    return parse_experiment({
        "name": "s", "seeds": [0, 1, 2], "lrs": [1e-3],
        "arms": {"matryoshka": {}, "lora": {"ranks": [4], "search": {"algorithm": "optuna", "num_samples": 3,
                                                                     "lr": {"low": 1e-4, "high": 1e-1}, **search}}}})


def searcher(exp, ctx=None):
    return SweepSearcher(plan(exp), search_groups(exp), ctx or TrialContext(exp, "out", SweepRef(), "", "out/ray"),
                         exp.eval.rules[0])


def test_grid_first_then_samples_on_the_first_seed_then_the_best_on_the_others():
    exp = experiment()
    s = searcher(exp)
    s._synced = True   # nothing in MLflow to adopt
    grid = [s.suggest(f"g{i}")["spec"]["trial_id"] for i in range(3)]
    assert grid == [t.trial_id for t in plan(exp)]          # the Matryoshka arm's 3 seeds
    samples = [s.suggest(f"o{i}")["spec"] for i in range(3)]
    assert [x["sample"] for x in samples] == [0, 1, 2] and {x["seed"] for x in samples} == {0}
    assert all(1e-4 <= x["lr"] <= 1e-1 for x in samples) and len({x["lr"] for x in samples}) == 3
    assert s.suggest("wait") is None                          # results pending: nothing to hand out yet
    for i, score in enumerate((0.2, 0.9, 0.5)):
        s.on_trial_complete(f"o{i}", {METRIC: score})
    repeats = [s.suggest(f"r{i}")["spec"] for i in range(2)]
    assert [x["seed"] for x in repeats] == [1, 2] and {x["lr"] for x in repeats} == {samples[1]["lr"]}
    assert {x["sample"] for x in repeats} == {1}
    assert s.suggest("done") == "FINISHED"


def test_every_searched_arm_gets_its_samples_and_the_search_ends():
    """Several searched arms (here the LoRA grid's three): each draws exactly its num_samples, every
    draw is handed out (none lost while another arm runs), and the searcher finishes."""
    exp = parse_experiment({"name": "s", "seeds": [0, 1], "arms": {"lora": {"ranks": [1, 2, 4]}},
                            "search": {"algorithm": "optuna", "num_samples": 2, "lr": {"low": 1e-4, "high": 1e-1}}})
    s = searcher(exp)
    s._synced = True
    issued, done, n = {}, set(), 0
    while (got := s.suggest(f"t{n}")) not in (None, "FINISHED"):
        issued[f"t{n}"] = got["spec"]
        n += 1
        if n % 2 == 0:  # two at a time, as with max_concurrent_trials 2: the older one completes
            tid = next(t for t in issued if t not in done)
            done.add(tid)
            s.on_trial_complete(tid, {METRIC: issued[tid]["lr"]})
    for tid in [t for t in issued if t not in done]:   # the rest complete; then the repeats
        s.on_trial_complete(tid, {METRIC: issued[tid]["lr"]})
    while (got := s.suggest(f"t{n}")) not in (None, "FINISHED"):
        issued[f"t{n}"] = got["spec"]
        s.on_trial_complete(f"t{n}", {METRIC: 0.0})
        n += 1
    assert s.suggest("end") == "FINISHED"
    for arm in ("lora-r1", "lora-r2", "lora-r4"):
        mine = [x for x in issued.values() if x["arm"] == arm]
        samples = [x for x in mine if x["seed"] == 0]
        assert sorted(x["sample"] for x in samples) == [0, 1], (arm, mine)
        (repeat,) = [x for x in mine if x["seed"] == 1]
        assert repeat["lr"] == max(x["lr"] for x in samples)     # the best score (= its lr here) repeated


def test_failed_and_stopped_samples_count_but_are_never_chosen():
    s = searcher(experiment())
    s._synced = True
    for i in range(3):
        s.suggest(f"g{i}")
    samples = [s.suggest(f"o{i}")["spec"] for i in range(3)]
    s.on_trial_complete("o0", None, error=True)      # crashed
    s.on_trial_complete("o1", {"step": 20})            # stopped early by ASHA: no score
    s.on_trial_complete("o2", {METRIC: 0.1})
    assert {x["lr"] for x in (s.suggest("r0")["spec"], s.suggest("r1")["spec"])} == {samples[2]["lr"]}


def test_the_sampler_seed_makes_the_search_reproducible():
    def lrs(seed):
        s = searcher(experiment(seed=seed))
        s._synced = True
        return [s.suggest(str(i))["spec"]["lr"] for i in range(6)][3:]
    assert lrs(0) == lrs(0) and lrs(0) != lrs(1)


def test_restore_adopts_the_runs_mlflow_has_and_the_checkpoint_does_not(tmp_path):
    exp = experiment(num_samples=4)
    uri = f"sqlite:///{tmp_path}/mlflow.db"
    exp_id, parent = tracking.start_sweep_run(tracking.SweepRun(uri, "s", "sweep"))
    ctx = TrialContext(exp, str(tmp_path), SweepRef(uri, parent), exp_id, str(tmp_path / "ray"))
    s = searcher(exp, ctx)
    for i in range(3):
        s.suggest(f"g{i}")
    s.suggest("o0")
    s.save(str(tmp_path / "ckpt"))          # Tune checkpoints here, knowing only sample 0...
    later = [s.suggest("o1")["spec"], s.suggest("o2")["spec"]]   # ...then hands out two more and dies
    uninterrupted = s.suggest("o3")["spec"]                         # (what it would have drawn next)
    group = search_groups(exp)[0]
    # in MLflow: sample 1 finished (with its validation score), sample 2 still RUNNING
    for spec, finished in ((later[0], True), (later[1], False)):
        t = group.sample(spec["sample"], spec["lr"])
        run_id = tracking.trial_run(ctx, t, trial_params(exp, t, run_config(exp, t)), {})
        if finished:
            tracking.client(uri).log_metric(run_id, f"val_acc_{exp.eval.rules[0]}_rank_4", 0.8)
            tracking.client(uri).set_terminated(run_id, "FINISHED")

    restored = searcher(exp, ctx)
    restored.restore(str(tmp_path / "ckpt"))
    again = restored.suggest("new0")["spec"]
    assert again["trial_id"] == later[1]["trial_id"]      # the unfinished one runs again, as itself
    fresh = restored.suggest("new1")["spec"]              # sample 1 is adopted, not re-run: next is sample 3,
    assert fresh["sample"] == 3 and fresh["lr"] == uninterrupted["lr"]   # the draw it would have had
    assert restored.suggest("wait") is None
    for tid, score in (("o0", 0.3), ("new0", 0.5), ("new1", 0.1)):
        restored.on_trial_complete(tid, {METRIC: score})
    repeats = [restored.suggest("r0")["spec"], restored.suggest("r1")["spec"]]
    assert {x["lr"] for x in repeats} == {later[0]["lr"]}    # the adopted sample (0.8) is the best


def test_config_errors_for_search():
    from orchestrator.load import ConfigError
    with pytest.raises(ConfigError, match="search.lr: optuna needs a range"):
        parse_experiment({"name": "s", "search": {"algorithm": "optuna"}})
    with pytest.raises(ConfigError, match="tasks.val.enabled"):
        parse_experiment({"name": "s", "tasks": {"val": {"enabled": False}},
                          "search": {"algorithm": "optuna", "lr": {"low": 1e-4, "high": 1e-2}}})


@pytest.mark.slow
def test_a_searched_sweep_resumes_after_a_driver_kill_without_duplicates(tiny_model_dir, platypus_files, tmp_path):
    """Optuna per arm through Ray Tune, end to end: kill the driver (and its local Ray) once a sample
    finished, resume, and every trial has exactly one FINISHED MLflow run; the report says how many
    trials the search took."""
    import os
    import signal
    import time

    from .conftest import mlora, runs_by_trial, start_sweep, sweep_log_tail, tiny_experiment, write_yaml

    out = tmp_path / "out"
    exp = tiny_experiment(tiny_model_dir, platypus_files, out, seeds=[0, 1],
                          arms={"lora": {"ranks": [2], "search": {"algorithm": "optuna", "num_samples": 3,
                                                                  "lr": {"low": 1e-3, "high": 1e-1}}}},
                          resources={"workers_per_trial": 1, "cpus_per_worker": 1, "max_concurrent_trials": 1})
    cfg = write_yaml(tmp_path / "exp.yaml", exp)
    proc = start_sweep(cfg)
    runs = lambda: runs_by_trial(out)  # noqa: E731

    try:
        deadline = time.time() + 300
        while time.time() < deadline and proc.poll() is None:
            if (out / "sweep.json").is_file() and any(r.info.status == "FINISHED" for rs in runs().values() for r in rs):
                break
            time.sleep(1)
    finally:
        os.killpg(proc.pid, signal.SIGKILL)
        proc.wait()
    before = runs()
    assert 1 <= len(before) < 4, (sorted(before), sweep_log_tail(cfg))

    done = mlora("sweep", cfg, "--resume")
    assert done.returncode == 0, done.stdout[-3000:] + done.stderr[-3000:]
    after = runs()
    assert all(len(rs) == 1 and rs[0].info.status == "FINISHED" for rs in after.values()), \
        {tid: [r.info.status for r in rs] for tid, rs in after.items()}
    samples = [tid for tid in after if tid.endswith("-s0")]
    repeats = [tid for tid in after if tid.endswith("-s1")]
    assert len(samples) == 3 and len(repeats) == 1, sorted(after)
    for tid, rs in before.items():   # what ran before the kill kept its run
        assert after[tid][0].info.run_id == rs[0].info.run_id
    assert "search lora-r2: 4 trials (3 lrs on the first seed" in done.stdout
