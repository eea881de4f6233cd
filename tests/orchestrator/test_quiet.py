"""A newcomer's terminal (orchestrator/quiet.py): `mlora` prints our lines and Ray's trial table,
never a library's progress bars ("Loading weights", tqdm), INFO lines (MLflow's "Creating initial
MLflow database tables...") or Ray's token-auth WARNING; a user's own setting brings them back."""
from __future__ import annotations

import re

import pytest

from .conftest import cli_env, mlora, tiny_experiment, write_yaml

NOISE = re.compile(r"Loading weights|\d+%\|"                     # transformers' / tqdm's bars
                   r"|^\d{4}[-/]\d\d[-/]\d\d[ T][\d:,.]+\s+INFO\b"  # MLflow's and Ray's log records
                   r"|Token authentication is enabled", re.M)     # Ray 2.60's start-up warning


def noise(text: str) -> list[str]:
    return [line for line in text.splitlines() if NOISE.search(line)]


def test_train_loads_the_model_without_a_progress_bar_unless_asked(tiny_model_dir, platypus_files, tmp_path):
    """`mlora train` loads a saved HF model (transformers' "Loading weights" bar, which it turned
    on at import, before the CLI ran) and trains it: no bar; HF_HUB_DISABLE_PROGRESS_BARS=0 shows it."""
    cfg = write_yaml(tmp_path / "exp.yaml", tiny_experiment(
        tiny_model_dir, platypus_files, tmp_path / "out", arms={"lora": {"ranks": [1]}},
        training={"steps": 2, "batch_size": 4, "max_length": 96, "warmup_steps": 1}))
    quiet = mlora("train", cfg, "--output-dir", tmp_path / "quiet", timeout=300)
    assert quiet.returncode == 0, quiet.stderr[-3000:]
    assert noise(quiet.stdout + quiet.stderr) == [], quiet.stderr[-3000:]
    assert "training lora-r1-lr1e-02-s0" in quiet.stdout and "adapter" in quiet.stdout   # ours stay

    asked = mlora("train", cfg, "--output-dir", tmp_path / "asked", timeout=300,
                  env=cli_env(HF_HUB_DISABLE_PROGRESS_BARS="0"))
    assert asked.returncode == 0, asked.stderr[-3000:]
    assert any("Loading weights" in line for line in noise(asked.stderr)), asked.stderr[-3000:]


@pytest.mark.slow
def test_a_sweep_and_its_registration_print_no_library_chatter(tiny_sweep):
    """The shared sweep (local Ray, SQLite MLflow, the registry on): no Ray token-auth warning or
    start-up line, no MLflow INFO line, no weight-loading bar; Ray's trial table (ours) stays."""
    _, _, proc = tiny_sweep
    assert noise(proc.stdout + proc.stderr) == [], (proc.stdout + proc.stderr)[-4000:]
    assert "== Status ==" in proc.stdout and "registered: models:/tiny-test/1" in proc.stdout
