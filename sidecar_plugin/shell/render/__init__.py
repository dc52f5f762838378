"""``render`` and ``apply``: from the operator's options to files in place and supervisord in line.

``build`` gathers what render needs (``remembered``: the request; ``previous``:
what an earlier render left; ``executables``: where LiteLLM and the CLI are, and
what ``--binary`` is; ``plugin_host``: whether the supervisord that reads the
include can load the plugin that holds the port) and renders in memory;
``precheck`` and ``filewrite`` put the files in place.
``apply`` then updates supervisord: ``validate`` checks the config with LiteLLM,
``changes`` says what to restart and why (``installed``: a LiteLLM installed
anew), ``reload`` replaces workers one at a time, ``relaunch`` the whole tree in
place (a new ``launch.json``), ``settle`` waits for running.
"""
