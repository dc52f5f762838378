"""Put the rendered files in place: who owns what, with which mode, never through a link.

Without ``--user`` everything is root's: the secrets 0600, the include 0644.

With ``--user U`` the sidecar's user must read its config, key and log and
write its state, history and metrics, and must own nothing root's supervisord
reads as configuration. So:

- the out-dir (and a fleet's per-sidecar folders) stay root's, not writable
  by the user: ``sidecar.conf`` is root's 0644 and cannot be renamed away;
- ``litellm.yaml`` and ``master.key`` are root's, group U's primary group,
  0640: readable, not writable (that group must be U's own);
- the log is created root's, group U, 0640, in the root-owned folder
  (supervisord, as root, reopens it at every rotation: in a folder the user
  could write, a symlink put there in that instant would make root's
  supervisord truncate any file); the folder's default ACL keeps each
  recreated log 0640-like, from its first byte;
- the runtime files (state, history, the listener's lock) live in ``run/``
  beside the config, owned by U; ``state.json`` beside the config is a link
  to ``run/state.json``, so readers keep the documented path.
"""

from __future__ import annotations

import errno
import grp
import os
import pwd
import stat
import sys
from typing import Callable, Dict, List, Optional, Set, Tuple

from sidecar_plugin.shell import safefs
from sidecar_plugin.core.render import RenderedFile, RenderError

RUN_DIR = "run"
STATE_NAME = "state.json"

Owner = Optional[Tuple[int, int]]


def check_user(name: str, uid: int, gid: int) -> None:
    """Refuse a ``--user`` whose primary group others share: that group reads the secrets."""
    if uid == 0 or gid == 0:
        raise RenderError(f"--user {name}: runs as root or in group root; give the sidecar a user of its own")
    group = grp.getgrgid(gid) if _has_group(gid) else None
    sharers = sorted({p.pw_name for p in pwd.getpwall() if p.pw_gid == gid and p.pw_uid != uid}
                     | {m for m in (group.gr_mem if group else []) if m != name})
    if sharers:
        raise RenderError(f"--user {name}: its primary group (gid {gid}) is shared with {', '.join(sharers[:3])}; "
                          "the config and key are readable by that group: give it a group of its own "
                          "(useradd --system --user-group)")


def _has_group(gid: int) -> bool:
    try:
        grp.getgrgid(gid)
        return True
    except KeyError:
        return False


def user_groups(name: str, gid: int) -> Set[int]:
    """Return every group ``name`` is in: its primary one and its supplementary ones."""
    return {gid} | {g.gr_gid for g in grp.getgrall() if name in g.gr_mem}


def check_out_dir(out_dir: str, uid: Optional[int], user: str, gid: Optional[int] = None) -> None:
    """Refuse an out-dir below a folder the sidecar's user can change.

    Whoever can write a folder above the out-dir can rename the out-dir away
    and put a ``sidecar.conf`` of its own in its place, which root's
    supervisord would run as root. That is the user's own folder, a folder
    its groups may write, and a world-writable one without the sticky bit
    (``/tmp`` has it: there only a file's owner may rename it).
    """
    if uid is None:
        return
    groups = user_groups(user, gid) if gid is not None else set()
    folder = os.path.dirname(os.path.abspath(out_dir))
    while True:
        try:
            st = os.stat(folder)
        except OSError:
            st = None
        if st is not None:
            why = ("belongs to" if st.st_uid == uid
                   else "is writable by a group of" if st.st_mode & 0o020 and st.st_gid in groups
                   else "is writable by everyone, without the sticky bit, so also by"
                   if st.st_mode & 0o002 and not st.st_mode & stat.S_ISVTX else "")
            if why:
                raise RenderError(f"--out-dir: {folder} {why} {user}, who could swap the files root writes "
                                  "there; render into a folder only root can change")
        parent = os.path.dirname(folder)
        if parent == folder:
            return
        folder = parent


def check_folder(flag: str, path: str, writer_uid: Optional[int] = None, writer_gid: Optional[int] = None,
                 user: str = "") -> None:
    """Refuse a file whose folder is missing (or, under --user, not writable by the listener's user)."""
    folder = os.path.dirname(os.path.abspath(path))
    try:
        st = os.stat(folder)
    except OSError as exc:
        raise RenderError(f"{flag}: folder {folder} {_why(exc)}; create it first") from None
    if not stat.S_ISDIR(st.st_mode):
        raise RenderError(f"{flag}: {folder} is not a folder")
    if writer_uid is None:
        return
    if not (st.st_uid == writer_uid or (st.st_gid == writer_gid and st.st_mode & 0o020) or st.st_mode & 0o002):
        raise RenderError(f"{flag}: {user} (the listener runs as {user}) cannot write in {folder}; "
                          f"give it a folder it can write, or leave {flag} out")


def check_no_link(path: str) -> None:
    """Refuse, before anything is written, a symlink (or a file with other hard links) where root writes."""
    try:
        st = os.lstat(path)
    except OSError:
        return
    if stat.S_ISLNK(st.st_mode):
        raise RenderError(f"{path}: is a symlink; refusing to follow or replace it (remove it, then render again)")
    if stat.S_ISREG(st.st_mode) and st.st_nlink > 1:
        raise RenderError(f"{path}: has other hard links; refusing to write through it (remove it, then render again)")


def _why(exc: OSError) -> str:
    return "does not exist" if exc.errno == errno.ENOENT else f"cannot be used ({exc.strerror or exc})"


