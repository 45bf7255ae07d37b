"""OpenVINO as a runner (optional: ``pip install 'rnnexport[openvino]'``).

Two runners per device: ``openvino-<device>-f32`` (inference precision forced to f32) and
``openvino-<device>-default`` (the device's own default: bf16 on CPUs with AVX512-BF16 or AMX, f16 on
GPUs). The precision a compiled model really uses is read back from it and recorded.
"""

from __future__ import annotations

import functools
import re
from typing import Any

import numpy as np

from rnnexport.errors import RunnerFailed, RunnerUnavailable
from rnnexport.verification.runners import RunnerSpec

INSTALL = "pip install 'rnnexport[openvino]'"
# OpenVINO's element type names → the precision names reports use.
PRECISIONS = {"f32": "float32", "bf16": "bf16", "f16": "f16", "float32": "float32", "bfloat16": "bf16",
              "float16": "f16"}
# Outputs larger than this give their infer request back after the call: a request keeps the buffers of the
# largest shape it has run (about 4x its outputs for gru_2layer at 100,000 steps), and a new one costs 0.05 ms.
RELEASE_BYTES = 1 << 24
INTEL_VENDOR_ID = 0x8086  # the PCI vendor id OpenVINO's GPU plugin prints in DEVICE_ARCHITECTURE


def openvino_name(device: str, precision: str) -> str:
    """``openvino-cpu-f32``, ``openvino-cpu-default``, ``openvino-gpu-f32``, …"""
    return f"openvino-{device.lower()}-{precision}"


@functools.cache
def openvino_devices() -> tuple[str, ...]:
    """The devices OpenVINO lists here ("CPU", "GPU.0", …), asked once (listing probes every plugin).
    ``ImportError`` without OpenVINO. Each runner has a core of its own: runners sharing one crashed OpenVINO
    2026.4's CPU plugin in ``infer`` (a segmentation fault, on torch.onnx's graphs in tests/test_byo.py)."""
    import openvino

    return tuple(openvino.Core().available_devices)


def openvino_device_status(device: str) -> str | None:
    """None when OpenVINO can run on ``device`` ("CPU", "GPU", "GPU.1", …) here, else why not (a short
    sentence). ``ImportError`` without OpenVINO. A GPU must be Intel's: OpenVINO's GPU plugin supports Intel GPUs
    only (docs.openvino.ai, "GPU Device"), yet it lists other GPUs that OpenCL reaches. On an NVIDIA H200 it did,
    then could not compile the GRU graphs ("to_shape was called on a dynamic shape"), returned c_n 0.6 off for
    LSTMs at batch 1, and the process that verified all 8 shipped artifacts died of a segmentation fault."""
    import openvino

    listed = openvino_devices()
    if device not in listed:
        return f"OpenVINO {openvino.__version__} lists no device {device} here (it lists {', '.join(listed)})"
    if not device.startswith("GPU"):
        return None
    architecture, full_name = _gpu_identity(device)
    if is_intel_gpu(architecture, full_name):
        return None
    if not (architecture or full_name):
        return (f"OpenVINO's GPU plugin supports Intel GPUs only, and {device} could not be identified (OpenVINO "
                "reports neither its DEVICE_ARCHITECTURE nor its FULL_DEVICE_NAME)")
    return f"OpenVINO's GPU plugin supports Intel GPUs only, and {device} is {full_name or architecture}"


@functools.cache
def _gpu_identity(device: str) -> tuple[str, str]:
    """OpenVINO's DEVICE_ARCHITECTURE and FULL_DEVICE_NAME of ``device`` ("" for one it does not report)."""
    import openvino

    core = openvino.Core()
    values = []
    for key in ("DEVICE_ARCHITECTURE", "FULL_DEVICE_NAME"):
        try:
            values.append(str(core.get_property(device, key)))
        except Exception:  # a plugin that does not report it raises its own exception types
            values.append("")
    return values[0], values[1]


def is_intel_gpu(architecture: str, full_name: str) -> bool:
    """Whether OpenVINO's reading of a GPU names an Intel one: the ``vendor=0x…`` of its DEVICE_ARCHITECTURE
    ("GPU: vendor=0x8086 arch=v12.55.8") when it has one, else "Intel" in its FULL_DEVICE_NAME."""
    vendor = re.search(r"vendor=0x([0-9a-f]+)", architecture, re.IGNORECASE)
    if vendor:
        return int(vendor.group(1), 16) == INTEL_VENDOR_ID
    return "intel" in full_name.lower()


