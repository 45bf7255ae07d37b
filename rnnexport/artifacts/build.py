"""The build stages composed: config → module → ONNX → artifact folder."""

from __future__ import annotations

import io
import json
import time
from collections.abc import Iterable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any, TypeVar, overload

import onnx
import torch

from rnnexport._version import versions as _versions
from rnnexport.artifacts.folders import artifact_dir, refuse_foreign, sha256_file, write_artifact
from rnnexport.artifacts.index import check_index_target, write_index
from rnnexport.config import ModelConfig
from rnnexport.contract import MANIFEST_FILE, MODEL_FILE, VARIANT_FILES, VARIANTS, WEIGHTS_FILE
from rnnexport.errors import ArtifactError
from rnnexport.export.builders import RecurrentModule, build_model
from rnnexport.export.checkpoints import cast_dtypes, load_tensors, module_from_found, select_module
from rnnexport.export.native import export_onnx, op_counts
from rnnexport.export.torch_exporters import exporter_versions, torch_export
from rnnexport.export.variants import PRECISION, wants_sequence_lens

_M = TypeVar("_M", bound=torch.nn.Module)


@overload
def export_config(cfg: ModelConfig, module: None = None, exporter: str = "native"
                  ) -> tuple[RecurrentModule, onnx.ModelProto]: ...


@overload
def export_config(cfg: ModelConfig, module: _M, exporter: str = "native") -> tuple[_M, onnx.ModelProto]: ...


def export_config(cfg: ModelConfig, module: torch.nn.Module | None = None, exporter: str = "native"
                  ) -> tuple[torch.nn.Module, onnx.ModelProto]:
    """Build (or take) the module for ``cfg`` and export it with the config's opset and inputs, with
    rnnexport's own writer or one of PyTorch's exporters (``EXPORTERS``)."""
    module = build_model(cfg) if module is None else module
    if exporter != "native":
        return module, torch_export(module, cfg, exporter)
    model = export_onnx(
        module,
        opset=cfg.opset,
        initial_state=cfg.inputs.initial_state,
        variable_lengths=cfg.inputs.variable_lengths,
        reverse=cfg.reverse,
        metadata={"config_sha256": cfg.sha256(), "name": cfg.name},
    )
    return module, model


def versions(exporter: str = "native") -> dict[str, str]:
    runtimes = ("openvino", "tract", "iree-base-compiler", "iree-base-runtime")  # what verify runs, not the build
    found = {k: v for k, v in _versions().items() if k not in runtimes}
    return found if exporter == "native" else {**found, **exporter_versions()}


def _io_dims(values: Any) -> list[dict[str, Any]]:
    return [
        {
            "name": v.name,
            "dtype": onnx.helper.tensor_dtype_to_np_dtype(v.type.tensor_type.elem_type).name,
            "dims": [d.dim_param or d.dim_value for d in v.type.tensor_type.shape.dim],
        }
        for v in values
    ]


def manifest_for(cfg: ModelConfig, model: onnx.ModelProto, exporter: str = "native",
                 weights_origin: dict[str, Any] | None = None, variants: Variants | None = None) -> dict[str, Any]:
    """Everything about an artifact except its files' hashes (added by ``write_artifact``)."""
    variants = variants or Variants()
    return {
        "name": cfg.name,
        "exporter": exporter,
        "config": cfg.to_dict(),
        "config_sha256": cfg.sha256(),
        "weights_origin": weights_origin or {"kind": "seed", "seed": cfg.seed},
        "opset": next((o.version for o in model.opset_import if o.domain in ("", "ai.onnx")), cfg.opset),
        "inputs": _io_dims(model.graph.input),
        "outputs": _io_dims(model.graph.output),
        "op_counts": op_counts(model),
        "versions": versions(exporter),
        "variants": {kind: {"file": VARIANT_FILES[kind], "precision": PRECISION[kind],
                            **({"ragged_inputs": "sequence_lens"} if wants_sequence_lens(
                                kind, cfg.inputs.variable_lengths) else {})} for kind in variants.made},
        "variants_unavailable": dict(variants.unavailable),
    }


@dataclass(frozen=True)
class Variants:
    """The variants a build made (``made``, in ``VARIANTS`` order) and, for each it could not, why."""

    made: tuple[str, ...] = ()
    unavailable: tuple[tuple[str, str], ...] = ()


