"""One view of ROOT, whether it is a local folder or an object-store URI (s3://, gs://, ...).

Everything the pipeline writes goes through ``Store`` so the same code runs on a laptop and against a
bucket. Paths inside the store are ``/``-joined strings relative to ROOT.
"""

from __future__ import annotations

import json
import os
import uuid
from typing import Any

import pyarrow.fs as pafs


class Store:
    def __init__(self, root: str) -> None:
        self.root = root
        if "://" in root:
            self.fs, self.base = pafs.FileSystem.from_uri(root)
            self.base = self.base.rstrip("/")
        else:
            self.fs, self.base = pafs.LocalFileSystem(), os.path.abspath(root)

    @property
    def is_local(self) -> bool:
        return isinstance(self.fs, pafs.LocalFileSystem)

    def path(self, *parts: str) -> str:
        """Filesystem path (for ``self.fs`` and Ray Data's ``filesystem=``) of ``parts`` under ROOT."""
        return "/".join([self.base, *(p.strip("/") for p in parts if p)])

    def display(self, *parts: str) -> str:
        """What to show a person: a local path or a full URI."""
        p = self.path(*parts)
        return p if self.is_local else f"{self.root.split('://')[0]}://{p}"

    def exists(self, *parts: str) -> bool:
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
        """Writes to a temporary sibling and moves it into place, so readers never see half a file."""
        target = self.path(*parts)
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

    def delete(self, *parts: str) -> None:
        info = self.fs.get_file_info(self.path(*parts))
        if info.type == pafs.FileType.Directory:
            self.fs.delete_dir(info.path)
        elif info.type == pafs.FileType.File:
            self.fs.delete_file(info.path)

    def move(self, src: str, dst: str) -> None:
        """Moves store path ``src`` to ``dst`` (atomic rename on local disks)."""
        self.fs.create_dir(self.path(dst).rsplit("/", 1)[0], recursive=True)
        self.fs.move(self.path(src), self.path(dst))
