"""Whole models: any ``nn.Module`` that contains ``nn.GRU``/``nn.LSTM``/``nn.RNN`` layers or
``nn.GRUCell``/``nn.LSTMCell``/``nn.RNNCell`` steps, exported with those as rnnexport's native recurrent nodes and
everything else by ``torch.onnx.export(dynamo=True)``. Verified by ``verification.whole_model.verify_model``
against PyTorch and the float64 oracle at the standard shapes.

    model = rnnexport.export_model(tagger, (tokens,), dynamic_shapes=({0: "batch", 1: "seq"},),
                                   input_names=["tokens"], output_names=["logits"])
    report = rnnexport.verify_model(tagger, model, (tokens,), dynamic_shapes=({0: "batch", 1: "seq"},))

How: the model runs once eagerly (``probe.probe_model``) to read the weights each recurrent module computes with
(also weight-normed or otherwise derived ones) and how often each is called. During the export each module's
forward is a stand-in, ``torch.onnx.ops.symbolic_multi_out``, which the exporter writes as one
``rnnexport::Recurrent`` node whose output shapes stay symbolic. Each such node is then replaced by the graph
``export_onnx`` writes for the module (one node per layer, gates reordered in one place), its tensors renamed under
the module's path; a module called several times shares one set of initializers. A cell is a one-step layer: its
input and state get a time axis of 1 and its new state loses it again.
"""

from __future__ import annotations

import logging
import re
import warnings
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from typing import Any

import onnx
import torch
from onnx import helper
from torch import nn

from rnnexport.contract import C0, C_N, H0, H_N, INPUT, LENGTHS, OUTPUT
from rnnexport.errors import ExportError
from rnnexport.export.cell_loops import fold_cell_loops, looped_cells
from rnnexport.export.factory import WholeModel, load_factory, user_error  # noqa: F401 (the API's names)
from rnnexport.export.native import export_onnx
from rnnexport.export.probe import Probe, is_cell, native_layer, patched, probe_model, recurrent_modules
from rnnexport.export.splice import STAND_IN, axes_node, int_attrs, is_stand_in, splice

ANSI = re.compile(r"\x1b\[[0-9;]*m")
USER_LINE = re.compile(r'File "([^"]+)", line (\d+), in (\w+)\n\s*(.+)')


class Padded:
    """What ``pack_padded_sequence`` returns while ``export_model`` runs: the padded tensor and its lengths, kept
    as they are (a PackedSequence's data has a size that depends on the lengths' values, which no symbolic
    shape can carry); ``pad_packed_sequence`` gives them back. The recurrent stand-in takes the lengths as the
    native graph's ``sequence_lens``."""

    def __init__(self, data: torch.Tensor, lengths: Any, batch_first: bool):
        if not isinstance(lengths, torch.Tensor):
            raise ExportError("export_model: pack_padded_sequence was given lengths as a list; pass a tensor input "
                              "so the lengths stay an input of the graph")
        self.data, self.lengths, self.batch_first = data, lengths, batch_first


def _pack(input: torch.Tensor, lengths: Any, batch_first: bool = False, enforce_sorted: bool = True) -> Padded:
    return Padded(input, lengths, batch_first)


def _unpack(sequence: Padded, batch_first: bool = False, padding_value: float = 0.0,
            total_length: int | None = None) -> tuple[torch.Tensor, Any]:
    if padding_value != 0.0:
        raise ExportError("export_model: pad_packed_sequence with a padding_value other than 0 is not supported")
    data = sequence.data if batch_first == sequence.batch_first else sequence.data.transpose(0, 1)
    return data, sequence.lengths


def _symbolic(inputs: list[Any], attrs: dict[str, int], shapes: list[list[Any]]) -> list[torch.Tensor]:
    """One ``rnnexport::Recurrent`` node of float32 outputs with ``shapes``: the op behind
    ``torch.onnx.ops.symbolic_multi_out``, called directly because dynamo will not trace that function, and strict
    tracing is torch.onnx's fallback for models that non-strict export refuses (a data-dependent assert, say)."""
    keys = list(attrs)
    return torch.ops.onnx_symbolic._symbolic_multi_out.default(
        inputs, STAND_IN[1], [onnx.TensorProto.FLOAT] * len(shapes), shapes=shapes, attr_keys=keys,
        attr_types=["i"] * len(keys), attr_pos=[[k, k + 1] for k in range(len(keys))],
        attr_ints=[attrs[k] for k in keys], attr_floats=[], attr_strs=[], metadata_props_keys=[],
        metadata_props_values=[], domain=STAND_IN[0], version=1)


