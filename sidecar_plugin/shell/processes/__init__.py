"""The sidecar's process tree, as the kernel tells it: who lives, who listens, who survives.

``procs`` reads the facts (psutil, /proc), ``watch`` waits for an exit (pidfd),
``tree_sample`` reads what the tree says of itself (stopped, CPU, workers),
``port_holders`` who answers on the port, ``tree_tracker`` tracks the tree,
``reap`` carries out the machine's ``Reap`` and ``inplace`` waits for a
tree replaced in place (``sidecar-plugin restart``).
"""
