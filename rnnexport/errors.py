"""Exceptions a user can act on. Anything else escaping the library is a bug."""


class RnnExportError(Exception):
    """Base class: the CLI prints ``Error: <message>`` and exits with ``exit_code``."""

    exit_code = 2


class ConfigError(RnnExportError):
    """A config file is missing, malformed or names something we cannot build."""


class ExportError(RnnExportError):
    """A module cannot be written as native ONNX recurrent nodes."""


class ArtifactError(RnnExportError):
    """An artifact folder, model file or weights file is missing, unsafe or tampered with."""


class ProviderUnavailable(RnnExportError):
    """A required execution provider is absent, or a runtime could not load or run the model."""

    exit_code = 3
