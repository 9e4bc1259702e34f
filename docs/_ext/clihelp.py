"""``cli-help``: the ``--help`` text of ``jmapws-sync`` (or of one subcommand), as printed.

The text is produced from :func:`jmapws_sync.cli.build_parser` at build time, so the
command-line page can never disagree with the command::

    ```{cli-help}
    ```

    ```{cli-help} listen
    ```
"""

from __future__ import annotations

import contextlib
import io
import os
from typing import Any

from docutils import nodes
from docutils.parsers.rst import Directive
from sphinx.application import Sphinx

#: The terminal width the help text is formatted for (argparse reads $COLUMNS).
WIDTH = 88


def help_text(*command: str) -> str:
    """What ``jmapws-sync [COMMAND] --help`` prints on a terminal WIDTH columns wide."""
    from jmapws_sync.cli import build_parser  # noqa: PLC0415 - after sys.path is set

    saved = os.environ.get("COLUMNS")
    os.environ["COLUMNS"] = str(WIDTH)
    out = io.StringIO()
    try:
        parser = build_parser()
        with contextlib.redirect_stdout(out), contextlib.suppress(SystemExit):
            parser.parse_args([*command, "--help"])
    finally:
        if saved is None:
            del os.environ["COLUMNS"]
        else:
            os.environ["COLUMNS"] = saved
    text = out.getvalue()
    if not text.startswith("usage: jmapws-sync"):
        raise ValueError(f"jmapws-sync {' '.join(command)} --help printed no usage")
    return text.rstrip() + "\n"


class CliHelp(Directive):
    """The help of ``jmapws-sync`` itself (no argument) or of one subcommand."""

    optional_arguments = 1
    has_content = False

    def run(self) -> list[nodes.Node]:
        command = self.arguments[:1]
        try:
            text = help_text(*command)
        except ValueError as exc:
            raise self.error(str(exc)) from None
        block = nodes.literal_block(text, text)
        block["language"] = "text"
        return [block]


def setup(app: Sphinx) -> dict[str, Any]:
    app.add_directive("cli-help", CliHelp)
    return {"parallel_read_safe": True, "parallel_write_safe": True}
