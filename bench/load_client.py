"""Open-loop HTTP load at a fixed rate, run in its own process by ``bench_api_load.py``.

The schedule is a list of segments ``RATExSECONDS``; within a segment, request ``i`` is sent
at ``segment_start + i / rate`` whether or not earlier ones have been answered (a closed loop
would slow down with the server and hide its queueing). Each request is recorded as
``[sent_offset, latency, status, retry_after]``; status 0 is a client-side timeout or
connection error. ``/healthz`` is probed on the side at a fixed interval. The
result is one JSON object on standard output.

    python bench/load_client.py URL TOKEN --schedule 800x5,20x3 --paths a,b [--healthz-every 0.1]
"""

from __future__ import annotations

import argparse
import asyncio
import json
import sys
import time
from urllib.parse import urlsplit


class Connections:
    """Keep-alive HTTP/1.1 connections to one server: an idle one is reused, else a new one is
    opened, so that no request waits for another (httpx's pool queues them, and its cost grows
    with the queue). Responses are read by their Content-Length, which the API always sends.
    A connection idle for longer than ``MAX_IDLE`` is not reused: the server closes it after 5 s,
    and a request sent on it would fail for no fault of the server's."""

    MAX_IDLE = 2.0

    def __init__(self, url: str) -> None:
        parts = urlsplit(url)
        self.host, self.port = parts.hostname or "127.0.0.1", parts.port or 80
        self.idle: list[tuple[asyncio.StreamReader, asyncio.StreamWriter, float]] = []

    async def _connection(self) -> tuple[asyncio.StreamReader, asyncio.StreamWriter]:
        while self.idle:
            reader, writer, since = self.idle.pop()
            if time.monotonic() - since < self.MAX_IDLE:
                return reader, writer
            writer.close()
        return await asyncio.open_connection(self.host, self.port)

    async def get(self, path: str, headers: dict[str, str]) -> tuple[int, str | None]:
        """Status and Retry-After of ``GET path``."""
        reader, writer = await self._connection()
        try:
            head = "".join(f"{k}: {v}\r\n" for k, v in headers.items())
            writer.write(f"GET {path} HTTP/1.1\r\nHost: {self.host}\r\n{head}\r\n".encode())
            lines = (await reader.readuntil(b"\r\n\r\n")).decode("latin-1").split("\r\n")
            status = int(lines[0].split()[1])
            fields = {k.strip().lower(): v.strip() for k, _, v in (line.partition(":") for line in lines[1:] if line)}
            await reader.readexactly(int(fields["content-length"]))
        except BaseException:
            writer.close()
            raise
        if fields.get("connection", "").lower() == "close":
            writer.close()
        else:
            self.idle.append((reader, writer, time.monotonic()))
        return status, fields.get("retry-after")

    def close(self) -> None:
        for _, writer, _ in self.idle:
            writer.close()


async def _one(http: Connections, path: str, sent: float, t0: float, out: list[list[object]],
               headers: dict[str, str], timeout: float) -> None:
    started = time.perf_counter()
    try:
        status, retry_after = await asyncio.wait_for(http.get(path, headers), timeout)
    except (TimeoutError, OSError, asyncio.IncompleteReadError, ValueError, KeyError):
        status, retry_after = 0, None
    out.append([round(sent - t0, 4), round(time.perf_counter() - started, 5), status, retry_after])


async def _probe(http: Connections, every: float, stop: asyncio.Event, t0: float,
                 out: list[list[object]], timeout: float) -> None:
    while not stop.is_set():
        sent = time.perf_counter()
        await _one(http, "/healthz", sent, t0, out, {}, timeout)
        await asyncio.sleep(max(0.0, every - (time.perf_counter() - sent)))


def schedule(text: str) -> list[tuple[float, float]]:
    """``"800x5,20x3"`` -> ``[(800.0, 5.0), (20.0, 3.0)]``."""
    return [(float(rate), float(seconds)) for rate, seconds in (part.split("x") for part in text.split(","))]


async def run(args: argparse.Namespace) -> dict[str, object]:
    paths = args.paths.split(",")
    requests: list[list[object]] = []
    probes: list[list[object]] = []
    headers = {"Authorization": f"Bearer {args.token}"}
    http, probe_http = Connections(args.url), Connections(args.url)
    try:
        stop = asyncio.Event()
        t0 = time.perf_counter()
        prober = asyncio.create_task(_probe(probe_http, args.healthz_every, stop, t0, probes, args.timeout)) \
            if args.healthz_every else None
        tasks = []
        worst_lag = 0.0
        segment_start, n = t0, 0
        for rate, seconds in schedule(args.schedule):
            for i in range(int(rate * seconds)):
                due = segment_start + i / rate
                delay = due - time.perf_counter()
                if delay > 0:
                    await asyncio.sleep(delay)
                worst_lag = max(worst_lag, time.perf_counter() - due)
                request = _one(http, paths[n % len(paths)], due, t0, requests, headers, args.timeout)
                tasks.append(asyncio.create_task(request))
                n += 1
            segment_start += seconds
        sent_for = time.perf_counter() - t0
        stop.set()
        await asyncio.gather(*tasks)
        if prober is not None:
            await prober
    finally:
        http.close()
        probe_http.close()
    return {"requests": requests, "healthz": probes, "sent_for": round(sent_for, 3),
            "worst_send_lag": round(worst_lag, 4)}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("url")
    parser.add_argument("token")
    parser.add_argument("--schedule", required=True, help="RATExSECONDS segments, comma-separated")
    parser.add_argument("--paths", required=True, help="comma-separated paths, used in turn")
    parser.add_argument("--healthz-every", type=float, default=0.0, help="probe /healthz every N s (0: never)")
    parser.add_argument("--timeout", type=float, default=5.0, help="client timeout per request (s)")
    args = parser.parse_args()
    json.dump(asyncio.run(run(args)), sys.stdout)


if __name__ == "__main__":
    main()
