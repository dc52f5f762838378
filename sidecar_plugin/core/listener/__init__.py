"""The listener's decisions, as data: the state machine and everything it is made of.

``machine.step`` relates a ``model.Model`` and an input (``inputs``, parsed from
supervisord's ``events``) to the next model and the ``actions`` the shell carries
out; it dispatches to ``lifecycle`` (supervisord's word), ``health`` (running,
hung, the start timeout), ``recovery`` (a listener's restart), ``retry`` and
``identity``, all built of ``transitions``. ``budget`` decides which worker a memory
budget replaces; ``counters`` is what the listener counts.
"""
