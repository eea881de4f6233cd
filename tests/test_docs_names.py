"""Every name README.md and docs/*.md cite in backticks that is a name of this project exists in
it: modules and files, `module.function` and `Class.attr`, constants, functions, `mlora` commands
and their flags, `make` targets, YAML key paths (against the schema).

What counts as one of our names (the rest, shell lines, formulas, third-party names, output
paths, metric and tag names, is not checked):
    a path under one of our folders, or a bare `x.py` / `x.yaml`       -> the file exists
    `a.b.c` whose head is ours (mlora_core, mc, one of our modules or top-level names)
                                                                      -> it resolves, or is a YAML key path
    `key.path: value`                                                 -> the key path is in the schema
    an UPPER_CASE name (not a Ray/MLflow/HF/... variable)               -> it is in our source
    a snake_case name with an underscore, `f(...)` too                -> it is in our source or the schema
    a CamelCase name                                                  -> our code defines or imports it
    `mlora CMD --flag`, `make TARGET`                                 -> the CLI / Makefile has it
"""
from __future__ import annotations

import ast
import importlib
import inspect
import re
from functools import cache
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
DOCS = [ROOT / "README.md", *sorted((ROOT / "docs").glob("*.md"))]
PACKAGES = ("mlora_core", "orchestrator")
CODE_DIRS = (*PACKAGES, "tests", "benchmarks", "scripts")
OUR_DIRS = {*CODE_DIRS, "experiments", "docs", ".ci"}
ALIASES = {"mc": "mlora_core"}   # the adapter API's `import mlora_core as mc` (docs/usage.md)
WRITTEN = {"config.yaml"}        # files a run writes (the trial's resolved config artifact), not ours
# environment variables and names of the libraries we run on, which the docs explain
THEIRS = re.compile(r"^(MLFLOW|RAY|HF|TRANSFORMERS|TOKENIZERS|CUDA|PYTHON|OMP|TORCH)_")
THIRD_PARTY = {"AutoTokenizer", "Conv1D", "DatasetManager", "DynamicCache", "FlopCounterMode", "LlamaForCausalLM",
               "LocalTrainFnUtils", "OptunaSearch", "PeftModel", "TorchConfig", "Trainer", "ValueError",
               "base_model_prefix", "from_pretrained", "save_pretrained", "load_from_disk", "lm_head",
               "admin_password", "database_uri", "doc_id", "date_string", "eval_dataset"}


def cited() -> list[tuple[str, int, str]]:
    """(doc, line, span) for every backticked span outside fenced blocks, and every `mc.name` /
    `mlora_core.name` a ```python block calls (the adapter API, docs/usage.md)."""
    out = []
    for doc in DOCS:
        fence = None
        for n, line in enumerate(doc.read_text().splitlines(), 1):
            if line.lstrip().startswith("```"):
                fence = None if fence is not None else line.strip()[3:]
                continue
            where = doc.relative_to(ROOT).as_posix(), n
            if fence is None:
                out += [(*where, s) for s in re.findall(r"`([^`]+)`", line)]
            elif fence == "python":
                out += [(*where, s) for s in re.findall(r"\b(?:mc|mlora_core)\.[\w.]*\w", line.split("#")[0])]
    return out


@cache
def sources() -> dict[str, str]:
    """Our Python files (not this one: the names it tests with would count as there)."""
    return {p.relative_to(ROOT).as_posix(): p.read_text() for d in CODE_DIRS for p in (ROOT / d).rglob("*.py")
            if p != Path(__file__).resolve()}


@cache
def words() -> set[str]:
    """Every word of our source (Python, strings and comments included: env vars, metric names;
    the Makefile, cluster.yaml, scripts)."""
    texts = [*sources().values(), *(p.read_text() for p in (ROOT / "Makefile", ROOT / "cluster.yaml",
                                                              *(ROOT / "scripts").glob("*.sh")))]
    return {w for text in texts for w in re.findall(r"\w+", text)}


@cache
def defined() -> set[str]:
    """Names our code defines, imports or reads as attributes (so a library's class we use counts)."""
    names = set()
    for text in sources().values():
        for node in ast.walk(ast.parse(text)):
            if isinstance(node, (ast.FunctionDef, ast.AsyncFunctionDef, ast.ClassDef)):
                names.add(node.name)
            elif isinstance(node, ast.Name):
                names.add(node.id)
            elif isinstance(node, ast.Attribute):
                names.add(node.attr)
            elif isinstance(node, ast.alias):
                names.add((node.asname or node.name).split(".")[-1])
    return names


