"""The shells: everything that touches the world on behalf of the core.

They import the core and the shared names, never a face. Folders by subject:
``files`` (atomic writes, the state file, the rendered files), ``processes``
(process facts, the reaper), ``supervisord`` (XML-RPC, blocking control),
``listener`` (the event listener's threads and engine, the probe) and
``render`` (render and apply). ``litellm_launch`` stays where it is: an
installed release's include runs that folder by path under LiteLLM's own
interpreter.
"""
