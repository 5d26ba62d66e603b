"""A proxied call leaves no reference cycles behind: when its transactions end, refcounting
frees everything it held. Cyclic garbage (once some 40 objects per call) is what made the
collector run often and slowly, and it held memory until then. The instance runs in this
process, on real UDP sockets, so the collector's findings can be read."""

from __future__ import annotations

import asyncio
import gc
import tomllib

from edgeproxy.app import EdgeProxy
from edgeproxy.config import from_dict
from tests.helpers import free_port, header_values
from tests.integration.test_proxy_flows import answer

CALLS = 20


class Peer(asyncio.DatagramProtocol):
    """A UDP endpoint of the test: what it receives, in order."""

    def __init__(self) -> None:
        self.received: asyncio.Queue[bytes] = asyncio.Queue()
        self.transport: asyncio.DatagramTransport | None = None

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        self.transport = transport  # type: ignore[assignment]

    def datagram_received(self, data: bytes, addr: tuple[str, int]) -> None:
        self.received.put_nowait(data)

    async def next(self, skip_100: bool = True) -> bytes:
        while True:
            data = await asyncio.wait_for(self.received.get(), 5)
            if not (skip_100 and data.startswith(b"SIP/2.0 100")):
                return data


def proxy_garbage() -> list[str]:
    """The types of the proxy's objects the cyclic collector would have to free now
    (with automatic collection off, nothing else has freed them)."""
    gc.set_debug(gc.DEBUG_SAVEALL)
    try:
        gc.collect()
        return sorted({type(o).__qualname__ for o in gc.garbage if type(o).__module__.startswith("edgeproxy")})
    finally:
        gc.set_debug(0)
        gc.garbage.clear()


async def test_calls_leave_no_reference_cycles() -> None:
    loop = asyncio.get_running_loop()
    uas_port = free_port()
    uac, uas = Peer(), Peer()
    await loop.create_datagram_endpoint(lambda: uac, local_addr=("127.0.0.1", 0))
    await loop.create_datagram_endpoint(lambda: uas, local_addr=("127.0.0.1", uas_port))
    assert uac.transport is not None and uas.transport is not None
    uac_port = uac.transport.get_extra_info("sockname")[1]
    config = tomllib.loads(f'[server]\nlisten = ["udp:127.0.0.1:0"]\n[limits]\ntransaction_wait = 0.5\n'
                          f'[dispatcher]\nprobe_interval = 60.0\n[[dispatcher.backends]]\n'
                          f'uri = "sip:127.0.0.1:{uas_port}"\n[log]\nlevel = "warning"\n')
    edge = EdgeProxy(from_dict(config))
    await edge.start()
    gc.collect()
    gc.disable()
    try:
        proxy = edge.transports.bound[0][1]
        probe = await uas.next()  # the dispatcher's first probe: the backend is up
        uas.transport.sendto(answer(probe.decode(), "200 OK", f"sip:127.0.0.1:{uas_port}").encode(), proxy)
        for n in range(CALLS):
            await one_call(n, uac, uas, uac_port, uas_port, proxy)
        garbage_while_open = proxy_garbage()
        for _ in range(100):  # until every transaction has ended (Timers J, K, L, M: 0.5 s)
            if not len(edge.transactions):
                break
            await asyncio.sleep(0.1)
        assert len(edge.transactions) == 0
        assert garbage_while_open == [] and proxy_garbage() == []
    finally:
        gc.enable()
        await edge.close()
        uac.transport.close()
        uas.transport.close()


async def one_call(n: int, uac: Peer, uas: Peer, uac_port: int, uas_port: int, proxy: tuple[str, int]) -> None:
    """INVITE/180/200/ACK/BYE/200 through the proxy, as a SIPp UAC and UAS would."""
    assert uac.transport is not None and uas.transport is not None
    contact = f"sip:service@127.0.0.1:{uas_port}"
    head = (f"Via: SIP/2.0/UDP 127.0.0.1:{uac_port};branch=z9hG4bK-{n}-%s;rport\r\n"
            f"From: <sip:caller@127.0.0.1:{uac_port}>;tag=c{n}\r\nTo: <sip:service@127.0.0.1:{proxy[1]}>%s\r\n"
            f"Call-ID: cycles-{n}\r\nCSeq: %s\r\nMax-Forwards: 70\r\n")
    invite = (f"INVITE sip:service@127.0.0.1:{proxy[1]} SIP/2.0\r\n" + head % ("inv", "", "1 INVITE")
              + f"Contact: <sip:caller@127.0.0.1:{uac_port}>\r\nContent-Length: 0\r\n\r\n")
    uac.transport.sendto(invite.encode(), proxy)
    forwarded = (await uas.next()).decode()
    assert forwarded.startswith("INVITE")
    for status in ("180 Ringing", "200 OK"):
        uas.transport.sendto(answer(forwarded, status, contact, "s1").encode(), proxy)
    assert (await uac.next()).startswith(b"SIP/2.0 180")
    ok = await uac.next()
    assert ok.startswith(b"SIP/2.0 200")
    routes = "".join(f"Route: {value}\r\n" for value in header_values(ok, "Record-Route"))
    for method, cseq in (("ACK", "1 ACK"), ("BYE", "2 BYE")):
        request = (f"{method} {contact} SIP/2.0\r\n" + head % (method, ";tag=s1", cseq) + routes
                   + "Content-Length: 0\r\n\r\n")
        uac.transport.sendto(request.encode(), proxy)
        relayed = (await uas.next()).decode()
        assert relayed.startswith(method)
    uas.transport.sendto(answer(relayed, "200 OK", contact).encode(), proxy)
    assert (await uac.next()).startswith(b"SIP/2.0 200")