@cache
def modules() -> dict[str, list[str]]:
    """Module basename -> its dotted names in our packages (`evaluate` -> mlora_core.evaluate)."""
    found: dict[str, list[str]] = {}
    for pkg in PACKAGES:
        for p in (ROOT / pkg).rglob("*.py"):
            parts = p.relative_to(ROOT).with_suffix("").parts
            dotted = ".".join(parts[:-1] if parts[-1] == "__init__" else parts)
            found.setdefault(dotted.split(".")[-1], []).append(dotted)
    return found


@cache
def top_level() -> dict[str, list[str]]:
    """A module-level def/class/constant name -> the modules that define it."""
    found: dict[str, list[str]] = {}
    for dotted_list in modules().values():
        for dotted in dotted_list:
            path = ROOT / Path(*dotted.split("."))
            path = path / "__init__.py" if path.is_dir() else path.with_suffix(".py")
            for node in ast.parse(path.read_text()).body:
                targets = [node.name] if isinstance(node, (ast.FunctionDef, ast.ClassDef)) else \
                    [t.id for t in getattr(node, "targets", [getattr(node, "target", None)]) if isinstance(t, ast.Name)]
                for name in targets:
                    found.setdefault(name, []).append(dotted)
    return found


@cache
def schema_keys() -> set[str]:
    from orchestrator.config import Experiment

    from .orchestrator.test_docs import _keys  # the walk over the schema that test_docs checks the doc with
    return set(_keys(Experiment))


def _has(obj, attr: str) -> bool:
    if hasattr(obj, attr) or attr in getattr(obj, "__dataclass_fields__", {}) or attr in getattr(obj, "model_fields", {}):
        return True
    try:   # an attribute set in __init__ (self.attr = ...)
        return inspect.isclass(obj) and re.search(rf"self\.{attr}\b", inspect.getsource(obj)) is not None
    except (OSError, TypeError):
        return False


def _starts(head: str):
    """(module to import, attributes to take first) for each thing a cited head can be."""
    head = ALIASES.get(head, head)
    if head in PACKAGES:
        yield head, []
    yield from ((m, []) for m in modules().get(head, []))
    yield from ((m, [head]) for m in top_level().get(head, []))


def _walk(obj, attrs: list[str]) -> bool:
    for attr in attrs:
        if inspect.ismodule(obj) and (hasattr(obj, "__path__") or not hasattr(obj, attr)):
            try:   # a package's submodule first (data.tokenize the module, not the function it exports)
                obj = importlib.import_module(f"{obj.__name__}.{attr}")
                continue
            except ModuleNotFoundError:
                if not hasattr(obj, attr):
                    return False
        if not _has(obj, attr):
            return False
        obj = getattr(obj, attr, None)
    return True


def _resolve(dotted: str) -> bool:
    """Whether mod.attr.attr (or Name.attr) is there: imported module by module, then getattr."""
    head, *rest = dotted.split(".")
    return any(_walk(importlib.import_module(mod), first + rest) for mod, first in _starts(head))


def _ours(head: str) -> bool:
    return head in PACKAGES or head in ALIASES or head in modules() or head in top_level()


def _file_exists(span: str) -> bool:
    first = span.split("/")[0]
    if "/" in span:
        return any(ROOT.glob(span.rstrip("/"))) if first in OUR_DIRS else True
    return span in WRITTEN or any(ROOT.glob(span)) or any(p for d in OUR_DIRS for p in (ROOT / d).rglob(span))


def _mlora_command(span: str) -> bool:
    from orchestrator.cli import build_parser
    sub = next(a for a in build_parser()._actions if a.dest == "command").choices
    parts = span.split()
    if len(parts) < 2:
        return True
    if parts[1] not in sub:
        return False
    flags = {opt for a in sub[parts[1]]._actions for opt in a.option_strings}
    return all(p in flags for p in parts[2:] if p.startswith("--"))


def _make_target(span: str) -> bool:
    targets = set(re.findall(r"^([\w-]+):", (ROOT / "Makefile").read_text(), re.M))
    return span.split()[1] in targets


