"""Versioned model artifacts on disk: training publishes, serving loads and hot-swaps.

Layout under the data directory::

    models/
      LATEST                       the version serving should use (replaced atomically)
      20261128-101500-0001/
        model.pt                   torch.save of the plain state but its large parts
        retrieval.safetensors      the large parts (state dicts, flattened), one file each:
        ranker.safetensors         read without Python's unpickler (a 23 MB ranker: 15 -> 4 ms)
        meta.json                  when, on what data, how it measured on its held-out slice

A version directory is written under a temporary name and renamed into place, and ``LATEST`` is
replaced with an atomic rename, so a reader never sees half an artifact.

A part that a publisher knows to be unchanged since an earlier version (the online trainer's
versions change the ranker every second and the retrieval model every few minutes) is a hard
link to that version's file, not a new copy: publishing writes a third of the bytes, and
pruning the earlier version leaves the linked file in place. Versions written before parts had
files of their own (everything in ``model.pt``) still load.

Processes on several hosts share no directory: ``open_registry("postgresql://...")`` gives the
same interface over tables in that database (``registry_pg.py``).
"""

from __future__ import annotations

import json
import os
import shutil
import tempfile
import threading
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Callable, TypedDict

import safetensors
import safetensors.torch
import torch

from reelrank.errors import ModelError


PARTS = ("retrieval", "ranker")  # state entries saved as files of their own


def _part_file(part: str) -> str:
    return f"{part}.safetensors"


def flatten_part(state: dict[str, Any]) -> tuple[dict[str, torch.Tensor], str]:
    """A nested state (a state dict; extra states are dicts of tensors and numbers) as
    safetensors' flat tensors by name plus a JSON header: each tensor's path, every other value."""
    tensors: dict[str, torch.Tensor] = {}
    paths: dict[str, list[str]] = {}
    values: list[list] = []
    storages: set[int] = set()

    def walk(path: list[str], value: Any) -> None:
        if torch.is_tensor(value):
            value = value.detach().contiguous()
            ptr = value.untyped_storage().data_ptr()
            if ptr in storages and value.numel():  # safetensors keeps no shared storage
                value = value.clone()
            storages.add(ptr)
            name = f"t{len(tensors)}"
            tensors[name], paths[name] = value, path
        elif isinstance(value, dict):
            if not value:
                values.append([path, {}])
            for k, v in value.items():
                if not isinstance(k, str):
                    raise TypeError(f"state keys must be str, got {k!r} at {path}")
                walk(path + [k], v)
        else:
            values.append([path, value])

    walk([], state)
    return tensors, json.dumps({"paths": paths, "values": values})


def unflatten_part(tensors: dict[str, torch.Tensor], header_text: str) -> dict[str, Any]:
    """The nested state ``flatten_part`` took apart."""
    header = json.loads(header_text)
    out: dict[str, Any] = {}

    def put(path: list[str], value: Any) -> None:
        node = out
        for k in path[:-1]:
            node = node.setdefault(k, {})
        node[path[-1]] = value

    for path_, value in header["values"]:
        put(path_, value)
    for name, path_ in header["paths"].items():
        put(path_, tensors[name])
    return out


def _save_part(state: dict[str, Any], path: Path) -> None:
    """One part as one safetensors file, its header in the file's metadata."""
    tensors, header = flatten_part(state)
    safetensors.torch.save_file(tensors, str(path), metadata={"reelrank": header})


def _load_part(path: Path) -> dict[str, Any]:
    with safetensors.safe_open(str(path), "pt") as f:
        header = f.metadata()["reelrank"]
        tensors = {name: f.get_tensor(name) for name in f.keys()}
    return unflatten_part(tensors, header)


def _link_or_copy(src: Path, dst: Path) -> None:
    if not src.is_file():
        raise ModelError(f"cannot reuse {src}: the version has no such part")
    try:
        os.link(src, dst)
    except OSError:  # a file system without hard links
        shutil.copyfile(src, dst)


class ModelMeta(TypedDict, total=False):
    """What a version says about itself (its ``meta.json``): the contract between training,
    which writes it, and serving, which reads it. Every key is optional: a batch version has
    ``metrics`` and ``config``, an online one ``base_version`` and the log position it learned
    through, and versions written before a key existed lack it."""

    version: str  # set by ``publish``
    published_at: int  # ms, set by ``publish``
    # batch training (train/batch.py)
    metrics: dict[str, Any]
    config: dict[str, Any]
    topics: dict[str, Any]  # the learned topics (learned_topics.py)
    # the online trainer (train/handover.py, train/learner.py)
    base_version: str  # the batch version its weights descend from
    retrieval_version: str  # whose retrieval weights it carries (same: serving keeps its index)
    ranker_items_version: str  # the ranker's item vocabulary (same: serving keeps its tables)
    retrieval_items_version: str  # the retrieval model's item vocabulary
    through_seq: int  # the event log position it learned through
    through_ts: int  # every view that ended by this time (ms) is in its weights
    online: dict[str, Any]  # steps, rows and the join's counters


@dataclass(frozen=True)
class Artifact:
    version: str
    state: dict[str, Any]
    meta: ModelMeta


def topics_of(meta: ModelMeta, registry: ModelRegistry | None = None) -> dict[str, Any] | None:
    """The learned topics a version's meta carries, or its base version's (online versions)."""
    if meta.get("topics"):
        return meta["topics"]
    base = meta.get("base_version")
    if registry is not None and base and base != meta.get("version"):
        try:
            return registry.meta(base).get("topics") or None
        except (OSError, ValueError):
            return None
    return None


