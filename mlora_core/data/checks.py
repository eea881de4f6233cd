"""What `mlora validate` asks of a task's data before any trial starts: one line per problem.

Local files are read (a hub dataset is not: that needs the network, and its trial reports a
load failure in one line instead). Every row is checked for the columns the task reads (one
vectorised pass over the Arrow table); the rows the sweep's trials will use (every seed's
holdout, shuffle and n) are checked for what their format asks of them: a label among the
choices, an assistant turn, a non-empty completion.
"""
from __future__ import annotations

from ..errors import first_line
from .sources import rows_at
from .tasks import TaskConfig, table_of, used_indices


def _first_null(table, column: str) -> int | None:
    """Index of the first row whose `column` is missing (null), else None."""
    import pyarrow.compute as pc

    col = table.data.column(column)
    if col.null_count == 0:
        return None
    return int(pc.index(pc.is_null(col), True).as_py())


def data_problems(task: TaskConfig, seeds: tuple[int, ...] = (0,)) -> list[str]:
    """Problems with the data `task` reads (empty when it is fine, or not a local file)."""
    if task.path is None or task.resolved_source != "local":
        return []
    where = f"{task.path}" + (f" ({task.split})" if task.split != "train" else "")
    try:
        table = table_of(task)
    except (ValueError, FileNotFoundError, OSError) as e:
        return [first_line(e).removeprefix("task.path: ")]
    if len(table) == 0:
        return [f"{where}: no rows"]
    spec = task.resolved()
    columns = table.column_names
    missing = spec.fmt.missing(spec, columns)
    if missing:
        return [f"{where}: no column {', '.join(missing)} (its columns: {', '.join(columns)})"]
    for c in spec.fmt.required(spec):
        i = _first_null(table, c)
        if i is not None:
            has = ", ".join(k for k, v in table[i].items() if v is not None)
            return [f"{where}: row {i + 1} has no {c!r} (its columns: {has})"]
    try:
        used = used_indices(task, len(table), seeds)
    except ValueError as e:
        return [first_line(e)]
    for i, row in zip(used, rows_at(table, used)):
        problem = spec.fmt.check(row, spec)
        if problem is None:
            try:
                spec.fmt.build(row, spec)
            except (ValueError, KeyError, TypeError) as e:
                problem = first_line(e)
        if problem:
            return [f"{where}: row {i + 1}: {problem}"]
    return []


__all__ = ["data_problems"]
