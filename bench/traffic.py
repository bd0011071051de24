"""The load generator's side of ``bench/load.py``: keep-alive HTTP/1.1 connections, closed- and
open-loop drivers, and what they measure.

It speaks HTTP/1.1 over asyncio streams itself (keep-alive, Content-Length), to cost as little CPU per
call as it can on the machine it shares with the server.
"""

from __future__ import annotations

import asyncio
import collections
import random
import socket
import time
import uuid
from collections import Counter
from collections.abc import Callable
from dataclasses import dataclass, field

import orjson

from bench.workload import Body, pick

HOOK_PATH = "/cds-services/calf-pain"


class Connection:
    """One keep-alive HTTP/1.1 connection, closed (by ``Connection: close``) after ``lifetime`` calls
    and opened again, as HTTP clients and proxies do."""

    def __init__(self, port: int, lifetime: int) -> None:
        self.port = port
        self.lifetime = lifetime
        self.calls = 0
        self.reader: asyncio.StreamReader | None = None
        self.writer: asyncio.StreamWriter | None = None

    async def post(self, path: str, body: bytes, token: str) -> tuple[int, bytes]:
        if self.writer is None:
            self.reader, self.writer = await asyncio.open_connection("127.0.0.1", self.port)
            self.writer.get_extra_info("socket").setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
        assert self.reader is not None
        self.calls += 1
        last = "Connection: close\r\n" if self.calls % self.lifetime == 0 else ""
        head = (
            f"POST {path} HTTP/1.1\r\nHost: 127.0.0.1:{self.port}\r\n{last}"
            f"Authorization: Bearer {token}\r\n"
            f"Content-Type: application/json\r\nContent-Length: {len(body)}\r\n\r\n"
        ).encode()
        self.writer.writelines((head, body))
        await self.writer.drain()
        status = int((await self.reader.readline()).split()[1])
        length, close = None, False
        while (line := await self.reader.readline()) not in (b"\r\n", b""):
            name, _, value = line.partition(b":")
            name = name.strip().lower()
            if name == b"content-length":
                length = int(value)
            elif name == b"connection" and value.strip().lower() == b"close":
                close = True
        if length is None:
            raise ValueError("response without Content-Length")
        payload = await self.reader.readexactly(length)
        if close or last:
            self.close()
        return status, payload

    def close(self) -> None:
        if self.writer is not None:
            self.writer.close()
        self.reader = self.writer = None


# -- measuring -----------------------------------------------------------------------------


@dataclass
class Stats:
    expected: dict[str, tuple[str, ...]]
    latencies: list[float] = field(default_factory=list)
    finished: list[float] = field(default_factory=list)  # perf_counter() when each measured call ended
    statuses: Counter[int] = field(default_factory=Counter)
    wrong_cards: Counter[str] = field(default_factory=Counter)
    patterns: Counter[str] = field(default_factory=Counter)
    transport_errors: int = 0
    answered: int = 0

    def record(self, body: Body, status: int, payload: bytes, seconds: float, measured: bool) -> None:
        self.answered += 1
        if not measured:
            return
        self.latencies.append(seconds)
        self.finished.append(time.perf_counter())
        self.statuses[status] += 1
        self.patterns[body.pattern] += 1
        if status == 200:
            topics = tuple(card["source"]["topic"]["code"] for card in orjson.loads(payload)["cards"])
            if topics != self.expected[body.pattern]:
                self.wrong_cards[body.pattern] += 1


class Tokens:
    """The client JWTs signed before the run (``bench/tokens.py``); one more is signed on the spot
    if they run out, and counted."""

    def __init__(self, tokens: list[str], sign_one: Callable[[], str]) -> None:
        self.tokens = collections.deque(tokens)
        self.sign_one = sign_one
        self.signed_during_run = 0

    def next(self) -> str:
        if self.tokens:
            return self.tokens.popleft()
        self.signed_during_run += 1
        return self.sign_one()


async def call(
    connection: Connection, body: Body, stats: Stats, tokens: Tokens, since: float, *, measured: bool
) -> None:
    try:
        status, payload = await connection.post(HOOK_PATH, body.render(str(uuid.uuid4())), tokens.next())
    except (OSError, ValueError, IndexError, asyncio.IncompleteReadError):
        connection.close()
        if measured:
            stats.transport_errors += 1
        return
    stats.record(body, status, payload, time.perf_counter() - since, measured)


async def closed_loop(
    port: int,
    clients: int,
    seconds: float,
    bodies: dict[str, list[Body]],
    stats: Stats,
    tokens: Tokens,
    *,
    measured: bool,
    lifetime: int,
    ramp: float = 0.0,
) -> None:
    """``clients`` connections, each sending its next call when the last is answered; they start
    one by one over ``ramp`` seconds (a burst of simultaneous connects is not how clients arrive)."""
    deadline = time.perf_counter() + seconds

    async def client(number: int) -> None:
        await asyncio.sleep(ramp * number / clients)
        rng = random.Random(number)
        connection = Connection(port, lifetime)
        while time.perf_counter() < deadline:
            await call(connection, pick(bodies, rng), stats, tokens, time.perf_counter(), measured=measured)
        connection.close()

    await asyncio.gather(*(client(n) for n in range(clients)))


async def open_loop(
    port: int,
    clients: int,
    seconds: float,
    rate: float,
    bodies: dict[str, list[Body]],
    stats: Stats,
    tokens: Tokens,
    *,
    lifetime: int,
) -> None:
    pool: asyncio.Queue[Connection] = asyncio.Queue()
    for _ in range(clients):
        pool.put_nowait(Connection(port, lifetime))
    rng = random.Random(1)
    start = time.perf_counter()
    pending: set[asyncio.Task[None]] = set()

    async def scheduled(body: Body, at: float) -> None:
        connection = await pool.get()
        try:
            await call(connection, body, stats, tokens, at, measured=True)
        finally:
            pool.put_nowait(connection)

    for number in range(int(seconds * rate)):
        at = start + number / rate
        if (delay := at - time.perf_counter()) > 0:
            await asyncio.sleep(delay)
        task = asyncio.create_task(scheduled(pick(bodies, rng), at))
        pending.add(task)
        task.add_done_callback(pending.discard)
    await asyncio.gather(*pending)
    while not pool.empty():
        pool.get_nowait().close()


def percentile(values: list[float], q: float) -> float:
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, round(q * (len(ordered) - 1)))] if ordered else float("nan")
