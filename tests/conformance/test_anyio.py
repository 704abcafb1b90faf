"""anyio on MTCPLoop: its listeners accept on their own kernel socket (sock_accept +
connect_accepted_socket) and its clients use create_connection; both must ride the user-space
stack. Run on stock asyncio (oracle) and on MTCPLoop over both bases."""
from __future__ import annotations

import asyncio
import functools

import pytest

from tests.helpers import HAVE_UVLOOP, make_loop

anyio = pytest.importorskip("anyio")

pytestmark = pytest.mark.timeout(60)

KINDS = ["asyncio", pytest.param("mtcp_uvloop", marks=pytest.mark.skipif(not HAVE_UVLOOP, reason="uvloop not installed")),
         "mtcp_asyncio"]


def _run(kind, fn):
    return anyio.run(fn, backend="asyncio",
                     backend_options={"loop_factory": functools.partial(make_loop, kind)})


async def _echo_round_trips(tls=None, n_clients=5, family=None):
    from anyio.streams.tls import TLSListener

    listener = await anyio.create_tcp_listener(local_host="127.0.0.1")
    port = listener.extra(anyio.abc.SocketAttribute.local_port)
    if tls is not None:
        listener = TLSListener(listener, tls[0], standard_compatible=False)
    peers = []

    async def handle(stream):
        async with stream:
            peers.append(stream.extra(anyio.abc.SocketAttribute.remote_address))
            async for chunk in stream:
                await stream.send(chunk)

    async with anyio.create_task_group() as tg:
        tg.start_soon(listener.serve, handle)
        await anyio.wait_all_tasks_blocked()
        for i in range(n_clients):
            if tls is not None:
                stream = await anyio.connect_tcp("127.0.0.1", port, tls=True, ssl_context=tls[1],
                                                 tls_hostname="localhost", tls_standard_compatible=False)
            else:
                stream = await anyio.connect_tcp("127.0.0.1", port)
            async with stream:
                local = stream.extra(anyio.abc.SocketAttribute.local_address)
                for j in range(20):
                    msg = b"message %d/%d " % (i, j) * 50
                    await stream.send(msg)
                    got = b""
                    while len(got) < len(msg):
                        got += await stream.receive()
                    assert got == msg
                await stream.send_eof() if tls is None else None
            await anyio.wait_all_tasks_blocked()
            assert local in peers
        tg.cancel_scope.cancel()
    await listener.aclose()
    loop = asyncio.get_running_loop()
    return loop.stats() if hasattr(loop, "stats") else None


@pytest.mark.parametrize("kind", KINDS)
def test_anyio_tcp_echo_rides_the_stack(kind):
    st = _run(kind, _echo_round_trips)
    if kind.startswith("mtcp"):
        # 5 clients (create_connection) + 5 accepted by anyio's listener (sock_accept)
        assert st["loop.userspace_connected"] == 5, st
        assert st["loop.userspace_accepted"] == 5, st
        assert st["loop.kernel_connections"] == 0, st
        assert st["passive_opens"] >= 5 and st["active_opens"] >= 5, st
    else:
        assert st is None


@pytest.mark.parametrize("kind", KINDS)
def test_anyio_tls_echo_rides_the_stack(kind, tmp_path):
    from tests.helpers import ssl_contexts
    st = _run(kind, functools.partial(_echo_round_trips, ssl_contexts(tmp_path), 3))
    if kind.startswith("mtcp"):
        assert st["loop.userspace_connections"] == 6, st
        assert st["loop.kernel_connections"] == 0, st
