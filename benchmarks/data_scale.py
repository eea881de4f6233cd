"""One trial's data set-up at 10k, 100k and 1M rows of a local file / the same cut done directly on
the Arrow table, and `mlora validate`'s data checks / one plain read of the file (issue 38).

Set-up = `load_examples(TaskConfig(format=F, path=FILE, n=1000, holdout=150, seed=1))` + `tokenize`
(builtin:tiny's tokenizer, max_length 256), with the `datasets` cache cold (the file's first
conversion to Arrow: what the first trial or `mlora validate` pays) and warm (every later trial).
Baseline = `datasets.load_dataset(FILE)`, `ds.shuffle(seed=1).select(range(1000))[:]` (one batch
read), the same format's `build` on those rows + the same `tokenize` (warm; its shuffle-indices cache warmed first).
Validate = `data_problems(task, seeds=(0, 1, 2))`; read = `load_dataset` + one vectorised pass over
the task's required columns (validity and lengths of every value).

Every measurement runs in a process of its own, forked from this one after the imports (torch,
datasets, transformers, mlora_core.data), so neither side pays them: seconds are the work's wall
time, MB the growth of the process's peak RSS (VmHWM) over its RSS at the start of the work (a
trial process starts at ~330 MB with those imports); the records also keep how much of the RSS
at the work's end is anonymous memory and how much mapped file pages (the Arrow cache, shared
with every process reading it and reclaimable). Warm set-up and baseline are interleaved
(A, B, A, B, ...), medians of REPEATS. Goals (issue 38): warm set-up 1M / 10k <= 1.5 (time and
memory), warm set-up / baseline <= 1.5, validate / read <= ~2.

    python benchmarks/data_scale.py [--quick]      (--quick: 10k and 100k rows only)
"""
from __future__ import annotations

import csv
import json
import os
import shutil
import statistics
import sys
import tempfile
import time
from pathlib import Path

from _common import record

N, HOLDOUT, SEED, MAX_LENGTH, REPEATS = 1000, 150, 1, 256, 3
CHATML = ("{% for m in messages %}<|im_start|>{{ m['role'] }}\n{{ m['content'] }}<|im_end|>\n{% endfor %}"
          "{% if add_generation_prompt %}<|im_start|>assistant\n{% endif %}")
NAMES = ("Tom", "Ana", "Raj", "Mei", "Olu", "Ines", "Sam", "Lea")
THINGS = ("apples", "books", "coins", "stamps", "pens", "cards")
# format -> (task keywords, row of index i): short rows, GSM8K-like for prompt_completion
FORMATS = {
    "prompt_completion": (dict(template="Question: {question}\nAnswer: ", columns={"completion": "answer"}),
                          lambda i, a, b, who, what: {
                              "question": f"{who} has {a} {what} and gets {b} more. How many {what} now?",
                              "answer": f"{who} has {a} + {b} = {a + b} {what}.\n#### {a + b}"}),
    "alpaca": ({}, lambda i, a, b, who, what: {"instruction": f"Add the {what} {who} has.",
                                               "input": f"{a} and {b}" if i % 2 else "two numbers",
                                               "output": f"{a} + {b} = {a + b}"}),
    "messages": ({}, lambda i, a, b, who, what: {"messages": [
        {"role": "user", "content": f"{who} has {a} {what} and gets {b} more. How many?"},
        {"role": "assistant", "content": f"{a + b} {what}"}]}),
    "text": ({}, lambda i, a, b, who, what: {"text": f"{who} counted {a} {what}, then {b} more: {a + b} {what} "
                                                    f"in all, {i % 97} of them old."}),
}
CASES = [(f, "jsonl") for f in FORMATS] + [("prompt_completion", "parquet"), ("alpaca", "csv")]
BUILDERS = {"jsonl": "json", "parquet": "parquet", "csv": "csv"}


def row(fmt: str, i: int) -> dict:
    return FORMATS[fmt][1](i, (i * 7919) % 1000, (i * 104729) % 100, NAMES[i % 8], THINGS[i % 6])


def task(fmt: str, path: str, seed: int = SEED):
    from mlora_core.data.tasks import TaskConfig
    return TaskConfig(None, format=fmt, path=path, n=N, holdout=HOLDOUT, seed=seed, **FORMATS[fmt][0])


# ---- one measurement per forked process ------------------------------------------------------