def wanted(f: RenderedFile, owner: Owner) -> Tuple[int, Owner]:
    """Return (mode, owner) a rendered file gets: the user's group reads the secrets under --user."""
    if owner is None:
        return f.mode, None
    if f.mode & 0o077 == 0:
        return 0o640, (os.geteuid(), owner[1])
    return f.mode, (os.geteuid(), os.getegid())


def _differs(dirfd: int, name: str, data: bytes, mode: int, owner: Owner) -> bool:
    st = safefs.entry(dirfd, name)
    if st is None or not stat.S_ISREG(st.st_mode) or stat.S_IMODE(st.st_mode) != mode:
        return True
    if owner is not None and (st.st_uid, st.st_gid) != owner:
        return True
    try:
        return safefs.read_file(dirfd, name, len(data) + 1) != data
    except OSError:
        return True


class Folders:
    """Folder descriptors by path, opened once without following links, closed together."""

    def __init__(self) -> None:
        self.fds: Dict[str, int] = {}

    def __enter__(self) -> "Folders":
        return self

    def __exit__(self, *exc: object) -> None:
        for fd in self.fds.values():
            os.close(fd)
        self.fds.clear()

    def root(self, path: str, create: bool = False) -> int:
        path = os.path.abspath(path)
        if path not in self.fds:
            self.fds[path] = safefs.open_dir(path, create=create)
        return self.fds[path]

    def sub(self, parent: str, name: str, create: bool = False) -> int:
        path = os.path.join(os.path.abspath(parent), name)
        if path not in self.fds:
            self.fds[path] = safefs.open_subdir(self.fds[os.path.abspath(parent)], name, create, shown=path)
        return self.fds[path]

    def of(self, path: str) -> int:
        """The descriptor of the folder holding ``path`` (opened now when not managed)."""
        return self.root(os.path.dirname(os.path.abspath(path)))


def write(rendered, warn: Callable[[str], None] = lambda line: print(line, file=sys.stderr)) -> List[Tuple[str, bool]]:
    """Write the rendered files and make the folders and logs (see the module doc); return (path, changed)."""
    owner: Owner = rendered.owner
    root_owner = (os.geteuid(), os.getegid())
    out_dir = os.path.abspath(rendered.out_dir)
    changes: List[Tuple[str, bool]] = []
    with Folders() as folders:
        top = folders.root(out_dir, create=True)
        managed = [out_dir]
        if owner is not None:
            _take_back(top, owner, root_owner)
        for s in rendered.sidecars:
            folder = os.path.abspath(s.out_dir)
            if folder != out_dir:
                existed = safefs.entry(top, os.path.basename(folder)) is not None
                fd = folders.sub(out_dir, os.path.basename(folder), create=True)
                if not existed:
                    safefs.drop_acls(fd)
                    os.fchmod(fd, 0o755)
                if owner is not None:
                    _take_back(fd, owner, root_owner)
                managed.append(folder)
        for folder in managed:
            if not safefs.private_default_acl(folders.root(folder), owner[1] if owner else None):
                warn(f"warning: {folder}: the filesystem has no ACLs, so after a rotation supervisord "
                     "creates the log with its own umask: set umask=077 in [supervisord]")
        for f in rendered.files:
            mode, own = wanted(f, owner)
            dfd, name = folders.of(f.path), os.path.basename(f.path)
            changed = _differs(dfd, name, f.data, mode, own)
            if changed:
                safefs.write_file(dfd, name, f.data, mode, own)
            changes.append((f.path, changed))
        for s in rendered.sidecars:
            log_dir = os.path.dirname(os.path.abspath(s.log_file))
            if log_dir not in managed:
                st = os.stat(log_dir)
                if st.st_mode & 0o005:
                    warn(f"warning: {log_dir}: others can enter this folder and supervisord recreates "
                         f"{os.path.basename(s.log_file)} with its own umask at each rotation; make the folder "
                         "owner-only or set umask=077 in [supervisord]")
            log_owner = (root_owner[0], owner[1]) if owner is not None else None
            for log in (s.log_file, s.listener_log_file):  # supervisord opens both as root, following links
                if log:
                    safefs.prepare_log(folders.of(log), os.path.basename(log),
                                       0o640 if owner is not None else 0o600, log_owner, shown=log)
            if owner is not None:
                _runtime_dir(folders, s, owner)
    return changes


def _take_back(fd: int, owner: Tuple[int, int], root_owner: Tuple[int, int]) -> None:
    """Make a folder root reads configuration from root's again, and not writable by the user."""
    st = os.fstat(fd)
    if st.st_uid == owner[0] and owner[0] != root_owner[0]:
        os.fchown(fd, root_owner[0], -1)
    if stat.S_IMODE(st.st_mode) & 0o022:
        os.fchmod(fd, stat.S_IMODE(st.st_mode) & ~0o022)


def _runtime_dir(folders: Folders, s, owner: Tuple[int, int]) -> None:
    """Give the user ``run/`` for its state and history; ``state.json`` beside the config links there."""
    folder = os.path.abspath(s.out_dir)
    if os.path.dirname(os.path.abspath(s.state_file)) != os.path.join(folder, RUN_DIR):
        return
    existed = safefs.entry(folders.root(folder), RUN_DIR) is not None
    fd = folders.sub(folder, RUN_DIR, create=True)
    if not existed:
        safefs.drop_acls(fd)
    safefs.set_owner_mode(fd, owner, 0o755)
    if os.path.basename(s.state_file) == STATE_NAME:
        safefs.symlink(folders.root(folder), STATE_NAME, os.path.join(RUN_DIR, STATE_NAME))
