"""The prompt library in the UI and the API: a snippet picker under every prompt box, a panel to keep your
own snippets, and /prompt_library, /prompt_library_save, /prompt_library_delete.

Which boxes get a picker is derived from each workflow's ParamSpec: every parameter named `*prompt*`
drawn as a text box. A parameter holding a list (SVI's `prompts`, one line per clip) gets the snippet in
its last line; a negative prompt's picker lists the negative snippets first. Picking inserts the text
after what is in the box (diffbox.prompt_library.insert) and never replaces it.
"""

from __future__ import annotations

from typing import Callable

import gradio as gr
from gradio.context import Context

from diffbox.markup import md, plain
from diffbox.params import Param, ParamSpec
from diffbox.prompt_library import PROMPT_CATEGORIES, SnippetError, insert
from diffbox.services import Services
from diffbox.ui.form import component_for

PRIVATE = {"api_visibility": "private"}
LIGHT = {"concurrency_limit": None}
PICKER_LABEL = "Insert from the prompt library"


def is_prompt(param: Param) -> bool:
    return "prompt" in param.name and param.kind in ("text", "list")


def choices(services: Services, negative_first: bool = False) -> list[tuple[str, str]]:
    """(label, "category/name") per snippet, grouped by category; yours marked, shipped ones plain."""
    snippets = services.prompt_library.list()
    if negative_first:
        snippets = sorted(snippets, key=lambda s: s["category"] != "negative")  # stable: the rest keep their order
    return [(f"{s['category']} · {s['name']}" + ("" if s["shipped"] else " (yours)"), key(s)) for s in snippets]


def key(snippet: dict) -> str:
    return f"{snippet['category']}/{snippet['name']}"  # a name holds no "/" (diffbox.config.check_name)


def find(services: Services, chosen: str | None) -> dict | None:
    category, _, name = str(chosen or "").partition("/")
    return services.prompt_library.get(category, name) if category in PROMPT_CATEGORIES else None


def with_prompt_pickers(services: Services, spec: ParamSpec, makers: dict[str, Callable], prefix: str,
                        parts: dict) -> dict[str, Callable]:
    """`makers` (build_form's custom components) with a picker drawn under every prompt box of `spec`;
    the pickers go to parts["prompt_pickers"] as (dropdown, negative_first) for refreshes."""
    wrapped = dict(makers)
    for param in spec.params:
        if is_prompt(param):
            wrapped[param.name] = _picker_under(services, makers.get(param.name, component_for), prefix, parts)
    return wrapped


def _picker_under(services: Services, make: Callable, prefix: str, parts: dict) -> Callable:
    def draw(param: Param):
        with gr.Group():  # one card: the picker reads as part of its box
            box = make(param)
            if not isinstance(box, gr.Textbox):  # a list drawn some other way has no text to insert into
                return box
            negative_first = "negative" in param.name
            picker = gr.Dropdown(choices(services, negative_first), value=None, label=PICKER_LABEL,
                                 elem_id=f"{prefix}-{param.name.replace('_', '-')}-snippet")
        parts.setdefault("prompt_pickers", []).append((picker, negative_first))
        per_line = param.kind == "list"

        def pick(chosen, current):
            snippet = find(services, chosen)
            if snippet is None:
                gr.Warning("That snippet is no longer in the library (deleted meanwhile?); the list is refreshed.")
                return gr.skip(), gr.Dropdown(choices(services, negative_first), value=None)
            text = insert(current, snippet["text"], per_line=per_line)
            try:  # the parameter's own check: a box that would grow past its limit is left as it is
                param.clean([line for line in text.splitlines() if line.strip()] if per_line else text)
            except ValueError as exc:
                gr.Warning(plain(f"{param.title}: {exc}; the snippet was not inserted."))
                return gr.skip(), gr.Dropdown(value=None)
            return text, gr.Dropdown(value=None)

        # .input, not .change: putting the picker back to empty after an insert must not fire it again.
        picker.input(pick, [picker, box], [box, picker], api_name=f"ui_{prefix}_{param.name}_snippet", **PRIVATE,
                     queue=True, show_progress="hidden")
        return box
    return draw


def all_pickers(tabs) -> list[tuple[gr.Dropdown, bool]]:
    return [picker for tab in tabs for picker in tab.parts.get("prompt_pickers", [])]