def _status(key: str) -> int:
    for line in open("/proc/self/status"):
        if line.startswith(key):
            return int(line.split()[1]) // 1024
    raise KeyError(key)


def forked(fn, *args) -> dict:
    """{seconds, mb, ...fn's dict} of fn(*args) run in a child forked from here (see top)."""
    read, write = os.pipe()
    pid = os.fork()
    if pid == 0:  # the child: measure, report through the pipe, leave without cleanup
        os.close(read)
        try:
            with open("/proc/self/clear_refs", "w") as f:
                f.write("5")          # reset VmHWM to the current RSS
            start, anon, file = _status("VmRSS"), _status("RssAnon"), _status("RssFile")
            t = time.perf_counter()
            extra = fn(*args) or {}
            out = {"seconds": time.perf_counter() - t, "mb": _status("VmHWM") - start,
                   "anon_mb_end": _status("RssAnon") - anon, "file_mb_end": _status("RssFile") - file, **extra}
        except BaseException as e:  # noqa: BLE001  reported by the parent
            out = {"error": f"{type(e).__name__}: {e}"}
        os.write(write, json.dumps(out).encode())
        os._exit(0)
    os.close(write)
    with os.fdopen(read) as f:
        text = f.read()
    os.waitpid(pid, 0)
    out = json.loads(text)
    if "error" in out:
        sys.exit(f"{fn.__name__}{args}: {out['error']}")
    return out


def _cache(cache: str) -> None:
    import datasets
    datasets.config.HF_DATASETS_CACHE = Path(cache)


def _tokenizer(fmt: str):
    from mlora_core.builtin_model import build_tokenizer
    tok = build_tokenizer()
    if fmt == "messages":     # what run.py does with a task's chat_template
        tok.chat_template = CHATML
    return tok


def setup(fmt: str, path: str, cache: str) -> dict:
    """One trial's data set-up, as mlora_core.run does it."""
    from mlora_core.data.tasks import load_examples
    from mlora_core.data.tokenize import tokenize
    _cache(cache)
    tok = _tokenizer(fmt)
    t = time.perf_counter()
    data = tokenize(tok, load_examples(task(fmt, path)), MAX_LENGTH)
    return {"seconds_inner": time.perf_counter() - t, "examples": len(data.input_ids)}


def baseline(fmt: str, path: str, cache: str) -> dict:
    """The same cut directly on the Arrow table, the same rows built and tokenized."""
    import datasets

    from mlora_core.data.tokenize import tokenize
    _cache(cache)
    tok, spec = _tokenizer(fmt), task(fmt, path).resolved()
    t = time.perf_counter()
    ds = datasets.load_dataset(BUILDERS[Path(path).suffix[1:]], data_files=[path], split="train")
    columns = ds.shuffle(seed=SEED).select(range(N))[:]          # one batch read, as rows_at reads
    rows = [dict(zip(columns, values)) for values in zip(*columns.values())]
    data = tokenize(tok, [spec.fmt.build(r, spec) for r in rows], MAX_LENGTH)
    return {"seconds_inner": time.perf_counter() - t, "examples": len(data.input_ids)}


def validate(fmt: str, path: str, cache: str) -> dict:
    from mlora_core.data.checks import data_problems
    _cache(cache)
    problems = data_problems(task(fmt, path), seeds=(0, 1, 2))
    if problems:
        raise AssertionError(problems)
    return {}


def _touch(col) -> int:
    """Read every value's validity and length (strings), through lists and structs."""
    import pyarrow as pa
    import pyarrow.compute as pc
    if isinstance(col, pa.ChunkedArray):   # chunk by chunk: no copy of the column
        return sum(_touch(chunk) for chunk in col.chunks)
    if pa.types.is_list(col.type) or pa.types.is_large_list(col.type):
        return _touch(pc.list_flatten(col))
    if pa.types.is_struct(col.type):
        return sum(_touch(pc.struct_field(col, [i])) for i in range(col.type.num_fields))
    if pa.types.is_string(col.type) or pa.types.is_large_string(col.type):
        return int(pc.sum(pc.binary_length(col)).as_py() or 0)
    return int(pc.sum(pc.is_valid(col)).as_py() or 0)


def read_once(fmt: str, path: str, cache: str) -> dict:
    import datasets
    _cache(cache)
    spec = task(fmt, path).resolved()
    ds = datasets.load_dataset(BUILDERS[Path(path).suffix[1:]], data_files=[path], split="train")
    return {"touched": sum(_touch(ds.data.column(c)) for c in spec.fmt.required(spec))}


