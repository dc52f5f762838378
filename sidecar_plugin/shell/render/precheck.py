"""Refuse, before anything is written, a user or a place that would make root's writes unsafe.

``shell.render.filewrite`` writes as root into folders the sidecar's user
(``--user``) can see; these checks run first (``shell.render.build``), so a render
that would hand the user a way to swap root's files, or write through a
link, fails whole, with one line naming the option, and writes nothing.
``shell.render.filewrite`` offers them under its own name too, as build calls them.
"""

from __future__ import annotations

import errno
import grp
import os
import pwd
import stat
from typing import Dict, Optional, Sequence, Set

from sidecar_plugin.core.render.terms import RenderError, RenderOptions
from sidecar_plugin.names import LITELLM_YAML, MASTER_KEY, RECORD_NAME, SIDECAR_CONF
from sidecar_plugin.shell.files.statefile import history_path


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


def check_distinct(out_dir: str, metrics_file: Optional[str], sidecars: Sequence[RenderOptions]) -> None:
    """Refuse a state, log or metrics file that is another file of the render (or of another sidecar).

    ``--state-file OUT/sidecar.conf`` would have the listener replace
    supervisord's include with JSON, and supervisord would not start again.
    """
    out_dir = os.path.abspath(out_dir)
    taken: Dict[str, str] = {os.path.join(out_dir, n): n for n in (SIDECAR_CONF, RECORD_NAME, MASTER_KEY)}
    taken.update({s.config_path: LITELLM_YAML for s in sidecars})
    wanted = [("--state-file", s.state_file) for s in sidecars] + [("--log-file", s.log_file) for s in sidecars]
    wanted += [("--state-file", history_path(s.state_file)) for s in sidecars]
    wanted += [("--out-dir", s.listener_log_file) for s in sidecars[:1]]
    wanted += [("--metrics-file", os.path.abspath(metrics_file))] if metrics_file else []
    for flag, path in wanted:
        path = os.path.abspath(path)
        if path in taken:
            raise RenderError(f"{flag}: {path} is also {taken[path]}; give each file a place of its own")
        taken[path] = f"the {flag[2:]}"
