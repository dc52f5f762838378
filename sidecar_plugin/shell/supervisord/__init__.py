"""supervisord itself: its XML-RPC from outside (``supervisor``), the listener's line to it
(``link``), blocking start/stop/wait (``control``), the socket the ``sidecar`` rpcinterface
holds open inside it (``socket_holder``) and whether supervisor's private code is as that expects
(``shape``).
"""
