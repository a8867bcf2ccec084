"""Put re-run measurements into an existing BENCHMARKS.md, keeping the other sections.

A report is a header (up to the first ``## `` line), numbered sections
(``## 1. ...`` to ``## 5. ...``) and a footer (from ``Total benchmark time``).
``python -m bench.run --only NAME --merge`` replaces the sections it re-ran,
marks each with the command, date and load of the re-run, and lists the
re-run in the header, so a figure disturbed by load can be measured again
alone without losing the rest of a full run.
"""

from __future__ import annotations

import re

_SECTION = re.compile(r"^## (\d+)\.")
FOOTER = "Total benchmark time"


def split_report(text: str) -> tuple[list[str], dict[str, list[str]], list[str]]:
    """Header lines, sections by number (in order), footer lines."""
    header: list[str] = []
    sections: dict[str, list[str]] = {}
    footer: list[str] = []
    current: list[str] = header
    for line in text.splitlines():
        match = _SECTION.match(line)
        if match:
            current = sections.setdefault(match.group(1), [])
        elif line.startswith(FOOTER):
            current = footer
        current.append(line)
    return header, sections, footer


def merge_report(old: str, new_sections: list[str], rerun_note: str) -> str:
    """``old`` with the sections found in ``new_sections`` replaced and marked."""
    header, sections, footer = split_report(old)
    _, fresh, _ = split_report("\n".join(new_sections))
    for number, lines in fresh.items():
        while lines and not lines[-1].strip():
            lines.pop()
        replaced = _targets(sections.get(number, []))
        if replaced:
            replaced = [
                "",
                "The full run's targets for this section, replaced by the re-run above:",
                "",
                *replaced,
            ]
        rest = lines[1:]
        while rest and not rest[0].strip():
            rest.pop(0)
        sections[number] = [lines[0], "", f"*{rerun_note}*", "", *rest, *replaced, ""]
    while header and not header[-1].strip():
        header.pop()
    header += [f"- **Re-run:** {rerun_note}", ""]
    body = [line for number in sorted(sections, key=int) for line in sections[number]]
    return "\n".join([*header, *body, *footer]) + "\n"


def _targets(section: list[str]) -> list[str]:
    """The first ``| target |`` table of a section (empty when there is none)."""
    out: list[str] = []
    for line in section:
        if line.startswith("| target |") or (out and line.startswith("|")):
            out.append(line)
        elif out:
            break
    return out
