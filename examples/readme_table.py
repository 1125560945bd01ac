"""Write a comparison of run folders as a README table, with the machine and versions under it, and put it into the
README between its markers, so no figure in README is typed by hand.

    python examples/readme_table.py runs/quickstart --out docs/quickstart-table.md --readme README.md \
        --marker quickstart --command "SEEDS=0,1,2 bash examples/quickstart.sh"

The table is `tuner compare`'s own (its cells, verdict and seed lines), with the columns named in --drop left out
(model and notes by default: the model is named once under the table). README holds the file's text between
`<!-- MARKER-table:start -->` and `<!-- MARKER-table:end -->`; tests/test_readme.py checks that they match.
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

from tuner import compare
from tuner.table import display_rows, seed_lines, several_seeds, verdict


def table_text(runs: list[str], drop: list[str], command: str, took: str | None) -> str:
    """The comparison of `runs` as Markdown: the table without the `drop` columns, the seed lines and verdict, and a
    line saying which command produced it, on which machine, with which versions."""
    comparison = compare(runs)
    header, rows = display_rows(comparison)
    keep = [number for number, name in enumerate(header) if name not in drop]
    lines = ["| " + " | ".join(header[n] for n in keep) + " |", "|" + "|".join("---" for _ in keep) + "|"]
    lines += ["| " + " | ".join(cells[n].replace("|", "\\|") for n in keep) + " |" for cells in rows]
    if several_seeds(comparison):
        lines += ["", "Each seed alone (accuracy [95% interval over the eval rows]):"] + seed_lines(comparison)
    lines += [""] + verdict(comparison)
    same, differs = comparison.differences["same"], comparison.differences["differs"]
    models = sorted({str(model) for model in comparison.table["model"].dropna()})
    versions = ", ".join(
        f"{package} {same[package]}" for package in ("torch", "transformers", "trl", "peft") if package in same
    )
    lines += [
        "",
        f"Produced by `{command}`{f' ({took})' if took else ''} on {same.get('hardware', 'several machines')}, "
        f"precision {same.get('precision', 'mixed')}; {versions}; model {', '.join(models)}."
        + (f" Differing between runs: {', '.join(differs)}." if differs else ""),
    ]
    return "\n".join(lines) + "\n"


def put_into_readme(readme: Path, marker: str, text: str) -> None:
    """Replace what README holds between the marker's start and end comments with `text`."""
    start, end = f"<!-- {marker}-table:start -->", f"<!-- {marker}-table:end -->"
    content = readme.read_text(encoding="utf-8")
    if start not in content or end not in content:
        sys.exit(f"{readme}: no {start} ... {end} block to put the table into; add the two lines where it goes.")
    before, rest = content.split(start, 1)
    after = rest.split(end, 1)[1]
    readme.write_text(f"{before}{start}\n{text}{end}{after}", encoding="utf-8")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("runs", nargs="+", help="run folders, or folders holding them (as for tuner compare)")
    parser.add_argument("--out", required=True, help="the Markdown file to write")
    parser.add_argument("--readme", help="a README to put the table into, between the marker's comments")
    parser.add_argument("--marker", default="quickstart", help="the README block's name (default quickstart)")
    parser.add_argument("--command", required=True, help="the command that made the runs, named under the table")
    parser.add_argument("--took", help="how long that command took, named beside it")
    parser.add_argument("--drop", default="model,notes", help="columns left out (default model,notes)")
    args = parser.parse_args()
    text = table_text(args.runs, args.drop.split(","), args.command, args.took)
    Path(args.out).parent.mkdir(parents=True, exist_ok=True)
    Path(args.out).write_text(text, encoding="utf-8")
    print(f"wrote {args.out}")
    if args.readme:
        put_into_readme(Path(args.readme), args.marker, text)
        print(f"put it into {args.readme} ({args.marker} block)")


if __name__ == "__main__":
    main()
