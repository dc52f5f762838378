"""The event listener process: its threads, its engine and what it publishes.

``protocol`` speaks supervisord's event-listener protocol and runs the loop;
``engine`` owns the model and carries out the machine's actions; ``probe_schedule``
schedules the health ``probe``s; ``observe`` turns the tree's and the config's
samples into inputs, ``memory`` keeps the budget; ``supervisord_socket`` holds the rules when
supervisord owns the socket; ``publish`` writes the state, history and
``metrics``; ``redact`` and ``logs`` keep secrets out of all of it.
"""
