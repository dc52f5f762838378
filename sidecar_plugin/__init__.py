"""Run AgentRoute's LiteLLM sidecar as a first-class supervisord program.

AgentRoute's gateway speaks the Anthropic wire protocol; until a native
translator replaces it, a LiteLLM proxy beside the gateway turns those requests
into OpenRouter calls. This package renders that proxy's configuration, keeps
it healthy under supervisord (an event listener that probes it, reaps orphaned
workers and records its lifecycle state) and lets clients query and control it.
"""

__version__ = "0.1.0"
