"""The shell commands of a Markdown page, as a reader would type them, and the environment of
that reader: shared by the tests that run the documentation verbatim."""

from __future__ import annotations

import os
import re
from collections import Counter
from collections.abc import Iterator

from tests.support import REPO

SYSTEM_PATH = "/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin"


def sh_blocks(doc: str) -> Iterator[tuple[str, int, list[str]]]:
    """(section heading, index of the block in it, lines) of each ```sh block."""
    section, counts, inside = "", Counter[str](), None
    for line in (REPO / doc).read_text().splitlines():
        if inside is None:
            fence = re.match(r"^(\s*)```(\w*)\s*$", line)
            if fence:
                inside = (fence[1], fence[2], [])
            elif line.startswith("#"):
                section = line.strip()
            continue
        indent, language, lines = inside
        if line.strip() == "```":
            if language == "sh":
                yield section, counts[section], lines
                counts[section] += 1
            inside = None
            continue
        lines.append(line[len(indent) :] if line.startswith(indent) else line)


def split_commands(lines: list[str]) -> Iterator[tuple[str, str]]:
    """(command, comment above it): a command goes on past a trailing `\\`, `|`, `&&` or
    `||`, through a here-document and to the end of a for/while/if/case."""
    current: list[str] = []
    comment: list[str] = []
    heredoc: str | None = None
    depth = 0
    for line in lines:
        if heredoc is not None:
            current.append(line)
            if line.strip() == heredoc:
                heredoc = None
                if depth == 0:
                    yield "\n".join(current), " ".join(comment)
                    current, comment = [], []
            continue
        if not current:
            if not line.strip():
                comment = []
                continue
            if line.lstrip().startswith("#"):
                comment.append(line.strip())
                continue
        current.append(line)
        words = line.split()
        depth += sum(word in ("for", "while", "until", "if", "case") for word in words[:1])
        depth -= sum(word.rstrip(";") in ("done", "fi", "esac") for word in words)
        opened = re.search(r"<<-?\s*(['\"]?)(\w+)\1", line)
        if opened:
            heredoc = opened[2]
            continue
        if depth > 0 or re.search(r"(\\|\||&&)\s*$", line):
            continue
        yield "\n".join(current), " ".join(comment)
        current, comment = [], []
    assert not current, f"unfinished command: {current}"


def reader_env(path: str) -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if not k.startswith(("SPCS_", "SP_", "PYTEST"))}
    env.update(PATH=path, HOME="/root", LANG="C.UTF-8")
    env.pop("VIRTUAL_ENV", None)
    return env
