"""The package version, importable without importing the package (which would import torch)."""

__version__ = "0.1.0"


def versions() -> dict[str, str]:
    """Versions of Python and of every library a report's numbers depend on (those installed)."""
    import platform
    from importlib import metadata

    found = {"rnnexport": __version__, "python": platform.python_version()}
    for package in ("torch", "onnx", "onnxruntime", "openvino", "tract", "iree-base-compiler",
                    "iree-base-runtime"):
        try:
            found[package] = metadata.version(package)
        except metadata.PackageNotFoundError:
            continue
    return found
