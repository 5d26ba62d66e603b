"""The edge's defences as pure parts: window counters, scanner patterns, the
guard's decisions, bans (memory and Redis, one suite), the authenticator's
brute-force hooks and the per-source transaction bound."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator

import pytest

from edgeproxy.security.guard import Guard, GuardPolicy
from edgeproxy.security.ratelimit import WindowCounter
from edgeproxy.security.scanners import DEFAULT_SCANNERS, ScannerMatcher
from edgeproxy.sip import Request, SipError, make_response, parse_message
from edgeproxy.sip.transaction import ServerTransaction
from edgeproxy.sip.transactions import TransactionLayer
from edgeproxy.state.bans import BanList, MemoryBanList, RedisBanList
from edgeproxy.state.nonces import MemoryNonceCounter
from edgeproxy.state.redis_store import connect
from edgeproxy.state.users import MemoryUserStore, credentials_for_password
from registrar.auth import Authenticator
from tests.helpers import digest_header


class Clock:
    def __init__(self) -> None:
        self.now = 1_800_000_000.0

    def __call__(self) -> float:
        return self.now


# -- window counter ------------------------------------------------------------------
def test_counter_fires_once_when_the_limit_is_passed() -> None:
    c = WindowCounter(limit=3, window=2.0)
    assert [c.hit("a", 0.0) for _ in range(6)] == [False, False, False, True, False, False]
    assert not c.hit("b", 0.1)  # keys are counted apart


def test_counter_starts_each_window_empty() -> None:
    c = WindowCounter(limit=2, window=1.0)
    assert not any(c.hit("a", t) for t in (0.0, 0.5, 1.0, 1.5, 2.0, 2.5))  # two per window: never past
    assert c.hit("a", 2.6) is True


def test_counter_tracks_a_bounded_number_of_keys() -> None:
    c = WindowCounter(limit=1, window=10.0, max_keys=100)
    for i in range(1000):
        c.hit(f"10.0.{i // 256}.{i % 256}", 0.0)
    assert len(c) == 100
    assert c.hit("10.0.0.0", 0.1)  # a tracked key still trips


# -- scanners ------------------------------------------------------------------------
@pytest.mark.parametrize("agent", ["friendly-scanner", "sipvicious 0.3.4", "VaxSIPUserAgent/3.1", "sipcli/v1.8",
                                   "Friendly-Scanner"])
def test_scanner_user_agents_are_recognised(agent: str) -> None:
    assert ScannerMatcher(DEFAULT_SCANNERS).matches(agent)


@pytest.mark.parametrize("agent", ["Linphone/5.2", "Zoiper rv2.10", "baresip v3.10", "JsSIP 3.10", "Asterisk PBX 20"])
def test_phones_are_not_scanners(agent: str) -> None:
    assert not ScannerMatcher(DEFAULT_SCANNERS).matches(agent)


# -- guard -----------------------------------------------------------------------------
def guard(clock: Clock, trusted: frozenset[str] = frozenset(), **policy: object) -> Guard:
    return Guard(GuardPolicy(**policy), MemoryBanList(clock=clock), lambda ip: ip in trusted, clock)  # type: ignore[arg-type]


def test_flooding_source_is_banned_for_ban_time() -> None:
    clock = Clock()
    g = guard(clock, rate_limit=5, rate_window=1.0, ban_time=30.0)
    assert all(g.admit("203.0.113.9") for _ in range(5))
    assert not g.admit("203.0.113.9")
    assert g.admit("203.0.113.10")  # other sources are unaffected
    clock.now += 10
    assert not g.admit("203.0.113.9")  # still banned in a later window
    clock.now += 21
    assert g.admit("203.0.113.9")


def test_trusted_sources_are_never_rate_limited() -> None:
    g = guard(Clock(), trusted=frozenset({"10.0.0.1"}), rate_limit=2)
    assert all(g.admit("10.0.0.1") for _ in range(100))


def test_rate_limit_off_by_default() -> None:
    g = guard(Clock())
    assert all(g.admit("203.0.113.9") for _ in range(10_000))


def test_failed_digests_ban_the_source() -> None:
    clock = Clock()
    g = guard(clock, auth_fail_limit=3)
    for _ in range(3):
        g.auth_failed("alice", "198.51.100.7")
    assert g.admit("198.51.100.7")
    g.auth_failed("alice", "198.51.100.7")
    assert not g.admit("198.51.100.7")
    assert not g.locked("alice")  # the per-user limit is off


def test_failed_digests_for_one_user_lock_it() -> None:
    g = guard(Clock(), auth_fail_user_limit=4)
    for i in range(5):
        g.auth_failed("alice", f"198.51.100.{i}")  # a distributed guess, one try per address
    assert g.locked("alice") and not g.locked("bob")
    assert all(g.admit(f"198.51.100.{i}") for i in range(5))  # the per-source limit is off


@pytest.mark.parametrize("action", ["drop", "403"])
def test_scanner_action(action: str) -> None:
    g = guard(Clock(), scanner_action=action, scanner_user_agents=DEFAULT_SCANNERS)
    assert g.scanner("friendly-scanner") == action
    assert g.scanner("Linphone/5.2") is None and g.scanner(None) is None
    assert guard(Clock()).scanner("friendly-scanner") is None  # off by default


# -- bans: one suite, both backends ------------------------------------------------------
@pytest.fixture(params=["memory", "redis"])
async def bans(request: pytest.FixtureRequest) -> AsyncIterator[tuple[BanList, Clock]]:
    clock = Clock()
    if request.param == "memory":
        ban_list: BanList = MemoryBanList(max_entries=50, clock=clock)
    else:
        client = connect(request.getfixturevalue("redis_server"), timeout=None)
        await client.flushdb()
        ban_list = RedisBanList(client, max_entries=50, clock=clock)
    await ban_list.start()
    yield ban_list, clock
    await ban_list.close()


async def test_ban_holds_for_its_time(bans: tuple[BanList, Clock]) -> None:
    ban_list, clock = bans
    assert not ban_list.banned("ip:192.0.2.1")
    ban_list.ban("ip:192.0.2.1", 60, "test")
    assert ban_list.banned("ip:192.0.2.1") and not ban_list.banned("ip:192.0.2.2")
    clock.now += 61
    assert not ban_list.banned("ip:192.0.2.1")


async def test_bans_are_bounded(bans: tuple[BanList, Clock]) -> None:
    ban_list, _ = bans
    for i in range(200):
        ban_list.ban(f"ip:192.0.2.{i}", 60, "test")
    assert len(ban_list) == 50
    assert ban_list.banned("ip:192.0.2.199")  # the newest are kept


async def wait_until(predicate: object, timeout: float = 3.0) -> bool:
    deadline = asyncio.get_running_loop().time() + timeout
    while asyncio.get_running_loop().time() < deadline:
        if predicate():  # type: ignore[operator]
            return True
        await asyncio.sleep(0.02)
    return False


async def test_redis_bans_reach_every_instance(redis_server: str) -> None:
    first = RedisBanList(connect(redis_server, timeout=None), prefix="t1:")
    second = RedisBanList(connect(redis_server, timeout=None), prefix="t1:")
    await first.start()
    await second.start()
    try:
        first.ban("ip:203.0.113.50", 60, "flood")
        assert await wait_until(lambda: second.banned("ip:203.0.113.50"))
        second.ban("user:alice", 60, "failed authentication")
        assert await wait_until(lambda: first.banned("user:alice"))
        late = RedisBanList(connect(redis_server, timeout=None), prefix="t1:")
        await late.start()  # an instance started afterwards loads the bans in force
        assert late.banned("ip:203.0.113.50") and late.banned("user:alice")
        await late.close()
        other = RedisBanList(connect(redis_server, timeout=None), prefix="t2:")
        await other.start()  # another deployment on the same Redis is not affected
        assert not other.banned("ip:203.0.113.50")
        await other.close()
    finally:
        await first.close()
        await second.close()


# -- the authenticator's hooks ---------------------------------------------------------
def register(authorization: str = "") -> Request:
    lines = ["REGISTER sip:example.com SIP/2.0", "Via: SIP/2.0/UDP 10.0.0.5:5060;branch=z9hG4bKa1",
             "From: <sip:alice@example.com>;tag=1", "To: <sip:alice@example.com>", "Call-ID: auth-1",
             "CSeq: 1 REGISTER", "Max-Forwards: 70"]
    if authorization:
        lines.append(f"Authorization: {authorization}")
    msg = parse_message(("\r\n".join(lines) + "\r\nContent-Length: 0\r\n\r\n").encode())
    assert isinstance(msg, Request)
    return msg


async def attempt(auth: Authenticator, password: str, nc: int) -> int | str:
    try:
        await auth.authenticate(register())
    except SipError as challenge:
        value = dict(challenge.headers)["WWW-Authenticate"]
    try:
        return await auth.authenticate(register(digest_header(value, "alice", password, "REGISTER",
                                                              "sip:example.com", nc=nc)), source_ip="10.0.0.5")
    except SipError as err:
        return err.status


async def test_wrong_digests_are_reported_and_a_locked_user_cannot_log_in() -> None:
    clock = Clock()
    g = guard(clock, auth_fail_user_limit=2)
    users = MemoryUserStore({"alice": credentials_for_password("alice", "example.com", "s3cret")})
    auth = Authenticator("example.com", users, MemoryNonceCounter(), b"k" * 32, 300, ["MD5"], clock, guard=g)
    assert await attempt(auth, "s3cret", 1) == "alice"
    assert [await attempt(auth, "guess", n) for n in (2, 3)] == [401, 401]
    assert not g.locked("alice")
    assert await attempt(auth, "guess", 4) == 401
    assert g.locked("alice")
    assert await attempt(auth, "s3cret", 5) == 401  # the right password no longer helps


# -- per-source transactions ---------------------------------------------------------------
def options(branch: str) -> Request:
    msg = parse_message((f"OPTIONS sip:example.com SIP/2.0\r\nVia: SIP/2.0/UDP 10.0.0.5:5060;branch=z9hG4bK{branch}\r\n"
                         "From: <sip:a@example.com>;tag=1\r\nTo: <sip:example.com>\r\nCall-ID: o1\r\n"
                         "CSeq: 1 OPTIONS\r\nMax-Forwards: 70\r\nContent-Length: 0\r\n\r\n").encode())
    assert isinstance(msg, Request)
    return msg


def test_one_source_cannot_fill_the_transaction_table() -> None:
    layer = TransactionLayer(max_transactions=100, max_per_origin=3)
    opened = [layer.receive_request(options(f"s{i}"), False, 0.0, None, "10.0.0.5") for i in range(3)]
    with pytest.raises(SipError) as info:
        layer.receive_request(options("s3"), False, 0.0, None, "10.0.0.5")
    assert info.value.status == 503
    layer.receive_request(options("o1"), False, 0.0, None, "10.0.0.6")  # another source still gets in
    first = opened[0][0].txn
    assert first is not None
    assert isinstance(first, ServerTransaction)
    layer.respond(first, make_response(first.request, 200), 0.0)
    layer.expire(100.0)  # Timer J: the finished transactions leave the table
    layer.receive_request(options("s4"), False, 100.0, None, "10.0.0.5")  # its slot was given back
    with pytest.raises(SipError):
        layer.receive_request(options("s5"), False, 100.0, None, "10.0.0.5")
