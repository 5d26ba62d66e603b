"""structlog setup: JSON lines in production, readable lines on a console,
and the fields every line about a SIP message carries (`about`)."""

from __future__ import annotations

import logging
import sys
from typing import Any

import structlog

from edgeproxy.sip import Message, Request, Response
from edgeproxy.transport.base import Source, Target


def about(msg: Message | None, peer: Source | Target | None = None) -> dict[str, object]:
    """call_id, method and where it came from (`source`) or goes (`target`), for lines
    that are written anyway (debug lines go through debug_about)."""
    fields: dict[str, object] = {}
    if msg is not None:
        fields["call_id"] = msg.get("Call-ID")  # compact `i` too
        if isinstance(msg, Request):
            fields["method"] = msg.method
        elif isinstance(msg, Response):
            cseq = msg.get("CSeq")
            fields["method"] = cseq.split()[-1] if cseq else None
            fields["status"] = msg.status
    if isinstance(peer, Source):
        fields["source"] = f"{peer.transport}:{peer.remote[0]}:{peer.remote[1]}"
    elif isinstance(peer, Target):
        fields["target"] = f"{peer.transport}:{peer.address[0]}:{peer.address[1]}"
    return fields


def debug_about(log: Any, event: str, msg: Message | None, peer: Source | Target | None = None,
                **fields: object) -> None:
    """A debug line about a message (a refusal: one per message in a flood), its
    fields built only when debug lines are written."""
    if log.is_enabled_for(logging.DEBUG):
        log.debug(event, **fields, **about(msg, peer))


def bind_instance(instance: str) -> None:
    """Every line of this process names its instance (with several workers, `worker` too)."""
    structlog.contextvars.bind_contextvars(instance=instance)


def setup_logging(level: str = "info", fmt: str = "json") -> None:
    numeric = getattr(logging, level.upper(), logging.INFO)
    logging.basicConfig(level=numeric, stream=sys.stderr, format="%(message)s")
    renderer = structlog.processors.JSONRenderer() if fmt == "json" else structlog.dev.ConsoleRenderer(colors=False)
    structlog.configure(
        processors=[
            structlog.contextvars.merge_contextvars,
            structlog.processors.add_log_level,
            structlog.processors.TimeStamper(fmt="iso", utc=True),
            renderer,
        ],
        wrapper_class=structlog.make_filtering_bound_logger(numeric),
        # one write per line: workers share stderr, and print() writes the newline apart
        logger_factory=structlog.WriteLoggerFactory(sys.stderr),
        cache_logger_on_first_use=True,
    )