def _stand_in(index: int) -> Callable:
    """The forward of recurrent module ``index`` during the export: one symbolic node, outputs shaped as PyTorch's."""
    def forward(self: nn.RNNBase, x: Any, hx: Any = None) -> Any:
        padded = isinstance(x, Padded)
        data = x.data if padded else x
        if not isinstance(data, torch.Tensor):
            raise ExportError(f"export_model: a {type(self).__name__} was fed a {type(x).__name__} rnnexport could not "
                              "see being made (pack_padded_sequence called from a module other than the model's "
                              "own, say): call torch.nn.utils.rnn.pack_padded_sequence where the model's forward is "
                              "written, or pass a padded tensor")
        torch._check(data.shape[-1] == self.input_size)  # a declared dynamic feature axis fails here, by name
        batch_first = x.batch_first if padded else self.batch_first
        dirs = 2 if self.bidirectional else 1
        batch = data.shape[0] if batch_first else data.shape[1]
        state = [self.num_layers * dirs, batch, self.hidden_size]
        shapes = [[data.shape[0], data.shape[1], dirs * self.hidden_size], state] + (
            [state] if self.mode == "LSTM" else [])
        h0, c0 = (tuple(hx) if isinstance(hx, (tuple, list)) else (hx, None))
        lengths = x.lengths.to(data.device) if padded else None
        outs = _symbolic([data, h0, c0, lengths], {"index": index, "batch_first": int(batch_first)}, shapes)
        y = Padded(outs[0], x.lengths, batch_first) if padded else outs[0]
        return (y, (outs[1], outs[2])) if self.mode == "LSTM" else (y, outs[1])
    return forward


def _cell_stand_in(index: int) -> Callable:
    """The forward of cell ``index`` during the export: one symbolic node from (x, h[, c]) to the new h[, c]."""
    def forward(self: nn.RNNCellBase, x: torch.Tensor, hx: Any = None) -> Any:
        if not isinstance(x, torch.Tensor) or x.dim() not in (1, 2):
            raise ExportError(f"export_model: a {type(self).__name__} fed {type(x).__name__}; expected a tensor "
                              "[batch, input_size]")
        torch._check(x.shape[-1] == self.input_size)
        lstm = isinstance(self, nn.LSTMCell)
        h0, c0 = (tuple(hx) if isinstance(hx, (tuple, list)) else (hx, None))
        state = [x.shape[0], self.hidden_size] if x.dim() == 2 else [self.hidden_size]
        outs = _symbolic([x, h0, c0, None], {"index": index, "cell": x.dim()}, [state] * (2 if lstm else 1))
        return (outs[0], outs[1]) if lstm else outs[0]
    return forward


@contextmanager
def _stand_ins(model: nn.Module, modules: list[tuple[str, nn.Module]]) -> Iterator[None]:
    """Each recurrent module's forward replaced by its stand-in, on the instance, and pack_padded_sequence /
    pad_packed_sequence by their pass-through forms, for the ``with`` block."""
    rnn_utils = torch.nn.utils.rnn
    for index, (_, module) in enumerate(modules):
        stand_in = _cell_stand_in(index) if is_cell(module) else _stand_in(index)
        module.forward = stand_in.__get__(module)
    try:
        with patched(model, {rnn_utils.pack_padded_sequence: _pack, rnn_utils.pad_packed_sequence: _unpack}):
            yield
    finally:
        for _, module in modules:
            del module.forward


def torch_dims(dynamic_shapes: Any) -> Any:
    """``{0: "batch"}`` → ``{0: torch.export.Dim("batch")}`` (one Dim per name), nested as given."""
    made: dict[str, Any] = {}

    def convert(value: Any) -> Any:
        if isinstance(value, str):
            return made.setdefault(value, torch.export.Dim(value))
        if isinstance(value, dict):
            return {k: convert(v) for k, v in value.items()}
        if isinstance(value, (list, tuple)):
            return type(value)(convert(v) for v in value)
        return value
    return convert(dynamic_shapes)


