"""The listening socket of a uvicorn server in the bot's loop (the webhook, the emulator)."""

from __future__ import annotations

import socket


def bind_tcp(host: str, port: int) -> socket.socket:
    """A TCP socket bound to `host:port` (0 = a free one) for uvicorn to listen on.

    Raises OSError when the port is taken, with nothing left open. proto=IPPROTO_TCP
    matters: asyncio only sets TCP_NODELAY on sockets that say they are TCP, and without it
    every response waits ~40 ms for a delayed ACK (Nagle). SO_REUSEADDR lets a restarted
    process take its port back while the old connections are still in TIME_WAIT.
    """
    sock = socket.socket(socket.AF_INET, socket.SOCK_STREAM, socket.IPPROTO_TCP)
    try:
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        sock.bind((host, port))
    except OSError:
        sock.close()
        raise
    return sock
