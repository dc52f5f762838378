"""The operator's options: declared once, written on the listener's line, remembered between renders.

``table`` is the one table of every option (flag, parser, default, help, the
layers it reaches), ``values`` the parsers and bounds it uses; ``listen_args``
writes and parses the listener's command line with it; ``remember`` keeps the
options given to a render for the next one, and ``readback`` reads them back
from an older release's include. Light: clients and ``sidecar.getState``
inside supervisord parse the listener's line through here.
"""
