"""``metabuilder worker|up|server|api|db``: the long-running processes (workers, the API, the
embedded dev server) and the database schema."""

from __future__ import annotations

import argparse
import signal
from typing import TYPE_CHECKING

from metabuilder.worker.cli.exits import EXIT_OK, EXIT_UNAVAILABLE, CliError

if TYPE_CHECKING:
    from metabuilder.worker.settings import Settings


async def cmd_worker(args: argparse.Namespace, settings: Settings) -> int:
    import asyncio

    from metabuilder.domain.runs import task_queue
    from metabuilder.worker.pools import describe, parse_queues
    from metabuilder.worker.runtime import (
        adopt_version,
        build_workers,
        connect,
        prepare_database,
        running_workers,
        sdk_metrics_runtime,
        serve_metrics,
        step_slots,
    )

    slots = parse_queues(args.queues, args.concurrency)
    pools = list(slots)
    sessions = prepare_database(settings)
    runtime = sdk_metrics_runtime(settings)
    client = await connect(settings, start_embedded=False, runtime=runtime)
    workers = build_workers(client, settings, sessions, pools, concurrency=args.concurrency, slots=slots,
                            versioned=True)
    effective = {**slots, **step_slots(settings, pools, args.concurrency, slots)}
    metrics = serve_metrics(settings)
    log = _log()
    log.info("worker.started", queues=[task_queue(settings.task_queue_prefix, p) for p in pools],
             address=settings.address, slots=describe(effective), max_workers=settings.v4.max_workers,
             grace_seconds=settings.worker_grace_seconds, metrics=metrics, sdk_metrics=_sdk_metrics_url(settings))
    from metabuilder.worker.registry import registered

    async with registered(sessions, client.identity, settings.task_queue_prefix, effective,
                          settings.worker_grace_seconds), running_workers(workers):
        adopting = asyncio.create_task(adopt_version(client, settings))
        await _until_signalled()
        adopting.cancel()
    log.info("worker.stopped")
    return EXIT_OK


def _sdk_metrics_url(settings: Settings) -> str | None:
    if not settings.sdk_metrics_port:
        return None
    return f"http://{settings.metrics_host}:{settings.sdk_metrics_port}/metrics"


async def cmd_up(args: argparse.Namespace, settings: Settings) -> int:
    import asyncio

    from metabuilder.domain.runs import task_queue
    from metabuilder.worker.api_server import api_server
    from metabuilder.worker.devserver import DevServer, port_open
    from metabuilder.worker.runtime import (
        POOLS,
        adopt_version,
        build_workers,
        connect,
        prepare_database,
        running_workers,
        sdk_metrics_runtime,
    )

    if not settings.embedded:
        raise CliError("`metabuilder up` runs the embedded dev server; unset TEMPORAL_ADDRESS or use `worker`")
    if port_open("127.0.0.1", settings.dev_server_port):
        raise CliError(f"something already listens on port {settings.dev_server_port} "
                       "(a dev server started earlier? stop it with `metabuilder server stop`)")
    server = DevServer.of_home(settings)
    server.start(detach=False)
    try:
        await server.wait_ready()
        sessions = prepare_database(settings)
        client = await connect(settings, start_embedded=False, runtime=sdk_metrics_runtime(settings))
        print(f"Temporal dev server on {server.address}; Web UI {settings.ui_url}")
        sdk = _sdk_metrics_url(settings)
        print(f"metrics on http://{settings.api_host}:{settings.api_port}/metrics"
              + (f"; Temporal SDK metrics on {sdk}" if sdk else ""))
        print(f"workers polling {', '.join(task_queue(settings.task_queue_prefix, p) for p in POOLS)}")
        api = api_server(settings, sessions, settings.api_host, settings.api_port)
        print(f"API on http://{settings.api_host}:{settings.api_port} (docs /docs); Ctrl-C stops everything")
        from metabuilder.worker.registry import registered

        async with registered(sessions, client.identity, settings.task_queue_prefix,
                              {pool: args.concurrency for pool in POOLS}, settings.worker_grace_seconds), \
                running_workers(build_workers(client, settings, sessions, POOLS, concurrency=args.concurrency,
                                              versioned=True)):
            serving = asyncio.create_task(api.serve())
            adopting = asyncio.create_task(adopt_version(client, settings))
            await _until_signalled()
            adopting.cancel()
            api.should_exit = True
            await serving
    finally:
        server.stop()
    return EXIT_OK


