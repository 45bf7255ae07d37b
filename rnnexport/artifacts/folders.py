"""Artifact folders: ``<out>/<name>/{model.onnx, weights.pt, manifest.json}``, written atomically.

A new artifact is written into a hidden temporary folder beside the target and swapped in with one
atomic rename (Linux ``renameat2(RENAME_EXCHANGE)`` when the target exists), so a reader or a killed
build never sees a half-written folder: either the old artifact or the new one is there, whole.
"""

from __future__ import annotations

import ctypes
import ctypes.util
import errno
import hashlib
import json
import os
import shutil
import tempfile
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from rnnexport.config import ModelConfig, parse_config
from rnnexport.contract import (
    MANIFEST_FILE,
    MODEL_FILE,
    REPORT_FILES,
    VARIANT_FILES,
    WEIGHTS_FILE,
)
from rnnexport.errors import ArtifactError

SCHEMA_VERSION = 1
TMP_PREFIX = ".rnnexport-tmp-"


def sha256_file(path: Path) -> str:
    digest = hashlib.sha256()
    with open(path, "rb") as f:
        for block in iter(lambda: f.read(1 << 20), b""):
            digest.update(block)
    return digest.hexdigest()


def staging_prefix(label: str) -> str:
    """Prefix of a hidden temporary name; the pid lets a later build tell a dead one from a live one."""
    return f"{TMP_PREFIX}{os.getpid()}-{label}-"


def write_bytes_atomic(path: str | Path, data: bytes) -> None:
    """Write ``data`` to a hidden temporary file beside ``path``, fsync it, then ``os.replace``."""
    with StagedWrites() as staged:
        staged.add(path, data)


class StagedWrites:
    """Files and folders written to hidden temporaries first and moved into place together when the
    ``with`` block ends; when anything fails before that, every temporary is removed and nothing is
    replaced. A failed write (a full disk, a quota) is an ``ArtifactError`` naming the file."""

    def __init__(self) -> None:
        self._files: list[tuple[Path, Path]] = []
        self._folders: list[tuple[Path, Path]] = []

    def __enter__(self) -> StagedWrites:
        return self

    def add(self, path: str | Path, data: bytes) -> None:
        path = Path(path)
        tmp = None
        try:
            fd, tmp = tempfile.mkstemp(prefix=staging_prefix("file"), dir=path.parent)
            self._files.append((Path(tmp), path))
            with os.fdopen(fd, "wb") as f:
                f.write(data)
                f.flush()
                os.fsync(f.fileno())
            os.chmod(tmp, 0o644)
        except OSError as exc:
            raise ArtifactError(f"{path}: cannot write: {exc.strerror or exc}") from None

    def add_text(self, path: str | Path, text: str) -> None:
        self.add(path, text.encode("utf-8"))

    def add_json(self, path: str | Path, data: Any) -> None:
        """Versioned plain JSON (no NaN)."""
        self.add_text(path, json.dumps(data, indent=2, allow_nan=False) + "\n")

    def add_folder(self, path: Path) -> Path:
        """A new hidden folder beside ``path`` (its parent made if needed), to be filled by the caller and to
        replace ``path`` (checked to be ours by the caller) when the block ends."""
        try:
            path.parent.mkdir(parents=True, exist_ok=True)
            staging = Path(tempfile.mkdtemp(prefix=staging_prefix(path.name), dir=path.parent))
        except OSError as exc:
            raise ArtifactError(f"{path.parent}: cannot write: {exc.strerror or exc}") from None
        self._folders.append((staging, path))
        return staging

    def __exit__(self, kind: Any, exc: Any, tb: Any) -> None:
        if kind is not None:
            for tmp, _ in self._files:
                tmp.unlink(missing_ok=True)
            for staging, _ in self._folders:
                shutil.rmtree(staging, ignore_errors=True)
            return
        for tmp, path in self._files:
            os.replace(tmp, path)
        for staging, path in self._folders:
            if path.exists():
                shutil.rmtree(path)
            os.rename(staging, path)


def write_text_atomic(path: str | Path, text: str) -> None:
    write_bytes_atomic(path, text.encode("utf-8"))


def write_json_atomic(path: str | Path, data: Any) -> None:
    """Versioned plain JSON (no NaN), written atomically."""
    with StagedWrites() as staged:
        staged.add_json(path, data)


