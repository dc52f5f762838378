"""Files written as root in folders someone else may reach: never through a symlink.

``render`` and ``apply`` run as root and write into folders the sidecar's
user (``--user``) can see. Every open here is relative to a folder
descriptor and refuses a symlink as its last component (``O_NOFOLLOW``); a
new file is a temp file made with ``O_EXCL`` in that folder, given its owner
and mode on the descriptor (``fchown``/``fchmod``, never on a path someone
could swap), then renamed over the old one. Folders are opened the same way
(``O_DIRECTORY | O_NOFOLLOW``), so a folder swapped for a link to ``/etc`` is
refused instead of being handed to the user.

A file's mode is set exactly, without the ACL its folder would give it
(``plain_mode``); the folders' default ACLs are ``shell.files.acl``'s.
"""

from __future__ import annotations

import errno
import os
import secrets
import stat
from typing import Optional, Tuple

from sidecar_plugin.errors import SidecarError
from sidecar_plugin.shell.files.acl import ACL_ACCESS

Owner = Optional[Tuple[int, int]]

_DIR_FLAGS = os.O_RDONLY | os.O_DIRECTORY | os.O_NOFOLLOW | os.O_CLOEXEC


class UnsafePath(OSError, SidecarError):
    """A path is a symlink, or not the kind of file expected, where root is about to write.

    An OSError first: it is reported as the refused path, like any error of the file system.
    """


def _refuse(path: str, what: str) -> UnsafePath:
    return UnsafePath(errno.ELOOP, f"{what}; refusing to follow or replace it", path)


def _open_entry(dirfd: int, name: str, flags: int, mode: int, shown: str) -> int:
    """Open ``name`` in ``dirfd`` without following a link (a link there is refused) and without blocking."""
    try:
        return os.open(name, flags | os.O_NOFOLLOW | os.O_NONBLOCK | os.O_CLOEXEC, mode, dir_fd=dirfd)
    except OSError as exc:
        if exc.errno == errno.ELOOP:
            raise _refuse(shown or name, "is a symlink") from None
        raise


def open_dir(path: str, create: bool = False, mode: int = 0o755) -> int:
    """Open the folder ``path`` without following a symlink at its last component.

    The folders above it are the operator's (``/etc``, ``/srv``): resolved as
    usual. ``create`` makes the last component when it is missing.
    """
    path = os.path.abspath(path)
    parent, name = os.path.split(path)
    if not name:  # "/"
        return os.open(path, _DIR_FLAGS)
    pfd = os.open(parent, os.O_RDONLY | os.O_DIRECTORY | os.O_CLOEXEC)
    try:
        return open_subdir(pfd, name, create, mode, shown=path)
    finally:
        os.close(pfd)


def open_subdir(dirfd: int, name: str, create: bool = False, mode: int = 0o755, shown: str = "") -> int:
    """Open the folder ``name`` inside ``dirfd``; never through a symlink."""
    shown = shown or name
    if create:
        try:
            os.mkdir(name, mode, dir_fd=dirfd)
        except FileExistsError:
            pass
    try:
        return os.open(name, _DIR_FLAGS, dir_fd=dirfd)
    except OSError as exc:
        if exc.errno in (errno.ELOOP, errno.ENOTDIR):
            st = os.stat(name, dir_fd=dirfd, follow_symlinks=False)
            if stat.S_ISLNK(st.st_mode):
                raise _refuse(shown, "is a symlink") from None
            raise UnsafePath(errno.ENOTDIR, "is not a folder", shown) from None
        raise


def entry(dirfd: int, name: str) -> Optional[os.stat_result]:
    """Return the entry's own stat (a symlink is not followed), or None when absent."""
    try:
        return os.stat(name, dir_fd=dirfd, follow_symlinks=False)
    except FileNotFoundError:
        return None


def read_file(dirfd: int, name: str, limit: int = 1 << 20, shown: str = "") -> Optional[bytes]:
    """Return a regular file's bytes (at most ``limit``), None when absent; refuse links and FIFOs."""
    try:
        fd = _open_entry(dirfd, name, os.O_RDONLY, 0, shown)
    except FileNotFoundError:
        return None
    try:
        _regular_single(fd, shown or name)
        chunks, left = [], limit
        while left > 0:
            chunk = os.read(fd, min(left, 1 << 16))
            if not chunk:
                break
            chunks.append(chunk)
            left -= len(chunk)
        return b"".join(chunks)
    finally:
        os.close(fd)


