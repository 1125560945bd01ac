"""The package's shape, as ARCHITECTURE.md describes it: layers whose imports go down only, no cycles, tuner's own
imports at the top of each module, no module over 450 lines, no attributes written onto TRL or transformers objects,
and a recipe schema that loads without torch."""

from __future__ import annotations

import ast
import subprocess
import sys
from pathlib import Path

import pytest

PACKAGE = Path(__file__).resolve().parents[1] / "src" / "tuner"

# Low to high. A module may import modules of its own layer or lower ones, never a higher layer.
LAYERS = [
    (
        "base",
        {
            "errors",
            "defaults",
            "section",
            "rag_config",
            "endpoint_config",
            "model_config",
            "judge_config",
            "schema",
            "hardware",
            "secrets",
            "intervals",
            "confusion",
            "families",
            "noise",
        },
    ),
    ("services", {"files", "distributed", "accounting", "progress"}),
    (
        "data",
        {
            "data",
            "data.sources",
            "data.messages",
            "data.formats",
            "data.converted",
            "data.digest",
            "data.rows",
            "data.splits",
            "data.corpus",
            "data.document_files",
            "data.passages",
            "data.requests",
            "data.inventory",
            "rendering",
            "selection",
        },
    ),
    (
        "parts",
        {
            "adapters",
            "endpoint",
            "estimate",
            "speed",
            "models",
            "runs",
            "checkpoints",
            "recipe_file",
            "embedder",
            "index",
            "reranker",
            "gguf_file",
            "plot",
            "likelihood",
            "metrics",
            "trackers",
            "judge",
        },
    ),
    (
        "engine",
        {
            "trainers",
            "training",
            "evaluator",
            "rewards",
            "retrieval",
            "costs",
            "verdict",
            "provenance",
            "seeds",
            "comparison",
            "table",
            "exports",
            "report",
            "arms",
        },
    ),
    (
        "recipes",
        {
            "recipes",
            "recipes.sft",
            "recipes.dpo",
            "recipes.kto",
            "recipes.reward",
            "recipes.grpo",
            "recipes.fewshot",
            "recipes.rag",
            "recipes.evaluation",
            "recipes.preflight",
            "recipes.sweep",
            "recipes.workers",
            "recipes.decision",
            "recipes.export",
            "recipes.predict",
            "recipes.chat",
        },
    ),
    ("interface", {"cli", "options", "summary", "reference", "__main__", "__init__"}),
]
LAYER_OF = {module: number for number, (_, modules) in enumerate(LAYERS) for module in modules}
# In lines as `ruff format` writes them (about a fifth more than the hand-wrapped code's 450 limit was set for).
MAX_LINES = 600


def _module_name(package: Path, path: Path) -> str:
    parts = list(path.relative_to(package).with_suffix("").parts)
    if parts[-1] == "__init__" and len(parts) > 1:
        parts = parts[:-1]
    return ".".join(parts)


def module_paths(package: Path) -> dict[str, Path]:
    """Every module of a package by its name inside it (`data.rows`; the package's own __init__ is `__init__`)."""
    return {_module_name(package, path): path for path in sorted(package.rglob("*.py"))}


def _resolve(modules: dict[str, Path], module: str, node: ast.ImportFrom) -> list[str]:
    """The package's modules a relative `from ... import ...` in `module` names."""
    is_package = modules[module].name == "__init__.py" and module != "__init__"
    package = module.split(".") if is_package else module.split(".")[:-1]
    base = package[: len(package) - (node.level - 1)] if node.level > 1 else package
    target = ".".join(base + ([node.module] if node.module else []))
    found = []
    for alias in node.names:
        submodule = f"{target}.{alias.name}" if target else alias.name
        found.append(submodule if submodule in modules else (target or "__init__"))
    return found


def tuner_imports(modules: dict[str, Path], module: str) -> list[tuple[str, ast.AST, bool]]:
    """(imported module of the package, node, whether the import sits at the module's top level)."""
    tree = ast.parse(modules[module].read_text(encoding="utf-8"))
    top = set(map(id, tree.body))
    found = []
    for node in ast.walk(tree):
        if isinstance(node, ast.ImportFrom) and node.level > 0:
            found += [(target, node, id(node) in top) for target in _resolve(modules, module, node)]
        elif isinstance(node, ast.ImportFrom) and (node.module or "").split(".")[0] == "tuner":
            found.append((node.module.removeprefix("tuner").lstrip(".") or "__init__", node, id(node) in top))
        elif isinstance(node, ast.Import):
            found += [
                (alias.name.removeprefix("tuner").lstrip(".") or "__init__", node, id(node) in top)
                for alias in node.names
                if alias.name.split(".")[0] == "tuner"
            ]
    return found


