"""What an ONNX file or artifact folder holds: a compact summary for people, a dict for machines."""

from __future__ import annotations

import hashlib
from pathlib import Path
from typing import Any

import onnx

from rnnexport.artifacts.folders import Artifact, load_artifact
from rnnexport.contract import MANIFEST_FILE, MODEL_FILE, ONNX_DOMAINS
from rnnexport.errors import ArtifactError
from rnnexport.graph.precision import model_precision, precision_words
from rnnexport.graph.reader import read_model
from rnnexport.graph.subgraphs import Scope, op_counts, recurrent_sites


def _dims(value: onnx.ValueInfoProto) -> list[Any]:
    return [d.dim_param or (d.dim_value if d.HasField("dim_value") else "?") for d in value.type.tensor_type.shape.dim]


def _attrs(node: onnx.NodeProto) -> dict[str, Any]:
    return {a.name: onnx.helper.get_attribute_value(a) for a in node.attribute}


def _known_shapes(scope: Scope) -> dict[str, list[Any]]:
    """Shapes of the scope's constants (and their casts: fp16-weights variants) and of its declared inputs."""
    shapes: dict[str, list[Any]] = {name: list(value.shape) for name, value in scope.constants.items()}
    for node in scope.nodes:
        if node.op_type == "Cast" and node.input and node.input[0] in shapes:
            shapes[node.output[0]] = shapes[node.input[0]]
    return shapes


def layer_summary(model: onnx.ModelProto) -> list[dict[str, Any]]:
    """One entry per recurrent node in any graph or subgraph (``path``: where, empty for the main graph): the cell
    op it computes, hidden and input size, direction, activations, GRU's linear_before_reset, layout, clip,
    input_forget, peepholes, and W's and R's shapes (also when they are graph inputs), ONNX's defaults filled
    in. ``op_type`` names a contrib node (``com.microsoft:DynamicQuantizeLSTM``, whose W is [D, input, 4H])."""
    layers = []
    for site in recurrent_sites(model):
        node, scope = site.node, site.scope
        constants = _known_shapes(scope)
        declared = {v.name: _dims(v) for v in scope.inputs}
        attrs = _attrs(node)
        quantized = node.domain not in ONNX_DOMAINS
        w_dims = (constants.get(node.input[1]) or declared.get(node.input[1])) if len(node.input) > 1 else None
        r_dims = (constants.get(node.input[2]) or declared.get(node.input[2])) if len(node.input) > 2 else None
        input_size = w_dims[1 if quantized else 2] if w_dims and len(w_dims) == 3 else None
        entry = {
            "node": node.name, "path": scope.path, "where": site.path, "op": site.cell,
            "op_type": f"{node.domain}:{node.op_type}" if quantized else node.op_type,
            "hidden_size": attrs.get("hidden_size"),
            "input_size": input_size if isinstance(input_size, int) else None,
            "direction": (attrs.get("direction") or b"forward").decode(),
            "activations": [a.decode() for a in attrs.get("activations", [])] or "default",
            "layout": attrs.get("layout", 0),
            "clip": attrs.get("clip"),
            "input_forget": attrs.get("input_forget", 0) if site.cell == "LSTM" else None,
            "peepholes": site.cell == "LSTM" and len(node.input) > 7 and bool(node.input[7]),
            "activation_params": {k: attrs[k] for k in ("activation_alpha", "activation_beta") if k in attrs},
            "W": w_dims, "R": r_dims,
            "weights_are_initializers": all(name in constants for name in node.input[1:3]),
            "has_bias": len(node.input) > 3 and bool(node.input[3]),
            "sequence_lens": len(node.input) > 4 and bool(node.input[4]),
        }
        if node.op_type == "GRU":
            entry["linear_before_reset"] = attrs.get("linear_before_reset", 0)
        layers.append(entry)
    return layers


