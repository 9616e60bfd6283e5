"""Result objects -> table / plain text / json / ndjson / csv / prometheus text.

Rich is imported only to draw on a terminal; piped output is plain text (and starts faster).
Rows stream: JSON arrays are written item by item, plain tables fix their column widths from
the first rows, so `list` over a million sessions never holds them all.
"""

from __future__ import annotations

import csv
import json
import os
import re
import sys
from collections.abc import Callable, Iterable, Iterator
from dataclasses import dataclass
from itertools import chain, islice
from typing import Any, TextIO

from .domain.timeparse import format_duration, format_size

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
    #: Whether a terminal too narrow for the table may shorten this column's cells (with an
    #: ellipsis in the middle). Never the verdict (status, reasons) or a duration.
    shorten: bool = True


#: What never reaches a terminal as it is: C0 controls, DEL, C1 controls (ESC, CSI, OSC...
#: retitle, recolour or move the cursor), and the line and bidirectional-override marks that
#: reorder or break what the operator reads.
#: Lone surrogates too: a file name's byte that is not UTF-8 (\x9b) reaches Python as \udc9b,
#: and stdout would write it back as that raw byte, an 8-bit CSI to some terminals.
_CONTROL = re.compile("[\x00-\x1f\x7f-\x9f\u2028\u2029\u202a-\u202e\u2066-\u2069\ud800-\udfff]")
#: The same in a CSV cell, but for the line breaks and tabs CSV quoting carries.
_CSV_CONTROL = re.compile(
    "[\x00-\x08\x0b\x0c\x0e-\x1f\x7f-\x9f\u2028\u2029\u202a-\u202e\u2066-\u2069\ud800-\udfff]"
)
#: What JSON text leaves raw of those (it escapes C0 controls in strings itself).
_JSON_RAW = re.compile("[\x7f-\x9f\u2028\u2029\u202a-\u202e\u2066-\u2069]")
_NAMED_CONTROLS = {"\n": "\\n", "\r": "\\r", "\t": "\\t"}


def _escape_control(match: re.Match) -> str:
    char = match.group()
    if char in _NAMED_CONTROLS:
        return _NAMED_CONTROLS[char]
    code = ord(char)
    return f"\\x{code:02x}" if code < 0x100 else f"\\u{code:04x}"


def clean(text: str) -> str:
    """`text` safe to print on a terminal: every control character shown as an escape
    (`\\x1b`), so a session id or a record cannot retitle, recolour or move the terminal."""
    return _CONTROL.sub(_escape_control, text) if _CONTROL.search(text) else text


def text_of(value: Any) -> str:
    """A value as one line of terminal text (control characters escaped)."""
    if value is None:
        return "-"
    if isinstance(value, bool):
        return "yes" if value else "no"
    if isinstance(value, (dict, list)):
        return clean(json.dumps(value, ensure_ascii=False, default=str))
    text = str(value)
    return clean(" ".join(text.split()) if "\n" in text else text)


def dumps(value: Any, indent: int | None = None) -> str:
    """JSON text for stdout: UTF-8 as it is, or escaped (`\\ud800`) when it holds text UTF-8
    cannot carry, such as a lone surrogate an archive kept exactly."""
    text = json.dumps(value, ensure_ascii=False, default=str, indent=indent)
    try:
        text.encode("utf-8")
    except UnicodeEncodeError:
        return json.dumps(value, default=str, indent=indent)
    # JSON escapes C0 controls itself; DEL, C1 (a CSI \x9b recolours a terminal as ESC [
    # does) and the line and bidi marks are escaped here too: the same value, as \u009b.
    if _JSON_RAW.search(text):
        return _JSON_RAW.sub(lambda m: f"\\u{ord(m.group()):04x}", text)
    return text


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
            out.write(dumps(row) + "\n")
            count += 1
        return count
    if fmt in ("csv", "csv-raw"):
        return _csv(rows, columns, out, raw=fmt == "csv-raw")
    if out is sys.stdout and stdout_is_terminal():
        return _rich_table(rows, columns)
    return _plain_table(rows, columns, out)


def _json_array(rows: Iterable[dict], out: TextIO) -> int:
    count = 0
    out.write("[")
    for row in rows:
        out.write(("\n  " if count == 0 else ",\n  ") + dumps(row))
        count += 1
    out.write("\n]\n" if count else "]\n")
    return count


