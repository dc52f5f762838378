"""LiteLLM's launcher on a listening socket supervisord owns: run this folder, not this package.

``python <this folder> --config C ...`` runs ``__main__.py`` with LiteLLM's own
interpreter; the folder holds nothing else (but ``worker_replace``, the
replacement of one chosen or hung worker, ``hang_watch``, which tells a hung
worker, ``drain_connections``, drains that reset no kept-alive connection, and
``reexec``, the tree replaced in place, ``multiproc_metrics``, LiteLLM's
Prometheus metrics counted over the workers, and ``warmup``, a new worker's app
exercised in-process before it accepts), so nothing in it shadows a module
LiteLLM imports.
"""