@dataclass(frozen=True)
class Artifact:
    """A loaded, integrity-checked artifact folder."""

    path: Path
    manifest: dict[str, Any]
    config: ModelConfig

    @property
    def model_path(self) -> Path:
        return self.path / MODEL_FILE

    @property
    def weights_path(self) -> Path:
        return self.path / WEIGHTS_FILE

    def variant_paths(self) -> dict[str, Path]:
        """The deployment variants the artifact holds: variant name → file (integrity-checked on load)."""
        files = self.manifest["files"]
        return {kind: self.path / name for kind, name in VARIANT_FILES.items() if name in files}


def artifact_dir(out: Path, name: str) -> Path:
    """``out/name``, refusing any name that would leave ``out``."""
    target = (Path(out) / name).resolve()
    if target.parent != Path(out).resolve() or name in ("", ".", ".."):
        raise ArtifactError(f"artifact name {name!r} would be written outside {out}")
    return target


def write_artifact(out: str | Path, cfg: ModelConfig, files: dict[str, bytes], manifest: dict[str, Any]) -> Path:
    """Write ``files`` and a manifest (with each file's sha256 and size added) as ``out/<cfg.name>``.

    ``files`` maps file names to bytes (``model.onnx``, ``weights.pt``). Returns the folder.
    """
    out = Path(out)
    try:
        out.mkdir(parents=True, exist_ok=True)
    except OSError as exc:
        raise ArtifactError(f"{out}: cannot create output folder: {exc.strerror or exc}") from None
    target = artifact_dir(out, cfg.name)
    refuse_foreign(target)
    remove_stale_temporaries(out)
    try:
        staging = Path(tempfile.mkdtemp(prefix=staging_prefix(cfg.name), dir=out))
    except OSError as exc:
        raise ArtifactError(f"{out}: cannot write: {exc.strerror or exc}") from None
    try:
        entries = {}
        for fname, data in files.items():
            _write_synced(staging / fname, data)
            entries[fname] = {"sha256": hashlib.sha256(data).hexdigest(), "bytes": len(data)}
        manifest = {"schema_version": SCHEMA_VERSION, **manifest, "files": entries}
        _write_synced(staging / MANIFEST_FILE, (json.dumps(manifest, indent=2, allow_nan=False) + "\n").encode())
        os.chmod(staging, 0o755)
        refuse_foreign(target)  # checked again: the folder may have appeared while we wrote
        _swap_into_place(staging, target)
    except OSError as exc:  # a full disk, a quota: the previous artifact stays whole
        raise ArtifactError(f"{target}: cannot write: {exc.strerror or exc}") from None
    finally:
        shutil.rmtree(staging, ignore_errors=True)
    return out / cfg.name


def is_own_artifact(path: Path) -> bool:
    """True when ``path`` is a real folder (not a link) holding a manifest of a schema this rnnexport
    knows, that lists the model and weights, and nothing but files rnnexport writes there."""
    if path.is_symlink() or not path.is_dir():
        return False
    try:
        manifest = json.loads((path / MANIFEST_FILE).read_text(encoding="utf-8"))
        names = {p.name for p in path.iterdir()}
    except (OSError, UnicodeDecodeError, ValueError):
        return False
    if not isinstance(manifest, dict) or type(manifest.get("schema_version")) is not int:
        return False
    files = manifest.get("files")
    if manifest["schema_version"] != SCHEMA_VERSION or not isinstance(files, dict) or MODEL_FILE not in files:
        return False
    ours = {MANIFEST_FILE, *files, *REPORT_FILES}
    return all(n in ours or n.startswith(TMP_PREFIX) for n in names)


def refuse_foreign(target: Path) -> None:
    """Refuse to replace anything at ``target`` that is not provably an rnnexport artifact."""
    if (target.exists() or target.is_symlink()) and not is_own_artifact(target):
        raise ArtifactError(f"{target}: exists and is not an rnnexport artifact; refusing to replace it "
                            "(move it away, or choose another --out)")


def _write_synced(path: Path, data: bytes) -> None:
    with open(path, "wb") as f:
        f.write(data)
        f.flush()
        os.fsync(f.fileno())


def _swap_into_place(staging: Path, target: Path) -> None:
    """Make ``staging`` appear at ``target`` atomically; the old folder (if any) ends at ``staging``."""
    for _ in range(10):  # another build may create or swap the target between our calls
        try:
            os.rename(staging, target)
            return
        except OSError as exc:
            if exc.errno not in (errno.EEXIST, errno.ENOTEMPTY):
                raise ArtifactError(f"{target}: cannot write: {exc.strerror}") from None
        if _exchange(staging, target):
            return
    raise ArtifactError(f"{target}: could not replace the existing artifact (it keeps changing)")


