"""Transport names (the implementation is compiled: mtcp_loop/_aio/core.pyx).

MTCPTransport: an asyncio transport over one connection of the user-space TCP engine, with the
semantics of asyncio's selector socket transport (the conformance suite's oracle); PseudoSocket:
what ``get_extra_info('socket')`` and ``Server.sockets`` return.
"""
from ._aio.core import MTCPTransport, PseudoSocket, os_error

__all__ = ["MTCPTransport", "PseudoSocket", "os_error"]
