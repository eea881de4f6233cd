"""Safe to run for a team (issue 37), the fast parts: bad input caught by `mlora validate` and
`sweep` before anything is written; tracking URIs redacted in every file and line mlora writes
(a real SQLite MLflow store; the password-carrying URI is only formatted, never connected to);
--overwrite / --resume never lose a sweep."""
from __future__ import annotations

import json
from pathlib import Path

import pytest
import yaml

from orchestrator import tracking
from orchestrator.cli import main
from orchestrator.finish import ui_hint
from orchestrator.load import load_experiment
from orchestrator.plan import exact_lr, plan
from orchestrator.record import (
    SWEEP_FILE,
    NewSweep,
    discard_old,
    load_sweep,
    prepare_output_dir,
    restore_old,
    start_record,
    tracking_uri_of,
)
from orchestrator.redact import check_tracking_uri, redact_text, redact_uri
from orchestrator.report import write_report

SECRET = "s3cret"
PG = f"postgresql+psycopg2://u:{SECRET}@127.0.0.1:1/db"
GOOD = {"name": "t", "model": "builtin:tiny", "adapter": {"rank": 8}}


def _yaml(tmp_path: Path, **over) -> Path:
    cfg = tmp_path / "exp.yaml"
    cfg.write_text(yaml.safe_dump({**GOOD, "output_dir": str(tmp_path / "out"), **over}))
    return cfg


def _one_error_line(capsys) -> str:
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and err[0].startswith("mlora: error: "), err
    return err[0]


def _hits(root: Path, needle: str = SECRET) -> list[str]:
    return [str(p) for p in root.rglob("*") if p.is_file() and needle.encode() in p.read_bytes()]


# ---- item 4: bad input at validate ---------------------------------------------------------

def test_close_lrs_get_distinct_ids_through_validate(tmp_path, capsys):
    cfg = _yaml(tmp_path, lrs=[1.0e-4, 1.2e-4], arms={"dylora": {}})
    assert main(["validate", str(cfg)]) == 0, capsys.readouterr().err
    assert "2 trials" in capsys.readouterr().out
    ids = [t.trial_id for t in plan(load_experiment(cfg))]
    assert ids == ["dylora-r8-lr1e-04-s0", "dylora-r8-lr1.2e-04-s0"]


@pytest.mark.parametrize("lr", [3e-3, 1e-3, 1.2e-4, 2.5e-5, 0.1 + 0.2, 1 / 3])
def test_trial_ids_carry_the_lr_exactly_and_one_digit_ids_are_unchanged(lr):
    assert float(exact_lr(lr)) == lr
    if float(f"{lr:.0e}") == lr:
        assert exact_lr(lr) == f"{lr:.0e}"   # the default sweep's ids (lr3e-03) are what they were


def test_no_assert_guards_user_input():
    root = Path(__file__).resolve().parents[2] / "orchestrator"
    assert not [p.name for p in root.glob("*.py") if "\n    assert " in p.read_text() or "\nassert " in p.read_text()]


def test_hub_model_missing_from_the_offline_cache(tmp_path, capsys, monkeypatch):
    """validate warns (a shipped hub config must validate on any machine); sweep and train refuse,
    one line, exit 2, nothing written."""
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    out = tmp_path / "out"
    cfg = _yaml(tmp_path, model="nobody-org/not-cached-model")
    assert main(["validate", str(cfg)]) == 0
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and err[0].startswith("mlora: warning: model: nobody-org/not-cached-model is not in the "
                                               "offline hub cache"), err
    for command in ("sweep", "train"):
        assert main([command, str(cfg)]) == 2
        assert "not in the offline hub cache" in _one_error_line(capsys)
    assert not out.exists()


