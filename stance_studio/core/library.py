"""The stance library: a folder of ``<name>.stance.safetensors`` checkpoints.

Listing reads only headers, so it stays fast; a file that cannot be opened is
reported as a problem, never listed as a stance and never hides the others.

A bare name always means the library's checkpoint; a file elsewhere is named by a
path that looks like one (``./a``, a path with a separator, or the
``.stance.safetensors`` suffix), so a file in the current folder never shadows a
stance. ``base`` is reserved by the variant syntax and names no checkpoint.
"""

from __future__ import annotations

import os
import re
import shutil
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Optional

from stance_studio.core.checkpoints import SUFFIX, StanceCheckpoint, load_checkpoint, read_header, save_checkpoint
from stance_studio.core.errors import CheckpointError, LibraryError
from stance_studio.core.paths import library_dir
from stance_studio.core.storage import (
    TEMP_PREFIX,
    TEMP_SUFFIX,
    ensure_writable_dir,
    not_a_file,
    os_reason,
    remove_stale_temporaries,
    storage_error,
)
from stance_studio.core.variants import RESERVED_NAMES

_NAME = re.compile(r"^[A-Za-z0-9][A-Za-z0-9._ -]{0,99}$")


@dataclass
class LibraryEntry:
    """One listed checkpoint (from its header only)."""

    name: str
    path: Path
    bytes: int
    base_model: str
    method: str
    retention: Optional[float]
    created: str
    metadata: dict[str, Any] = field(default_factory=dict)
    bits_per_weight: Optional[float] = None  # stored bits per touched weight

    def as_json(self) -> dict[str, Any]:
        return {"name": self.name, "path": str(self.path), "bytes": self.bytes, "base": self.base_model,
                "method": self.method, "bits_per_weight": self.bits_per_weight}


@dataclass
class LibraryProblem:
    """A file in the library folder that could not be opened, and why."""

    path: Path
    message: str


def validate_name(name: str) -> str:
    name = name.strip()
    if not _NAME.match(name) or name.endswith("."):
        raise LibraryError(
            f"{name[:100]!r} is not a valid stance name: use ASCII letters (a-z, A-Z), digits, spaces, '.', '_' "
            "or '-' (at most 100 characters, starting with a letter or digit)."
        )
    if name.lower() in RESERVED_NAMES:
        raise LibraryError(f"{name!r} is reserved (it means the unchanged base model in variant specs); choose another name.")
    if name.lower().endswith(SUFFIX):
        raise LibraryError(f"{name!r} ends in {SUFFIX!r} and would read as a file path; choose a name without it.")
    return name


def looks_like_path(text: str) -> bool:
    """Whether ``text`` names a file rather than a library checkpoint: ``./a``, ``~/a``,
    an absolute path, a path with a separator, or the checkpoint suffix."""
    separators = {"/", os.sep} | ({os.altsep} if os.altsep else set())
    return (
        any(sep in text for sep in separators)
        or text.startswith("~")
        or Path(text).is_absolute()
        or text.lower().endswith(SUFFIX)
    )


