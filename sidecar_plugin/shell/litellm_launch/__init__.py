"""LiteLLM's launcher on a listening socket supervisord owns: run this folder, not this package.

``python <this folder> --config C ...`` runs ``__main__.py`` with LiteLLM's own
interpreter; the folder holds nothing else (but ``worker_replace``, the
replacement of one chosen worker on request, and ``multiproc_metrics``, LiteLLM's
Prometheus metrics counted over the workers), so nothing in it shadows a module
LiteLLM imports.
"""