def inspect_path(path: str | Path) -> dict[str, Any]:
    """Summary of ``MODEL.onnx`` or an artifact folder (whose manifest is checked, not trusted)."""
    path = Path(path)
    manifest_status, variants = None, {}
    model_path = path
    if path.is_dir():
        if not (path / MANIFEST_FILE).is_file():
            raise ArtifactError(f"{path}: not an artifact folder (no {MANIFEST_FILE})")
        model_path = path / MODEL_FILE
        try:
            artifact = load_artifact(path)
            manifest_status = "ok: every file matches its sha256"
            variants = _variants(artifact)
        except ArtifactError as exc:
            manifest_status = f"problem: {exc}"
    try:
        data = model_path.read_bytes()
    except OSError as exc:
        raise ArtifactError(f"{model_path}: cannot read: {exc.strerror or exc}") from None
    model = read_model(model_path)[0]  # external data checked and read, wherever it is referenced
    layers = layer_summary(model)
    initializers = {i.name for i in model.graph.initializer}
    return {
        "file": f"{path.name}/{MODEL_FILE}" if path.is_dir() else model_path.name,
        "bytes": len(data),
        "sha256": hashlib.sha256(data).hexdigest(),
        "producer": f"{model.producer_name} {model.producer_version}".strip(),
        "ir_version": model.ir_version,
        "opset": next((o.version for o in model.opset_import if o.domain in ("", "ai.onnx")), None),
        "cell": sorted({layer["op"] for layer in layers}),
        "precision": model_precision(model),
        "layers": layers,
        "inputs": [{"name": v.name, "dims": _dims(v)} for v in model.graph.input if v.name not in initializers],
        "outputs": [{"name": v.name, "dims": _dims(v)} for v in model.graph.output],
        "op_counts": op_counts(model),
        "metadata": {p.key: p.value for p in model.metadata_props},
        "manifest": manifest_status,
        "variants": variants,
    }


def _variants(artifact: Artifact) -> dict[str, dict[str, Any]]:
    """Each variant the manifest lists (file, bytes, sha256, precision), or why the build could not make it."""
    found: dict[str, dict[str, Any]] = {}
    for kind, path in artifact.variant_paths().items():
        entry = artifact.manifest["files"][path.name]
        precision = artifact.manifest.get("variants", {}).get(kind, {}).get("precision")
        found[kind] = {"file": path.name, "bytes": entry["bytes"], "sha256": entry["sha256"], "precision": precision}
    for kind, reason in (artifact.manifest.get("variants_unavailable") or {}).items():
        found[kind] = {"unavailable": reason}
    return found


def _or_unknown(value: Any) -> Any:
    return "?" if value is None else value


def _shape(dims: list[Any] | None) -> str:
    return "?" if dims is None else "[" + ", ".join(map(str, dims)) + "]"


def _layer_attrs(layer: dict[str, Any]) -> dict[str, Any]:
    """The attributes worth a word: layout always; the rest when set."""
    shown = {"layout": layer["layout"]}
    if "linear_before_reset" in layer:
        shown["linear_before_reset"] = layer["linear_before_reset"]
    for key in ("clip", "input_forget"):
        if layer.get(key):
            shown[key] = layer[key]
    if layer.get("peepholes"):
        shown["peepholes"] = "P"
    if layer.get("sequence_lens"):
        shown["sequence_lens"] = "yes"
    return shown


def render_inspect(info: dict[str, Any]) -> str:
    layers = info["layers"]
    first = layers[0] if layers else {}
    activations = first.get("activations", "default")
    lines = [
        f"{info['file']}: {info['bytes'] / 1024:.1f} KiB, sha256 {info['sha256'][:16]}…, {info['producer'] or '?'}, "
        f"opset {info['opset']}, IR {info['ir_version']}",
        f"  cell        {', '.join(info['cell']) or 'none (no GRU, LSTM or RNN node in any graph)'} × {len(layers)} "
        f"layers, hidden {first.get('hidden_size')}, input {_or_unknown(first.get('input_size'))}, "
        f"{first.get('direction', '-')}"
        + ("" if activations == "default" else f", activations {'/'.join(activations)}"),
    ]
    if info.get("precision", "float32") != "float32":
        lines.append(f"  precision   {info['precision']}: {precision_words(info['precision'])}")
    for layer in layers:
        lines.append(f"  layer       {layer['where']}: {layer['op_type']}, W {_shape(layer['W'])}, "
                     f"R {_shape(layer['R'])}"
                     + "".join(f", {k} {v}" for k, v in _layer_attrs(layer).items()))
    for v in info["inputs"]:
        lines.append(f"  input       {v['name']} [{', '.join(map(str, v['dims']))}]")
    for v in info["outputs"]:
        lines.append(f"  output      {v['name']} [{', '.join(map(str, v['dims']))}]")
    lines.append("  ops         " + ", ".join(f"{k} {v}" for k, v in info["op_counts"].items()))
    for key, value in info["metadata"].items():
        lines.append(f"  metadata    {key} = {value}")
    if info["manifest"]:
        lines.append(f"  manifest    {info['manifest']}")
    for kind, entry in info.get("variants", {}).items():
        why = entry.get("unavailable", "").removeprefix(f"{kind}: ")  # the reason may start with the name already
        lines.append(f"  variant     {kind}: " + (why if "unavailable" in entry else
                     f"{entry['file']}, {entry['bytes'] / 1024:.1f} KiB ({entry['bytes'] / info['bytes']:.0%} of "
                     f"model.onnx), {entry['precision']}, sha256 {entry['sha256'][:16]}…"))
    return "\n".join(lines)
