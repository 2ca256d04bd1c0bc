"""Shipped checkpoints: the built-in stances, trained once for one base model and
installed into a library in a second, so a first session needs no training run.

A shipped set is a folder (``resources/checkpoints/`` for the bundled model) holding
``<name>.stance.safetensors`` files and ``manifest.json``::

    {"format": "stance-studio-shipped/1",
     "model": "SmolLM2-135M-Instruct", "model_fingerprint": "…",
     "policy": "budget:0.01+mixed+fp16", "steps": 20, "seed": 0,
     "stances": [{"name", "file", "sha256", "bytes", "base_fingerprint",
                  "dataset_hash", "retention"}, …]}

``model_fingerprint`` fingerprints every tensor of the base the set was trained on;
``base_fingerprint`` is each checkpoint's own record (the tensors it changes).
Installing checks, for each file, its SHA-256 against the manifest and its base
against the loaded model, before anything is copied; a mismatch is an error naming
the file or both models. :func:`rebuild` trains the set again with the ``train`` job
(:func:`~stance_studio.core.pipeline.build_stance`) and writes the manifest
(``stance-studio rebuild-builtins``).
"""

from __future__ import annotations

import hashlib
import json
import os
from dataclasses import dataclass
from pathlib import Path
from typing import Optional, Sequence

from stance_studio.core.checkpoints import read_header
from stance_studio.core.compatibility import compatibility
from stance_studio.core.errors import CheckpointError, IncompatibleBaseError, LibraryError, StanceStudioError
from stance_studio.core.jobs import CancelFlag, Progress, ProgressCallback, ensure_flag, no_progress
from stance_studio.core.library import Library
from stance_studio.core.resources import resources_dir

FORMAT = "stance-studio-shipped/1"
MANIFEST = "manifest.json"
# 1 % of the base's bytes each (5 MB on the bundled model); README "Choosing the
# default extraction policy" measured 0.968 retention for this policy.
REBUILD_POLICY = "budget:0.01+mixed+fp16"
REBUILD_COMMAND = "stance-studio rebuild-builtins --out resources/checkpoints"


@dataclass(frozen=True)
class ShippedStance:
    name: str
    path: Path
    sha256: str
    bytes: int
    base_fingerprint: str
    dataset_hash: str = ""
    retention: Optional[float] = None


@dataclass(frozen=True)
class ShippedSet:
    folder: Path
    model: str
    model_fingerprint: str
    policy: str
    stances: tuple[ShippedStance, ...]

    def matches(self, base) -> bool:
        """Whether ``base`` is the model this set was trained on (every tensor)."""
        return model_fingerprint(base) == self.model_fingerprint

    def as_json(self) -> dict:
        return {"folder": str(self.folder), "model": self.model, "model_fingerprint": self.model_fingerprint,
                "policy": self.policy,
                "stances": [{"name": s.name, "file": s.path.name, "sha256": s.sha256, "bytes": s.bytes,
                             "retention": s.retention} for s in self.stances]}


def default_folder() -> Path:
    """Where the shipped set of the bundled model lives (it may hold no manifest)."""
    return resources_dir() / "checkpoints"


def model_fingerprint(base) -> str:
    return base.fingerprint(base.tensor_hashes.keys())


def sha256_of(path: Path) -> str:
    h = hashlib.sha256()
    with open(path, "rb") as fh:
        for block in iter(lambda: fh.read(1 << 20), b""):
            h.update(block)
    return h.hexdigest()


