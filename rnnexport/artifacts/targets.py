"""What to verify: artifact folders, folders of them or of configs, config files, and bare ONNX files."""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any

from rnnexport.artifacts.folders import load_artifact
from rnnexport.config import ModelConfig, find_configs, load_config
from rnnexport.contract import MANIFEST_FILE, VARIANTS
from rnnexport.errors import ArtifactError
from rnnexport.graph.reader import check_model_matches, model_from_source

if TYPE_CHECKING:
    import onnx


@dataclass
class Target:
    """Something to verify: a module and its ONNX model, with the config that describes them.
    ``folder`` is the artifact folder (where report.json goes), None for configs and bare files.
    ``variants``: the deployment variants to verify beside the model (variant name → serialized model, or
    the sentence saying why the build could not make it). ``golden``: the folder of saved oracle outputs to
    compare with instead of the module (which is then None; see ``verification.golden``)."""

    cfg: ModelConfig
    module: Any  # torch.nn.Module; None for a golden comparison
    model: onnx.ModelProto
    folder: Path | None = None
    variants: dict[str, bytes | str] = field(default_factory=dict)
    latency: dict[str, dict[str, float]] = field(default_factory=dict)  # from bench: runner → shape → ratio
    golden: Path | None = None
    latency_noisy: dict[str, list[str]] = field(default_factory=dict)  # from bench: runner → shapes marked noisy


def load_targets(paths: list[Path], config: Path | None = None, weights: Path | None = None,
                 prefix: str | None = None) -> list[Target]:
    """Resolve artifact folders (manifest checked first), folders of artifacts or configs, config files
    (built in memory), and ``MODEL.onnx`` files (which need ``config`` and ``weights``)."""
    # torch is heavy, and a golden comparison (which needs the Target type alone) runs without it
    from rnnexport.artifacts.build import export_config
    from rnnexport.export.checkpoints import module_from_weights

    targets = []
    for path in _expand(paths):
        if path.is_dir():
            artifact = load_artifact(path)
            module = module_from_weights(artifact.config, artifact.weights_path, prefix="")[0]
            model = model_from_source(artifact.model_path)[0]
            native = artifact.manifest.get("exporter", "native") == "native"
            check_model_matches(model, artifact.config, str(artifact.model_path), need_recurrent=native)
            variants: dict[str, bytes | str] = {k: p.read_bytes() for k, p in artifact.variant_paths().items()}
            variants.update(_reasons(artifact.manifest.get("variants_unavailable")))
            targets.append(Target(artifact.config, module, model, artifact.path, variants,
                                  _latency(artifact.manifest.get("deploy_latency")),
                                  latency_noisy=_noisy(artifact.manifest.get("deploy_latency_noisy"))))
        elif path.suffix == ".onnx":
            if config is None or weights is None:
                raise ArtifactError(f"{path}: a bare .onnx file needs --config CFG.toml and --weights WEIGHTS.pt")
            cfg = load_config(config)
            model = model_from_source(path)[0]
            check_model_matches(model, cfg, str(path))
            targets.append(Target(cfg, module_from_weights(cfg, weights, prefix)[0], model))
        else:
            for cfg_path in find_configs([path]):
                cfg = load_config(cfg_path)
                module, model = export_config(cfg)
                targets.append(Target(cfg, module, model, variants=_variants_in_memory(cfg, module, model)))
    return targets


def _expand(paths: list[Path]) -> list[Path]:
    """A folder that is not an artifact stands for the artifacts and configs inside it."""
    found = []
    for path in paths:
        if not path.exists():
            built = "artifacts" in path.parts
            raise ArtifactError(f"{path}: no such file or folder" + (
                " (build the artifacts first: rnnexport build configs/)" if built else ""))
        if path.is_dir() and not (path / MANIFEST_FILE).exists():
            inside = sorted(p for p in path.iterdir() if not p.name.startswith(".")
                            and ((p / MANIFEST_FILE).is_file() or p.suffix == ".toml"))
            if not inside:
                raise ArtifactError(f"{path}: holds no artifact folder and no .toml config")
            found.extend(inside)
        else:
            found.append(path)
    return found


def _variants_in_memory(cfg: ModelConfig, module: Any, model: onnx.ModelProto) -> dict[str, bytes | str]:
    """The config's ``variants`` built in memory as ``build`` would (or why one cannot be)."""
    from rnnexport.artifacts.build import variant_files  # torch: see load_targets

    made, skipped = variant_files(cfg, module, model, cfg.variants)
    return {**made, **skipped}


def _reasons(recorded: object) -> dict[str, str]:
    """A manifest's ``variants_unavailable``, keeping only known variants and sentences."""
    if not isinstance(recorded, dict):
        return {}
    return {k: v for k, v in recorded.items() if k in VARIANTS and isinstance(v, str)}


def _noisy(recorded: object) -> dict[str, list[str]]:
    """A manifest's ``deploy_latency_noisy`` (written by bench), keeping only lists of shape names."""
    if not isinstance(recorded, dict):
        return {}
    return {str(runner): [str(s) for s in shapes if isinstance(s, str)] for runner, shapes in recorded.items()
            if isinstance(shapes, list)}


def _latency(recorded: object) -> dict[str, dict[str, float]]:
    """A manifest's ``deploy_latency`` (written by bench), keeping only well-formed numbers."""
    if not isinstance(recorded, dict):
        return {}
    return {str(runner): {str(k): float(v) for k, v in shapes.items() if isinstance(v, int | float)}
            for runner, shapes in recorded.items() if isinstance(shapes, dict)}