async def cmd_server(args: argparse.Namespace, settings: Settings) -> int:
    from metabuilder.worker.devserver import DevServer, port_open

    server = DevServer.of_home(settings)
    if args.action == "start":
        if port_open("127.0.0.1", settings.dev_server_port):
            print(f"a server already listens on {server.address}")
            return EXIT_OK
        server.start(detach=True)
        await server.wait_ready()
        print(f"Temporal dev server started on {server.address}; Web UI {settings.ui_url}; data {server.db_file}")
    elif args.action == "stop":
        print("stopped" if server.stop() else "no dev server recorded in " + str(server.pid_file))
    else:
        up = port_open("127.0.0.1", settings.dev_server_port)
        print(f"{server.address}: {'up' if up else 'down'}; data {server.db_file}")
        return EXIT_OK if up else EXIT_UNAVAILABLE
    return EXIT_OK


def cmd_api(args: argparse.Namespace, settings: Settings) -> int:
    import asyncio

    from metabuilder.worker.api_server import loop_factory, serve_api, serve_api_processes
    from metabuilder.worker.runtime import prepare_database

    host, port = args.host or settings.api_host, args.port or settings.api_port
    workers = args.workers or settings.api_workers
    if workers < 1:
        raise ValueError(f"--workers {workers}: expected at least 1")
    sessions = prepare_database(settings)  # once, before any process serves
    if workers == 1:
        with asyncio.Runner(loop_factory=loop_factory()) as runner:
            runner.run(serve_api(settings, sessions, host, port))
    else:
        serve_api_processes(settings, host, port, workers)
    return 0


async def cmd_db(args: argparse.Namespace, settings: Settings) -> int:
    from metabuilder.worker.runtime import prepare_database

    prepare_database(settings)
    print(f"database at head: {settings.database_url}")
    return EXIT_OK


async def _until_signalled() -> None:
    import asyncio

    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    for sig in (signal.SIGINT, signal.SIGTERM):
        loop.add_signal_handler(sig, stop.set)
    await stop.wait()


def _log():  # type: ignore[no-untyped-def]
    import structlog

    return structlog.get_logger("metabuilder.cli")


def add_parsers(sub: argparse._SubParsersAction) -> None:  # type: ignore[type-arg]
    p = sub.add_parser("worker", help="run workers for some pools until SIGINT/SIGTERM")
    p.add_argument("--queues", help="pools to serve, comma-separated, each with its slots if you like: "
                                    "cpu=4,io=16,llm=2 (default: all: workflow,cpu,io,llm)")
    p.add_argument("--concurrency", type=int, default=4,
                   help="slots of a pool --queues gives none: steps run at once (default: 4)")
    p.set_defaults(fn=cmd_worker)

    p = sub.add_parser("up", help="dev server, workers for all pools and the API in one foreground process")
    p.add_argument("--concurrency", type=int, default=4)
    p.set_defaults(fn=cmd_up)

    p = sub.add_parser("server", help="start, stop or check the embedded dev server in the background")
    p.add_argument("action", choices=["start", "stop", "status"])
    p.set_defaults(fn=cmd_server)

    p = sub.add_parser("api", help="serve the HTTP API (OpenAPI at /openapi.json, docs at /docs)")
    p.add_argument("--host", help="address to listen on (default: META_BUILDER_API_HOST or 127.0.0.1)")
    p.add_argument("--port", type=int, help="port (default: META_BUILDER_API_PORT or 5001)")
    p.add_argument("--workers", type=int, help="processes sharing the port (default: META_BUILDER_API_WORKERS or 1)")
    p.set_defaults(fn=cmd_api)

    p = sub.add_parser("db", help="database schema")
    p.add_argument("action", choices=["upgrade"], help="upgrade: apply Alembic migrations up to head")
    p.set_defaults(fn=cmd_db)