def _csv(rows: Iterable[dict], columns: list[Column], out: TextIO, raw: bool = False) -> int:
    writer = csv.writer(out, lineterminator="\n")
    writer.writerow([c.key for c in columns])
    count = 0
    for row in rows:
        cells = [_csv_text((c.csv_cell or c.cell)(row), raw) for c in columns]
        if any("\r" in cell for cell in cells):
            # The csv module quotes only what holds the line terminator ("\n"): a lone CR
            # would end the row early for a reader.
            out.write(",".join(_quoted(cell) for cell in cells) + "\n")
        else:
            writer.writerow(cells)
        count += 1
    return count


def _quoted(cell: str) -> str:
    if any(char in cell for char in ',"\r\n'):
        return '"' + cell.replace('"', '""') + '"'
    return cell


#: A text cell starting with one of these is a formula to a spreadsheet (`=HYPERLINK(...)`).
FORMULA_START = ("=", "+", "-", "@", "\t", "\r")


def _csv_text(value: Any, raw: bool = False) -> str:
    """A CSV cell. Text that a spreadsheet would run as a formula gets a leading `'` (as OWASP
    recommends: shown as text, never evaluated), unless `raw` (`--format csv-raw`). Numbers
    are left alone: a negative age is a number, not a formula."""
    if value is None:
        return ""
    if isinstance(value, (dict, list)):
        text = json.dumps(value, ensure_ascii=False, default=str)
    else:
        text = str(value)
    if raw:
        return text
    if isinstance(value, str) and text.startswith(FORMULA_START):
        text = "'" + text
    # Control characters as escapes (`\x1b`), as on a terminal, where CSV often ends up; the
    # line breaks and tabs a quoted cell carries stay.
    return _CSV_CONTROL.sub(_escape_control, text) if _CSV_CONTROL.search(text) else text


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
    columns = [columns[i] for i in shown]
    cells = [[line[i] for i in shown] for line in cells]
    console = rich_console()
    cells = fit_cells(columns, cells, console.width)
    table = Table(
        box=box.SIMPLE_HEAD,
        header_style="bold",
        pad_edge=False,
        show_edge=False,
        collapse_padding=True,
    )
    for i, column in enumerate(columns):
        # Cells stay on one line (a folded timestamp is unreadable); the last column may wrap.
        last = i == len(columns) - 1
        table.add_column(
            column.header,
            no_wrap=not last,
            overflow="fold" if last else "ellipsis",
            # What must never be squeezed out: the verdict and the durations.
            min_width=None if column.shorten or last else _widest(column, cells, i),
        )
    for line in cells:
        out = []
        for column, text in zip(columns, line):
            style = STATUS_STYLE.get(text) if column.key == "status" else None
            out.append(f"[{style}]{text}[/]" if style and colour_allowed() else escape(text))
        table.add_row(*out)
    console.print(table)
    return len(cells)


#: Between two columns of a terminal table (no edges).
COLUMN_GAP = 2
#: A last column that wraps needs no more than this to show its header and words.
WRAPPED_LAST = 24
#: How far a narrow terminal shortens, one stage after the other until the table fits:
#: (timestamps: 0 as they are, 1 to the minute, 2 to the day; ids and keys keep at least this
#: many characters; other text at least this many). Headers are never cut.
FIT_STAGES = ((0, 24, 12), (1, 16, 10), (2, 12, 8), (2, 1, 1))
_ID_KEYS = ("id", "key")
_ISO_TIME = re.compile(r"^(\d{4}-\d\d-\d\d)[T ](\d\d:\d\d)(:\d\d(\.\d+)?)?(Z|[+-]\d\d:?\d\d)?$")