def test_a_cached_hub_model_passes_offline(tmp_path, monkeypatch):
    """The real hub cache layout (models--org--name/refs/main -> snapshots/<hash>/config.json)."""
    import huggingface_hub.constants

    from mlora_core.models import offline_cache_problem
    repo = tmp_path / "hub" / "models--org--cached"
    (repo / "refs").mkdir(parents=True)
    (repo / "refs" / "main").write_text("a" * 40)
    (repo / "snapshots" / ("a" * 40)).mkdir(parents=True)
    (repo / "snapshots" / ("a" * 40) / "config.json").write_text("{}")
    monkeypatch.setattr(huggingface_hub.constants, "HF_HUB_CACHE", str(tmp_path / "hub"))
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    assert offline_cache_problem("org/cached") is None
    assert "revision v2" in offline_cache_problem("org/cached", "v2")
    assert offline_cache_problem("builtin:tiny") is None
    monkeypatch.setenv("HF_HUB_OFFLINE", "0")
    assert offline_cache_problem("org/absent") is None   # online: the hub is asked at load time


# ---- item 1 (part): one redaction helper ---------------------------------------------------

@pytest.mark.parametrize("uri,want", [
    (PG, "postgresql+psycopg2://u:***@127.0.0.1:1/db"),
    ("https://h:5000/?token=abc&x=1", "https://h:5000/?token=***&x=1"),
    ("https://ghp_abcdefghijklmnopqrstuvwx@h/p", "https://***@h/p"),
    ("http://user@h:5000", "http://user@h:5000"),
    ("sqlite:////tmp/a/mlflow.db", "sqlite:////tmp/a/mlflow.db"),
    ("/tmp/mlruns", "/tmp/mlruns")])
def test_redact_uri(uri, want):
    assert redact_uri(uri) == want
    assert redact_text(f"(OperationalError) could not reach {uri} now") == f"(OperationalError) could not reach {want} now"


def _recorded_sweep(tmp_path: Path) -> tuple[Path, dict, str]:
    """A new sweep's record on a real SQLite store, its experiment naming a password-carrying URI."""
    out = tmp_path / "out"
    out.mkdir()
    cfg = _yaml(tmp_path, tracking={"uri": PG})
    exp = load_experiment(cfg)
    uri = f"sqlite:///{tmp_path / 'mlflow.db'}"
    state = start_record(exp, plan(exp), NewSweep(out, uri, str(cfg), "", False))
    return out, state, uri


def test_sweep_json_experiment_yaml_and_the_mlflow_config_hold_no_password(tmp_path):
    out, state, uri = _recorded_sweep(tmp_path)
    assert _hits(out) == []
    written = json.loads((out / SWEEP_FILE).read_text())
    assert written["experiment"]["tracking"]["uri"] == redact_uri(PG) and written["tracking_uri"] == uri
    c = tracking.client(uri)
    config = Path(c.download_artifacts(state["parent_run_id"], "config.yaml", str(tmp_path / "dl"))).read_text()
    assert SECRET not in config and redact_uri(PG) in config
    run = c.get_run(state["parent_run_id"])
    assert SECRET not in json.dumps([run.data.tags, run.data.params])


def test_a_stored_redacted_uri_is_refused_unless_one_is_given():
    state = {"tracking_uri": redact_uri(PG)}
    with pytest.raises(ValueError, match="--tracking-uri"):
        tracking_uri_of(state)
    assert tracking_uri_of(state, PG) == PG   # the real one reaches MLflow


def test_the_report_and_the_failure_tag_hold_no_password(tmp_path):
    out, state, uri = _recorded_sweep(tmp_path)
    tracking.fail_trial(uri, state["parent_run_id"], f"(psycopg2.OperationalError) connection to {PG} refused")
    tag = tracking.client(uri).get_run(state["parent_run_id"]).data.tags["mlora.error"]
    assert SECRET not in tag and redact_uri(PG) in tag
    import dataclasses
    result = dataclasses.replace(load_sweep(state, uri), tracking_uri=PG)   # as if tracked through PostgreSQL
    write_report(out, result)
    assert (out / "report" / "index.html").is_file() and _hits(out) == []
    assert json.loads((out / "report" / "report.json").read_text())["tracking_uri"] == redact_uri(PG)


def test_printed_lines_hold_no_password(tmp_path, capsys):
    assert SECRET not in ui_hint(PG) and SECRET not in ui_hint("https://u:s3cret@h:5000")
    # an MLflow error quoting the URI, through the CLI's one error line
    assert main(["report", str(tmp_path / "none"), "--tracking-uri", PG]) == 2
    assert SECRET not in capsys.readouterr().err
    from orchestrator.cli import _fail
    _fail(f"cannot fetch models:/m@recommended from {PG}: refused")
    assert SECRET not in _one_error_line(capsys)


