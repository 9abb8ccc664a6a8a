"""What a folder can hold that nobody planned, turned into reject reasons instead of crashes.

Every entry a source lists is looked at with ``os.stat``/``os.lstat`` only (never ``Path.resolve``, which
raises ``RuntimeError: Symlink loop`` on ``a -> b -> a``), and read only when it is a regular file, through
``read_regular``, which opens without blocking (a FIFO put where a file was listed must not hang a task) and
checks the file did not change while it was read. Reason codes:

- ``symlink_loop``: a link that leads back to itself (``a -> a``, ``a -> b -> a``) or a folder met twice;
- ``unreadable``: a dangling link, a file that vanished or cannot be opened;
- ``not_a_file``: a FIFO, socket or device;
- ``bad_name``: a name that is not valid UTF-8 or holds a newline or other control character (shown escaped);
- ``changed_while_reading``: size or modification time moved between opening and the end of the read.
"""

from __future__ import annotations

import errno
import os
import re
import stat

KINDS = {stat.S_IFIFO: "a FIFO", stat.S_IFSOCK: "a socket", stat.S_IFCHR: "a character device",
         stat.S_IFBLK: "a block device"}


def shown(name: str) -> str:
    """A name as text that can be stored and printed: undecodable bytes and control characters escaped."""
    raw = os.fsencode(name)
    text = raw.decode("utf-8", "backslashreplace")
    return "".join(c if c.isprintable() or c == " " else repr(c)[1:-1] for c in text)


def bad_name(name: str) -> str | None:
    """``bad_name:...`` when ``name`` is not valid UTF-8 or holds a control character, else None."""
    try:
        os.fsencode(name).decode("utf-8")
    except UnicodeDecodeError:
        return f"bad_name:not valid UTF-8: {shown(name)}"
    if any(not c.isprintable() and c != " " for c in name):
        return f"bad_name:control character in the name: {shown(name)}"
    return None


def kind(path: str) -> tuple[str, str | None]:
    """(``"dir"`` | ``"file"`` | ``"reject"``, reject ``reason:detail`` or None), following links."""
    try:
        st = os.stat(path)
    except OSError as exc:
        if exc.errno == errno.ELOOP:
            return "reject", f"symlink_loop:{shown(path)} is a link that leads back to itself"
        if os.path.islink(path):
            return "reject", f"unreadable:broken symlink to {shown(os.readlink(path))}"
        return "reject", f"unreadable:{type(exc).__name__}: {exc.strerror}"
    if stat.S_ISDIR(st.st_mode):
        return "dir", None
    if stat.S_ISREG(st.st_mode):
        return "file", None
    return "reject", f"not_a_file:{shown(path)} is {KINDS.get(stat.S_IFMT(st.st_mode), 'not a regular file')}"


def real(path: str) -> str:
    """The path with every link resolved; ``os.path.realpath`` stops at a loop instead of raising."""
    return os.path.realpath(path)


class Unreadable(Exception):
    """``reason``, ``detail`` of a file that could not be read as a regular file."""

    def __init__(self, reason: str, detail: str) -> None:
        super().__init__(f"{reason}: {detail}")
        self.reason, self.detail = reason, detail


