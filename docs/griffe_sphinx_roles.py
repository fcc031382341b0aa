"""Griffe extension for `make docs`: the docstrings' Sphinx roles rendered as Markdown.

recforge's docstrings use reST roles (``:class:`~recforge.errors.DataError```,
``:meth:`save```, ``:pep:`562```), which Markdown would show as ``:class: DataError``. This
rewrites them to inline code (the ``~`` form keeps the last name, as Sphinx does) and PEPs to
links, and reST's ``text::`` to ``text:``, before mkdocstrings parses the numpy sections. Loaded by mkdocs.yml; not part of the
package and not published in the site (``exclude_docs``).
"""

from __future__ import annotations

import re
from typing import Any

import griffe

_ROLE = re.compile(r":(?:py:)?(?P<role>[a-z]+):`(?P<target>[^`]+)`")
_LITERAL = re.compile(r"(\S)::$", re.MULTILINE)


def _rewrite(match: re.Match) -> str:
    role, target = match["role"], match["target"].strip()
    if role == "pep":
        return f"[PEP {target}](https://peps.python.org/pep-{int(target):04d}/)"
    title = re.match(r"(?P<title>.+?)\s*<(?P<target>[^>]+)>$", target)
    if title:
        target = title["title"]
    elif target.startswith("~"):
        target = target[1:].rsplit(".", 1)[-1]
    return f"`{target}`"


class SphinxRoles(griffe.Extension):
    def on_instance(self, *, obj: griffe.Object, **kwargs: Any) -> None:
        if obj.docstring is not None:
            text = _ROLE.sub(_rewrite, obj.docstring.value)
            # reST's "text::" before an indented literal block reads "text:" (the block is
            # already a Markdown code block by its indentation).
            obj.docstring.value = _LITERAL.sub(r"\1:", text)
