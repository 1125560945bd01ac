"""README's figures come from commands: its result tables are the files examples/readme_table.py wrote, that script
writes what `tuner compare` computes, and install.sh pins what those figures were measured with."""

from __future__ import annotations

import re
import subprocess
import sys
import tomllib
from importlib import metadata

from helpers import ROOT, seeded_runs, write_predictions, write_run

BLOCK = re.compile(r"<!-- (?P<marker>[\w-]+)-table:start -->\n(?P<text>.*?)<!-- (?P=marker)-table:end -->", re.S)


PAGES = [
    "README.md",
    "BENCHMARKS.md",
    "ARCHITECTURE.md",
    "RELIABILITY.md",
    *sorted(str(path.relative_to(ROOT)) for path in (ROOT / "docs").glob("*.md")),
]
LINK = re.compile(r"\[[^\]]*\]\(([^)]+)\)")
HEADING = re.compile(r"^#{1,4} (.*)$", re.M)


def _anchor(heading: str) -> str:
    return re.sub(r"[^\w\- ]", "", heading.strip().lower()).replace(" ", "-")


def test_every_readme_table_is_the_file_its_command_wrote():
    blocks = {match["marker"]: match["text"] for page in PAGES for match in BLOCK.finditer((ROOT / page).read_text())}
    assert {"quickstart", "feedback", "gemma3"} <= set(blocks)
    assert "<!-- quickstart-table:start -->" in (ROOT / "README.md").read_text()
    for marker, text in blocks.items():
        written = ROOT / "docs" / f"{marker}-table.md"
        assert written.is_file(), f"README's {marker} table has no docs/{marker}-table.md"
        assert text == written.read_text(), f"README's {marker} table differs from {written}: rerun its command"
        assert "Produced by `" in text and " cores" in text and "transformers " in text


def test_every_link_of_the_pages_reaches_a_file_and_heading():
    for page in PAGES:
        text = (ROOT / page).read_text()
        for target in LINK.findall(text):
            if target.startswith(("http://", "https://")):
                continue
            path, _, anchor = target.partition("#")
            linked = (ROOT / page).parent / path if path else ROOT / page
            assert linked.exists(), f"{page} links to {target}, which does not exist"
            if anchor and linked.suffix == ".md":
                anchors = {
                    _anchor(h) for h in HEADING.findall(re.sub(r"```.*?```", "", linked.read_text(), flags=re.S))
                }
                assert anchor in anchors, f"{page} links to {target}, a heading {linked.name} does not have"


def test_readme_is_the_entry_and_a_page_holds_the_rest():
    readme = (ROOT / "README.md").read_text()
    assert len(readme.splitlines()) <= 220
    for page in (ROOT / "docs").glob("*.md"):
        if not page.name.endswith("-table.md") and page.name != "README.md":
            assert f"({page.name})" in (ROOT / "docs" / "README.md").read_text(), f"docs/README.md misses {page.name}"


def test_readme_table_writes_the_comparison_and_replaces_only_its_block(tmp_path):
    runs = tmp_path / "runs"
    correct = [n % 5 != 0 for n in range(50)]
    write_predictions(
        write_run(
            runs / "zeroshot",
            "fewshot",
            0.2,
            [0.1, 0.3],
            rows=50,
            extra_metrics={"k": 0},
            extra_manifest={
                "hardware": {"device": "cpu", "device_name": "Test CPU", "device_count": 1, "cpu_cores": 2}
            },
        ),
        [n % 5 == 0 for n in range(50)],
    )
    seeded_runs(
        runs,
        "sft",
        "sft",
        {0: correct, 1: correct, 2: [n % 10 != 0 for n in range(50)]},
        train_cpu_hours=0.1,
        extra_manifest={"hardware": {"device": "cpu", "device_name": "Test CPU", "device_count": 1, "cpu_cores": 2}},
    )
    readme = tmp_path / "README.md"
    readme.write_text("intro\n<!-- demo-table:start -->\nold figures\n<!-- demo-table:end -->\noutro\n")
    out = tmp_path / "docs" / "demo-table.md"
    done = subprocess.run(
        [
            sys.executable,
            str(ROOT / "examples" / "readme_table.py"),
            str(runs),
            "--out",
            str(out),
            "--readme",
            str(readme),
            "--marker",
            "demo",
            "--command",
            "bash demo.sh",
            "--took",
            "1 min",
        ],
        capture_output=True,
        text=True,
    )
    assert done.returncode == 0, done.stderr
    text = out.read_text()
    assert readme.read_text() == f"intro\n<!-- demo-table:start -->\n{text}<!-- demo-table:end -->\noutro\n"
    sft = next(line for line in text.splitlines() if line.startswith("| sft |"))
    assert "0.833 [" in sft and "3 seeds: 0.800-0.900, sd 0.058" in sft and "+63.3 pt [" in sft
    assert "| model |" not in text and "notes" not in text.splitlines()[0]
    assert "- sft (choice): seed 0 0.800" in text and "Verdict (choice): most accurate: sft" in text
    assert "Produced by `bash demo.sh` (1 min) on 1 x Test CPU (cpu, 2 cores), precision bf16; torch 2.13.0+cpu" in text


def test_install_pins_every_dependency_at_the_version_installed():
    constraints = dict(
        line.split("==", 1)
        for line in (ROOT / "constraints.txt").read_text().splitlines()
        if line and not line.startswith("#")
    )
    pins = {re.sub(r"[-_.]+", "-", name).lower(): version for name, version in constraints.items()}
    project = tomllib.loads((ROOT / "pyproject.toml").read_text())["project"]
    required = project["dependencies"] + project["optional-dependencies"]["test"]
    for requirement in required:
        name = re.sub(r"[-_.]+", "-", re.match(r"[A-Za-z0-9_.-]+", requirement)[0]).lower()
        if name == "torch":
            continue  # installed first, from TORCH_SPEC
        assert name in pins, f"{name} is not pinned in constraints.txt"
        assert metadata.version(name) == pins[name], f"{name} {metadata.version(name)} installed, {pins[name]} pinned"
    assert "-c constraints.txt" in (ROOT / "install.sh").read_text()