# ---- the files --------------------------------------------------------------------------------

def write(fmt: str, ext: str, rows: int, path: Path) -> None:
    """`rows` rows of `fmt` as one local file (parquet in chunks, through pyarrow)."""
    if ext == "jsonl":
        with open(path, "w") as f:
            for start in range(0, rows, 10_000):
                f.write("".join(json.dumps(row(fmt, i)) + "\n" for i in range(start, min(rows, start + 10_000))))
    elif ext == "csv":
        with open(path, "w", newline="") as f:
            out = csv.DictWriter(f, fieldnames=list(row(fmt, 0)))
            out.writeheader()
            out.writerows(row(fmt, i) for i in range(rows))
    else:
        import pyarrow as pa
        import pyarrow.parquet as pq
        writer = None
        for start in range(0, rows, 100_000):
            chunk = pa.Table.from_pylist([row(fmt, i) for i in range(start, min(rows, start + 100_000))])
            writer = writer or pq.ParquetWriter(str(path), chunk.schema)
            writer.write_table(chunk)
        writer.close()


# ---- the run ----------------------------------------------------------------------------------

def measure(fmt: str, ext: str, sizes: tuple[int, ...], tmp: Path) -> list[dict]:
    """One file of each size; cold once each, then warm set-up and baseline (and validate and read)
    interleaved over the sizes and sides, REPEATS rounds, so machine noise hits all alike."""
    paths = {rows: tmp / f"{fmt}-{rows}.{ext}" for rows in sizes}
    caches = {rows: str(tmp / f"cache-{fmt}-{ext}-{rows}") for rows in sizes}
    out = {}
    for rows in sizes:
        forked(write, fmt, ext, rows, paths[rows])     # pyarrow (parquet) never runs in this process
        out[rows] = {"rows": rows, "format": fmt, "file": ext, "file_mb": paths[rows].stat().st_size / 2**20,
                     "cold": forked(setup, fmt, str(paths[rows]), caches[rows])}
        forked(baseline, fmt, str(paths[rows]), caches[rows])   # writes its shuffle's indices cache once
    sides = {"warm": setup, "base": baseline} | ({"validate": validate, "read": read_once} if ext == "jsonl" else {})
    runs = {(rows, side): [] for rows in sizes for side in sides}
    for _ in range(REPEATS):
        for rows in sizes:
            for side, fn in sides.items():
                runs[rows, side].append(forked(fn, fmt, str(paths[rows]), caches[rows]))
    med = lambda xs, k: statistics.median(x[k] for x in xs)  # noqa: E731
    for rows, r in out.items():
        r.update(warm_s=med(runs[rows, "warm"], "seconds_inner"), warm_mb=med(runs[rows, "warm"], "mb"),
                 base_s=med(runs[rows, "base"], "seconds_inner"), base_mb=med(runs[rows, "base"], "mb"),
                 cold_s=r["cold"]["seconds_inner"], cold_mb=r["cold"]["mb"],
                 warm_file_mb=med(runs[rows, "warm"], "file_mb_end"), base_file_mb=med(runs[rows, "base"], "file_mb_end"))
        if ext == "jsonl":   # validate / one read, warm; for the GSM8K-like file also cold (a cache of their own)
            r["validate"], r["read"] = ({"seconds": med(runs[rows, side], "seconds"), "mb": med(runs[rows, side], "mb")}
                                        for side in ("validate", "read"))
            if fmt == "prompt_completion":
                r["validate_cold"] = forked(validate, fmt, str(paths[rows]), caches[rows] + "-v")
                r["read_cold"] = forked(read_once, fmt, str(paths[rows]), caches[rows] + "-r")
        for c in (caches[rows], caches[rows] + "-v", caches[rows] + "-r"):
            shutil.rmtree(c, ignore_errors=True)
        paths[rows].unlink()
    return list(out.values())


