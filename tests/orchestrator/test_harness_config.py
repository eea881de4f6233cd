"""lm-eval tasks as an experiment's test set: `tasks.eval: {harness: [...]}` validates (each problem one
line, exit 2, before any trial), plans into a RunConfig with eval_harness, and keeps validation our
own (held out of the training data, scored by the training task's metric)."""
import subprocess
import sys

import pytest
import yaml

from orchestrator.cli import main
from orchestrator.load import load_experiment
from orchestrator.plan import plan, run_config, trial_params

from .conftest import ROOT

pytest.importorskip("lm_eval")
from tests.harness_tasks import write_tasks  # noqa: E402


def experiment(tmp_path, eval_: dict, train: dict | None = None) -> str:
    cfg = {"name": "bench", "model": "builtin:tiny", "output_dir": str(tmp_path / "out"),
           "tasks": {"train": train or {"name": "arc_easy", "source": "offline", "split": "validation", "n": 40},
                     "val": {"n": 8}, "eval": eval_},
           "adapter": {"rank": 4, "eval_ranks": [1, 4]}, "arms": {"matryoshka": {"objectives": ["stratified"]}},
           "lrs": [1.0e-3], "seeds": [0]}
    path = tmp_path / "bench.yaml"
    path.write_text(yaml.safe_dump(cfg))
    return str(path)


@pytest.fixture(scope="module")
def folder(tmp_path_factory):
    folder = tmp_path_factory.mktemp("harness_tasks")
    tasks = write_tasks(folder, 12)
    base = tasks["sciq_local"][1].read_text()
    (folder / "hub_metric.yaml").write_text(base.replace("task: sciq_local", "task: hub_metric")
                                            .replace("metric: acc_norm", "metric: bertscore"))
    return folder


def test_a_harness_test_set_validates_and_plans(tmp_path, folder, capsys):
    cfg = experiment(tmp_path, {"harness": ["sciq_local", "piqa_local"], "limit": 10, "include_path": str(folder)})
    assert main(["validate", cfg]) == 0 and "ok (bench" in capsys.readouterr().out
    exp = load_experiment(cfg)
    spec = plan(exp)[0]
    rc = run_config(exp, spec)
    assert rc.eval_harness.tasks == ("sciq_local", "piqa_local") and rc.eval_harness.limit == 10
    assert rc.eval_harness.include_path == str(folder.resolve()) and rc.eval_harness.batch_size == exp.eval.batch_size
    # validation stays ours: held out of the training rows, scored by the training task's own metric
    assert rc.val_task.held_out and rc.val_task.holdout == 8 and rc.val_task.resolved().metric.name == "multiple_choice"
    assert type(rc).from_dict(rc.to_dict()) == rc          # the record a Ray worker receives
    assert trial_params(exp, spec, rc)["eval_dataset"] == "harness:sciq_local,piqa_local"


def test_harness_problems_are_one_line_each_exit_2(tmp_path, folder, capsys):
    cfg = experiment(tmp_path, {"harness": ["sciq_local", "hub_metric"], "num_fewshot": 2, "include_path": str(folder)})
    assert main(["validate", cfg]) == 2
    err = capsys.readouterr().err
    lines = [line.strip() for line in err.splitlines() if "tasks.eval" in line]
    assert len(lines) == 3, err    # sciq_local: shots from its test questions; hub_metric: that, and bertscore
    assert any("tasks.eval.harness: task hub_metric: metric 'bertscore'" in line and "Hub" in line for line in lines)
    assert sum("no fewshot, training or validation split" in line for line in lines) == 2
    assert not (tmp_path / "out").exists()


def test_schema_errors_name_the_harness_keys(tmp_path, capsys):
    cfg = experiment(tmp_path, {"harness": [], "num_fewshot": -1, "shots": 3})
    assert main(["validate", cfg]) == 2
    err = capsys.readouterr().err
    assert "tasks.eval.harness:" in err and "tasks.eval.num_fewshot:" in err and "tasks.eval.shots:" in err


def test_without_lm_eval_a_harness_task_is_one_line_at_validate(tmp_path, folder):
    cfg = experiment(tmp_path, {"harness": ["sciq_local"], "include_path": str(folder)})
    code = ("import sys; sys.modules['lm_eval'] = None  # as if not installed\n"
            f"from orchestrator.cli import main; sys.exit(main(['validate', {cfg!r}]))")
    out = subprocess.run([sys.executable, "-c", code], cwd=ROOT, capture_output=True, text=True, timeout=300)
    assert out.returncode == 2, out.stderr
    assert 'tasks.eval.harness: lm-eval is not installed: pip install "mlora[harness]"' in out.stderr
