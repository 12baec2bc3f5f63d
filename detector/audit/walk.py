"""The folder walk of an audit, and the rule that keeps it inside an allowed root.

Without a root (the `resynth audit` command's default: the operator audits their own folder with their own
rights) the walk follows symbolic links, files and directories alike; a directory reached twice (a loop, or
two links to one place) is listed once and reported as a loop the second time.

With a root (`Confinement`, always on for audits through the service) every path the audit lists, hashes or
opens must resolve inside the root, links included: a link whose target lies outside is recorded as skipped
("outside the audit root") and its target is never opened, listed or stat'ed. The check is made twice: on the
resolved path before opening, and on the file actually opened (its descriptor's path, `/proc/self/fd`), so a
link or folder swapped in between the walk and the read is caught as well. FIFOs, devices and sockets are
never opened (non-blocking open, then a regular-file check on the descriptor).
"""

from __future__ import annotations

import os
import stat
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

from gan_inversion.data import IMAGE_SUFFIXES
from gan_inversion.fileio import sha256_file

VIDEO_SUFFIXES = {".mp4", ".avi", ".mov", ".mkv", ".webm"}
OUTSIDE = "outside the audit root"
PROC_FD = Path("/proc/self/fd")


class OutsideRoot(OSError):
    """A path (or the file actually opened) resolves outside the audit root."""

    def __init__(self, path: str | os.PathLike):
        super().__init__(f"{path}: {OUTSIDE}")
        self.path = str(path)


class Confinement:
    """Opens files and folders only if they lie, links resolved, inside `root`."""

    MAX_LINKS = 40  # links followed in one resolution (the kernel's own limit)

    def __init__(self, root: str | os.PathLike):
        self.given = os.path.abspath(root)
        self.root = os.path.realpath(root)

    def inside(self, real: str) -> bool:
        return real == self.root or real.startswith(self.root.rstrip(os.sep) + os.sep)

    def check(self, path: str | os.PathLike) -> str:
        """The resolved path, or OutsideRoot. Links are resolved one component at a time, and only paths already
        known to lie inside the root are ever looked at (`lstat`, `readlink`): a link leading out is refused from
        its text alone, its target never stat'ed (unlike os.path.realpath, which looks at every component)."""
        path = os.path.abspath(path)
        for base in (self.root, self.given):
            if path == base or path.startswith(base.rstrip(os.sep) + os.sep):
                todo = [p for p in os.path.relpath(path, base).split(os.sep) if p not in ("", ".")]
                break
        else:
            raise OutsideRoot(path)
        cur, links = self.root, 0
        while todo:
            part = todo.pop(0)
            if part == "..":
                if cur == self.root:
                    raise OutsideRoot(path)
                cur = os.path.dirname(cur)
                continue
            nxt = os.path.join(cur, part)
            try:
                st = os.lstat(nxt)  # inside: `cur` is a resolved folder inside the root, `part` one name
            except FileNotFoundError:
                return os.path.join(nxt, *todo)  # what does not exist has nothing left to resolve
            if not stat.S_ISLNK(st.st_mode):
                cur = nxt
                continue
            links += 1
            if links > self.MAX_LINKS:
                raise OSError(40, "too many levels of symbolic links", str(path))
            target = os.readlink(nxt)
            if os.path.isabs(target):
                target = os.path.normpath(target)
                if not self.inside(target):
                    raise OutsideRoot(path)
                cur, todo = self.root, [p for p in os.path.relpath(target, self.root).split(os.sep)
                                        if p not in ("", ".")] + todo
            else:
                todo = [p for p in target.split(os.sep) if p not in ("", ".")] + todo
        return cur

    def open(self, path: str | os.PathLike, *, directory: bool = False) -> int:
        """A read-only descriptor of `path` (a regular file, or a folder), checked before and after opening."""
        real = self.check(path)
        flags = os.O_RDONLY | getattr(os, "O_CLOEXEC", 0) | getattr(os, "O_NOFOLLOW", 0)
        if directory:
            flags |= getattr(os, "O_DIRECTORY", 0)
        else:  # a FIFO swapped in must not block the audit
            flags |= getattr(os, "O_NONBLOCK", 0) | getattr(os, "O_NOCTTY", 0)
        fd = os.open(real, flags)  # O_NOFOLLOW: `real` has no link left unless one was swapped in since
        try:
            opened = fd_path(fd)
            if opened is not None and not self.inside(opened.removesuffix(" (deleted)")):
                raise OutsideRoot(path)
            mode = os.fstat(fd).st_mode
            if not (stat.S_ISDIR(mode) if directory else stat.S_ISREG(mode)):
                raise OSError(f"not a {'folder' if directory else 'regular file'}")
        except BaseException:
            os.close(fd)
            raise
        return fd


