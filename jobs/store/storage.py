"""One view of ROOT, whether it is a local folder or an object-store URI (s3://, gs://, ...).

Everything the pipeline writes goes through ``Store`` so the same code runs on a laptop and against a
bucket. Paths inside the store are ``/``-joined strings relative to ROOT.

ROOT is a local path or any URI ``pyarrow.fs.FileSystem.from_uri`` takes, e.g.
``s3://bucket/prefix`` (credentials, region and endpoint from the standard AWS variables:
``AWS_ACCESS_KEY_ID``, ``AWS_SECRET_ACCESS_KEY``, ``AWS_DEFAULT_REGION``, ``AWS_ENDPOINT_URL``) or, for an
S3-compatible server, ``s3://bucket/prefix?endpoint_override=host:9000&scheme=http&region=us-east-1``.
Ray tasks and actors get ``store.root`` (or a pickled ``Store``, which travels as its root) and build their
own ``Store``: every process resolves credentials from its own environment, or from ``s3://KEY:SECRET@...``
in the URI itself (then the secret travels with the root; ``display`` never shows it).

Object stores have no directories and no rename: a "folder" exists while an object lies under its prefix,
and ``move`` of a folder is a copy of each object then a delete (see ``jobs.store.commit`` for what that means
for readers). Local disks keep atomic renames.
"""

from __future__ import annotations

import json
import os
import uuid
from typing import Any
from urllib.parse import urlsplit, urlunsplit

import pyarrow.fs as pafs

METADATA_SUFFIX = ".json"  # manifests and model cards: what readers check before they trust a folder


