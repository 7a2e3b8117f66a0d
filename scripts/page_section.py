"""Writes generated Markdown into a page between `<!-- NAME:begin -->` and `<!-- NAME:end -->`,
so the reproduction pages' tables come from the runs, never typed by hand."""
import sys
from pathlib import Path


def write_section(page: Path, name: str, lines):
    text = page.read_text()
    begin, end = f"<!-- {name}:begin -->", f"<!-- {name}:end -->"
    if begin not in text or end not in text:
        sys.exit(f"{page} lacks the markers {begin} … {end}")
    head, rest = text.split(begin, 1)
    _, tail = rest.split(end, 1)
    page.write_text(head + begin + "\n" + "\n".join(lines) + "\n" + end + tail)
