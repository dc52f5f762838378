"""The pure core: profiles, rendering, the listener's state machine, the state file's schema.

Nothing here touches a process, a socket, a clock or (but for reading a
profile) a file: inputs in, values out, so every rule is unit-tested as data.
It imports only the shared names (``sidecar_plugin.names``, ``errors``) and
never a shell or a face.

Folders by subject: ``profiles`` (an AgentRoute profile), ``options`` (every
option declared once; the listener's command line; what renders remember),
``render`` (the files a render writes), ``listener`` (the state machine),
``state`` (what the listener publishes and how readers find it).
"""
