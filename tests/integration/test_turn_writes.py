"""The forwarding path's writes of one loop turn leave together at its end (ngm/dataplane/turn_writes.py),
over real sockets on the event loop ngm serves with."""

import asyncio
import socket

import pytest
import uvloop

from ngm.dataplane.turn_writes import turn_writes


class Owner(asyncio.Protocol):
    unflushed = False

    def connection_made(self, transport):
        self.transport = transport


async def connected() -> tuple[Owner, socket.socket]:
    ours, peer = socket.socketpair()
    peer.setblocking(False)
    _, owner = await asyncio.get_running_loop().create_connection(Owner, sock=ours)
    return owner, peer


def received(peer: socket.socket) -> bytes:
    try:
        return peer.recv(65536)
    except BlockingIOError:
        return b""


@pytest.fixture(params=["uvloop", "asyncio"])
def run(request):
    return uvloop.run if request.param == "uvloop" else asyncio.run


def test_a_turns_writes_leave_at_its_end_in_order_and_skip_closed_connections(run):
    async def main():
        loop = asyncio.get_running_loop()
        writes = turn_writes(loop)
        assert turn_writes(loop) is writes  # one per loop: the turn's writes of every connection together
        (a, peer_a), (b, peer_b), (gone, peer_gone) = [await connected() for _ in range(3)]
        seen_in_turn = loop.create_future()

        def one_turn():
            writes.write(a, b"a1")
            writes.write(b, b"b1")
            writes.write(gone, b"lost")
            writes.write(a, b"a2")
            gone.transport.close()
            seen_in_turn.set_result((received(peer_a), received(peer_b)))

        loop.call_soon(one_turn)
        assert await seen_in_turn == (b"", b"")  # nothing yet while the turn runs
        await asyncio.sleep(0.01)
        assert (received(peer_a), received(peer_b)) == (b"a1a2", b"b1")
        assert received(peer_gone) == b"" and not a.unflushed and not gone.unflushed
        for owner, peer in ((a, peer_a), (b, peer_b), (gone, peer_gone)):
            owner.transport.close()
            peer.close()

    run(main())


def test_flush_for_sends_what_waits_before_a_direct_write(run):
    async def main():
        writes = turn_writes(asyncio.get_running_loop())
        (a, peer_a), (b, peer_b) = await connected(), await connected()
        writes.flush_for(a)  # nothing waiting: nothing happens
        writes.write(a, b"end of an answer")
        writes.write(b, b"other")
        assert a.unflushed
        writes.flush_for(a)
        a.transport.write(b", then what follows")
        assert received(peer_a) == b"end of an answer, then what follows"
        assert received(peer_b) == b"other"  # the whole turn went: one wake-up for every peer
        for owner, peer in ((a, peer_a), (b, peer_b)):
            owner.transport.close()
            peer.close()

    run(main())
