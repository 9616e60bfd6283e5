"""Result objects -> table / plain text / json / ndjson / csv / prometheus text.

Rich is imported only to draw on a terminal; piped output is plain text (and starts faster).
Rows stream: JSON arrays are written item by item, plain tables fix their column widths from
the first rows, so `list` over a million sessions never holds them all.
"""

from __future__ import annotations

import csv
import json
import os
import sys
from collections.abc import Callable, Iterable, Iterator
from dataclasses import dataclass
from itertools import chain, islice
from typing import Any, TextIO

from .core.timeparse import format_duration, format_size

PLAIN_WIDTH_SAMPLE = 500
STATUS_STYLE = {"active": "green", "expired": "yellow", "invalid": "red"}


def stdout_is_terminal() -> bool:
    return sys.stdout.isatty()


def colour_allowed() -> bool:
    return "NO_COLOR" not in os.environ


def rich_console(stderr: bool = False):
    from rich.console import Console

    return Console(stderr=stderr, highlight=False, no_color=not colour_allowed())


@dataclass(frozen=True)
class Column:
    key: str
    header: str
    cell: Callable[[dict], Any]
    csv_cell: Callable[[dict], Any] | None = None


def text_of(value: Any) -> str:
    if value is None:
        return "-"
    if isinstance(value, bool):
        return "yes" if value else "no"
    if isinstance(value, (dict, list)):
        return json.dumps(value, ensure_ascii=False, default=str)
    return " ".join(str(value).split()) if "\n" in str(value) else str(value)


# --- row streams (list, validate, history) ---------------------------------------------------


def emit_rows(
    rows: Iterable[dict], fmt: str, columns: list[Column], out: TextIO | None = None
) -> int:
    out = out or sys.stdout
    if fmt == "json":
        return _json_array(rows, out)
    if fmt == "ndjson":
        count = 0
        for row in rows:
            out.write(json.dumps(row, ensure_ascii=False, default=str) + "\n")
            count += 1
        return count
    if fmt == "csv":
        return _csv(rows, columns, out)
    if out is sys.stdout and stdout_is_terminal():
        return _rich_table(rows, columns)
    return _plain_table(rows, columns, out)


def _json_array(rows: Iterable[dict], out: TextIO) -> int:
    count = 0
    out.write("[")
    for row in rows:
        out.write(
            ("\n  " if count == 0 else ",\n  ") + json.dumps(row, ensure_ascii=False, default=str)
        )
        count += 1
    out.write("\n]\n" if count else "]\n")
    return count


def _csv(rows: Iterable[dict], columns: list[Column], out: TextIO) -> int:
    writer = csv.writer(out, lineterminator="\n")
    writer.writerow([c.key for c in columns])
    count = 0
    for row in rows:
        writer.writerow([_csv_text((c.csv_cell or c.cell)(row)) for c in columns])
        count += 1
    return count


def _csv_text(value: Any) -> str:
    if value is None:
        return ""
    if isinstance(value, (dict, list)):
        return json.dumps(value, ensure_ascii=False, default=str)
    return str(value)


def _plain_table(rows: Iterable[dict], columns: list[Column], out: TextIO) -> int:
    iterator: Iterator[dict] = iter(rows)
    head = list(islice(iterator, PLAIN_WIDTH_SAMPLE))
    if not head:
        return 0
    cells = [[text_of(c.cell(row)) for c in columns] for row in head]
    widths = [len(c.header) for c in columns]
    for line in cells:
        widths = [max(w, len(text)) for w, text in zip(widths, line)]

    def write(line: list[str]) -> None:
        padded = [text.ljust(width) for text, width in zip(line[:-1], widths)]
        out.write("  ".join(padded + [line[-1]]).rstrip() + "\n")

    write([c.header for c in columns])
    for line in cells:
        write(line)
    count = len(head)
    for row in iterator:
        write([text_of(c.cell(row)) for c in columns])
        count += 1
    return count


#: A terminal table is laid out whole; past this many rows it streams as plain text instead.
RICH_TABLE_LIMIT = 2000


