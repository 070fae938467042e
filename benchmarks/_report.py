"""What every benchmark shares: its section of docs/benchmarks.md, between markers, replaced in place."""

from __future__ import annotations

import re
from pathlib import Path


def markers(section: str) -> tuple[str, str]:
    return f"<!-- BEGIN {section} -->", f"<!-- END {section} -->"


def write_section(document: Path, name: str, section: str) -> None:
    """Replace the section `name` between its markers in `document`, or append it (creating the file)."""
    begin, end = markers(name)
    text = document.read_text(encoding="utf-8") if document.exists() else ""
    pattern = re.compile(re.escape(begin) + r".*?" + re.escape(end) + r"\n?", re.DOTALL)
    if pattern.search(text):
        text = pattern.sub(lambda _: section, text, count=1)
    else:
        text += ("\n" if text and not text.endswith("\n\n") else "") + section
    document.parent.mkdir(parents=True, exist_ok=True)
    document.write_text(text, encoding="utf-8")