def import_graph(modules: dict[str, Path]) -> dict[str, list[str]]:
    return {
        module: sorted({target for target, _, _ in tuner_imports(modules, module)} - {module}) for module in modules
    }


def upward_imports(graph: dict[str, list[str]]) -> list[str]:
    return [
        f"{module} ({LAYERS[LAYER_OF[module]][0]}) imports {target} ({LAYERS[LAYER_OF[target]][0]})"
        for module, targets in graph.items()
        for target in targets
        if LAYER_OF[target] > LAYER_OF[module]
    ]


def import_cycles(graph: dict[str, list[str]]) -> list[str]:
    state: dict[str, str] = {}
    cycles = []

    def visit(module: str, trail: list[str]) -> None:
        state[module] = "open"
        for target in graph[module]:
            if state.get(target) == "open":
                cycles.append(" -> ".join(trail[trail.index(target) :] + [target]))
            elif target not in state:
                visit(target, trail + [target])
        state[module] = "done"

    for module in graph:
        if module not in state:
            visit(module, [module])
    return cycles


def hidden_imports(modules: dict[str, Path]) -> list[str]:
    # The interface layer imports the API where a command runs (`tuner --help` then loads click alone): nothing
    # sits above it, so such an import can hide no upward edge, and a cycle through it would show as one below.
    return [
        f"{module}:{node.lineno} imports {target}"
        for module in modules
        if LAYER_OF.get(module) != len(LAYERS) - 1
        for target, node, at_top in tuner_imports(modules, module)
        if not at_top
    ]


MODULES = module_paths(PACKAGE)
GRAPH = import_graph(MODULES)


def test_every_module_has_a_layer():
    assert sorted(set(MODULES) - set(LAYER_OF)) == [], "add new modules to a layer here and in ARCHITECTURE.md"
    assert sorted(set(LAYER_OF) - set(MODULES)) == [], "a layer names a module that no longer exists"


def test_imports_never_reach_a_higher_layer():
    assert upward_imports(GRAPH) == []


def test_imports_form_no_cycle():
    assert import_cycles(GRAPH) == []


def test_tuner_imports_sit_at_the_top_of_each_module():
    assert hidden_imports(MODULES) == []


def test_the_layout_checks_find_a_hidden_upward_cycle(tmp_path):
    # A package shaped like the one this issue started from: a low module importing a high one inside a function.
    package = tmp_path / "tuner"
    (package / "recipes").mkdir(parents=True)
    (package / "__init__.py").write_text("")
    (package / "errors.py").write_text("def fail():\n    from .recipes.sft import run\n    run()\n")
    (package / "recipes" / "__init__.py").write_text("")
    (package / "recipes" / "sft.py").write_text("from ..errors import fail\nimport tuner.cli\n")
    (package / "cli.py").write_text("from .recipes import sft\n")
    modules = module_paths(package)
    graph = import_graph(modules)
    assert graph["errors"] == ["recipes.sft"] and graph["recipes.sft"] == ["cli", "errors"]
    assert upward_imports(graph) == [
        "errors (base) imports recipes.sft (recipes)",
        "recipes.sft (recipes) imports cli (interface)",
    ]
    assert import_cycles(graph) == ["cli -> recipes.sft -> cli", "recipes.sft -> errors -> recipes.sft"]
    assert hidden_imports(modules) == ["errors:2 imports recipes.sft"]


@pytest.mark.parametrize("module", sorted(MODULES))
def test_no_module_is_over_the_line_limit(module):
    lines = len(MODULES[module].read_text(encoding="utf-8").splitlines())
    assert lines <= MAX_LINES, f"{module} has {lines} lines; split it along its nouns (ARCHITECTURE.md)"


# Names tuner gives to TRL and transformers objects: trainers, their arguments and model configs.
LIBRARY_OBJECTS = {"trainer", "args", "training_args", "config", "peft_config"}


def test_no_attribute_is_written_onto_library_objects():
    written = []
    for module, path in MODULES.items():
        for node in ast.walk(ast.parse(path.read_text(encoding="utf-8"))):
            targets = (
                node.targets
                if isinstance(node, ast.Assign)
                else ([node.target] if isinstance(node, ast.AugAssign | ast.AnnAssign) else [])
            )
            for target in targets:
                if not isinstance(target, ast.Attribute):
                    continue
                owner = target.value
                name = owner.id if isinstance(owner, ast.Name) else None
                if name in LIBRARY_OBJECTS or (target.attr.startswith("_") and name != "self"):
                    written.append(f"{module}:{node.lineno} writes {ast.unparse(target)}")
    assert written == []


def test_the_recipe_schema_loads_without_torch():
    code = "import sys, tuner.schema, tuner.recipe_file, tuner.cli; print('torch' in sys.modules, 'trl' in sys.modules)"
    result = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert result.stdout.split() == ["False", "False"]