class Store:
    def __init__(self, root: str) -> None:
        self.root = root
        if "://" in root:
            self.fs, self.base = pafs.FileSystem.from_uri(root)
            self.base = self.base.rstrip("/")
        else:
            self.fs, self.base = pafs.LocalFileSystem(), os.path.abspath(root)

    def __reduce__(self) -> tuple:
        """A pickled store (a Ray task's argument) is rebuilt from its root in the receiving process, so the
        worker resolves credentials and endpoint exactly as a ``Store(store.root)`` there would (a local root
        travels as its absolute path: the worker's working directory may differ)."""
        return (Store, (self.base if self.is_local else self.root,))

    @property
    def is_local(self) -> bool:
        return isinstance(self.fs, pafs.LocalFileSystem)

    def path(self, *parts: str) -> str:
        """Filesystem path (for ``self.fs`` and Ray Data's ``filesystem=``) of ``parts`` under ROOT.
        On S3 this is ``bucket/prefix/...`` without scheme or query: pass it with ``filesystem=self.fs``."""
        return "/".join([self.base, *(p.strip("/") for p in parts if p)])

    def relpath(self, path: str, *parts: str) -> str:
        """``path`` (a filesystem path from ``files``) relative to the folder ``parts`` under ROOT."""
        base = self.path(*parts)
        if not path.startswith(base + "/"):
            raise ValueError(f"{path} is not under {base}")
        return path[len(base) + 1:]

    def display(self, *parts: str) -> str:
        """What to show a person (and to paste into ``pyarrow.fs.FileSystem.from_uri``): a local path, or the
        full URI with ROOT's query (endpoint, scheme, region) but never credentials given in it."""
        p = self.path(*parts)
        if self.is_local:
            return p
        uri = urlsplit(self.root)
        host = uri.netloc.rsplit("@", 1)[-1]  # drops KEY:SECRET@
        where = f"{host}{p}" if p.startswith("/") else p  # hdfs://host:port/path vs s3://bucket/key
        return f"{uri.scheme}://{where}" + (f"?{uri.query}" if uri.query else "")

    @property
    def name(self) -> str:
        """ROOT's last folder name (``v3`` of ``s3://b/runs/curated/v3?...``)."""
        return self.base.rstrip("/").rsplit("/", 1)[-1]

    def parent(self, levels: int = 1) -> "Store":
        """The folder ``levels`` above ROOT as a store of its own: the same filesystem, and on an object store
        the same credentials and endpoint (``aigc inspect URI`` finds a dataset's manifest this way)."""
        if self.is_local:
            path = os.path.realpath(self.base)
            for _ in range(levels):
                path = os.path.dirname(path)
            return Store(path)
        uri = urlsplit(self.root)
        path = uri.path.rstrip("/")
        for _ in range(levels):
            path = path.rsplit("/", 1)[0]
        return Store(urlunsplit(uri._replace(path=path)))

    def child(self, *parts: str) -> "Store":
        """The folder ``parts`` under ROOT as a store of its own (see ``parent``)."""
        if self.is_local:
            return Store(self.path(*parts))
        uri = urlsplit(self.root)
        return Store(urlunsplit(uri._replace(path="/".join([uri.path.rstrip("/"), *(p.strip("/") for p in parts)]))))

    def exists(self, *parts: str) -> bool:
        """Whether a file or folder is there; on an object store a folder exists while something lies under
        it (or ``makedirs`` left a marker)."""
        return self.fs.get_file_info(self.path(*parts)).type != pafs.FileType.NotFound

    def makedirs(self, *parts: str) -> None:
        self.fs.create_dir(self.path(*parts), recursive=True)

    def listdir(self, *parts: str) -> list[str]:
        if not self.exists(*parts):
            return []
        infos = self.fs.get_file_info(pafs.FileSelector(self.path(*parts)))
        return sorted(i.base_name for i in infos)

    def files(self, *parts: str, suffix: str = "") -> list[str]:
        """Files (recursively) under ``parts``, as store paths, sorted."""
        if not self.exists(*parts):
            return []
        infos = self.fs.get_file_info(pafs.FileSelector(self.path(*parts), recursive=True))
        return sorted(i.path for i in infos if i.type == pafs.FileType.File and i.path.endswith(suffix))

    def write_bytes(self, data: bytes, *parts: str) -> None:
        """Writes so that readers never see half a file: on a local disk to a temporary sibling that is then
        renamed into place; on an object store directly (an upload becomes visible only once complete)."""
        target = self.path(*parts)
        if not self.is_local:
            with self.fs.open_output_stream(target) as f:
                f.write(data)
            return
        self.fs.create_dir(target.rsplit("/", 1)[0], recursive=True)
        tmp = f"{target}.tmp-{uuid.uuid4().hex[:8]}"
        with self.fs.open_output_stream(tmp) as f:
            f.write(data)
        self.fs.move(tmp, target)

    def read_bytes(self, *parts: str) -> bytes:
        with self.fs.open_input_stream(self.path(*parts)) as f:
            return f.read()

    def write_json(self, obj: Any, *parts: str) -> None:
        self.write_bytes(json.dumps(obj, indent=2, sort_keys=True, default=str).encode(), *parts)

    def read_json(self, *parts: str) -> Any:
        return json.loads(self.read_bytes(*parts))

    def identity(self) -> tuple[str, str]:
        """ROOT's absolute location and an id written into it on first use (``ROOT/_root.json``): what tells a
        ROOT from one deleted and made again at the same place, or from another checkout's ``./runs``."""
        if not self.exists("_root.json"):
            self.write_json({"id": uuid.uuid4().hex}, "_root.json")
        return self.display(), self.read_json("_root.json")["id"]

    def delete(self, *parts: str) -> None:
        """Deletes a file or a whole folder; nothing there is not an error."""
        info = self.fs.get_file_info(self.path(*parts))
        if info.type == pafs.FileType.Directory:
            self.fs.delete_dir(info.path)
        elif info.type == pafs.FileType.File:
            self.fs.delete_file(info.path)

    def move(self, src: str, dst: str) -> None:
        """Moves store path ``src`` (a file or a folder) to ``dst``, which must not exist.

        On a local disk this is one atomic rename. An object store cannot rename a folder, so each file is
        copied (server side) and the source deleted afterwards; ``*.json`` files (manifests, model cards)
        are copied last and deleted first, so a folder that has its metadata has all its data, in ``dst``
        while the copy runs and in ``src`` until the copy is complete."""
        source, target = self.path(src), self.path(dst)
        if self.is_local:
            self.fs.create_dir(target.rsplit("/", 1)[0], recursive=True)
            self.fs.move(source, target)
            return
        info = self.fs.get_file_info(source)
        if info.type == pafs.FileType.File:
            self.fs.move(source, target)
            return
        if info.type == pafs.FileType.NotFound:
            raise FileNotFoundError(f"cannot move {self.display(src)}: it does not exist")
        infos = self.fs.get_file_info(pafs.FileSelector(source, recursive=True))
        files = sorted((i.path for i in infos if i.type == pafs.FileType.File),
                       key=lambda p: (p.endswith(METADATA_SUFFIX), p))  # data first, metadata last
        for empty in (i.path for i in infos if i.type == pafs.FileType.Directory
                      and not any(f.startswith(i.path + "/") for f in files)):
            self.fs.create_dir(target + empty[len(source):], recursive=True)  # e.g. a split with no rows
        for f in files:
            self.fs.copy_file(f, target + f[len(source):])
        for f in (f for f in files if f.endswith(METADATA_SUFFIX)):  # src stops looking complete first
            self.fs.delete_file(f)
        self.fs.delete_dir(source)  # the data, in batched deletes
