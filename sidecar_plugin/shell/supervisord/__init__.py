"""supervisord itself: its XML-RPC from outside (``supervisor``), the listener's line to it
(``link``), blocking start/stop/wait (``control``) and the socket the
``sidecar`` rpcinterface holds open inside it (``held``).
"""
