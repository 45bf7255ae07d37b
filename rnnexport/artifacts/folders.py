"""Artifact folders: ``<out>/<name>/{model.onnx, weights.pt, manifest.json}``, written atomically.

A new artifact is written into a marked, hidden staging folder beside the target and swapped in with one
atomic rename (Linux ``renameat2(RENAME_EXCHANGE)`` when the target exists), so a reader or a killed
build never sees a half-written folder: either the old artifact or the new one is there, whole.
"""

from __future__ import annotations

import contextlib
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


STAGING_MARK = ".rnnexport-staging"  # the file inside every staging folder; only marked folders are removed
STAGING_TEXT = "rnnexport staging folder: what a killed run left; removed by the next run once its pid is gone\n"


def make_staging(parent: Path, label: str) -> Path:
    """A new hidden staging folder in ``parent`` (made if needed), marked as rnnexport's by a file inside, so
    that a later run removes it when its process is gone and never removes a user's file of a similar name.
    Raises ``ArtifactError`` when the folder cannot be written."""
    try:
        parent.mkdir(parents=True, exist_ok=True)
        staging = Path(tempfile.mkdtemp(prefix=staging_prefix(label), dir=parent))
        (staging / STAGING_MARK).write_text(STAGING_TEXT)
    except OSError as exc:
        raise ArtifactError(f"{parent}: cannot write: {exc.strerror or exc}") from None
    return staging


def is_staging(path: Path) -> bool:
    """True for a folder ``make_staging`` made: the hidden name and the mark inside."""
    try:
        return (path.name.startswith(TMP_PREFIX) and path.is_dir() and not path.is_symlink()
                and STAGING_TEXT.startswith((path / STAGING_MARK).read_text()))  # a kill may cut the mark short
    except (OSError, UnicodeDecodeError):
        return False


def remove_staging(staging: Path) -> None:
    """Remove a staging folder, its mark last: a kill on the way leaves it marked (or empty), so the next run
    still recognises it as rnnexport's and finishes the removal."""
    try:
        entries = [e for e in staging.iterdir() if e.name != STAGING_MARK]
    except OSError:
        return
    for entry in entries:
        if entry.is_dir() and not entry.is_symlink():
            shutil.rmtree(entry, ignore_errors=True)
        else:
            entry.unlink(missing_ok=True)
    (staging / STAGING_MARK).unlink(missing_ok=True)
    with contextlib.suppress(OSError):
        staging.rmdir()


def _empty_staging_name(path: Path) -> bool:
    """An empty folder of a staging name: a kill between making a staging folder and marking it."""
    try:
        return (path.name.startswith(TMP_PREFIX) and path.is_dir() and not path.is_symlink()
                and not any(path.iterdir()))
    except OSError:
        return False


def write_bytes_atomic(path: str | Path, data: bytes) -> None:
    """Write ``data`` to a hidden temporary file beside ``path``, fsync it, then ``os.replace``."""
    with StagedWrites() as staged:
        staged.add(path, data)


class StagedWrites:
    """Files and folders written into marked staging folders (one per parent folder, ``make_staging``) first,
    and moved into place together when the ``with`` block ends; when anything fails before that, the staging
    folders are removed and nothing is replaced. A failed write (a full disk, a quota) is an ``ArtifactError``
    naming the file.

    Every move is one atomic rename: a file by ``os.replace``, a folder by an exchange with the old one
    (``_swap_into_place``), so a kill at any step leaves each output whole, old or new. What a killed run left
    is inside a marked staging folder, which the next run writing to the same folder removes."""

    def __init__(self) -> None:
        self._staging: dict[Path, Path] = {}  # parent folder → its staging folder
        self._moves: list[tuple[Path, Path, bool]] = []  # (staged, target, is a folder)

    def __enter__(self) -> StagedWrites:
        return self

    def _slot(self, path: Path) -> Path:
        """A fresh name inside the staging folder beside ``path``."""
        parent = path.parent
        if parent not in self._staging:
            if parent.is_dir():
                remove_stale_temporaries(parent)
            self._staging[parent] = make_staging(parent, "out")
        return self._staging[parent] / f"{len(self._moves)}-{path.name}"

    def add(self, path: str | Path, data: bytes) -> None:
        path = Path(path)
        slot = self._slot(path)
        self._moves.append((slot, path, False))
        try:
            with open(slot, "wb") as f:
                f.write(data)
                f.flush()
                os.fsync(f.fileno())
            os.chmod(slot, 0o644)
        except OSError as exc:
            raise ArtifactError(f"{path}: cannot write: {exc.strerror or exc}") from None

    def add_text(self, path: str | Path, text: str) -> None:
        self.add(path, text.encode("utf-8"))

    def add_json(self, path: str | Path, data: Any, indent: int | None = 2) -> None:
        """Versioned plain JSON (no NaN). ``indent=None`` writes one line, at a third of the time (Python's
        encoder is in C only without indentation): for verify's reports, megabytes of curves that tools read."""
        self.add_text(path, json.dumps(data, indent=indent, allow_nan=False) + "\n")

    def add_folder(self, path: Path) -> Path:
        """A new empty folder (its parent made if needed), to be filled by the caller and to replace ``path``
        (checked to be ours by the caller) when the block ends."""
        slot = self._slot(path)
        try:
            slot.mkdir()
        except OSError as exc:
            raise ArtifactError(f"{path.parent}: cannot write: {exc.strerror or exc}") from None
        self._moves.append((slot, path, True))
        return slot

    def __exit__(self, kind: Any, exc: Any, tb: Any) -> None:
        try:
            if kind is None:
                for slot, path, folder in self._moves:
                    try:
                        _swap_into_place(slot, path) if folder else os.replace(slot, path)
                    except OSError as exc:
                        raise ArtifactError(f"{path}: cannot write: {exc.strerror or exc}") from None
        finally:
            for staging in self._staging.values():  # the new files' slots, and the old folders swapped out
                remove_staging(staging)


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
    holder = make_staging(out, cfg.name)
    staging = holder / cfg.name
    try:
        staging.mkdir()
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
        remove_staging(holder)  # the old artifact, swapped out, or the new one, unused
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
    return all(n in ours or is_staging(path / n) or _empty_staging_name(path / n) for n in names)


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
    aside = make_staging(b.parent, "old") / "old"
    os.rename(b, aside)
    os.rename(a, b)
    os.rename(aside, a)
    return True


def remove_stale_temporaries(out: Path) -> None:
    """Remove the staging folders (``make_staging``: hidden name and mark) that killed runs left in ``out``:
    those whose process is gone (the pid is in the name), or older than a day. Anything unmarked stays, but
    for an empty folder of such a name (a kill before the mark was written)."""
    try:
        entries = list(out.glob(f"{TMP_PREFIX}*"))
    except OSError:
        return
    for entry in entries:
        pid = entry.name.removeprefix(TMP_PREFIX).split("-", 1)[0]
        try:
            stale = not (pid.isdigit() and _alive(int(pid))) or time.time() - entry.stat().st_mtime > 86400
            if stale and is_staging(entry):
                remove_staging(entry)
            elif stale and _empty_staging_name(entry):
                entry.rmdir()  # killed between making a staging folder and marking it: empty, nothing to lose
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
    size = entry.get("bytes") if isinstance(entry, dict) else None
    if type(size) is not int or size != path.stat().st_size:
        raise ArtifactError(f"{path}: {path.stat().st_size:,} bytes, but the manifest records {size!r:.40}; "
                            "the file or the manifest was changed after it was built")
