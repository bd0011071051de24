"""Escaping of request-supplied text wherever the service writes it into a card or a page.

Everything a request carries (codings' displays, ``text``, names, units, values, ids) is untrusted.
It passes through :func:`clean` once — control characters and line breaks become spaces, runs of
white space one space, and very long strings are cut — and then through the escaper for where it
is written:

- :func:`escape_markdown` for card Markdown (``detail``, and the plain-text ``summary`` and labels):
  ``&``, ``<`` and ``>`` become HTML entities (CDS clients such as the Sandbox render raw HTML in
  Markdown), every Markdown metacharacter is backslash-escaped (emphasis, code, links and images,
  tables, strikethrough, headings and lists at the start), and ``:`` and the dots of anything that
  looks like a domain are escaped so that no autolink (``javascript:``, ``www.``, ``evil.com``)
  can form. The result renders as the original text and is safe inside a line of Markdown.
- :func:`escape_html` for pages: HTML-escapes (``markupsafe``) and writes ``:`` as ``&#58;`` so that
  the literal ``javascript:`` never appears either. The explanation page's Jinja2 environment
  applies it to every ``{{ expression }}`` (``finalize``), on top of autoescaping.

Text that the service writes itself (pack wording, labels from the vocabulary) is trusted and
written as it is; the test suite feeds hostile displays, texts, names and units through every card
topic and the page (tests/service/test_cards_hostile.py).
"""

from __future__ import annotations

import re

from markupsafe import Markup, escape

__all__ = ["MAX_TEXT", "clean", "escape_html", "escape_markdown"]

MAX_TEXT = 200
_CONTROL = re.compile(r"[\x00-\x1f\x7f-\x9f\u2028\u2029]+")
_SPACES = re.compile(r"\s{2,}")
# Markdown metacharacters (CommonMark + GFM tables and strikethrough), escaped with a backslash.
_MARKDOWN = {ord(c): "\\" + c for c in "\\`*_{}[]()#!|~:"}
_MARKDOWN |= {ord("&"): "&amp;", ord("<"): "&lt;", ord(">"): "&gt;", ord('"'): "&quot;"}
_DOMAIN_DOT = re.compile(r"(?<=[0-9A-Za-z])\.(?=[A-Za-z])")
_LINE_START = re.compile(r"^([-+]|\d+(?=\.))(?=\.?(\s|$))")


def clean(value: object, *, limit: int = MAX_TEXT) -> str:
    """Untrusted ``value`` as one line of plain text, at most ``limit`` characters."""
    text = _SPACES.sub(" ", _CONTROL.sub(" ", str(value))).strip()
    if len(text) > limit:
        text = text[: limit - 1].rstrip() + "…"
    return text


def escape_markdown(value: object, *, limit: int = MAX_TEXT) -> str:
    """Untrusted ``value`` as inert Markdown text: it renders as itself, never as markup or a link."""
    text = clean(value, limit=limit).translate(_MARKDOWN)
    text = _DOMAIN_DOT.sub(r"\\.", text)
    # A list marker at the very start ("- ", "1. "): what is left once the rest is escaped.
    return _LINE_START.sub(
        lambda m: m.group(1) + "\\" if m.group(1)[0].isdigit() else "\\" + m.group(1), text, count=1
    )


def escape_html(value: object) -> Markup:
    """Untrusted ``value`` for an HTML page; already-safe :class:`Markup` passes through."""
    if isinstance(value, Markup):
        return value
    if value is None:
        return Markup("")
    # Safe by construction: markupsafe has escaped every character that HTML would read.
    return Markup(str(escape(str(value))).replace(":", "&#58;"))  # noqa: S704
