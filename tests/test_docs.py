"""The documents' links: every relative link names a file of the repository and,
where it has one, an anchor that a heading of that file produces (GitHub's rule)."""
import functools
import os
import re

import pytest

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
LINK = re.compile(r"\]\(([^)\s]+)\)")
FENCE = re.compile(r"^```.*?^```", re.S | re.M)


def markdown_files():
    out = [os.path.join(ROOT, f) for f in os.listdir(ROOT) if f.endswith(".md")]
    docs = os.path.join(ROOT, "docs")
    out += [os.path.join(docs, f) for f in os.listdir(docs) if f.endswith(".md")]
    return sorted(out)


def slug(heading):
    """GitHub's anchor of a heading: lower case, punctuation dropped, spaces to hyphens."""
    text = heading.strip().lower()
    text = "".join(c for c in text if c.isalpha() or c.isdecimal() or c in "-_ ")
    return text.replace(" ", "-")


@functools.lru_cache(maxsize=None)
def prose(path):
    """A document's text without its code blocks (whose '#' lines are not headings)."""
    with open(path, encoding="utf-8") as f:
        return FENCE.sub("", f.read())


@functools.lru_cache(maxsize=None)
def anchors(path):
    seen, out = {}, set()
    for line in prose(path).splitlines():
        m = re.match(r"#{1,6} (.*)", line)
        if m:
            base = slug(m.group(1))
            n = seen.get(base, 0)
            seen[base] = n + 1
            out.add(base if n == 0 else f"{base}-{n}")
    return out


def test_slug_follows_githubs_rule():
    assert slug("Beyond the paper: K views of shared content (`--n-views K`)") == \
        "beyond-the-paper-k-views-of-shared-content---n-views-k"
    assert slug("Table 1: content is recovered, modality-specific latents are not") == \
        "table-1-content-is-recovered-modality-specific-latents-are-not"


@pytest.mark.parametrize("path", markdown_files(), ids=lambda p: os.path.relpath(p, ROOT))
def test_relative_links_resolve(path):
    broken = []
    for target in LINK.findall(prose(path)):
        if re.match(r"[a-z]+:", target):
            continue  # http(s), mailto: not checked offline
        file_part, _, anchor = target.partition("#")
        dest = os.path.normpath(os.path.join(os.path.dirname(path), file_part)) if file_part else path
        if not os.path.exists(dest):
            broken.append(f"{target}: no file {os.path.relpath(dest, ROOT)}")
        elif anchor and dest.endswith(".md") and anchor not in anchors(dest):
            broken.append(f"{target}: no heading with anchor #{anchor}")
    assert not broken, "\n".join(broken)