def artifact_files(cfg: ModelConfig, module: RecurrentModule | None = None, exporter: str = "native",
                   variants: tuple[str, ...] = ()) -> tuple[onnx.ModelProto, dict[str, bytes], Variants]:
    """The model, the bytes of ``model.onnx``, ``weights.pt`` and each variant's file (all deterministic for
    ``native``), and which ``variants`` were made."""
    module, model = export_config(cfg, module, exporter)
    weights = io.BytesIO()
    torch.save(module.state_dict(), weights)
    files = {MODEL_FILE: model.SerializeToString(), WEIGHTS_FILE: weights.getvalue()}
    made, skipped = variant_files(cfg, module, model, variants)
    files.update({VARIANT_FILES[kind]: data for kind, data in made.items()})
    return model, files, Variants(tuple(made), tuple(skipped.items()))


def variant_files(cfg: ModelConfig, module: torch.nn.Module, model: onnx.ModelProto, variants: tuple[str, ...]
                  ) -> tuple[dict[str, bytes], dict[str, str]]:
    """Each of ``variants`` made from ``model`` (bytes), and why each that cannot be made was not."""
    from rnnexport.export.variants import make_variant, source_config, unavailable

    made, skipped = {}, {}
    for kind in variants:
        reason = unavailable(kind, cfg.cell)
        if reason:
            skipped[kind] = reason
            continue
        source = source_config(cfg, kind)
        made[kind] = make_variant(model if source is cfg else export_config(source, module)[1], kind, cfg.cell)
    return made, skipped


def wanted_variants(cfg: ModelConfig, extra: tuple[str, ...] = ()) -> tuple[str, ...]:
    """The config's variants and those asked for on the command line, in ``VARIANTS`` order."""
    return tuple(v for v in VARIANTS if v in cfg.variants or v in extra)


def build_artifact(cfg: ModelConfig, out: str | Path, *, exporter: str = "native", weights: str | Path | None = None,
                   prefix: str | None = None, variants: tuple[str, ...] = ()) -> Path:
    """Build ``cfg`` and write ``out/<name>/`` atomically. ``weights``: a state_dict or checkpoint file
    to take the weights from (the recurrent module found alone, or under ``prefix``) instead of the
    config's ``[weights]`` table or seed. ``variants`` are made beside the config's own (``[variants]``).
    Returns the artifact folder."""
    source = WeightsSource.of(cfg, weights, prefix)
    module, origin = source.load(cfg)
    model, files, made = artifact_files(cfg, module, exporter, wanted_variants(cfg, variants))
    return write_artifact(out, cfg, files, manifest_for(cfg, model, exporter, origin, made))


@dataclass(frozen=True)
class WeightsSource:
    """Where a build takes its weights: a file (from ``--weights`` or the config's ``[weights]``) or the seed."""

    file: Path | None
    prefix: str | None

    @classmethod
    def of(cls, cfg: ModelConfig, weights: str | Path | None = None, prefix: str | None = None) -> WeightsSource:
        if weights is not None:
            return cls(Path(weights), prefix)
        file = cfg.weights_file()
        if file is not None and cfg.weights is not None:  # a file implies the [weights] table
            return cls(file, prefix if prefix is not None else (cfg.weights.prefix or None))
        return cls(None, None)

    def load(self, cfg: ModelConfig) -> tuple[RecurrentModule | None, dict[str, Any] | None]:
        """The module holding the file's weights and the manifest's ``weights_origin`` (None, None: seed)."""
        if self.file is None:
            return None, None
        found = select_module(load_tensors(self.file), self.prefix, str(self.file))
        origin: dict[str, Any] = {"kind": "file", "file": self.file.name, "sha256": sha256_file(self.file),
                                  "prefix": found.prefix, "layout": found.layout}
        if cast_dtypes(found):
            origin["cast_to_float32"] = cast_dtypes(found)
        return module_from_found(cfg, found, self.file), origin


@dataclass(frozen=True)
class BuildOptions:
    """``build``'s choices: the output folder, the exporter, weights given on the command line, and whether
    seeded weights may replace an artifact built from a weights file (``reseed``)."""

    out: Path = Path("artifacts")
    exporter: str = "native"
    weights: Path | None = None
    prefix: str | None = None
    reseed: bool = False
    variants: tuple[str, ...] = ()  # made beside each config's own [variants]


@dataclass(frozen=True)
class Built:
    cfg: ModelConfig
    folder: Path
    model_bytes: int
    seconds: float
    notes: tuple[str, ...] = ()


