"""Exceptions a user can act on. Anything else escaping the library is a bug.

Each carries its kind in its type and its subject in fields (``runner``, ``case``, ``reason``), so no
caller ever reads a decision out of the message text.
"""

from __future__ import annotations

import logging

# Things a user should know that are no error (a neighbour skipped, a file left as it was): the CLI prints
# each as a ``note:`` line; a library caller sees them through logging (WARNING, logger "rnnexport.notes").
NOTES = logging.getLogger("rnnexport.notes")


class RnnExportError(Exception):
    """Base class: the CLI prints ``Error: <message>`` and exits with ``exit_code``."""

    exit_code = 2


class ConfigError(RnnExportError):
    """A config file is missing, malformed or names something we cannot build."""


class ExportError(RnnExportError):
    """A module cannot be written as ONNX. ``reason`` is the message without the model's name."""

    def __init__(self, message: str, *, reason: str | None = None):
        super().__init__(message)
        self.reason = reason or message


class ArtifactError(RnnExportError):
    """An artifact folder, model file or weights file is missing, unsafe or tampered with."""


class ProviderUnavailable(RnnExportError):
    """A runner cannot be used or could not load or run the model (exit 3). ``runner`` names it,
    ``reason`` says why in one sentence, ``case`` names the input set when one was being run."""

    exit_code = 3

    def __init__(self, message: str, *, runner: str | None = None, reason: str | None = None,
                 case: str | None = None):
        super().__init__(message)
        self.runner, self.reason, self.case = runner, reason or message, case


class RunnerUnavailable(ProviderUnavailable):
    """The runner cannot exist here: a provider this runtime lacks, no device, a package not installed."""

    def __init__(self, runner: str, reason: str):
        super().__init__(f"{runner}: not available: {reason}", runner=runner, reason=reason)


class NotApplicable(RunnerUnavailable):
    """The runner does not exist for this model on any machine: a deployment variant its build could not make
    (no int8 kernel for a GRU, say). Reported, never counted as unchecked."""


class RunnerFailed(ProviderUnavailable):
    """The runner exists but could not load or run the model (a shape the graph cannot take, say)."""

    def __init__(self, runner: str, reason: str, case: str | None = None):
        where = f"{case}: " if case else ""
        super().__init__(f"{runner}: {where}{reason}", runner=runner, reason=reason, case=case)
