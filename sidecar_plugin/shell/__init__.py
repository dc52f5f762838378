"""The shells: everything that touches the world on behalf of the core.

Files (atomic writes, the state file, the rendered files), processes (``procs``,
the reaper), HTTP (the probe), supervisord (XML-RPC, the event-listener protocol)
and the loops that carry out the state machine's actions (the listener,
apply). They import the core and the shared names, never a face.
"""