def read_regular(path: str, limit: int | None = None) -> bytes:
    """The bytes of a regular file, or ``Unreadable``. Opened with ``O_NONBLOCK`` and checked with ``fstat``
    before anything is read; ``limit``: more bytes than this is ``too_large`` (nothing beyond it is read)."""
    try:
        fd = os.open(path, os.O_RDONLY | os.O_NONBLOCK | getattr(os, "O_CLOEXEC", 0))
    except OSError as exc:
        if exc.errno == errno.ELOOP:
            raise Unreadable("symlink_loop", f"{shown(path)} is a link that leads back to itself") from None
        raise Unreadable("unreadable", f"{type(exc).__name__}: {exc.strerror}") from None
    try:
        before = os.fstat(fd)
        if not stat.S_ISREG(before.st_mode):
            raise Unreadable("not_a_file", f"{shown(path)} is {KINDS.get(stat.S_IFMT(before.st_mode), 'not a regular file')}")
        if limit is not None and before.st_size > limit:
            raise Unreadable("too_large", f"{before.st_size:,} bytes > {limit:,}")
        os.set_blocking(fd, True)
        chunks, size = [], 0
        while chunk := os.read(fd, 1 << 20):
            chunks.append(chunk)
            size += len(chunk)
            if limit is not None and size > limit:
                raise Unreadable("too_large", f"more than {limit:,} bytes")
        after = os.fstat(fd)
    except OSError as exc:
        raise Unreadable("unreadable", f"{type(exc).__name__}: {exc.strerror}") from None
    finally:
        os.close(fd)
    if (after.st_size, after.st_mtime_ns) != (before.st_size, before.st_mtime_ns) or size != after.st_size:
        raise Unreadable("changed_while_reading", f"{before.st_size:,} bytes when opened, {size:,} read, "
                                                  f"{after.st_size:,} at the end")
    return b"".join(chunks)


def glob_regex(pattern: str) -> re.Pattern:
    """``glob``'s pattern language as a regular expression over whole paths: ``*`` and ``?`` within one name
    (not a leading ``.``), ``[...]`` classes, ``**`` any number of folders."""
    out, i, n = [], 0, len(pattern)
    while i < n:
        c = pattern[i]
        at_start = i == 0 or pattern[i - 1] == "/"
        if pattern.startswith("**/", i) and at_start:
            out.append(r"(?:(?!\.)[^/]*/)*")
            i += 3
        elif pattern.startswith("**", i) and at_start and i + 2 == n:
            out.append(r"(?:(?!\.)[^/]*(?:/(?!\.)[^/]*)*)?")
            i += 2
        elif c == "*":
            out.append((r"(?!\.)" if at_start else "") + r"[^/]*")
            i += 1
        elif c == "?":
            out.append((r"(?!\.)" if at_start else "") + r"[^/]")
            i += 1
        elif c == "[" and "]" in pattern[i + 2:]:
            end = pattern.index("]", i + 2)
            body = pattern[i + 1:end]
            out.append("[" + ("^" + body[1:] if body.startswith("!") else body).replace("\\", "\\\\") + "]")
            i = end + 1
        else:
            out.append(re.escape(c))
            i += 1
    return re.compile("".join(out))


def walk_glob(pattern: str, root: str) -> list[tuple[str, str | None]]:
    """Every non-folder entry under ``root`` whose path matches the glob ``pattern``, with its reject when the
    listing already tells (``kind``, ``bad_name``), in path order. Unlike ``glob.glob``, which follows every
    link to a folder and so lists a tree with a loop (``up -> ..``) until paths grow too long, a linked folder
    is walked once (by its real path), and a link to a folder outside ``root`` is a ``symlink_outside`` unit
    (when its path could hold matches), never walked."""
    regex, top = glob_regex(pattern), real(root)
    out: list[tuple[str, str | None]] = []
    visited, stack = {top}, [root]
    while stack:
        folder = stack.pop()
        try:
            names = sorted(e.name for e in os.scandir(folder))
        except OSError as exc:
            out.append((folder, f"unreadable:cannot list the folder: {exc.strerror}"))
            continue
        for name in names:
            path = os.path.join(folder, name)
            what, why = kind(path)
            if what == "dir":
                target = real(path)
                inside = target == top or target.startswith(top.rstrip("/") + "/")
                if not inside:
                    if regex.fullmatch(path) or "**" in pattern:
                        out.append((path, f"symlink_outside:link leads outside {shown(root)} to {shown(target)}"))
                elif target not in visited and not name.startswith(".") and bad_name(name) is None:
                    visited.add(target)
                    stack.append(path)
                continue
            if regex.fullmatch(path):
                out.append((path, bad_name(path) or why))
    return sorted(out)