def export_model(model: nn.Module, example_inputs: tuple, *, dynamic_shapes: Any = None,
                 input_names: list[str] | None = None, output_names: list[str] | None = None,
                 opset: int = 18) -> onnx.ModelProto:
    """``model`` as ONNX: its GRU/LSTM/RNN layers as native recurrent nodes (one per layer), each cell call as a
    one-step node, the rest by ``torch.onnx.export(dynamo=True)``. ``dynamic_shapes`` as torch.export takes them;
    a dim may be a name (``{0: "batch", 1: "seq"}``), one ``Dim`` per name.

    Raises ``ExportError`` in one line: no recurrent module; one it cannot express (``proj_size``, a quantized
    module, a cell stepped in a Python loop); a model that fails on its example inputs; or torch.onnx's own
    failure, with the source line of the user's model where it names one."""
    modules = recurrent_modules(model)
    _refuse_unsupported(model, modules)
    check_dims(dynamic_shapes, tuple(example_inputs))
    model = model.eval()
    found = probe_model(model, tuple(example_inputs))
    # a cell called several times is a loop over time only in a model with a "seq" dim; else each call is a step
    looped = looped_cells(modules, found) if _has_seq(dynamic_shapes) else []
    # a cell loop unrolls at the example's length; the layers it folds into take any length again (below)
    traced_shapes = _without_seq(dynamic_shapes) if looped else dynamic_shapes
    with _stand_ins(model, modules), _quiet():
        try:
            program = torch.onnx.export(model, tuple(example_inputs), dynamo=True,
                                        dynamic_shapes=torch_dims(traced_shapes),
                                        input_names=input_names, output_names=output_names, opset_version=opset,
                                        verbose=False)
        except ExportError:
            raise
        except Exception as exc:  # torch.export's own error types, or ours raised inside the trace
            ours = _ours(exc)
            if ours is not None:
                raise ExportError(str(ours)) from None
            raise ExportError(f"export_model: torch.onnx.export failed: {explain(exc)}") from None
    if program is None:  # not with dynamo=True, which always returns the program
        raise ExportError("export_model: torch.onnx.export returned no ONNX program")
    proto = program.model_proto
    fold_cell_loops(proto, modules, found, looped)
    _replace_stand_ins(proto, modules, found)
    if looped:
        _restore_seq(proto, dynamic_shapes, tuple(example_inputs))
    _check_dynamic(proto, dynamic_shapes)
    _check_exported(proto)
    return proto


def _has_seq(dynamic_shapes: Any) -> bool:
    flat, _ = torch.utils._pytree.tree_flatten(dynamic_shapes, is_leaf=lambda v: v is None or isinstance(v, dict))
    return any(dim_name(v, "export_model") == "seq" for dims in flat if isinstance(dims, dict) for v in dims.values())


def _check_dynamic(proto: onnx.ModelProto, dynamic_shapes: Any) -> None:
    """Every axis named dynamic is dynamic in the graph: an axis the model needs fixed (a convolution's channels,
    a recurrent layer's features) is exported static by torch without a word, and fails at any other size."""
    flat, _ = torch.utils._pytree.tree_flatten(dynamic_shapes, is_leaf=lambda v: v is None or isinstance(v, dict))
    for value, dims in zip(proto.graph.input, flat):
        for axis, name in (dims or {}).items():
            dim = value.type.tensor_type.shape.dim[axis]
            if dim.HasField("dim_value"):
                raise ExportError(f"export_model: input {value.name} axis {axis} is named "
                                  f"{dim_name(name, 'export_model')!r}, but the model needs it fixed (it is "
                                  f"{dim.dim_value} in the exported graph: a convolution's channels or a recurrent "
                                  "layer's features, say); name only the axes that vary")


def _without_seq(dynamic_shapes: Any) -> Any:
    """``dynamic_shapes`` with every dim named ``seq`` left out (made static), nested as given."""
    if isinstance(dynamic_shapes, dict):
        return {k: v for k, v in dynamic_shapes.items() if dim_name(v, "export_model") != "seq"} or None
    if isinstance(dynamic_shapes, (list, tuple)):
        return type(dynamic_shapes)(_without_seq(v) for v in dynamic_shapes)
    return dynamic_shapes