def openvino_specs(data: bytes, threads: int = 0) -> list[RunnerSpec]:
    """A spec for each OpenVINO runner: CPU always (not available without the package), and each GPU OpenVINO
    lists (not available unless ``openvino_device_status`` accepts it); f32 and the device's default precision on
    each."""
    try:
        devices = ["CPU"] + [d for d in openvino_devices() if d.startswith("GPU")]
    except ImportError:
        return [RunnerSpec(openvino_name("cpu", p), "openvino", "cpu",
                           functools.partial(_missing, openvino_name("cpu", p)), model_bytes=len(data))
                for p in ("f32", "default")]
    specs = []
    for device in devices:
        reason = openvino_device_status(device)
        for precision in ("f32", "default"):
            name = openvino_name(device, precision)
            factory = (functools.partial(_unavailable, name, reason) if reason else
                       functools.partial(OpenVinoRunner, data, device, force_f32=precision == "f32", threads=threads))
            specs.append(RunnerSpec(name, "openvino", "cpu" if device == "CPU" else "gpu", factory,
                                    model_bytes=len(data)))
    return specs


def _unavailable(name: str, reason: str) -> Any:
    raise RunnerUnavailable(name, reason)


def _missing(name: str) -> Any:
    raise RunnerUnavailable(name, f"OpenVINO is not installed ({INSTALL})")


class OpenVinoRunner:
    """A model compiled by OpenVINO for ``device``. ``force_f32``: inference precision f32; otherwise the
    device's default, read back into ``precision`` and ``settings``. ``threads``: 0 for OpenVINO's default.
    ``keep_buffers``: keep one infer request for good, as a deployment does (bench); otherwise a call whose outputs
    exceed ``RELEASE_BYTES`` gives its request, and the buffers it holds, back (verify).
    ``infer`` returns the outputs the ONNX graph declares, under their ONNX names."""

    kind = "openvino"

    def __init__(self, data: bytes, device: str = "CPU", force_f32: bool = True, threads: int = 0,
                 name: str | None = None, keep_buffers: bool = False):
        try:
            import openvino
        except ImportError:
            _missing(name or openvino_name(device, "f32" if force_f32 else "default"))
        self.name = name or openvino_name(device, "f32" if force_f32 else "default")
        self.release_bytes = None if keep_buffers else RELEASE_BYTES
        self.device = "cpu" if device == "CPU" else "gpu"
        config: dict[str, Any] = {"NUM_STREAMS": "1", "PERFORMANCE_HINT": "LATENCY"}
        if force_f32:
            config["INFERENCE_PRECISION_HINT"] = "f32"
        if threads and device == "CPU":
            config["INFERENCE_NUM_THREADS"] = str(threads)
        try:
            core = openvino.Core()
            self.compiled = core.compile_model(core.read_model(data), device, config)
        except Exception as exc:  # OpenVINO raises RuntimeError and its own types for models it refuses
            raise RunnerFailed(self.name, f"OpenVINO could not compile the model: {_message(exc)}") from None
        used = self.compiled.get_property("INFERENCE_PRECISION_HINT").get_type_name()
        self.precision = PRECISIONS.get(used, used)
        self.request = self.compiled.create_infer_request()
        # A port can carry several tensor names (OpenVINO merges names across Cast/Identity): keep them all.
        self.input_names = [set(i.get_names()) for i in self.compiled.inputs]
        import onnx

        declared = {o.name for o in onnx.load_model_from_string(data).graph.output}
        self.output_names = [set(o.get_names()) & declared for o in self.compiled.outputs]
        self.settings = {"device": device, "inference_precision": self.precision,
                         "precision_forced": force_f32, "threads": int(self.compiled.get_property(
                             "INFERENCE_NUM_THREADS")) if device == "CPU" else None,
                         "openvino": openvino.get_version()}

    def __enter__(self) -> OpenVinoRunner:
        return self

    def __exit__(self, *exc: Any) -> None:
        self.request = self.compiled = None

    def infer(self, feeds: dict[str, np.ndarray]) -> dict[str, np.ndarray]:
        inputs = {i: feeds[name] for i, names in enumerate(self.input_names) for name in names if name in feeds}
        try:
            values = self.request.infer(inputs)
        except Exception as exc:
            raise RunnerFailed(self.name, f"OpenVINO failed to run the model: {_message(exc)}") from None
        outputs = {name: np.array(values[i]) for i, names in enumerate(self.output_names) for name in names}
        if self.release_bytes is not None and sum(v.nbytes for v in outputs.values()) > self.release_bytes:
            self.request = self.compiled.create_infer_request()
        return outputs


def _message(exc: Exception) -> str:
    """OpenVINO's message without its source locations ("Exception from src/...: ")."""
    lines = [re.sub(r"^(Exception from )?src/\S+:\d+:?\s*", "", line).strip() for line in str(exc).splitlines()]
    text = " ".join(line for line in lines if line) or type(exc).__name__
    return text[:300]