def build_configs(configs: Iterable[ModelConfig], options: BuildOptions) -> Iterator[Built]:
    """Build each config into ``options.out``, rewriting ``index.json`` after each artifact is swapped in (so
    a killed run leaves it true of every finished artifact). Everything that can be refused (several configs
    with --weights, trained weights about to be replaced by seeded ones, a folder that is not ours) is
    refused before the first artifact is written; then an index left stale by a killed run is repaired."""
    configs = list(configs)
    if options.weights and len(configs) != 1:
        raise ArtifactError(f"--weights takes exactly one config; {len(configs)} were given")
    for cfg in configs:
        target = artifact_dir(options.out, cfg.name)
        refuse_foreign(target)
        _refuse_reseed(cfg, target, WeightsSource.of(cfg, options.weights, options.prefix), options.reseed)
    check_index_target(options.out)
    if configs and options.out.is_dir():
        write_index(options.out)
    for cfg in configs:
        start = time.perf_counter()
        folder = build_artifact(cfg, options.out, exporter=options.exporter, weights=options.weights,
                                prefix=options.prefix, variants=options.variants)
        write_index(options.out)
        manifest = json.loads((folder / MANIFEST_FILE).read_text())
        cast = (manifest.get("weights_origin") or {}).get("cast_to_float32")
        notes = [f"weights in {', '.join(cast)} were cast to float32"] if cast else []
        notes += manifest["variants_unavailable"].values()
        yield Built(cfg, folder, (folder / MODEL_FILE).stat().st_size, time.perf_counter() - start,
                    tuple(n for n in notes if n))


def _refuse_reseed(cfg: ModelConfig, target: Path, source: WeightsSource, reseed: bool) -> None:
    """Trained weights are never silently replaced by the config's seeded ones."""
    if source.file is not None or reseed:
        return
    try:
        origin = json.loads((target / MANIFEST_FILE).read_text()).get("weights_origin") or {}
    except (OSError, ValueError, AttributeError):
        return
    if isinstance(origin, dict) and origin.get("kind") == "file":
        raise ArtifactError(
            f"{target}: was built from trained weights ({origin.get('file')}); building {cfg.name} from its seed "
            "would replace them. Add a [weights] table to the config (file = ..., prefix = ...), pass --weights, "
            "or pass --reseed to replace them on purpose")


def check_configs(configs: Iterable[ModelConfig], options: BuildOptions,
                  on_result: Any = None) -> list[str]:
    """``build --check``: rebuild each config in memory with the same weights and exporter and compare with
    ``options.out`` byte for byte; one line per difference."""

    problems = []
    for cfg in configs:
        source = WeightsSource.of(cfg, options.weights, options.prefix)
        built_with = _recorded_variants(options.out / cfg.name)  # a plain --check of a `build --variants` artifact
        found = check_artifact(cfg, options.out, source.load(cfg)[0], options.exporter,
                               wanted_variants(cfg, tuple(dict.fromkeys(options.variants + built_with))))
        problems += found
        if on_result:
            on_result(cfg, found)
    return problems


def check_artifact(cfg: ModelConfig, out: Path, module: Any = None, exporter: str = "native",
                   variants: tuple[str, ...] = ()) -> list[str]:
    """Rebuild ``cfg`` in memory (with ``module``'s weights when given, else the seed's, ``exporter`` and
    ``variants``) and compare with ``out/<name>`` byte for byte; one line per difference."""
    folder = out / cfg.name
    if not (folder / MANIFEST_FILE).is_file():
        return [f"{cfg.name}: no artifact at {folder}"]
    problems = []
    fresh = artifact_files(cfg, module, exporter, variants)[1]
    for fname, data in fresh.items():
        path = folder / fname
        kind = next((k for k, name in VARIANT_FILES.items() if name == fname), None)
        if not path.is_file() and kind:
            problems.append(f"{cfg.name}: {fname} is missing from the artifact (build it with --variants {kind})")
        elif not path.is_file() or path.read_bytes() != data:
            problems.append(f"{cfg.name}: {fname} differs from a fresh build")
    manifest = json.loads((folder / MANIFEST_FILE).read_text())
    for fname in manifest.get("files", {}):
        if fname not in fresh:
            problems.append(f"{cfg.name}: {fname} is in the artifact but a fresh build would not make it")
    if manifest.get("config_sha256") != cfg.sha256():
        problems.append(f"{cfg.name}: the config changed since the artifact was built")
    return problems


def _recorded_variants(folder: Path) -> tuple[str, ...]:
    """The deployment variants an artifact's manifest says it was built with (none when it cannot be read)."""
    try:
        files = json.loads((folder / MANIFEST_FILE).read_text()).get("files", {})
    except (OSError, ValueError, AttributeError):
        return ()
    return tuple(kind for kind, name in VARIANT_FILES.items() if isinstance(files, dict) and name in files)