def _rich_table(rows: Iterable[dict], columns: list[Column]) -> int:
    iterator = iter(rows)
    head = list(islice(iterator, RICH_TABLE_LIMIT + 1))
    if len(head) > RICH_TABLE_LIMIT:
        return _plain_table(chain(head, iterator), columns, sys.stdout)
    if not head:
        return 0
    from rich import box
    from rich.markup import escape
    from rich.table import Table

    cells = [[text_of(column.cell(row)) for column in columns] for row in head]
    # A terminal is narrow: leave out columns the store has nothing for (a Django table has
    # no creation time, so no age either). Piped and machine formats keep every column.
    shown = [i for i in range(len(columns)) if any(line[i] != "-" for line in cells)] or [0]
    table = Table(box=box.SIMPLE_HEAD, header_style="bold", pad_edge=False)
    for i in shown:
        # Cells stay on one line (a folded timestamp is unreadable); the last column may wrap.
        last = i == shown[-1]
        table.add_column(
            columns[i].header, no_wrap=not last, overflow="fold" if last else "ellipsis"
        )
    for line in cells:
        out = []
        for i in shown:
            text = line[i]
            style = STATUS_STYLE.get(text) if columns[i].key == "status" else None
            out.append(f"[{style}]{text}[/]" if style and colour_allowed() else escape(text))
        table.add_row(*out)
    rich_console().print(table)
    return len(cells)


# --- single results --------------------------------------------------------------------------


def emit_object(
    obj: dict, fmt: str, human: Callable[[dict, bool], str], out: TextIO | None = None
) -> None:
    """JSON / NDJSON for machines; `human(obj, rich)` gives text (rich markup when on a tty)."""
    out = out or sys.stdout
    if fmt == "json":
        out.write(json.dumps(obj, indent=2, ensure_ascii=False, default=str) + "\n")
    elif fmt == "ndjson":
        out.write(json.dumps(obj, ensure_ascii=False, default=str) + "\n")
    elif out is sys.stdout and stdout_is_terminal():
        rich_console().print(human(obj, True))
    else:
        out.write(human(obj, False))


def markup(text: str, style: str, rich: bool) -> str:
    if not rich:
        return text
    from rich.markup import escape

    return f"[{style}]{escape(text)}[/]" if colour_allowed() else escape(text)


def esc(text: Any, rich: bool) -> str:
    value = text_of(text)
    if not rich:
        return value
    from rich.markup import escape

    return escape(value)


def key_values(pairs: list[tuple[str, str]], rich: bool) -> str:
    width = max((len(k) for k, _ in pairs), default=0)
    lines = []
    for key, value in pairs:
        label = key.ljust(width)
        lines.append(f"{markup(label, 'bold', rich)}  {value}")
    return "\n".join(lines) + "\n"


def bar(count: int, largest: int, width: int, rich: bool) -> str:
    if largest <= 0:
        return ""
    length = round(width * count / largest)
    if count and not length:
        length = 1
    return ("█" if rich else "#") * length


# --- stats -----------------------------------------------------------------------------------


