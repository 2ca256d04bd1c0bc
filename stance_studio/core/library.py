"""The stance library: a folder of ``<name>.stance.safetensors`` checkpoints.

Listing reads only headers, so it stays fast; a file that cannot be opened is
reported as a problem, never listed as a stance and never hides the others.
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
            f"{name!r} is not a valid stance name: use letters, digits, spaces, '.', '_' or '-' "
            "(at most 100 characters, starting with a letter or digit)."
        )
    return name


class Library:
    """A folder of stance checkpoints."""

    def __init__(self, folder: str | os.PathLike | None = None) -> None:
        self.folder = library_dir(folder)

    def path_for(self, name: str) -> Path:
        return self.folder / f"{validate_name(name)}{SUFFIX}"

    def scan(self) -> tuple[list[LibraryEntry], list[LibraryProblem]]:
        entries: list[LibraryEntry] = []
        problems: list[LibraryProblem] = []
        for path in sorted(self.folder.glob(f"*{SUFFIX}")):
            try:
                header = read_header(path)
            except CheckpointError as exc:
                problems.append(LibraryProblem(path, str(exc)))
                continue
            name = path.name[: -len(SUFFIX)]
            retention = header["metrics"].get("retention")
            entries.append(
                LibraryEntry(
                    name=name,
                    path=path,
                    bytes=path.stat().st_size,
                    base_model=str(header["base"].get("model", "?")),
                    method=str(header["training"].get("method", "unknown")),
                    retention=float(retention) if isinstance(retention, (int, float)) else None,
                    created=header["created"],
                    metadata=header,
                    bits_per_weight=header.get("bits_per_weight"),
                )
            )
        return entries, problems

    def entries(self) -> list[LibraryEntry]:
        return self.scan()[0]

    def names(self) -> list[str]:
        return [e.name for e in self.entries()]

    def resolve(self, name_or_path: str | os.PathLike) -> Path:
        """A checkpoint by library name, or by path to a file anywhere."""
        text = str(name_or_path)
        candidate = Path(text).expanduser()
        if candidate.is_file():
            return candidate
        if _NAME.match(text):
            path = self.folder / f"{text}{SUFFIX}"
            if path.is_file():
                return path
        known = ", ".join(self.names()) or "none"
        raise LibraryError(f"No checkpoint named {text!r} in {self.folder} (known: {known}), and no such file.")

    def load(self, name_or_path: str | os.PathLike) -> StanceCheckpoint:
        ckpt = load_checkpoint(self.resolve(name_or_path))
        if ckpt.path is not None and ckpt.path.parent.resolve() == self.folder.resolve():
            ckpt.name = ckpt.path.name[: -len(SUFFIX)]
        return ckpt

    def save(self, ckpt: StanceCheckpoint, overwrite: bool = False) -> Path:
        path = self.path_for(ckpt.name)
        if path.exists() and not overwrite:
            raise LibraryError(f"A stance named {ckpt.name!r} already exists in {self.folder}; choose another name.")
        return save_checkpoint(ckpt, path)

    def rename(self, name: str, new_name: str) -> Path:
        src = self.resolve(name)
        dst = self.path_for(new_name)
        if dst.exists():
            raise LibraryError(f"A stance named {new_name!r} already exists; choose another name.")
        # The stance name inside the file is display metadata; the file name is
        # what the library uses, so a rename never rewrites the tensors.
        os.replace(src, dst)
        return dst

    def delete(self, name: str) -> None:
        path = self.resolve(name)
        if path.parent.resolve() != self.folder.resolve():
            raise LibraryError(f"{path} is not in the library folder {self.folder}; not deleting it.")
        path.unlink()

    def import_file(self, source: str | os.PathLike, name: Optional[str] = None) -> Path:
        """Copy a checkpoint file into the library after checking it opens."""
        source = Path(source)
        header = read_header(source)
        load_checkpoint(source)
        target = self.path_for(name or header["name"])
        if target.exists():
            raise LibraryError(f"A stance named {target.name[: -len(SUFFIX)]!r} already exists; rename it first.")
        tmp = target.with_name(f".tmp-{target.name}.part")
        shutil.copyfile(source, tmp)
        os.replace(tmp, target)
        return target
