"""A userspace TCP proxy that adds delay and loss, for the chaos run (this kernel has no tc netem).

statusd's processes reach Redis and PostgreSQL through one of these; the nemesis sets `delay_s`
(every chunk held that long, each direction) and `loss` (the chance a chunk is "lost": held for a
retransmission timeout first, as TCP would resend it; order is kept, so the peers see what a
lossy link does to a stream: stalls). A closed side closes the other, so a restarted server is a
reset connection to its clients, as without the proxy.

The chaos run starts it as a child process (its own event loop, so relaying every Redis and
PostgreSQL byte does not compete with the fleet's clients in the harness):

    python bench/chaos_proxy.py 6379 5432     # prints {"ports": [<for 6379>, <for 5432>]}
    stdin: "delay 0.2" | "loss 0.1" | "heal", one command a line, applied to every link
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import random
import sys

HOST = "127.0.0.1"
RETRANSMIT_S = 1.0  # Linux's initial retransmission timeout: what one lost segment costs
CHUNK = 65536


class LossyProxy:
    def __init__(self, upstream_port: int, rng: random.Random) -> None:
        self.upstream_port = upstream_port
        self.rng = rng
        self.delay_s = 0.0
        self.loss = 0.0
        self.port = 0
        self._server: asyncio.Server | None = None
        self._writers: set[asyncio.StreamWriter] = set()

    def heal(self) -> None:
        self.delay_s, self.loss = 0.0, 0.0

    async def start(self) -> None:
        self._server = await asyncio.start_server(self._accept, HOST, 0)
        self.port = self._server.sockets[0].getsockname()[1]

    async def stop(self) -> None:
        if self._server is not None:
            self._server.close()
        for writer in list(self._writers):  # both pipes of each link then end on their own
            writer.close()

    async def _accept(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        try:
            up_reader, up_writer = await asyncio.open_connection(HOST, self.upstream_port)
        except OSError:
            writer.close()  # the server is down: refused, as a direct connection would be
            return
        self._writers.update((writer, up_writer))
        try:
            await asyncio.gather(
                self._pipe(reader, up_writer), self._pipe(up_reader, writer), return_exceptions=True
            )
        finally:
            self._writers.difference_update((writer, up_writer))

    async def _pipe(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        """Each chunk leaves `hold` after it arrived (not after the one before it left, which
        would make delay cost throughput), never before an earlier chunk: a lost one stalls the
        stream behind it."""
        loop = asyncio.get_running_loop()
        queue: asyncio.Queue[tuple[float, bytes]] = asyncio.Queue()
        sender = asyncio.create_task(self._send(queue, writer))
        due = 0.0
        try:
            while chunk := await reader.read(CHUNK):
                hold = self.delay_s + (RETRANSMIT_S if self.rng.random() < self.loss else 0.0)
                due = max(due, loop.time() + hold)
                queue.put_nowait((due, chunk))
        except OSError:
            pass
        finally:
            queue.put_nowait((due, b""))
            await asyncio.gather(sender, return_exceptions=True)

    @staticmethod
    async def _send(
        queue: asyncio.Queue[tuple[float, bytes]], writer: asyncio.StreamWriter
    ) -> None:
        loop = asyncio.get_running_loop()
        try:
            while True:
                due, chunk = await queue.get()
                if due > loop.time():
                    await asyncio.sleep(due - loop.time())
                if not chunk:
                    return
                writer.write(chunk)
                await writer.drain()
        except OSError:
            pass
        finally:
            with contextlib.suppress(OSError, RuntimeError):
                writer.close()


async def serve(upstream_ports: list[int], seed: str) -> None:
    rng = random.Random(seed)
    links = [LossyProxy(port, rng) for port in upstream_ports]
    for link in links:
        await link.start()
    print(json.dumps({"ports": [link.port for link in links]}), flush=True)
    loop = asyncio.get_running_loop()
    commands = asyncio.StreamReader()
    await loop.connect_read_pipe(lambda: asyncio.StreamReaderProtocol(commands), sys.stdin)
    while line := (await commands.readline()).decode().split():
        for link in links:
            if line[0] == "delay":
                link.delay_s = float(line[1])
            elif line[0] == "loss":
                link.loss = float(line[1])
            else:
                link.heal()
    for link in links:  # stdin closed: the harness is done
        await link.stop()


if __name__ == "__main__":
    asyncio.run(serve([int(p) for p in sys.argv[1:]], "proxy"))
