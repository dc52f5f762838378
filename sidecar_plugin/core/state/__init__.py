"""What the listener publishes and how a reader finds and shows it.

``schema`` is the state file's fields, ``endpoint`` the base URL and key file a
client uses, ``prometheus`` the Prometheus text, ``discovery`` a program's state file
from supervisord's copy of the listener's line, ``text`` what is fit to print.
Light: the client and ``sidecar.getState`` load these.
"""
