"""RFC 4475 torture tests: every message gets the outcome the manifest expects.

The outcome is what the sans-IO core decides, as an edge proxy runs it:
parse, validate, then for a request the proxy checks (Proxy-Require, hop
count), for a response the next hop after our own Via.
"""

from __future__ import annotations

import csv
import pathlib

import pytest

from edgeproxy.sip import (
    Request,
    Response,
    SipError,
    StreamFramer,
    check_forwardable,
    error_response,
    parse_message,
    validate,
)
from edgeproxy.sip.destinations import response_address
from edgeproxy.sip.framing import KEEPALIVE
from edgeproxy.sip.parser import split_message
from tests.conftest import CONFORMANCE

# Outcomes decided above the core: the registrar challenges regaut01 (401),
# so the core must hand it over as a well-formed request.
DECIDED_ABOVE_CORE = {"401": "process"}


def manifest() -> list[dict[str, str]]:
    path = CONFORMANCE / "manifest.tsv"
    if not path.exists():
        return []
    with path.open() as f:
        return list(csv.DictReader(f, delimiter="\t"))


def core_outcome(data: bytes) -> tuple[str, SipError | None]:
    try:
        msg = parse_message(data)
        validate(msg)
        if isinstance(msg, Response):
            if len(msg.vias) < 2:
                return "process", None  # a response to us: consumed here
            msg.remove_first_value("Via")
            return ("process" if response_address(msg.top_via) else "drop"), None
        check_forwardable(msg)
        return "process", None
    except SipError as err:
        if isinstance(err.message, Response) or (err.message is None and data.startswith(b"SIP/")):
            return "drop", err
        return str(err.status), err


@pytest.mark.parametrize("row", manifest(), ids=lambda r: pathlib.Path(r["file"]).stem)
def test_conformance_message(conformance_dir: pathlib.Path, row: dict[str, str]) -> None:
    data = (conformance_dir / row["file"]).read_bytes()
    expected = {DECIDED_ABOVE_CORE.get(e, e) for e in row["expected_response"].split("|")}
    outcome, err = core_outcome(data)
    assert outcome in expected, f"{row['file']}: got {outcome} ({err and err.reason}), want {expected}"
    if err is not None and outcome not in ("drop", "process"):
        # a refused request can be answered, with its status and its identifiers
        assert isinstance(err.message, Request)
        resp = error_response(err)
        assert resp is not None and resp.status == int(outcome)
        echoed = split_message(resp.to_bytes())
        assert echoed.raw_lines("Via") == err.message.raw_lines("Via")
        assert echoed.get("Call-ID") == err.message.get("Call-ID")


def test_manifest_covers_corpus(conformance_dir: pathlib.Path) -> None:
    listed = {row["file"] for row in manifest()}
    on_disk = {f"rfc4475/{p.name}" for p in (conformance_dir / "rfc4475").glob("*.dat")}
    assert on_disk <= listed


def test_bad_extension_lists_unsupported(conformance_dir: pathlib.Path) -> None:
    req = parse_message((conformance_dir / "rfc4475/bext01.dat").read_bytes())
    with pytest.raises(SipError) as info:
        check_forwardable(req)
    resp = error_response(info.value, req)
    assert resp is not None and resp.status == 420
    assert resp.get("Unsupported") == "noProxiesSupportThis, norDoAnyProxiesSupportThis"


def test_trailing_datagram_bytes_are_ignored(conformance_dir: pathlib.Path) -> None:
    msg = parse_message((conformance_dir / "rfc4475/dblreq.dat").read_bytes())
    assert isinstance(msg, Request) and msg.method == "REGISTER" and msg.body == b""


def _streams() -> list[tuple[str, int]]:
    path = CONFORMANCE / "stream.tsv"
    if not path.exists():
        return []
    with path.open() as f:
        return [(r["file"], int(r["messages"])) for r in csv.DictReader(f, delimiter="\t")]


@pytest.mark.parametrize("chunk", [1, 2, 3, 5, 7, 13, 64, 257, 1500, 65536])
@pytest.mark.parametrize("stream_file,count", _streams())
def test_stream_framing(conformance_dir: pathlib.Path, stream_file: str, count: int, chunk: int) -> None:
    data = (conformance_dir / stream_file).read_bytes()
    framer = StreamFramer()
    frames: list[bytes] = []
    for i in range(0, len(data), chunk):
        frames += framer.feed(data[i : i + chunk])
    messages = [f for f in frames if f != KEEPALIVE]
    assert len(messages) == count
    assert framer.buffered == 0
    for m in messages:
        split_message(m, stream=True)
