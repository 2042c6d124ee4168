#!/usr/bin/python3
"""Replaces the section between <!-- NAME:begin --> and <!-- NAME:end --> of a Markdown
file with standard input (appending the section when it is missing), so that several
scripts can each regenerate their own part of one document.

Usage: some-command | /usr/bin/python3 tools/scripts/update_doc_section.py docs/benchmarks.md NAME
"""
import os
import sys


def update(path, name, body):
    """Replaces (or appends) the section NAME of the Markdown file PATH with BODY."""
    begin, end = f"<!-- {name}:begin -->", f"<!-- {name}:end -->"
    body = body.rstrip("\n")
    text = open(path).read() if os.path.exists(path) else "# Benchmarks\n"
    block = f"{begin}\n{body}\n{end}"
    if begin in text and end in text:
        text = text[:text.index(begin)] + block + text[text.index(end) + len(end):]
    else:
        text = text.rstrip("\n") + "\n\n" + block + "\n"
    tmp = path + ".tmp"
    with open(tmp, "w") as f:
        f.write(text)
    os.replace(tmp, path)


def update_benchmarks(name, lines):
    """Writes `lines` as the section NAME of docs/benchmarks.md."""
    root = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
    update(os.path.join(root, "docs", "benchmarks.md"), name, "\n".join(lines))
    print(f"updated docs/benchmarks.md ({name})")


def main():
    update(sys.argv[1], sys.argv[2], sys.stdin.read())


if __name__ == "__main__":
    main()