def load_set(folder: Optional[os.PathLike] = None) -> Optional[ShippedSet]:
    """The shipped set in ``folder`` (default: :func:`default_folder`); None when the
    folder has no manifest. A manifest that cannot be read is an error naming it."""
    folder = Path(folder) if folder is not None else default_folder()
    path = folder / MANIFEST
    if not path.is_file():
        return None
    try:
        doc = json.loads(path.read_text(encoding="utf-8"))
        if doc.get("format") != FORMAT:
            raise ValueError(f"format is {doc.get('format')!r}, not {FORMAT!r}")
        stances = tuple(
            ShippedStance(name=str(s["name"]), path=folder / Path(str(s["file"])).name, sha256=str(s["sha256"]),
                          bytes=int(s["bytes"]), base_fingerprint=str(s["base_fingerprint"]),
                          dataset_hash=str(s.get("dataset_hash", "")),
                          retention=s.get("retention") if isinstance(s.get("retention"), (int, float)) else None)
            for s in doc["stances"])
        return ShippedSet(folder, str(doc["model"]), str(doc["model_fingerprint"]), str(doc.get("policy", "")),
                          stances)
    except (OSError, ValueError, KeyError, TypeError, AttributeError) as exc:
        raise StanceStudioError(f"The shipped-checkpoint manifest {path} cannot be read ({exc}); "
                                f"rebuild it with `{REBUILD_COMMAND}`.") from exc


def require_set(folder: Optional[os.PathLike] = None) -> ShippedSet:
    """:func:`load_set`, with an error saying how to build the set when there is none."""
    shipped = load_set(folder)
    if shipped is None:
        where = Path(folder) if folder is not None else default_folder()
        raise StanceStudioError(f"No shipped checkpoints in {where} (no {MANIFEST}); build them with "
                                f"`{REBUILD_COMMAND}`, or train the built-in stances.")
    return shipped


def installable(base, library: Library, folder: Optional[os.PathLike] = None) -> list[ShippedStance]:
    """The shipped stances made on ``base`` that ``library`` lacks (none when the set is
    for another model or there is no set)."""
    shipped = load_set(folder)
    if shipped is None or not shipped.matches(base):
        return []
    return [s for s in shipped.stances if not library.path_for(s.name).exists()]


def verify(stance: ShippedStance, base) -> None:
    """Refuse a shipped file that is missing or altered (SHA-256) or made on another base."""
    if not stance.path.is_file():
        raise CheckpointError(f"The shipped checkpoint {stance.path} is missing; rebuild the set with "
                              f"`{REBUILD_COMMAND}`.")
    digest = sha256_of(stance.path)
    if digest != stance.sha256:
        raise CheckpointError(f"The shipped checkpoint {stance.path} is corrupt: its SHA-256 is {digest[:16]}…, "
                              f"the manifest says {stance.sha256[:16]}…. Reinstall stance-studio or rebuild the "
                              f"set with `{REBUILD_COMMAND}`.")
    header = read_header(stance.path)
    ok, reason = compatibility(header, base)
    if not ok or header["base"].get("fingerprint") != stance.base_fingerprint:
        raise IncompatibleBaseError(
            f"The shipped checkpoint {stance.path.name} was made on {header['base'].get('model', '?')}, not on the "
            f"loaded model {base.model_id}: {reason or 'its fingerprint differs from the manifest'}. Train the "
            "built-in stances instead (stance-studio train NAME --name NAME).")


def install(base, library: Library, names: Optional[Sequence[str]] = None, folder: Optional[os.PathLike] = None,
            overwrite: bool = False, progress: ProgressCallback = no_progress,
            cancel: Optional[CancelFlag] = None) -> list[Path]:
    """Copy the shipped stances (``names``, default all) into ``library`` after
    verifying every one of them: nothing is copied unless all pass. Stances already
    in the library are skipped unless ``overwrite``. Returns the files written."""
    cancel = ensure_flag(cancel)
    shipped = require_set(folder)
    where = shipped.folder
    if not shipped.matches(base):
        raise IncompatibleBaseError(
            f"The shipped checkpoints in {where} were made on {shipped.model}, not on the loaded model "
            f"{base.model_id} (their fingerprints differ). Load {shipped.model}, or train the built-in stances.")
    known = {s.name: s for s in shipped.stances}
    unknown = [n for n in (names or []) if n not in known]
    if unknown:
        raise LibraryError(f"No shipped stance named {unknown[0]!r}; shipped: {', '.join(known) or 'none'}.")
    chosen = [known[n] for n in names] if names else list(shipped.stances)
    todo = [s for s in chosen if overwrite or not library.path_for(s.name).exists()]
    library.check_writable()
    for i, stance in enumerate(todo):
        cancel.raise_if_set("installation")
        progress(Progress("install", i, len(todo), f"Verifying {stance.path.name}"))
        verify(stance, base)
    written = []
    for i, stance in enumerate(todo):
        if overwrite and library.path_for(stance.name).exists():
            library.delete(stance.name)
        written.append(library.import_file(stance.path, stance.name))
        progress(Progress("install", i + 1, len(todo), f"Added {stance.name}"))
    return written


