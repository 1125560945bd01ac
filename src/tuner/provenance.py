"""What each compared run was made with beyond its method (seed, precision, versions, hardware, code, model file),
read from its manifest, and what of that differs between runs: the reproducibility section under the comparison."""

from __future__ import annotations

from typing import Any


def _context(manifest: dict[str, Any]) -> dict[str, Any]:
    """What a comparison should hold fixed beyond the method: seed, precision, versions, hardware, code, model file."""
    hardware = manifest.get("hardware") or {}
    model = manifest.get("model") or {}
    context = {
        "seed": manifest.get("seed"),
        "precision": manifest.get("precision"),
        "hardware": _machine(hardware) if hardware else None,
        "python": manifest.get("python"),
        "platform": manifest.get("platform"),
        "git revision": manifest.get("git_revision"),
        "model file": model.get("gguf_sha256") or model.get("revision"),
    }
    context.update({f"{package}": version for package, version in (manifest.get("versions") or {}).items()})
    return context


def _machine(hardware: dict[str, Any]) -> str:
    """`1 x AMD EPYC (cpu, 2 cores)`: the devices, and the cores a CPU run had."""
    cores = f", {hardware['cpu_cores']} cores" if hardware.get("cpu_cores") and hardware.get("device") == "cpu" else ""
    return (
        f"{hardware.get('device_count', '?')} x {hardware.get('device_name', '?')} "
        f"({hardware.get('device', '?')}{cores})"
    )


def differences(manifests: dict[str, dict[str, Any]]) -> dict[str, Any]:
    """Of runs' manifests by run name: `same`: context values every run shares; `differs`: for the others, each
    value and the runs that had it. A run that did not record a value (a package tuner began recording later)
    differs from none."""
    contexts = {name: _context(manifest) for name, manifest in manifests.items() if manifest}
    keys = list(dict.fromkeys(key for context in contexts.values() for key in context))
    same, differs = {}, {}
    for key in keys:
        by_value: dict[str, list[str]] = {}
        for name, context in contexts.items():
            if context.get(key) is not None or not any(other.get(key) is not None for other in contexts.values()):
                by_value.setdefault(str(context.get(key)), []).append(name)
        if len(by_value) == 1:
            value = next(iter(by_value))
            if value != "None":
                same[key] = value
        else:
            differs[key] = by_value
    return {"same": same, "differs": differs}