def table(results: list[dict]) -> str:
    first = {(r["format"], r["file"]): r for r in sorted(results, key=lambda r: -r["rows"])}  # smallest last wins
    lines = ["| rows | format | file MB | cold s | warm s | peak MB (mapped file) | baseline s | baseline MB (mapped "
             "file) | warm / baseline | warm s vs 10k | peak MB vs 10k |", "|---|---|---|---|---|---|---|---|---|---|---|"]
    for r in results:
        small = first[(r["format"], r["file"])]
        lines.append(f"| {r['rows']:,} | {r['format']} {r['file']} | {r['file_mb']:.0f} | {r['cold_s']:.2f} | "
                     f"{r['warm_s']:.2f} | {r['warm_mb']:.0f} ({r['warm_file_mb']:.0f}) | {r['base_s']:.2f} | "
                     f"{r['base_mb']:.0f} ({r['base_file_mb']:.0f}) | "
                     f"{r['warm_s'] / r['base_s']:.2f} | {r['warm_s'] / small['warm_s']:.2f} | "
                     f"{r['warm_mb'] / max(small['warm_mb'], 1):.2f} |")
    lines += ["", "| rows | format | validate s | validate MB | read s | read MB | validate / read |",
              "|---|---|---|---|---|---|---|"]
    for r in results:
        for v, rd, label in (("validate", "read", "warm"), ("validate_cold", "read_cold", "cold")):
            if v in r:
                lines.append(f"| {r['rows']:,} | {r['format']} {r['file']} ({label}) | {r[v]['seconds']:.2f} | "
                             f"{r[v]['mb']:.0f} | {r[rd]['seconds']:.2f} | {r[rd]['mb']:.0f} | "
                             f"{r[v]['seconds'] / r[rd]['seconds']:.2f} |")
    return "\n".join(lines)


def main() -> None:
    import datasets

    import mlora_core.builtin_model  # noqa: F401  every import before the first fork (see top)
    import mlora_core.data.checks  # noqa: F401
    import mlora_core.data.tokenize  # noqa: F401
    datasets.disable_progress_bars()
    datasets.logging.set_verbosity_error()
    sizes = (10_000, 100_000) if "--quick" in sys.argv else (10_000, 100_000, 1_000_000)
    print(f"sizes {sizes}, {len(CASES)} files each; load {os.getloadavg()[0]:.2f}; "
          f"RSS after imports {_status('VmRSS')} MB", flush=True)
    t0, results = time.perf_counter(), []
    with tempfile.TemporaryDirectory(prefix="data_scale-") as tmp:
        for fmt, ext in CASES:
            for r in measure(fmt, ext, sizes, Path(tmp)):
                results.append(r)
                print(f"{r['rows']:>9,} {fmt:<17} {ext:<7} cold {r['cold_s']:6.2f} s  warm {r['warm_s']:5.2f} s "
                      f"{r['warm_mb']:5.0f} MB  baseline {r['base_s']:5.2f} s {r['base_mb']:5.0f} MB", flush=True)
    results.sort(key=lambda r: r["rows"])
    print(f"\n{table(results)}\n\n({time.perf_counter() - t0:.0f} s; load {os.getloadavg()[0]:.2f})", flush=True)
    _record(results, "--quick" in sys.argv)


def _record(results: list[dict], quick: bool) -> None:
    common = dict(quick=quick, load=round(os.getloadavg()[0], 2), n=N, holdout=HOLDOUT, repeats=REPEATS,
                  variant="chosen_indices on arrays (mlora_core/data/shuffle.py), rows_at one batch read, "
                          "validate: used_indices")
    small = {(r["format"], r["file"]): r for r in results if r["rows"] == min(x["rows"] for x in results)}
    for r in results:
        name = f"{r['rows']:,} rows, {r['format']} {r['file']}"
        fields = {k: v for k, v in r.items() if k not in ("cold",)}
        record("data_scale", f"set-up warm / Arrow baseline, {name}", r["warm_s"] / r["base_s"], "<= 1.5",
               **fields, **common)
        s = small[(r["format"], r["file"])]
        if r is not s:
            record("data_scale", f"set-up warm {r['rows']:,} / {s['rows']:,} rows, {r['format']} {r['file']}",
                   r["warm_s"] / s["warm_s"], "<= 1.5", peak_mb_ratio=r["warm_mb"] / max(s["warm_mb"], 1),
                   warm_s=r["warm_s"], small_warm_s=s["warm_s"], warm_mb=r["warm_mb"], small_warm_mb=s["warm_mb"],
                   **common)
        for v, rd, label in (("validate", "read", "warm"), ("validate_cold", "read_cold", "cold")):
            if v in r:
                record("data_scale", f"validate / one read ({label}), {name}", r[v]["seconds"] / r[rd]["seconds"],
                       "<= ~2", validate=r[v], read=r[rd], rows=r["rows"], format=r["format"], **common)


if __name__ == "__main__":
    main()
