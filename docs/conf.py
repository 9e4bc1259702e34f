"""Sphinx configuration for the jmapws_sync documentation.

Build: ``sphinx-build -W --keep-going -b html docs docs/_build/html`` (the ``docs`` extra).
"""

from __future__ import annotations

import sys
from pathlib import Path

HERE = Path(__file__).resolve().parent
sys.path.insert(0, str(HERE.parent))  # the package, when it is not installed
sys.path.insert(0, str(HERE / "_ext"))  # clihelp

from sphinx.application import Sphinx  # noqa: E402

import jmapws_sync  # noqa: E402

project = "jmapws_sync"
author = "the jmapws_sync authors"
copyright = "the jmapws_sync authors, MIT License"  # noqa: A001 - Sphinx's name
release = jmapws_sync.__version__
version = release

extensions = [
    "sphinx.ext.autodoc",
    "myst_parser",
    "clihelp",
]

source_suffix = {".rst": "restructuredtext", ".md": "markdown"}
exclude_patterns = ["_build"]
root_doc = "index"

# -- MyST ----------------------------------------------------------------------------------
myst_enable_extensions = ["colon_fence", "deflist"]
myst_heading_anchors = 3

# -- autodoc -------------------------------------------------------------------------------
# Types come from the annotations and are listed under each description, so that the
# signatures stay short enough to read on a phone.
autodoc_typehints = "description"
autodoc_typehints_description_target = "all"
autodoc_member_order = "bysource"
autodoc_class_signature = "mixed"
add_module_names = False
# The page outline lists "open()", not "WsSession.open()": short enough not to wrap.
toc_object_entries_show_parents = "hide"
python_display_short_literal_types = True


def _doc_comment(name: str, value: object) -> list[str] | None:
    """The ``#:`` comment above ``name = ...`` in the jmapws_sync module that defines it.

    A constant re-exported by a package (``jmapws_sync.Frame`` is defined in
    ``jmapws_sync.frames``) has no comment where autodoc looks, in the package's
    ``__init__``; autodoc then shows the docstring of the value's type (``str``, a union,
    a mapping proxy), which says nothing about the constant.
    """
    from sphinx.pycode import ModuleAnalyzer  # noqa: PLC0415

    for modname, module in sorted(sys.modules.items()):
        if not modname.startswith("jmapws_sync.") or getattr(module, name, None) is not value:
            continue
        try:
            docs = ModuleAnalyzer.for_module(modname).find_attr_docs()
        except Exception:  # noqa: BLE001, S112 - a module without source: look elsewhere
            continue
        if ("", name) in docs:
            return list(docs[("", name)])
    return None


def _data_docstrings(  # noqa: PLR0917 - the signature Sphinx calls it with
    app: object, what: str, name: str, obj: object, options: object, lines: list[str]
) -> None:
    """Document re-exported constants with their own comment, never their type's docstring."""
    if what != "data":
        return
    doc = _doc_comment(name.rpartition(".")[2], obj)
    if doc is not None:
        lines[:] = doc
    elif type(obj).__doc__ and "\n".join(lines).strip() == _clean(type(obj).__doc__):
        lines[:] = []


def _clean(doc: str) -> str:
    import inspect  # noqa: PLC0415

    return inspect.cleandoc(doc).strip()


def setup(app: Sphinx) -> None:
    app.connect("autodoc-process-docstring", _data_docstrings)


# -- HTML ----------------------------------------------------------------------------------
html_theme = "furo"
html_title = f"jmapws_sync {release}"
html_static_path = ["_static"]
html_css_files = ["custom.css"]
html_show_sourcelink = False