def _restore_seq(proto: onnx.ModelProto, dynamic_shapes: Any, example_inputs: tuple) -> None:
    """The graph inputs' ``seq`` axes named again, and every graph output's axis of the example's length too (the
    graph was traced at that length); the intermediate shapes recorded at it are dropped."""
    flat, _ = torch.utils._pytree.tree_flatten(dynamic_shapes, is_leaf=lambda v: v is None or isinstance(v, dict))
    leaves, _ = torch.utils._pytree.tree_flatten(example_inputs)
    lengths = set()
    for value, dims, leaf in zip(proto.graph.input, flat, leaves):
        for axis, name in (dims or {}).items():
            if dim_name(name, "export_model") == "seq":
                value.type.tensor_type.shape.dim[axis].dim_param = "seq"
                lengths.add(int(leaf.shape[axis]))
    for value in proto.graph.output:
        for dim in value.type.tensor_type.shape.dim:
            if dim.HasField("dim_value") and dim.dim_value in lengths:
                dim.dim_param = "seq"
    del proto.graph.value_info[:]


def check_dims(dynamic_shapes: Any, example_inputs: tuple, who: str = "export_model") -> list[dict[int, Any] | None]:
    """``dynamic_shapes`` mirror the example inputs (one dict, or None, per tensor, nested as the inputs are); each
    names axes the tensor has, as ``batch`` or ``seq`` (a string or a ``torch.export.Dim`` of that name: these two
    names are what ``verify_model`` builds its cases from); one name has one size in the example. Returns the dims
    of each input tensor in flattened order (None where none is dynamic). Raises ``ExportError`` naming ``who``,
    the input and the axis before torch sees them."""
    leaves, spec = torch.utils._pytree.tree_flatten(tuple(example_inputs))
    if dynamic_shapes is None:
        return [None] * len(leaves)
    try:
        flat = spec.flatten_up_to(tuple(dynamic_shapes))
    except (ValueError, TypeError, AttributeError, RuntimeError) as exc:
        raise ExportError(f"{who}: dynamic_shapes do not mirror the example inputs (one dict or None per "
                          f"tensor, nested as the inputs are): {str(exc).splitlines()[0][:200]}") from None
    sizes: dict[str, tuple[int, str]] = {}
    for index, (dims, leaf) in enumerate(zip(flat, leaves)):
        if dims is None:
            continue
        if not isinstance(dims, dict):
            raise ExportError(f"{who}: dynamic_shapes for input {index} is {dims!r}; expected a dict of axis "
                              "→ name, or None")
        for axis, value in dims.items():
            where = f"{who}: input {index} axis {axis}"
            if not isinstance(axis, int) or not 0 <= axis < leaf.dim():
                raise ExportError(f"{where}: the input has {leaf.dim()} axes")
            name = dim_name(value, where)
            size, first = sizes.setdefault(name, (int(leaf.shape[axis]), f"input {index} axis {axis}"))
            if size != leaf.shape[axis]:
                raise ExportError(f"{where}: {name!r} is {leaf.shape[axis]} here and {size} at {first}; one name, one "
                                  "size in the example (two lengths that vary apart cannot both be seq)")
    return flat


def dim_name(value: Any, where: str) -> str:
    """``"batch"`` or ``"seq"`` from a string or a ``torch.export.Dim`` of that name; else ``ExportError``."""
    text = value if isinstance(value, str) else getattr(value, "__name__", None)
    if text not in ("batch", "seq"):
        raise ExportError(f"{where}: dynamic dim {text or value!r}; name them \"batch\" or \"seq\" (a dim of another "
                          "name, a feature axis say, cannot vary in a recurrent model)")
    return text