def fd_path(fd: int) -> str | None:
    """The path of the file an open descriptor refers to (Linux), or None where the system cannot tell."""
    try:
        return os.readlink(PROC_FD / str(fd))
    except OSError:
        return None


def open_media(path: str | os.PathLike, guard: Confinement | None):
    """A binary file object for reading `path`, confined by `guard` when given."""
    if guard is None:
        return open(path, "rb")
    return os.fdopen(guard.open(path), "rb")


def read_media(path: str | os.PathLike, guard: Confinement | None) -> bytes:
    with open_media(path, guard) as f:
        return f.read()


def file_hash(path: str | os.PathLike, guard: Confinement | None = None) -> str:
    """SHA-256 of a file's content, read in 1 MiB chunks."""
    with open_media(path, guard) as f:
        return sha256_file(f)


@dataclass
class Entry:
    rel: str                       # path relative to the audited folder, '/'-separated
    path: Path | None              # where to read it (None for entries that are only reported)
    kind: str                      # image | video | other | error
    reason: str | None = None
    size: int | None = None


def media_kind(name: str) -> str:
    ext = os.path.splitext(name)[1].lower()
    return "image" if ext in IMAGE_SUFFIXES else "video" if ext in VIDEO_SUFFIXES else "other"


def walk_media(folder: str | os.PathLike, *, guard: Confinement | None = None) -> Iterator[Entry]:
    """Every file under `folder`, recursively and in sorted order, as entries; see the module docstring for
    links. Unreadable folders, loops, links leaving the root and non-media files are entries with a reason."""
    seen: set[tuple[int, int]] = set()

    def listing(d: Path) -> tuple[os.stat_result, list[str]]:
        if guard is None:
            return d.stat(), sorted(os.listdir(d))
        fd = guard.open(d, directory=True)
        try:
            return os.fstat(fd), sorted(os.listdir(fd))
        finally:
            os.close(fd)

    def visit(d: Path, rel: str) -> Iterator[Entry]:
        try:
            st, names = listing(d)
        except OutsideRoot:
            yield Entry(rel or ".", None, "error", OUTSIDE)
            return
        except OSError as exc:
            yield Entry(rel or ".", None, "error", f"unreadable directory: {exc.strerror or exc}")
            return
        key = (st.st_dev, st.st_ino)
        if key in seen:
            yield Entry(rel, None, "error", "symlink loop (directory already visited)")
            return
        seen.add(key)
        for name in names:
            p = d / name
            r = f"{rel}/{name}" if rel else name
            try:
                if guard is None:
                    st = p.stat()
                else:  # the target is looked at only once it is known to lie inside, and then without a link
                    st = os.stat(guard.check(p), follow_symlinks=False)
                    if stat.S_ISLNK(st.st_mode):
                        raise OSError("a link was swapped in during the walk")
            except OutsideRoot:
                yield Entry(r, None, "error", OUTSIDE)
                continue
            except OSError as exc:
                yield Entry(r, None, "error", f"unreadable: {exc.strerror or exc}")
                continue
            if stat.S_ISDIR(st.st_mode):
                yield from visit(p, r)
            elif stat.S_ISREG(st.st_mode):
                kind = media_kind(name)
                yield Entry(r, p, kind, None if kind != "other" else "not a media file", st.st_size)
            else:
                yield Entry(r, None, "error", "not a regular file")

    yield from visit(Path(folder), "")
