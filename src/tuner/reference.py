"""The CLI reference, docs/cli.md: `tuner --help` and every command's --help, generated from the click commands.

    .venv/bin/python -m tuner.reference > docs/cli.md

`tests/test_cli.py` fails when the page and the commands' help differ.
"""

from __future__ import annotations

import click

from .cli import cli

REFERENCE_WIDTH = 100


def reference() -> str:
    """docs/cli.md: `tuner --help` and every command's --help as printed 100 columns wide."""

    def help_text(command, name, parent=None):
        context = click.Context(
            command,
            info_name=name,
            parent=parent,
            terminal_width=REFERENCE_WIDTH,
            max_content_width=REFERENCE_WIDTH,
            **command.context_settings,
        )
        return context, command.get_help(context)

    root, text = help_text(cli, "tuner")
    parts = [
        "# Command reference\n",
        "Every command's `--help`, as printed (generated from the CLI: `.venv/bin/python -m tuner.reference >\n"
        "docs/cli.md`; `tests/test_cli.py` fails when this page and `--help` differ). What each command is\n"
        "for: [README](../README.md#commands).\n",
        "## tuner\n",
        f"```\n{text}\n```\n",
    ]
    for name in sorted(cli.commands):
        parts += [f"## tuner {name}\n", f"```\n{help_text(cli.commands[name], name, root)[1]}\n```\n"]
    return "\n".join(parts)


if __name__ == "__main__":
    print(reference(), end="")