def test_an_inline_password_warns_once_and_is_never_printed(tmp_path, capsys):
    cfg = _yaml(tmp_path)
    (tmp_path / "out").mkdir()
    (tmp_path / "out" / "notes.txt").write_text("mine")  # refused after the warning: nothing is connected to
    assert main(["sweep", str(cfg), "--tracking-uri", PG]) == 2
    err = capsys.readouterr().err
    assert SECRET not in err
    assert "MLFLOW_TRACKING_USERNAME / MLFLOW_TRACKING_PASSWORD" in err and err.count("warning") == 1


# ---- item 3 (part): nothing lost -----------------------------------------------------------

def _old_sweep(out: Path) -> None:
    (out / "report").mkdir(parents=True)
    (out / SWEEP_FILE).write_text(json.dumps({"tracking_uri": "sqlite:////nowhere/mlflow.db"}))
    (out / "report" / "index.html").write_text("old")


def test_bad_tracking_scheme_touches_nothing(tmp_path, capsys):
    out = tmp_path / "out"
    _old_sweep(out)
    cfg = _yaml(tmp_path)
    for extra in (["--overwrite"], ["--resume"]):
        assert main(["sweep", str(cfg), "--tracking-uri", "htp://x", *extra]) == 2
        assert "unknown scheme 'htp'" in _one_error_line(capsys)
    assert sorted(p.name for p in tmp_path.iterdir()) == ["exp.yaml", "out"]
    assert (out / "report" / "index.html").read_text() == "old" and len(list(out.rglob("*"))) == 3
    with pytest.raises(ValueError):
        check_tracking_uri("htp://x")
    assert check_tracking_uri("postgresql+psycopg2://h/db") and check_tracking_uri("/tmp/mlruns")


@pytest.mark.parametrize("overwrite", [True, False])
def test_an_output_dir_with_foreign_files_is_refused(tmp_path, capsys, overwrite):
    out = tmp_path / "out"
    _old_sweep(out) if overwrite else out.mkdir()
    (out / "thesis.tex").write_text("keep me")
    cfg = _yaml(tmp_path)
    assert main(["sweep", str(cfg), *(["--overwrite"] if overwrite else [])]) == 2
    assert "holds files no sweep created (thesis.tex)" in _one_error_line(capsys)
    assert (out / "thesis.tex").read_text() == "keep me"
    assert (out / SWEEP_FILE).is_file() == overwrite and sorted(p.name for p in tmp_path.iterdir()) == ["exp.yaml", "out"]


def test_overwrite_moves_the_old_sweep_aside_until_the_new_one_is_recorded(tmp_path):
    out = tmp_path / "out"
    _old_sweep(out)
    state, aside = prepare_output_dir(out, resume=False, overwrite=True)
    assert state is None and (aside / "report" / "index.html").read_text() == "old" and list(out.iterdir()) == []
    restore_old(out, aside)          # the new sweep failed before its sweep.json: the old one is back
    assert (out / "report" / "index.html").read_text() == "old" and not aside.exists()
    _, aside = prepare_output_dir(out, resume=False, overwrite=True)
    (out / SWEEP_FILE).write_text("{}")   # the new sweep is recorded
    restore_old(out, aside)               # a no-op now
    discard_old(aside)
    assert not aside.exists() and sorted(p.name for p in tmp_path.iterdir()) == ["out"]


def test_resume_takes_an_explicit_tracking_uri(tmp_path):
    out, state, uri = _recorded_sweep(tmp_path)
    moved = tmp_path / "moved.db"
    Path(uri.removeprefix("sqlite:///")).rename(moved)   # the store moved (a new head after `ray up`)
    with pytest.raises(FileNotFoundError):
        load_sweep(json.loads((out / SWEEP_FILE).read_text()))
    assert load_sweep(json.loads((out / SWEEP_FILE).read_text()), f"sqlite:///{moved}").parent_run_id == \
        state["parent_run_id"]
