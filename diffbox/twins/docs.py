"""The registry as Markdown: README's "Verified with" table and the catalogue in docs/twins.md are
generated from TWINS (``python -m diffbox.twins markdown``) and a test checks both still match it."""

from __future__ import annotations

from diffbox.twins.registry import Twin

KIND_TITLES = {"pipeline": "Pipelines", "lora": "LoRAs", "single_file": "Single files", "upscaler": "Upscalers"}


def _cell(text: str) -> str:
    return text.replace("|", "\\|")


def _link(twin: Twin) -> str:
    return f"[`{twin.original}`]({twin.original.url})"


def verified_with_table(twins: dict[str, Twin]) -> str:
    """README's table: published file -> twin -> what the suite proves about it."""
    lines = ["| Published file | Twin | What the suite proves |", "|---|---|---|"]
    for twin in twins.values():
        lines.append(f"| {_link(twin)} | `{twin.name}` | {_cell(twin.proves)} |")
    return "\n".join(lines) + "\n"


def catalogue(twins: dict[str, Twin]) -> str:
    """docs/twins.md's per-twin entries: original and revision, the copied facts, what is unconfirmed."""
    parts = []
    for kind, title in KIND_TITLES.items():
        parts.append(f"### {title}\n")
        for twin in (t for t in twins.values() if t.kind == kind):
            parts.append(f"#### `{twin.name}`\n")
            parts.append(f"- Original: {_link(twin)} (revision: {twin.original.revision})")
            parts.append(f"- Proves: {twin.proves}")
            parts.append(f"- Library lists it as: {' / '.join(twin.library)}"
                         + (f"; loads into: {twin.target}" if twin.target else ""))
            if twin.refused:
                parts.append(f"- Refused, with a message containing \"{twin.refused}\"")
            parts += [f"- {name}: {value}" for name, value in twin.facts.items()]
            if twin.unconfirmed:
                parts.append("- Unconfirmed (twinned as variants where it matters): " + "; ".join(twin.unconfirmed))
            parts.append("")
    return "\n".join(parts)