def fit_cells(columns: list[Column], cells: list[list[str]], width: int) -> list[list[str]]:
    """Cells shortened so that every column fits in `width` terminal cells, headers included
    (Rich, left to itself, squeezes whole columns out instead): long ids and other text lose
    their middle to an ellipsis, timestamps their seconds, then their time of day, stage by
    stage (FIT_STAGES). The verdict (status, reasons) and durations are never shortened."""
    from rich.cells import cell_len

    budget = width - COLUMN_GAP * (len(columns) - 1)
    last = len(columns) - 1
    headers = [cell_len(column.header) for column in columns]
    timed = [any(_ISO_TIME.match(line[i]) for line in cells) for i in range(last + 1)]
    # Who gives first: ids and keys, then other text, timestamps only as a last resort.
    order = [0 if c.key in _ID_KEYS else 2 if timed[i] else 1 for i, c in enumerate(columns)]
    final = len(FIT_STAGES) - 1
    for stage, (level, id_floor, text_floor) in enumerate(FIT_STAGES):
        attempt = (
            cells if not level else [[_compact_time(t, level) for t in line] for line in cells]
        )
        widths = [
            max([headers[i]] + [cell_len(line[i]) for line in attempt]) for i in range(last + 1)
        ]
        if last > 0:  # the last column wraps: it needs room for its header and words only
            widths[last] = min(widths[last], max(headers[last], WRAPPED_LAST))
        excess = sum(widths) - budget
        if excess <= 0:
            return attempt
        floors = []
        for i, (column, natural) in enumerate(zip(columns, widths)):
            if not column.shorten or (i == last and last) or (timed[i] and stage < final):
                floors.append(natural)
            else:
                floor = id_floor if column.key in _ID_KEYS else text_floor
                floors.append(min(natural, max(headers[i], floor)))
        room = sum(w - f for w, f in zip(widths, floors))
        if room < excess and stage < final:
            continue
        for rank in (0, 1, 2):
            # Within a rank, the widest column gives first, one cell at a time.
            while excess > 0:
                givers = [k for k in range(last + 1) if order[k] == rank and widths[k] > floors[k]]
                if not givers:
                    break
                i = max(givers, key=lambda k: widths[k])
                widths[i] -= 1
                excess -= 1
        return [
            [
                _shorten_middle(text, widths[i]) if columns[i].shorten and i != last else text
                for i, text in enumerate(line)
            ]
            for line in attempt
        ]
    return cells


def _widest(column: Column, cells: list[list[str]], index: int) -> int:
    from rich.cells import cell_len

    return max([cell_len(column.header)] + [cell_len(line[index]) for line in cells])


def _compact_time(text: str, level: int) -> str:
    """An ISO timestamp shorter: to the minute (level 1) or the day (level 2)."""
    match = _ISO_TIME.match(text)
    if not match:
        return text
    day, minute, zone = match.group(1), match.group(2), match.group(5) or ""
    return f"{day} {minute}{zone}" if level == 1 else day


def _shorten_middle(text: str, width: int) -> str:
    """`text` in at most `width` terminal cells, its middle replaced by an ellipsis (ids tend to
    share a prefix and differ at the end, so both ends are kept)."""
    from rich.cells import cell_len

    if cell_len(text) <= width:
        return text
    if width <= 1:
        return "…"[:width]
    keep = width - 1
    head_cells = (keep + 1) // 2
    head, used = "", 0
    for char in text:
        if used + cell_len(char) > head_cells:
            break
        head += char
        used += cell_len(char)
    tail, tail_used = "", 0
    for char in reversed(text):
        if tail_used + cell_len(char) > keep - used:
            break
        tail = char + tail
        tail_used += cell_len(char)
    return head + "…" + tail


# --- single results --------------------------------------------------------------------------


def emit_object(
    obj: dict, fmt: str, human: Callable[[dict, bool], str], out: TextIO | None = None
) -> None:
    """JSON / NDJSON for machines; `human(obj, rich)` gives text (rich markup when on a tty)."""
    out = out or sys.stdout
    if fmt == "json":
        out.write(dumps(obj, indent=2) + "\n")
    elif fmt == "ndjson":
        out.write(dumps(obj) + "\n")
    elif out is sys.stdout and stdout_is_terminal():
        rich_console().print(human(obj, True))
    else:
        out.write(human(obj, False))


def markup(text: str, style: str, rich: bool) -> str:
    text = clean(text)
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
        return f"{esc(item['id'], rich)}  {what} {esc(item[what], rich)} ({age} ago)"

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
    text += _store_figures_text(stats.get("store_figures") or {}, rich)
    for warning in stats.get("warnings", []):
        text += "\n" + markup(f"warning: {warning}", "yellow", rich) + "\n"
    return text


def _store_figures_text(figures: dict, rich: bool) -> str:
    """What only this kind of store has: plain figures as key-values, lists of buckets or
    prefixes as small tables."""
    if not figures:
        return ""
    text = "\n" + markup("Store figures", "bold", rich) + "\n"
    pairs = [
        (name.replace("_", " ").capitalize(), esc(text_of(value), rich))
        for name, value in figures.items()
        if not isinstance(value, list)
    ]
    if pairs:
        text += key_values(pairs, rich)
    for name, rows in figures.items():
        if not isinstance(rows, list) or not rows:
            continue
        text += markup(name.replace("_", " ").capitalize(), "bold", rich) + "\n"
        for row in rows:
            text += "  " + "  ".join(esc(text_of(v), rich) for v in row.values()) + "\n"
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
