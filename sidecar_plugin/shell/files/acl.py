"""Folders' POSIX ACLs, as root sets them through extended attributes.

The log's folder gets a default ACL: supervisord (root) recreates the log at
each rotation with its own umask (0644 by default), and a default ACL is the
one thing that decides a new file's mode from its first byte. Others get
nothing; the sidecar's group (``--user``) may read. A folder render creates
drops the ACLs it inherited, so its own files follow the modes given them.
Kept apart from ``shell.files.safefs`` (opening and replacing files without
following links): this is the encoding of one xattr, not a path check.
"""

from __future__ import annotations

import errno
import os
import struct
from typing import Optional, Tuple

ACL_ACCESS = "system.posix_acl_access"
_ACL_DEFAULT = "system.posix_acl_default"
_ACL_USER_OBJ, _ACL_GROUP_OBJ, _ACL_GROUP, _ACL_MASK, _ACL_OTHER = 0x01, 0x04, 0x08, 0x10, 0x20
_ACL_UNDEFINED = 0xFFFFFFFF


def _acl(entries: Tuple[Tuple[int, int, int], ...]) -> bytes:
    return struct.pack("<I", 2) + b"".join(struct.pack("<HHI", tag, perm, ident) for tag, perm, ident in entries)


def private_default_acl(dirfd: int, reader_gid: Optional[int] = None) -> bool:
    """Make files created later in the folder owner-only (plus read for ``reader_gid``); False if unsupported.

    This is what keeps the log private when supervisord recreates it after a
    rotation with its own umask: a folder's default ACL overrides the umask.
    """
    entries = [(_ACL_USER_OBJ, 6, _ACL_UNDEFINED), (_ACL_GROUP_OBJ, 0, _ACL_UNDEFINED)]
    if reader_gid is not None:
        entries += [(_ACL_GROUP, 4, reader_gid), (_ACL_MASK, 4, _ACL_UNDEFINED)]
    entries.append((_ACL_OTHER, 0, _ACL_UNDEFINED))
    try:
        os.setxattr(dirfd, _ACL_DEFAULT, _acl(tuple(entries)))
    except OSError as exc:
        if exc.errno in (errno.EOPNOTSUPP, errno.ENOTSUP, errno.EINVAL):
            return False
        raise
    return True


def drop_acls(fd: int) -> None:
    """Remove the access and default ACLs a new folder inherited (its files follow the umask again)."""
    for name in (ACL_ACCESS, _ACL_DEFAULT):
        try:
            os.removexattr(fd, name)
        except OSError:
            pass
