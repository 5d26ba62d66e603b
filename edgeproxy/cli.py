"""`edgeproxy run [--config FILE]` and `edgeproxy check-config FILE`."""

from __future__ import annotations

import argparse
import asyncio
import gc
import signal
import sys

import structlog
import uvloop

from edgeproxy.config import Config, ConfigError, load
from edgeproxy.observability.logging import bind_instance, setup_logging
from edgeproxy.state.users import UsersFileError
from edgeproxy.transport.workers import WorkerRole

EXIT_CONFIG = 2


def settle_gc() -> None:
    """Once started: everything built so far lives as long as the process, so it is kept
    out of the collector's way, and young objects are collected less often (messages die
    young and transactions break their own cycles when they end)."""
    gc.freeze()
    gc.set_threshold(50_000, 20, 20)


def _load(path: str | None) -> Config:
    return load(path) if path else Config()


async def serve(config: Config, path: str | None = None, worker: WorkerRole | None = None) -> int:
    """One instance, or one of its workers."""
    from edgeproxy.app import EdgeProxy
    from edgeproxy.observability.http import OpsServer
    from edgeproxy.supervisor import ops_name

    log = structlog.get_logger("edgeproxy")
    app = EdgeProxy(config, worker)
    ops = OpsServer(app.readiness, app.active_calls, app.metrics)
    # a worker answers its supervisor, which answers the [metrics] port for all of them
    ops_listen = config.metrics.listen if worker is None else ops_name(worker.group, worker.number)
    try:
        await app.start()
        if ops_listen:
            await ops.start(ops_listen)
    except OSError as err:
        log.error("cannot listen", error=str(err))
        await ops.close()
        await app.close()
        return 1
    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    for sig in (signal.SIGTERM, signal.SIGINT):
        loop.add_signal_handler(sig, stop.set)

    def reload() -> None:
        if path is None:
            log.warning("SIGHUP ignored: running without a configuration file")
            return
        try:
            app.reload(load(path))
        except (ConfigError, UsersFileError, OSError, ValueError) as err:  # the running configuration stays
            log.error("reload failed", error=str(err))

    loop.add_signal_handler(signal.SIGHUP, reload)
    settle_gc()
    log.info("edgeproxy started", instance=config.server.instance_id,
             listen=[str(spec) for spec, _ in app.transports.bound])
    await stop.wait()
    log.info("draining", timeout=config.server.drain_timeout)
    await app.drain()
    await ops.close()
    log.info("stopped")
    return 0


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="edgeproxy", description="SIP edge proxy, registrar and presence server")
    sub = parser.add_subparsers(dest="command", required=True)
    run = sub.add_parser("run", help="start the proxy (the embedded default without --config)")
    run.add_argument("--config", help="TOML configuration file")
    # set by the supervisor of server.workers > 1 for each worker it starts
    run.add_argument("--worker", type=int, help=argparse.SUPPRESS)
    run.add_argument("--group", default="", help=argparse.SUPPRESS)
    run.add_argument("--link-ports", default="", help=argparse.SUPPRESS)
    check = sub.add_parser("check-config", help="validate a configuration file")
    check.add_argument("file")
    args = parser.parse_args(argv)

    try:
        config = _load(args.config if args.command == "run" else args.file)
    except ConfigError as err:
        print(f"edgeproxy: config error: {err}", file=sys.stderr)
        return EXIT_CONFIG
    if args.command == "check-config":
        print(f"{args.file}: ok")
        return 0
    setup_logging(config.log.level, config.log.format)
    bind_instance(config.server.instance_id)
    if args.worker is not None:
        from edgeproxy.sip.ids import set_worker
        from edgeproxy.supervisor import die_with_parent

        die_with_parent(args.group)
        set_worker(args.worker)
        structlog.contextvars.bind_contextvars(worker=args.worker)
        ports = tuple(int(p) for p in args.link_ports.split(","))
        return uvloop.run(serve(config, args.config, WorkerRole(args.group, args.worker, ports)))
    if config.server.workers > 1:
        from edgeproxy.supervisor import Supervisor

        assert args.config is not None  # the embedded default has one worker
        return uvloop.run(Supervisor(config, args.config).run())
    return uvloop.run(serve(config, args.config))


if __name__ == "__main__":
    sys.exit(main())