class Library:
    """A folder of stance checkpoints."""

    def __init__(self, folder: str | os.PathLike | None = None) -> None:
        self.folder = library_dir(folder)
        self._cache: dict[Path, tuple[tuple, LibraryEntry | LibraryProblem]] = {}
        remove_stale_temporaries(self.folder)  # what a killed save left behind

    def check_writable(self) -> None:
        """Raise a StorageError now if nothing can be saved here (read-only folder or
        disk), so a long job fails before it starts rather than after it ends."""
        ensure_writable_dir(self.folder, "stance library")

    def path_for(self, name: str) -> Path:
        return self.folder / f"{validate_name(name)}{SUFFIX}"

    def scan(self) -> tuple[list[LibraryEntry], list[LibraryProblem]]:
        """Every checkpoint file as an entry or a problem. A file unchanged since the last
        scan (same size, modification time and inode) is not read again, so rescanning a
        large library after one change costs a directory listing."""
        entries: list[LibraryEntry] = []
        problems: list[LibraryProblem] = []
        cache: dict[Path, tuple[tuple, LibraryEntry | LibraryProblem]] = {}
        for path in sorted(self.folder.glob(f"*{SUFFIX}")):
            try:
                st = path.stat()
                key = (st.st_size, st.st_mtime_ns, st.st_ino)
            except OSError as exc:  # removed or renamed meanwhile
                problems.append(LibraryProblem(path, os_reason(exc)))
                continue
            known = self._cache.get(path)
            item = known[1] if known is not None and known[0] == key else self._read_entry(path, st.st_size)
            cache[path] = (key, item)
            (entries if isinstance(item, LibraryEntry) else problems).append(item)
        self._cache = cache
        return entries, problems

    @staticmethod
    def _read_entry(path: Path, size: int) -> LibraryEntry | LibraryProblem:
        name = path.name[: -len(SUFFIX)]
        try:
            if validate_name(name) != name:
                raise LibraryError(f"{name!r} has spaces at its ends.")
        except LibraryError as exc:
            return LibraryProblem(path, f"the file name does not give a usable stance name: {exc}")
        try:
            header = read_header(path)
        except CheckpointError as exc:
            return LibraryProblem(path, str(exc))
        retention = header["metrics"].get("retention")
        return LibraryEntry(
            name=name,
            path=path,
            bytes=size,
            base_model=str(header["base"].get("model", "?")),
            method=str(header["training"].get("method", "unknown")),
            retention=float(retention) if isinstance(retention, (int, float)) else None,
            created=header["created"],
            metadata=header,
            bits_per_weight=header.get("bits_per_weight"),
        )

    def entries(self) -> list[LibraryEntry]:
        return self.scan()[0]

    def names(self) -> list[str]:
        return [e.name for e in self.entries()]

    def resolve(self, name_or_path: str | os.PathLike) -> Path:
        """A checkpoint by library name, or by a path that looks like one (see
        :func:`looks_like_path`) to a file anywhere."""
        text = str(name_or_path)
        if isinstance(name_or_path, os.PathLike) or looks_like_path(text):
            candidate = Path(text).expanduser().absolute()
            if candidate.is_file():
                return candidate
            raise LibraryError(f"Checkpoint file {candidate} {not_a_file(candidate)}.")
        stripped = text.strip()
        if stripped.lower() in RESERVED_NAMES:
            raise LibraryError(f"{stripped!r} is the unchanged base model, not a checkpoint; name a stance.")
        if _NAME.match(stripped):
            path = self.folder / f"{stripped}{SUFFIX}"
            if path.is_file():
                return path
            if path.is_symlink() or path.exists():  # a folder, pipe or broken link named like a stance
                raise LibraryError(f"{path.name} in {self.folder} is named like a stance but {not_a_file(path)}.")
        known = ", ".join(self.names()) or "none"
        hint = f"; to use the file {text!r} in the current folder, write './{text}'" if Path(text).is_file() else ""
        raise LibraryError(f"No checkpoint named {text!r} in {self.folder} (known: {known}){hint}.")

    def load(self, name_or_path: str | os.PathLike) -> StanceCheckpoint:
        ckpt = load_checkpoint(self.resolve(name_or_path))
        if ckpt.path is not None and ckpt.path.parent.resolve() == self.folder.resolve():
            ckpt.name = ckpt.path.name[: -len(SUFFIX)]
        return ckpt

    def check_new_name(self, name: str, overwrite: bool = False, hint: str = "") -> None:
        """Refuse ``name`` when a stance of that name exists (unless ``overwrite``);
        ``hint`` adds how else to go on (the command line's "or pass --overwrite")."""
        if not overwrite and self.path_for(name).exists():
            raise LibraryError(f"A stance named {name!r} already exists in {self.folder}; "
                               f"choose another name{hint}.")

    def save(self, ckpt: StanceCheckpoint, overwrite: bool = False) -> Path:
        self.check_new_name(ckpt.name, overwrite)
        return save_checkpoint(ckpt, self.path_for(ckpt.name))

    def rename(self, name: str, new_name: str) -> Path:
        src = self.resolve(name)
        dst = self.path_for(new_name)
        if dst.exists():
            raise LibraryError(f"A stance named {new_name!r} already exists; choose another name.")
        # The stance name inside the file is display metadata; the file name is
        # what the library uses, so a rename never rewrites the tensors.
        try:
            os.replace(src, dst)
        except OSError as exc:
            raise storage_error(exc, f"rename {src.name} to", dst) from exc
        return dst

    def delete(self, name: str) -> None:
        path = self.resolve(name)
        if path.parent.resolve() != self.folder.resolve():
            raise LibraryError(f"{path} is not in the library folder {self.folder}; not deleting it.")
        try:
            path.unlink()
        except OSError as exc:
            raise storage_error(exc, "delete", path) from exc

    def import_file(self, source: str | os.PathLike, name: Optional[str] = None) -> Path:
        """Copy a checkpoint file into the library after checking it opens."""
        source = Path(source)
        header = read_header(source)
        load_checkpoint(source)
        target = self.path_for(name or header["name"])
        if target.exists():
            raise LibraryError(f"A stance named {target.name[: -len(SUFFIX)]!r} already exists; rename it first.")
        tmp = target.with_name(f"{TEMP_PREFIX}{target.name}{TEMP_SUFFIX}")
        try:
            shutil.copyfile(source, tmp)
            os.replace(tmp, target)
        except OSError as exc:
            tmp.unlink(missing_ok=True)
            raise storage_error(exc, "copy the checkpoint into", self.folder) from exc
        return target
