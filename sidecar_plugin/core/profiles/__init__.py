"""An AgentRoute profile: ``agentroute`` loads and validates it (``alias``), ``strictload`` parses
its text in bounded memory, ``typos`` names the key a misspelt one meant.
"""