def _regular_single(fd: int, shown: str) -> None:
    """Refuse anything but a regular file with one name: a hard link to /etc/shadow is not our log."""
    st = os.fstat(fd)
    if not stat.S_ISREG(st.st_mode):
        raise UnsafePath(errno.EINVAL, "is not a regular file", shown)
    if st.st_nlink > 1:
        raise UnsafePath(errno.EMLINK, "has other hard links", shown)


def plain_mode(fd: int, mode: int) -> None:
    """Give the open file exactly ``mode``: drop an ACL it inherited from its folder, then fchmod."""
    try:
        os.removexattr(fd, ACL_ACCESS)
    except OSError:
        pass
    os.fchmod(fd, mode)


def write_file(dirfd: int, name: str, data: bytes, mode: int, owner: Owner = None) -> None:
    """Replace ``name`` in ``dirfd`` atomically with ``data``, ``mode`` and ``owner`` from the first byte.

    A symlink or a folder at ``name`` is replaced, never followed (rename
    replaces the entry itself); the temp file is new (``O_EXCL``), so nothing
    someone placed in the folder is opened.
    """
    existing = entry(dirfd, name)
    if existing is not None and stat.S_ISDIR(existing.st_mode):
        raise UnsafePath(errno.EISDIR, "is a folder", name)
    tmp, fd = _new_temp(dirfd, name)
    try:
        _fill(fd, data, mode, owner)
        os.replace(tmp, name, src_dir_fd=dirfd, dst_dir_fd=dirfd)
    except BaseException:
        try:
            os.unlink(tmp, dir_fd=dirfd)
        except OSError:
            pass
        raise
    try:
        os.fsync(dirfd)
    except OSError:
        pass


def _new_temp(dirfd: int, name: str) -> Tuple[str, int]:
    """Create a temp file beside ``name`` that did not exist (``O_EXCL``, never a link); return (name, fd)."""
    for _ in range(16):
        tmp = f".{name}.{secrets.token_hex(6)}.tmp"
        try:
            fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_EXCL | os.O_NOFOLLOW | os.O_CLOEXEC, 0o600,
                         dir_fd=dirfd)
            return tmp, fd
        except FileExistsError:
            continue
    raise FileExistsError(errno.EEXIST, "cannot make a temp file", name)


def _fill(fd: int, data: bytes, mode: int, owner: Owner) -> None:
    """Give the new temp file its owner and mode before its first byte, write ``data``, sync, close it."""
    try:
        if owner is not None:
            os.fchown(fd, *owner)
        plain_mode(fd, mode)
        view = memoryview(data)
        while view:
            view = view[os.write(fd, view):]
        os.fsync(fd)
    finally:
        os.close(fd)


def remove(dirfd: int, name: str) -> None:
    """Remove the entry ``name`` (a symlink itself, never its target); absent is fine."""
    try:
        os.unlink(name, dir_fd=dirfd)
    except FileNotFoundError:
        pass


def symlink(dirfd: int, name: str, target: str) -> None:
    """Make ``name`` a symlink to ``target`` (replacing a file or link there atomically)."""
    existing = entry(dirfd, name)
    if existing is not None and stat.S_ISLNK(existing.st_mode) and os.readlink(name, dir_fd=dirfd) == target:
        return
    if existing is not None and stat.S_ISDIR(existing.st_mode):
        raise UnsafePath(errno.EISDIR, "is a folder", name)
    tmp = f".{name}.{secrets.token_hex(6)}.lnk"
    os.symlink(target, tmp, dir_fd=dirfd)
    try:
        os.replace(tmp, name, src_dir_fd=dirfd, dst_dir_fd=dirfd)
    except BaseException:
        remove(dirfd, tmp)
        raise


def prepare_log(dirfd: int, name: str, mode: int, owner: Owner = None, shown: str = "") -> None:
    """Create the log (or keep the one there), owner-only from its first byte; never through a link."""
    fd = _open_entry(dirfd, name, os.O_WRONLY | os.O_CREAT | os.O_APPEND, 0o600, shown)
    try:
        _regular_single(fd, shown or name)
        if owner is not None:
            os.fchown(fd, *owner)
        plain_mode(fd, mode)
    finally:
        os.close(fd)


def set_owner_mode(fd: int, owner: Owner, mode: int) -> None:
    """Give an opened folder or file its owner and mode (on the descriptor, not a path)."""
    if owner is not None:
        os.fchown(fd, *owner)
    os.fchmod(fd, mode)