def build_prompt_library_panel(services: Services, pickers: list[tuple[gr.Dropdown, bool]]) -> None:
    """Your own snippets: pick one (yours or shipped) to edit a copy, save (a name you already have is
    overwritten), rename or delete. Every picker is refreshed after each change and on page load."""
    library = services.prompt_library
    with gr.Accordion("Prompt library: your snippets", open=False, elem_id="prompt-library"):
        gr.Markdown("Snippets show in the picker under every prompt box. Shipped ones cannot be changed; "
                    "save one of yours with the same name and category to use your text instead. Your snippets "
                    "travel in the config file.")
        chosen = gr.Dropdown(choices(services), value=None, label="Snippet (pick one to edit or delete it)",
                             elem_id="prompt-library-choice")
        with gr.Row():
            category = gr.Dropdown(list(PROMPT_CATEGORIES), value=PROMPT_CATEGORIES[0], label="Category", scale=1,
                                   elem_id="prompt-library-category")
            name = gr.Textbox(label="Name", max_lines=1, scale=2, elem_id="prompt-library-name")
        # One line, as a snippet must be (it goes into SVI's one-prompt-per-line box too): Enter saves.
        text = gr.Textbox(label="Text", lines=1, max_lines=1, elem_id="prompt-library-text")
        with gr.Row():
            save = gr.Button("Save", size="sm", variant="primary", elem_id="prompt-library-save")
            rename = gr.Button("Rename the picked one to this name", size="sm", elem_id="prompt-library-rename")
            delete = gr.Button("Delete the picked one", size="sm", variant="stop", elem_id="prompt-library-delete")
        note = gr.Markdown(elem_id="prompt-library-note")

    refreshed = [chosen, *(picker for picker, _ in pickers)]

    def refresh(selected=None) -> list:
        return [gr.Dropdown(choices(services), value=selected),
                *(gr.Dropdown(choices(services, negative_first)) for _, negative_first in pickers)]

    def on_choose(selected):
        snippet = find(services, selected)
        if snippet is None:
            return gr.skip(), gr.skip(), gr.skip()
        return snippet["category"], snippet["name"], snippet["text"]

    def on_save(category_value, name_value, text_value, replaces=None):
        try:
            saved = library.save({"category": category_value, "name": name_value, "text": text_value}, replaces)
        except SnippetError as exc:
            raise gr.Error(plain(exc), title="Snippet not saved", print_exception=False) from None
        shadows = any(key(s).casefold() == key(saved).casefold() for s in library.shipped)
        return [*refresh(key(saved)), f"Saved **{md(saved['name'])}** ({saved['category']})."
                + (" It takes the place of the shipped snippet of that name in every picker (delete yours to get "
                   "that one back)." if shadows else "")]

    def on_rename(selected, category_value, name_value, text_value):
        old = find(services, selected)
        if old is None or old["shipped"]:
            raise gr.Error("pick one of your own snippets first (shipped ones cannot be renamed: save a copy)",
                           title="Nothing renamed", print_exception=False)
        return on_save(category_value, name_value, text_value, replaces=(old["category"], old["name"]))

    def on_delete(selected):
        category_value, _, name_value = str(selected or "").partition("/")
        try:
            library.delete(category_value, name_value)
        except SnippetError as exc:
            raise gr.Error(plain(exc), title="Not deleted", print_exception=False) from None
        return [*refresh(), f"Deleted **{md(name_value)}** ({category_value})."]

    private = {**PRIVATE, "queue": True, "show_progress": "hidden"}  # queued: gr.Error reaches the page
    chosen.input(on_choose, chosen, [category, name, text], api_name="ui_prompt_library_choose", **private)
    save.click(on_save, [category, name, text], [*refreshed, note], api_name="ui_prompt_library_save", **private)
    text.submit(on_save, [category, name, text], [*refreshed, note], api_name="ui_prompt_library_save_enter",
                **private)
    rename.click(on_rename, [chosen, category, name, text], [*refreshed, note], api_name="ui_prompt_library_rename",
                 **private)
    delete.click(on_delete, chosen, [*refreshed, note], api_name="ui_prompt_library_delete", **private)
    if Context.root_block is not None:  # snippets saved elsewhere (the API, a config import) since start
        Context.root_block.load(refresh, None, refreshed, api_name="ui_prompt_library_refresh", **PRIVATE,
                                queue=False)


def register_prompt_library_api(services: Services) -> None:
    library = services.prompt_library

    def prompt_library(category: str = "") -> list[dict]:
        """Every prompt snippet ({category, name, text, shipped}), yours first where a name is taken;
        `category` (style, lighting, camera, character, negative) narrows the list."""
        return _answer(lambda: library.list(str(category or "").strip() or None))

    def prompt_library_save(category: str, name: str, text: str) -> dict:
        """Saves one of your snippets (a name you already have in that category is overwritten); returns it."""
        return _answer(lambda: library.save({"category": category, "name": name, "text": text}))

    def prompt_library_delete(category: str, name: str) -> list[dict]:
        """Deletes one of your snippets (shipped ones cannot be deleted); returns the library as it is now."""
        return _answer(lambda: (library.delete(category, name), library.list())[1])

    for fn in (prompt_library, prompt_library_save, prompt_library_delete):
        gr.api(fn, api_name=fn.__name__, **LIGHT)


def _answer(call: Callable):
    try:
        return call()
    except SnippetError as exc:
        raise gr.Error(str(exc), title="Invalid input", print_exception=False) from None