def prunable(versions: list[str], latest: str | None, keep: int,
             meta_of: Callable[[str], ModelMeta]) -> list[str]:
    """What a prune keeping the newest ``keep`` versions (and the latest) may delete, oldest
    first: every other version but the base version of one that stays, which holds the learned
    topics its online descendants show (``topics_of``): deleting it would leave them, and a
    server restarted on them, without topics."""
    others = [v for v in versions if v != latest]
    stay = set(others[max(0, len(others) - keep):] if keep else []) | ({latest} if latest else set())
    bases = set()
    for v in stay:
        try:
            base = meta_of(v).get("base_version")
        except (OSError, ValueError, ModelError):
            continue
        if base:
            bases.add(base)
    return [v for v in others if v not in stay and v not in bases]


class ModelRegistry:
    def __init__(self, root: Path | str):
        self.root = Path(root)
        self.root.mkdir(parents=True, exist_ok=True)
        self._lock = threading.Lock()

    def publish(self, state: dict[str, Any], meta: ModelMeta | dict[str, Any],
                reuse: dict[str, str] | None = None) -> str:
        """Write a new version and make it the latest; returns its name. ``reuse``: part name
        -> an earlier version whose file of that part this version shares (the state's value
        for it is ignored and may be None); a part that version lacks is an error."""
        reuse = reuse or {}
        with self._lock:
            stamp = time.strftime("%Y%m%d-%H%M%S", time.gmtime())
            # After the highest number of this second, not the count: a prune may have freed
            # a lower one, and the count would then name a version that exists.
            n = 1 + max((int(p.name.rsplit("-", 1)[1]) for p in self.root.glob(f"{stamp}-*")
                         if p.is_dir() and p.name.rsplit("-", 1)[1].isdigit()), default=0)
            version = f"{stamp}-{n:04d}"
            tmp = Path(tempfile.mkdtemp(prefix=".publishing-", dir=self.root))
            try:
                rest = dict(state)
                parts = []
                for part in PARTS:
                    if part in reuse:
                        _link_or_copy(self.root / reuse[part] / _part_file(part),
                                      tmp / _part_file(part))
                    elif rest.get(part) is not None:
                        _save_part(rest[part], tmp / _part_file(part))
                    else:
                        continue
                    rest[part] = None
                    parts.append(part)
                rest["parts"] = parts
                torch.save(rest, tmp / "model.pt")
                # Last: a meta copied from an earlier version names this one.
                full_meta = {**meta, "version": version, "published_at": int(time.time() * 1000)}
                (tmp / "meta.json").write_text(json.dumps(full_meta, indent=2, default=str))
                os.replace(tmp, self.root / version)
            except BaseException:
                shutil.rmtree(tmp, ignore_errors=True)
                raise
            self._set_latest(version)
            return version

    def _set_latest(self, version: str) -> None:
        fd, tmp = tempfile.mkstemp(prefix=".latest-", dir=self.root)
        with os.fdopen(fd, "w") as f:
            f.write(version + "\n")
        os.replace(tmp, self.root / "LATEST")

    def latest(self) -> str | None:
        try:
            version = (self.root / "LATEST").read_text().strip()
        except FileNotFoundError:
            return None
        return version or None

    def versions(self) -> list[str]:
        return sorted(p.name for p in self.root.iterdir()
                      if p.is_dir() and not p.name.startswith("."))

    def load(self, version: str | None = None, skip: tuple[str, ...] = ()) -> Artifact:
        """``skip``: parts not to read (their value is None), e.g. the retrieval weights a
        serving process already holds; a version saved as one file loads whole."""
        version = version or self.latest()
        if version is None:
            raise ModelError("no model has been published yet")
        path = self.root / version
        try:
            # Memory-mapped: a version saved as one file (before parts had files of their own)
            # is read as its tensors are copied into a model (60 MB: 47 -> 13 ms).
            state = torch.load(path / "model.pt", weights_only=True, mmap=True)
            for part in state.pop("parts", []):
                state[part] = None if part in skip else _load_part(path / _part_file(part))
            meta = json.loads((path / "meta.json").read_text())
        except FileNotFoundError as exc:
            raise ModelError(f"model version {version!r} is missing: {exc}") from exc
        return Artifact(version, state, meta)

    def has_part(self, version: str, part: str) -> bool:
        """Whether ``version`` keeps ``part`` in a file of its own (one ``reuse`` can link)."""
        return (self.root / version / _part_file(part)).is_file()

    def meta(self, version: str) -> ModelMeta:
        return json.loads((self.root / version / "meta.json").read_text())

    def close(self) -> None:
        """Release what the registry holds open (nothing, for a directory)."""

    def prune(self, keep: int = 5) -> list[str]:
        """Delete all but the newest ``keep`` versions, the latest and their base versions
        (``prunable``)."""
        old = prunable(self.versions(), self.latest(), keep, self.meta)
        for v in old:
            shutil.rmtree(self.root / v, ignore_errors=True)
        return old


def open_registry(where: str | Path, root: Path | str | None = None) -> ModelRegistry:
    """The registry at ``where``: a directory, or ``postgresql://user:password@host/db`` (or
    ``postgres://``) for versions in that database, which every host reaches. ``root``: with
    a database (and required then), this host's directory for its own files beside the
    models, such as the topic settings."""
    text = str(where)
    if text.startswith(("postgresql://", "postgres://")):
        if root is None:
            raise ValueError("a PostgreSQL registry needs a local root directory too")
        # Imported here: psycopg is needed only by those who use this backend.
        from reelrank.registry_pg import PostgresRegistry

        return PostgresRegistry(text, root)
    if "://" in text:
        raise ModelError(f"no model registry for scheme {text.split('://', 1)[0]!r}")
    return ModelRegistry(where)
