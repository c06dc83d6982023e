"""Text from configs, presets, hubs and users, shown inside the Markdown and HTML the UI renders.

Gradio renders gr.Markdown with marked and its HTML sanitizer, and toasts (gr.Error, gr.Warning,
gr.Info) as HTML through the same sanitizer. The sanitizer strips scripts but keeps images and
links, so a value such as `![x](https://elsewhere.example/pixel)` or `<img src=…>` would make the
owner's browser fetch that address just by showing it (a config preview, a preset note, a model
name from a hub). Such text goes through one of these before it is put into Markdown or HTML.
"""

from __future__ import annotations

import html
import re

LINE_BREAKS = re.compile(r"[\r\n\x0b\x0c\x85\u2028\u2029]+")
PUNCTUATION = re.compile(r"([!-/:-@\[-`{-~])")  # every ASCII punctuation character


def code(text: object) -> str:
    """`text` as a Markdown code span, shown literally: no link, image, HTML or emphasis inside it works.
    On one line, since a blank line would end the span; the fence is longer than any run of backticks in
    the text, so the text cannot close it."""
    text = LINE_BREAKS.sub(" ", str(text))
    fence = "`" * (max((len(run) for run in re.findall(r"`+", text)), default=0) + 1)
    pad = " " if not text.strip(" ") or text.startswith("`") or text.endswith("`") else ""
    return f"{fence}{pad}{text}{pad}{fence}"


def md(text: object) -> str:
    """`text` as plain words inside Markdown (in bold, a list item, a sentence): every ASCII punctuation
    character backslash-escaped, which CommonMark renders as the character itself, on one line."""
    return PUNCTUATION.sub(r"\\\1", LINE_BREAKS.sub(" ", str(text)))


def plain(text: object) -> str:
    """`text` inside HTML (a toast's message): shown as typed, never as a tag."""
    return html.escape(str(text), quote=False)
