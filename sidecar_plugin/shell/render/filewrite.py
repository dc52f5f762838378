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

import os
import stat
import sys
from typing import Any, Callable, Dict, List, Optional, Tuple

from sidecar_plugin.core.render.terms import RenderOptions, RenderedFile
from sidecar_plugin.names import TRAFFIC_METRICS_DIR
from sidecar_plugin.shell.files import acl, safefs

__all__ = ["Folders", "RUN_DIR", "STATE_NAME", "Owner", "wanted", "write"]

RUN_DIR = "run"
STATE_NAME = "state.json"

Owner = Optional[Tuple[int, int]]


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


def write(rendered: Any,
          warn: Callable[[str], None] = lambda line: print(line, file=sys.stderr)) -> List[Tuple[str, bool]]:
    """Write the rendered files and make the folders and logs (see the module doc); return (path, changed).

    ``rendered`` is ``shell.render.build``'s ``Rendered`` (``Any``: build imports this module). The order
    matters: a folder is root's again before anything is written in it, and has its default ACL
    before the logs are created in it.
    """
    owner: Owner = rendered.owner
    root_owner = (os.geteuid(), os.getegid())
    with Folders() as folders:
        managed = _make_folders(folders, os.path.abspath(rendered.out_dir), rendered.sidecars, owner, root_owner)
        _private_acls(folders, managed, owner, warn)
        changes = _write_files(folders, rendered.files, owner)
        for s in rendered.sidecars:
            _prepare_logs(folders, s, managed, owner, root_owner, warn)
            if owner is not None:
                _runtime_dir(folders, s, owner)
            if s.traffic_metrics:
                _metrics_dir(folders, s, owner)
    return changes


def _make_folders(folders: Folders, out_dir: str, sidecars: Tuple[RenderOptions, ...], owner: Owner,
                  root_owner: Tuple[int, int]) -> List[str]:
    """Open (create) the out-dir and each sidecar's folder, root's again under --user; return them."""
    top = folders.root(out_dir, create=True)
    managed = [out_dir]
    if owner is not None:
        _take_back(top, owner, root_owner)
    for s in sidecars:
        folder = os.path.abspath(s.out_dir)
        if folder != out_dir:
            existed = safefs.entry(top, os.path.basename(folder)) is not None
            fd = folders.sub(out_dir, os.path.basename(folder), create=True)
            if not existed:
                acl.drop_acls(fd)
                os.fchmod(fd, 0o755)
            if owner is not None:
                _take_back(fd, owner, root_owner)
            managed.append(folder)
    return managed


def _private_acls(folders: Folders, managed: List[str], owner: Owner, warn: Callable[[str], None]) -> None:
    """Give each managed folder the default ACL that keeps a rotated log private; warn where none can be."""
    for folder in managed:
        if not acl.private_default_acl(folders.root(folder), owner[1] if owner else None):
            warn(f"warning: {folder}: the filesystem has no ACLs, so after a rotation supervisord "
                 "creates the log with its own umask: set umask=077 in [supervisord]")


def _write_files(folders: Folders, files: Tuple[RenderedFile, ...], owner: Owner) -> List[Tuple[str, bool]]:
    """Replace each file that differs (bytes, mode or owner); return (path, changed) in order."""
    changes: List[Tuple[str, bool]] = []
    for f in files:
        mode, own = wanted(f, owner)
        dfd, name = folders.of(f.path), os.path.basename(f.path)
        changed = _differs(dfd, name, f.data, mode, own)
        if changed:
            safefs.write_file(dfd, name, f.data, mode, own)
        changes.append((f.path, changed))
    return changes


def _prepare_logs(folders: Folders, s: RenderOptions, managed: List[str], owner: Owner,
                  root_owner: Tuple[int, int], warn: Callable[[str], None]) -> None:
    """Create a sidecar's logs owner-only; warn of a log folder others can enter that is not ours."""
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


def _take_back(fd: int, owner: Tuple[int, int], root_owner: Tuple[int, int]) -> None:
    """Make a folder root reads configuration from root's again, and not writable by the user."""
    st = os.fstat(fd)
    if st.st_uid == owner[0] and owner[0] != root_owner[0]:
        os.fchown(fd, root_owner[0], -1)
    if stat.S_IMODE(st.st_mode) & 0o022:
        os.fchmod(fd, stat.S_IMODE(st.st_mode) & ~0o022)


def _runtime_dir(folders: Folders, s: RenderOptions, owner: Tuple[int, int]) -> None:
    """Give the user ``run/`` for its state and history; ``state.json`` beside the config links there."""
    folder = os.path.abspath(s.out_dir)
    if os.path.dirname(os.path.abspath(s.state_file)) != os.path.join(folder, RUN_DIR):
        return
    existed = safefs.entry(folders.root(folder), RUN_DIR) is not None
    fd = folders.sub(folder, RUN_DIR, create=True)
    if not existed:
        acl.drop_acls(fd)
    safefs.set_owner_mode(fd, owner, 0o755)
    if os.path.basename(s.state_file) == STATE_NAME:
        safefs.symlink(folders.root(folder), STATE_NAME, os.path.join(RUN_DIR, STATE_NAME))


def _metrics_dir(folders: Folders, s: RenderOptions, owner: Owner) -> None:
    """Make the sidecar's prometheus_client folder, its user's alone (the launcher empties it at each start).

    Made here, not only by the launcher: LiteLLM's CLI (an IPv6 host, a wrapper)
    with one worker uses the folder without making it.
    """
    parent = os.path.abspath(s.out_dir)
    for name, mode in ((RUN_DIR, 0o755), (TRAFFIC_METRICS_DIR, 0o700)):
        existed = safefs.entry(folders.root(parent), name) is not None
        fd = folders.sub(parent, name, create=True)
        if not existed:  # made in the out-dir, it got the logs' default ACL: rw for files, no way through
            acl.drop_acls(fd)
            os.fchmod(fd, mode)
        parent = os.path.join(parent, name)
    safefs.set_owner_mode(fd, owner, 0o700)
