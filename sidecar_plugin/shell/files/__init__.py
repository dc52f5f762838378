"""Files another process reads, written so that it never reads one half-written or through a link.

``safefs`` opens without following links, ``atomic`` replaces, ``acl`` sets
folders' ACLs; ``statefile`` is the state file on disk, its history and lock;
``outfiles`` the render's files after writing (snapshots, versions);
``keyfile`` which file holds the master key; ``outlock`` one render at a time.
"""
