"""Where the pipeline may read and write: ``security.allowed_roots``.

Configs and request or source tables name paths, and a table's image cells name files to read. A shared
deployment restricts them: with ``allowed_roots`` set, every path must resolve under one of the roots, or it
is refused before it is opened:

- local paths are made absolute, ``~`` expanded and resolved with ``os.path.realpath`` (``..`` and every
  symlink on the way, so a link pointing outside the tree is outside);
- URIs (``s3://bucket/prefix/...``, ``file:///...``) are percent-decoded until stable (``%2e%2e%2f`` and
  ``%252e`` are ``../``), then any ``..`` segment is refused and the rest must lie under a root with the same
  scheme and bucket; ``file://`` URIs are checked as local paths.

With no roots configured every path is allowed (a laptop run reads what its user can).
"""

from __future__ import annotations

import glob
import os
import posixpath
from dataclasses import dataclass
from urllib.parse import unquote, urlsplit


class PathNotAllowed(ValueError):
    """A path outside ``security.allowed_roots``."""


def _decoded(text: str) -> str:
    for _ in range(8):  # %252e -> %2e -> .
        again = unquote(text)
        if again == text:
            return text
        text = again
    raise PathNotAllowed(f"{text!r}: percent-encoding nested too deep")


def _local(path: str) -> str:
    """Resolved the way the OS will open it: no lexical ``abspath`` first, which would fold ``link/..`` into
    the link's folder while the OS follows the link and then goes up from its target."""
    path = os.path.expanduser(path)
    return os.path.realpath(path if os.path.isabs(path) else os.path.join(os.getcwd(), path))


def _split_uri(uri: str) -> tuple[str, str, str]:
    """(scheme, bucket/host, normalised key path) with the query and credentials dropped."""
    parts = urlsplit(uri)
    host = parts.netloc.rsplit("@", 1)[-1]
    path = _decoded(parts.path)
    if any(seg == ".." for seg in path.replace("\\", "/").split("/")):
        raise PathNotAllowed(f"{uri}: '..' in an object-store path")
    return parts.scheme.lower(), _decoded(host).lower(), posixpath.normpath("/" + path.lstrip("/"))


def _under(path: str, root: str) -> bool:
    return path == root or path.startswith(root.rstrip("/") + "/")


@dataclass(frozen=True)
class PathPolicy:
    """Checks paths against allowed roots (none: everything is allowed)."""

    roots: tuple[str, ...] = ()

    @property
    def restricted(self) -> bool:
        return bool(self.roots)

    def check(self, path: str, what: str = "path") -> str:
        """``path`` when it lies under an allowed root; ``PathNotAllowed`` naming ``what`` otherwise."""
        if not self.roots:
            return path
        try:
            if "://" in path and not path.lower().startswith("file://"):
                scheme, bucket, key = _split_uri(path)
                for root in self.roots:
                    if "://" in root and not root.lower().startswith("file://"):
                        r_scheme, r_bucket, r_key = _split_uri(root)
                        if (scheme, bucket) == (r_scheme, r_bucket) and _under(key, r_key):
                            return path
            else:
                local = _local(_decoded(urlsplit(path).path) if path.lower().startswith("file://") else path)
                for root in self.roots:
                    if "://" not in root or root.lower().startswith("file://"):
                        base = _local(_decoded(urlsplit(root).path) if root.lower().startswith("file://") else root)
                        if _under(local, base):
                            return path
        except PathNotAllowed as exc:
            raise PathNotAllowed(f"{what}: {exc}") from None
        raise PathNotAllowed(f"{what}: {path} is outside security.allowed_roots ({', '.join(self.roots)})")

    def allows(self, path: str) -> bool:
        try:
            self.check(path)
            return True
        except PathNotAllowed:
            return False


def glob_root(pattern: str) -> str:
    """The fixed leading folders of a glob (``/data/copy`` of ``/data/copy/**/*.txt``): the tree it lists."""
    fixed = []
    for part in pattern.split("/"):
        if glob.has_magic(part):
            break
        fixed.append(part)
    return "/".join(fixed) or "."