def stats_text(stats: dict, rich: bool) -> str:
    def extreme(item: dict | None, what: str) -> str:
        if not item:
            return "-"
        age = format_duration(item[f"{what}_age_s"])
        return f"{esc(item['id'], rich)}  {what} {item[what]} ({age} ago)"

    counts = (
        f"{stats['total']} total, "
        + markup(f"{stats['active']} active", "green", rich)
        + ", "
        + markup(f"{stats['expired']} expired", "yellow", rich)
        + ", "
        + markup(f"{stats['invalid']} invalid", "red", rich)
    )
    last = stats.get("last_cleanup")
    if last:
        cleaned = (
            f"{last['time']} {last['outcome']}, {last['deleted']} removed "
            f"({stats['cleanup_runs']} runs, {stats['total_cleaned']} cleaned in total)"
        )
    else:
        cleaned = "never (no cleanup in the audit log)"
    reasons = ", ".join(f"{code} {count}" for code, count in stats["by_reason"].items()) or "-"
    pairs = [
        ("Store", esc(f"{stats['store']} ({stats['kind']})", rich)),
        ("Sessions", counts),
        ("Reasons", reasons),
        ("Oldest", extreme(stats["oldest"], "created")),
        ("Newest", extreme(stats["newest"], "created")),
        ("Least recently used", extreme(stats["least_recently_used"], "accessed")),
        ("Size", f"{format_size(stats['size_bytes'])} ({stats['size_bytes']} bytes)"),
        ("Last cleanup", esc(cleaned, rich)),
    ]
    if stats.get("group_field"):
        groups = f"{stats['groups']} distinct {stats['group_field']}"
        if stats.get("max_per_group"):
            groups += f", {stats['groups_over_cap']} over the cap of {stats['max_per_group']}"
        pairs.append(("Groups", esc(groups, rich)))
    text = key_values(pairs, rich)
    top = stats.get("top_groups") or []
    if top:
        width = max(len(text_of(g["group"])) for g in top)
        text += "\n" + markup(f"Top groups by {stats['group_field']}", "bold", rich) + "\n"
        for item in top:
            text += f"  {esc(text_of(item['group']).ljust(width), rich)}  {item['count']}\n"
    histogram = stats["age_histogram"]
    largest = max(item["count"] for item in histogram)
    dated = sum(item["count"] for item in histogram if item["bucket"] != "undated")
    if dated:
        text += "\n" + markup("Age histogram (time since creation)", "bold", rich) + "\n"
    elif stats["total"]:
        text += "\nNo age histogram: the store keeps no creation or access times.\n"
        histogram = []
    for item in histogram:
        if item["bucket"] == "undated" and not item["count"]:
            continue
        label = item["bucket"].ljust(8)
        text += (
            f"  {label} {str(item['count']).rjust(8)}  {bar(item['count'], largest, 40, rich)}\n"
        )
    for warning in stats.get("warnings", []):
        text += "\n" + markup(f"warning: {warning}", "yellow", rich) + "\n"
    return text


def prometheus_text(stats: dict) -> str:
    label = stats["store"].replace("\\", "\\\\").replace('"', '\\"').replace("\n", "\\n")
    store = f'store="{label}"'
    lines = []

    def metric(name: str, kind: str, help_text: str, samples: list[tuple[str, float | None]]):
        lines.append(f"# HELP {name} {help_text}")
        lines.append(f"# TYPE {name} {kind}")
        for labels, value in samples:
            if value is None:
                continue
            joined = ",".join(filter(None, [store, labels]))
            lines.append(f"{name}{{{joined}}} {value}")

    metric(
        "sessionctl_sessions",
        "gauge",
        "Sessions in the store by status (a session can be expired and invalid).",
        [
            ("", stats["total"]),
            ('status="active"', stats["active"]),
            ('status="expired"', stats["expired"]),
            ('status="invalid"', stats["invalid"]),
        ],
    )
    metric(
        "sessionctl_sessions_by_reason",
        "gauge",
        "Sessions by reason code.",
        [(f'reason="{code}"', count) for code, count in stats["by_reason"].items()],
    )
    metric(
        "sessionctl_store_size_bytes",
        "gauge",
        "Bytes the store takes.",
        [("", stats["size_bytes"])],
    )
    oldest = stats.get("oldest") or {}
    newest = stats.get("newest") or {}
    metric(
        "sessionctl_oldest_session_age_seconds",
        "gauge",
        "Age of the oldest session.",
        [("", oldest.get("created_age_s"))],
    )
    metric(
        "sessionctl_newest_session_age_seconds",
        "gauge",
        "Age of the newest session.",
        [("", newest.get("created_age_s"))],
    )
    metric(
        "sessionctl_groups",
        "gauge",
        "Distinct groups (users, workspaces).",
        [("", stats["groups"])],
    )
    metric(
        "sessionctl_cleaned_sessions_total",
        "counter",
        "Sessions removed by sessionctl cleanups (audit log).",
        [("", stats["total_cleaned"])],
    )
    metric(
        "sessionctl_cleanup_runs_total",
        "counter",
        "Cleanup runs (audit log).",
        [("", stats["cleanup_runs"])],
    )
    return "\n".join(lines) + "\n"