def problem(span: str) -> str | None:
    """Why the span names something that is not there, or None (there, or not one of our names)."""
    s = span.strip()
    if s.startswith("mlora ") or s == "mlora":
        return None if _mlora_command(s) else "no such mlora command or flag"
    if s.startswith("make "):
        return None if _make_target(s) else "no such make target"
    if re.fullmatch(r"[\w.*/-]+", s) and ("/" in s or re.search(r"\.(py|yaml|sh)$", s)):
        return None if _file_exists(s) else "no such file"
    if re.fullmatch(r"[\w.-]+\.(json|jsonl|safetensors|png|html|csv|md|gz|txt|db)", s):
        return None   # a file a run writes (result.json, adapter_config.json), not a name in the code
    key = re.fullmatch(r"([a-z_]+(?:\.[a-z_]+)+)(?:\[\d+\])?(?:: .*)?", s)
    if key and key.group(1) in schema_keys():
        return None
    name = re.sub(r"\(.*\)$", "", s)     # f(...) -> f
    if re.fullmatch(r"[A-Za-z_]\w*(\.\w+)+", name):
        head = name.split(".")[0]
        if _ours(head) and _resolve(name):
            return None
        if key and head in {k.split(".")[0] for k in schema_keys() if "." in k}:   # a section: training.x
            return "not a key of the schema"
        return "does not resolve (nor is it a YAML key path)" if _ours(head) else None
    name = name.split("=")[0]            # VAR=value -> VAR
    if re.fullmatch(r"[A-Z][A-Z0-9_]{2,}", name) and "_" in name or re.fullmatch(r"[A-Z]{4,}", name):
        return None if THEIRS.match(name) or name in words() else "not in the code"
    if re.fullmatch(r"_?[a-z][a-z0-9]*(_[a-z0-9{}]+)+", name):
        stem = name.split("{")[0]           # acc_rank_{k}: acc_rank_ (an f-string's, a docstring's)
        if name in THIRD_PARTY or stem in words() or any(k.split(".")[-1] == name for k in schema_keys()):
            return None
        return "not in the code or the schema"
    if re.fullmatch(r"[A-Z][a-z0-9]+(?:[A-Z][a-z0-9]*)*", name) and len(name) > 1:
        return None if name in defined() or name in THIRD_PARTY else "our code neither defines nor imports it"
    return None


def test_the_checker_tells_our_names_from_the_rest():
    assert problem("objective_of") and problem("SCALING_RULES") and problem("mlora_core/nothing.py")
    assert problem("mc.no_such_function") and problem("mlora sweep --no-such-flag") and problem("make nothing")
    assert problem("training.no_such_key") and problem("orchestrator/nothing.py") and problem("NoSuchClassOfOurs")
    for fine in ("SCALINGS", "mc.set_rank", "mlora_core/layer.py", "layer.py", "AdapterLayer.factors", "TrialSpec",
                 "resources.max_failures", "eval.rules: [truncate, prefix, svd]", "acc_rank_{k}", "MLORA_CACHE",
                 "mlora sweep --resume", "make test-fast", "ray.init", "nn.Linear", "pip install", "summed"):
        assert problem(fine) is None, fine


def test_the_layout_lists_every_module_of_both_packages():
    """The Layout row (docs/usage.md) of each package names each of its modules and subpackages."""
    rows = {m.group(1): m.group(2) for m in re.finditer(r"^\| `(\w+)/` \| (.*)$", (ROOT / "docs" / "usage.md").read_text(), re.M)}
    for pkg in PACKAGES:
        names = set(re.findall(r"`([\w/]+\.py|\w+/)`", rows.get(pkg, "")))
        have = {p.name for p in (ROOT / pkg).glob("*.py") if p.name != "__init__.py"} | \
               {f"{p.name}/" for p in (ROOT / pkg).iterdir() if (p / "__init__.py").is_file()}
        assert not have - names, f"docs/usage.md's Layout lacks, under {pkg}/: {sorted(have - names)}"
        assert not names - have, f"docs/usage.md's Layout names, under {pkg}/, what is not there: {sorted(names - have)}"


def test_every_name_a_doc_cites_exists():
    spans = cited()
    missing = [f"{doc}:{line}: `{span}` ({why})" for doc, line, span in spans if (why := problem(span))]
    assert len(spans) > 400 and not missing, "\n".join(missing)
