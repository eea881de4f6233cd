"""Property test: hundreds of malformed experiment files, every one rejected cleanly.

Each document is a valid experiment with one or more corruptions (wrong type, unknown key,
negative/zero rank, eval rank > rank, missing or bogus model, non-YAML or binary bytes).
Every one must: exit 2, print `mlora: error: ...` naming the problem (no traceback), and
write nothing."""
from __future__ import annotations

import contextlib
import io
import os
import tempfile
from pathlib import Path

import yaml
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from orchestrator.cli import main
from orchestrator.config import Experiment

GOOD = {"name": "fuzz", "model": "builtin:tiny", "adapter": {"rank": 8},
        "arms": {"matryoshka": {}, "lora": {"ranks": [1, 8]}}, "training": {"steps": 10, "batch_size": 4}}

PATHS = [("name",), ("model",), ("adapter", "rank"), ("adapter", "eval_ranks"), ("adapter", "train_ranks"),
         ("adapter", "scaling"), ("adapter", "alpha"), ("arms", "lora", "ranks"), ("arms", "matryoshka", "p_schedules"),
         ("lrs",), ("seeds",), ("training", "steps"), ("training", "batch_size"), ("training", "warmup_steps"),
         ("resources", "workers_per_trial"), ("resources", "max_concurrent_trials"), ("tasks", "train", "name"),
         ("tasks", "eval", "n"), ("cost", "price_per_device_hour"), ("eval", "max_new_tokens")]

# values invalid at every path above (types or ranges no field accepts)
BAD_VALUES = st.one_of(
    st.integers(max_value=0).map(lambda v: v if v else -1),
    st.dictionaries(st.text(min_size=1, max_size=5), st.integers(), min_size=1, max_size=2),
    st.just([-3]), st.just("not a thing"), st.just([{"x": 1}]),
)


def _schema_keys() -> set[str]:
    """Every key the schema knows, in any section (a drawn "unknown" key must not be one:
    `steps` drawn under `training` is a valid config)."""
    schema = Experiment.model_json_schema()
    return {k for d in [schema, *schema.get("$defs", {}).values()] for k in d.get("properties", {})}


KNOWN = _schema_keys()
KEY = st.text(alphabet="abcdefghijklmnopqrstuvwxyz_", min_size=3, max_size=12).filter(lambda k: k not in KNOWN)


def _set(doc: dict, path: tuple, value) -> None:
    for p in path[:-1]:
        doc = doc.setdefault(p, {}) if isinstance(doc.get(p, {}), dict) else doc
    doc[path[-1]] = value


@st.composite
def malformed(draw) -> bytes:
    kind = draw(st.sampled_from(["value", "unknown_key", "rank_gt", "model", "bytes", "not_mapping"]))
    doc = yaml.safe_load(yaml.safe_dump(GOOD))
    if kind == "value":
        path = draw(st.sampled_from(PATHS))
        value = draw(BAD_VALUES)
        if path == ("name",) and isinstance(value, str):
            value = "has spaces / and slashes"
        _set(doc, path, value)
    elif kind == "unknown_key":
        section = draw(st.sampled_from([(), ("adapter",), ("training",), ("arms",), ("resources",)]))
        _set(doc, (*section, draw(KEY)), draw(st.integers()))
    elif kind == "rank_gt":
        _set(doc, ("adapter", "eval_ranks"), [1, draw(st.integers(9, 10_000))])
    elif kind == "model":
        doc["model"] = draw(st.sampled_from(["/no/such/model", "builtin:nope", "not a hub id!", "./missing", ""]))
    elif kind == "not_mapping":
        return yaml.safe_dump(draw(st.one_of(st.lists(st.integers(), max_size=3), st.integers(), st.text(max_size=5))
                                   )).encode()
    else:
        return draw(st.sampled_from([b"name: [unclosed", b"\xff\xfe\x00binary", b"a: b: c", b"{{{", b"\t- x\n:"]))
    return yaml.safe_dump(doc).encode()


@settings(max_examples=220, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(malformed())
def test_malformed_configs_exit_2_cleanly(raw):
    with tempfile.TemporaryDirectory() as tmp:
        cfg = Path(tmp, "exp.yaml")
        cfg.write_bytes(raw)
        before = sorted(os.listdir(tmp))
        err = io.StringIO()
        with contextlib.redirect_stderr(err), contextlib.redirect_stdout(io.StringIO()):
            cwd = os.getcwd()
            os.chdir(tmp)  # the default output dir would be created here if anything were written
            try:
                code = main(["validate", str(cfg)])  # never `sweep`: a valid draw would start one
            finally:
                os.chdir(cwd)
        text = err.getvalue()
        assert code == 2, (raw, text)
        assert text.startswith("mlora: error:") and "Traceback" not in text, text
        assert len(text.strip().splitlines()) == 1 or "problems" in text  # one line per problem
        assert len(text.strip().splitlines()[-1]) > 10  # says what is wrong
        assert sorted(os.listdir(tmp)) == before  # nothing written