def _exchange(a: Path, b: Path) -> bool:
    """Atomically swap two paths (Linux renameat2). Falls back to rename-aside where unavailable."""
    libc_name = ctypes.util.find_library("c")
    renameat2 = getattr(ctypes.CDLL(libc_name, use_errno=True), "renameat2", None) if libc_name else None
    if renameat2 is not None:
        at_fdcwd, rename_exchange = -100, 2
        if renameat2(at_fdcwd, os.fsencode(a), at_fdcwd, os.fsencode(b), rename_exchange) == 0:
            return True
        if ctypes.get_errno() == errno.ENOENT:  # target vanished meanwhile: plain rename next round
            return False
        if ctypes.get_errno() not in (errno.EINVAL, errno.ENOSYS):
            raise ArtifactError(f"{b}: cannot replace: {os.strerror(ctypes.get_errno())}")
    # No atomic exchange on this system: a kill between these two renames leaves the old
    # artifact in a hidden folder beside the target, never a half-written one at the target.
    aside = Path(tempfile.mkdtemp(prefix=staging_prefix("old"), dir=b.parent))
    os.replace(b, aside)
    os.rename(a, b)
    os.rename(aside, a)
    return True


def remove_stale_temporaries(out: Path) -> None:
    """Remove hidden staging folders left by killed builds: those whose process is gone (the pid is in
    the name), or older than an hour."""
    for entry in out.glob(f"{TMP_PREFIX}*"):
        pid = entry.name.removeprefix(TMP_PREFIX).split("-", 1)[0]
        try:
            stale = not (pid.isdigit() and _alive(int(pid))) or time.time() - entry.stat().st_mtime > 3600
            if stale:
                shutil.rmtree(entry, ignore_errors=True) if entry.is_dir() else entry.unlink()
        except OSError:
            pass


def _alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:  # someone else's process
        return True
    return True


def load_artifact(path: str | Path) -> Artifact:
    """Open an artifact folder, check its schema and every file's sha256, and parse its config."""
    path = Path(path)
    manifest_path = path / MANIFEST_FILE
    if path.is_symlink():
        raise ArtifactError(f"{path}: is a symbolic link; verify an artifact folder itself, not a link to one")
    if not path.is_dir():
        raise ArtifactError(f"{path}: no such artifact folder")
    try:
        manifest = json.loads(manifest_path.read_text(encoding="utf-8"))
    except FileNotFoundError:
        raise ArtifactError(f"{path}: not an artifact folder (no {MANIFEST_FILE})") from None
    except (OSError, UnicodeDecodeError, json.JSONDecodeError) as exc:
        raise ArtifactError(f"{manifest_path}: unreadable manifest: {exc}") from None
    if not isinstance(manifest, dict) or type(manifest.get("schema_version")) is not int \
            or manifest["schema_version"] != SCHEMA_VERSION:
        found = manifest.get("schema_version") if isinstance(manifest, dict) else None
        raise ArtifactError(
            f"{manifest_path}: schema_version {found!r} is not supported; this rnnexport reads {SCHEMA_VERSION}"
        )
    files = manifest.get("files")
    if not isinstance(files, dict) or not {MODEL_FILE, WEIGHTS_FILE} <= set(files) \
            or not set(files) <= {MODEL_FILE, WEIGHTS_FILE, *VARIANT_FILES.values()}:
        raise ArtifactError(f"{manifest_path}: 'files' must list {MODEL_FILE} and {WEIGHTS_FILE}, and besides them "
                            f"only variants ({', '.join(VARIANT_FILES.values())})")
    for fname, entry in files.items():
        _check_file(path / fname, entry)
    try:
        config = parse_config(manifest["config"], f"{manifest_path} [config]")
    except (KeyError, TypeError):
        raise ArtifactError(f"{manifest_path}: no 'config' table") from None
    return Artifact(path=path, manifest=manifest, config=config)


def _check_file(path: Path, entry: Any) -> None:
    if not path.is_file():
        raise ArtifactError(f"{path}: missing from the artifact")
    expected = entry.get("sha256") if isinstance(entry, dict) else None
    actual = sha256_file(path)
    if actual != expected:
        raise ArtifactError(
            f"{path}: sha256 {actual[:12]}… does not match the manifest's {str(expected)[:12]}…; "
            "the file was changed after it was built"
        )