def _check_exported(proto: onnx.ModelProto) -> None:
    """ONNX's full check of the exported graph; a failure names the node and the model's code that made it."""
    try:
        onnx.checker.check_model(proto, full_check=True)
    except (onnx.checker.ValidationError, onnx.shape_inference.InferenceError) as exc:
        text = ANSI.sub("", str(exc)).strip()
        found = re.search(r"node name: ([^)\s]+)", text)
        node = next((n for n in proto.graph.node if found and n.name == found[1]), None)
        meta = {m.key: m.value for m in node.metadata_props} if node is not None else {}
        source = USER_LINE.search(meta.get("pkg.torch.onnx.stack_trace", ""))
        made_by = meta.get("namespace", "").strip(": ")
        where = f" at {node.name}" if node is not None else ""
        where += f" ({made_by})" if made_by else ""
        where += f", {source[1].rsplit('/', 1)[-1]}:{source[2]}: {source[4].strip()}" if source else ""
        detail = re.split(r"\]\s*", text.splitlines()[-1])[-1]
        raise ExportError(f"export_model: the exported graph is not valid ONNX{where}: {detail[:300]} (an op "
                          "that needs a fixed size where a dim is dynamic, say)") from None


def _refuse_unsupported(model: nn.Module, modules: list[tuple[str, nn.Module]]) -> None:
    for path, module in model.named_modules():
        kind = type(module)
        if kind.__module__.startswith("torch.ao.nn.quantized") and kind.__name__ in ("LSTM", "GRU", "RNN"):
            raise ExportError(f"export_model: {path or 'the model'} is a quantized {kind.__name__} "
                              f"({kind.__module__}); ONNX has no such operator: export the float model and build "
                              "its int8-dynamic variant (rnnexport build --variants int8-dynamic)")
    if not modules:
        raise ExportError("export_model: the model holds no nn.GRU, nn.LSTM, nn.RNN or their cells; use "
                          "torch.onnx.export")
    for path, module in modules:
        if getattr(module, "proj_size", 0):
            name = path or "(the model)"
            raise ExportError(f"export_model: the LSTM {name} has proj_size {module.proj_size}: ONNX's LSTM operator "
                              "has no projection, so it cannot be a native node")


def _ours(exc: BaseException) -> ExportError | None:
    """An ``ExportError`` a stand-in raised inside torch's trace, which torch wraps in its own."""
    seen: list[BaseException] = []
    current: BaseException | None = exc
    while current is not None and current not in seen:
        if isinstance(current, ExportError):
            return current
        seen.append(current)
        current = current.__cause__ or current.__context__
    return None


def explain(exc: BaseException) -> str:
    """torch.onnx's failure in one line: the root cause (not the exporter's step banner), without colour codes, and
    the user's source line where the message or the traceback names one."""
    chain: list[BaseException] = []
    current: BaseException | None = exc
    while current is not None and current not in chain:
        chain.append(current)
        current = current.__cause__ or current.__context__
    texts = [ANSI.sub("", str(e)).strip() for e in chain]
    useful = [(e, t) for e, t in zip(chain, texts) if t and not t.startswith(("Failed to export", "This is step"))]
    error, text = useful[-1] if useful else (chain[-1], texts[-1])
    first = next((line.strip() for line in text.splitlines() if line.strip() and not line.startswith("#")), "")
    where = next((m for t in texts for m in USER_LINE.finditer(t)
                  if "site-packages" not in m[1] and "/rnnexport/" not in m[1]), None)
    line = f" (at {where[1].rsplit('/', 1)[-1]}:{where[2]}: {where[4].strip()})" if where else ""
    if not line:
        line = f" ({user_error(error).rsplit(' (at ', 1)[1]}" if " (at " in user_error(error) else ""
    return f"{type(error).__name__}: {first[:300]}{line}"


@contextmanager
def _quiet() -> Iterator[None]:
    """The exporter's progress lines and warnings (torchvision missing, deprecations) stay off stderr."""
    loggers = [logging.getLogger(n) for n in ("torch", "onnxscript")]
    levels = [lg.level for lg in loggers]
    for lg in loggers:
        lg.setLevel(logging.CRITICAL)  # torch logs tracebacks of guards it then raises on; the Error line says it
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        try:
            yield
        finally:
            for lg, level in zip(loggers, levels):
                lg.setLevel(level)