def rebuild(base, out: os.PathLike, names: Optional[Sequence[str]] = None, policy: str = REBUILD_POLICY,
            config=None, progress: ProgressCallback = no_progress,
            cancel: Optional[CancelFlag] = None) -> ShippedSet:
    """Train each built-in stance (``names``, default all) on ``base`` with ``train``'s
    job and ``policy``, write the checkpoints to ``out`` and the manifest last.
    ``config``: a :class:`~stance_studio.core.training.TrainConfig` (default: train's)."""
    from stance_studio.core.datasets import builtin_stances
    from stance_studio.core.extraction import parse_policy
    from stance_studio.core.pipeline import build_stance
    from stance_studio.core.training import TrainConfig

    cancel = ensure_flag(cancel)
    config = config or TrainConfig()
    policy = parse_policy(policy).text
    datasets = builtin_stances()
    wanted = list(names) if names else list(datasets)
    unknown = [n for n in wanted if n not in datasets]
    if unknown:
        raise LibraryError(f"No built-in stance named {unknown[0]!r}; built-in: {', '.join(datasets)}.")
    kept = _entries_kept(Path(out), wanted, base, policy)
    library = Library(out)
    library.check_writable()
    stances = []
    for i, name in enumerate(wanted):
        progress(Progress("rebuild", i, len(wanted), f"Training {name} ({i + 1} of {len(wanted)})"))
        ckpt = build_stance(base, datasets[name], name, config, policy, library=library, progress=progress, cancel=cancel,
                            overwrite=True)
        path = library.path_for(name)
        stances.append(ShippedStance(name, path, sha256_of(path), path.stat().st_size, ckpt.base["fingerprint"],
                                     ckpt.stance.get("dataset_hash", ""), ckpt.metrics.get("retention")))
    progress(Progress("rebuild", len(wanted), len(wanted), f"Wrote {len(wanted)} checkpoints to {library.folder}"))
    stances = [*kept, *stances]  # the other stances of the set keep their entries
    shipped = ShippedSet(library.folder, base.model_id, model_fingerprint(base), policy, tuple(stances))
    _write_manifest(shipped, config)
    return shipped


def _entries_kept(out: Path, wanted: Sequence[str], base, policy: str) -> list[ShippedStance]:
    """The manifest entries in ``out`` that a rebuild of only ``wanted`` keeps: the
    other stances of a set made on the same model with the same policy. A set made
    otherwise is refused before any training, since a manifest naming only ``wanted``
    would drop the others and one naming all would mix two models or policies."""
    try:
        previous = load_set(out)
    except StanceStudioError:
        return []  # an unreadable manifest is replaced whole
    others = [st for st in previous.stances if st.name not in wanted] if previous is not None else []
    if not others:
        return []
    if previous.model_fingerprint != model_fingerprint(base) or previous.policy != policy:
        raise LibraryError(
            f"{out} holds a shipped set made on {previous.model} with policy {previous.policy} "
            f"({', '.join(st.name for st in others)} among them); rebuilding only {', '.join(wanted)} on "
            f"{base.model_id} with policy {policy} would leave a set of mixed stances. Rebuild every stance "
            "(leave out --stance) or write to another folder (--out).")
    return others


def _write_manifest(shipped: ShippedSet, config) -> None:
    doc = {"format": FORMAT, **shipped.as_json(), "steps": config.steps, "seed": config.seed,
           "method": config.method, "rebuild": REBUILD_COMMAND}
    doc.pop("folder")
    for entry, stance in zip(doc["stances"], shipped.stances):
        entry.update(base_fingerprint=stance.base_fingerprint, dataset_hash=stance.dataset_hash)
    path = shipped.folder / MANIFEST
    tmp = path.with_suffix(".json.tmp")
    tmp.write_text(json.dumps(doc, indent=2) + "\n", encoding="utf-8")
    os.replace(tmp, path)