def _replace_stand_ins(proto: onnx.ModelProto, modules: list[tuple[str, nn.Module]], found: Probe) -> None:
    """Each ``rnnexport::Recurrent`` node → the module's native subgraph, tensors renamed under its path; a module
    called again shares the first call's initializers, its nodes and other tensors named ``<path>/call<k>/``."""
    opset = next(o.version for o in proto.opset_import if o.domain in ("", "ai.onnx"))
    nodes: list[onnx.NodeProto] = []
    calls: dict[int, int] = {}
    shared = {init.name for init in proto.graph.initializer}
    for node in proto.graph.node:
        if not is_stand_in(node):
            nodes.append(node)
            continue
        attrs = int_attrs(node)
        index = attrs["index"]
        path, module = modules[index]
        call = calls[index] = calls.get(index, 0) + 1
        base = module_prefix(path)
        prefix = base if call == 1 else f"{base}call{call}/"
        native = native_layer(module, found.weights[index])
        if "cell" in attrs:
            sub, outer, before, after = _cell_subgraph(node, native, opset, prefix, attrs["cell"])
        else:
            sub, outer, before, after = _layer_subgraph(node, native, opset, prefix, bool(attrs["batch_first"]))
        inner, inits = splice(sub, outer, base, prefix)
        nodes += before + inner + after
        proto.graph.initializer.extend(i for i in inits if i.name not in shared)
        shared.update(i.name for i in inits)
    del proto.graph.node[:]
    proto.graph.node.extend(nodes)
    finish(proto)


def module_prefix(path: str) -> str:
    return (path or "rnn").replace(".", "/") + "/"


def finish(proto: onnx.ModelProto) -> None:
    """Drop the stand-ins' opset and the shapes recorded for tensors that are gone."""
    kept = [o for o in proto.opset_import if o.domain != STAND_IN[0]]
    del proto.opset_import[:]
    proto.opset_import.extend(kept)
    names = {o for n in proto.graph.node for o in n.output}
    kept_info = [v for v in proto.graph.value_info if v.name in names]
    del proto.graph.value_info[:]
    proto.graph.value_info.extend(kept_info)


Adapted = tuple[onnx.ModelProto, dict[str, str], list[onnx.NodeProto], list[onnx.NodeProto]]


def _layer_subgraph(node: onnx.NodeProto, native: nn.RNNBase, opset: int, prefix: str, batch_first: bool
                    ) -> Adapted:
    """A layer's graph, the outer names of its inputs and outputs, and the nodes that adapt them before and after."""
    slots = dict(zip((INPUT, H0, C0, LENGTHS), node.input))
    native.batch_first = batch_first
    ragged = bool(slots.get(LENGTHS))
    sub = export_onnx(native, opset=max(opset, 11) if ragged else opset, initial_state=bool(slots.get(H0)),
                      variable_lengths="masked" if ragged else False)
    outer = {name: tensor for name, tensor in slots.items() if tensor}
    outer.update(zip((OUTPUT, H_N, C_N), node.output))
    extra = []
    if ragged:  # the model's lengths (int64, usually) as the graph's int32 sequence_lens
        extra.append(helper.make_node("Cast", [slots[LENGTHS]], [prefix + LENGTHS], name=prefix + "lengths_int32",
                                      to=onnx.TensorProto.INT32))
        outer[LENGTHS] = prefix + LENGTHS
    return sub, outer, extra, []


def _cell_subgraph(node: onnx.NodeProto, native: nn.RNNBase, opset: int, prefix: str, rank: int) -> Adapted:
    """A cell's one-step graph: x [batch, input] and its state [batch, hidden] get a leading axis of 1 (a sequence
    of one step; also the batch axis, for an unbatched cell call), the new state loses it again."""
    x, h, c = (list(node.input) + ["", "", ""])[:3]
    sub = export_onnx(native, opset=opset, initial_state=bool(h))
    axes = [0] if rank == 2 else [0, 1]
    before: list[onnx.NodeProto] = []
    after: list[onnx.NodeProto] = []
    outer = {OUTPUT: prefix + "Y"}
    for name, value in ((INPUT, x), (H0, h), (C0, c)):
        if value:
            before += axes_node("Unsqueeze", value, prefix + name, axes, opset, prefix)
            outer[name] = prefix + name
    for name, value in zip((H_N, C_N), node.output):
        outer[name] = prefix + name
        after += axes_node("Squeeze", prefix + name, value, axes, opset, prefix)
    return sub, outer, before, after
