"""A TCP forwarder on loopback, for tests that break a connection on
purpose: `hold()` stops passing the server's bytes to the client (they
wait in the forwarder; the client's still go through), `cut()` resets every
connection it carries. Runs on the test's event loop."""

import asyncio
import contextlib

from kvstore.ops.ports import free_port

_CHUNK = 64 * 1024


class Proxy:
    """`async with Proxy(target) as proxy:` forwards proxy.address to target."""

    def __init__(self, target: str) -> None:
        self._target_host, port = target.rsplit(":", 1)
        self._target_port = int(port)
        self._port = free_port()
        self.address = f"127.0.0.1:{self._port}"
        self._passing = asyncio.Event()
        self._passing.set()
        self._writers: list[asyncio.StreamWriter] = []
        self._pumps: set[asyncio.Task[None]] = set()
        self._server: asyncio.Server | None = None

    async def __aenter__(self) -> "Proxy":
        self._server = await asyncio.start_server(self._accept, "127.0.0.1", self._port)
        return self

    async def __aexit__(self, *exc_info: object) -> None:
        assert self._server is not None
        self._server.close()
        self.cut()
        for pump in list(self._pumps):
            pump.cancel()
        await asyncio.gather(*self._pumps, return_exceptions=True)
        await self._server.wait_closed()

    def hold(self) -> None:
        """From now on the server's bytes wait here."""
        self._passing.clear()

    def cut(self) -> None:
        """Reset every connection carried so far (new ones pass again)."""
        for writer in self._writers:
            writer.transport.abort()
        self._writers.clear()
        self._passing.set()

    async def _accept(self, client_reader: asyncio.StreamReader,
                      client_writer: asyncio.StreamWriter) -> None:
        server_reader, server_writer = await asyncio.open_connection(
            self._target_host, self._target_port)
        self._writers += [client_writer, server_writer]
        for pump in (self._pump(client_reader, server_writer, held=False),
                     self._pump(server_reader, client_writer, held=True)):
            task = asyncio.ensure_future(pump)
            self._pumps.add(task)
            task.add_done_callback(self._pumps.discard)

    async def _pump(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter,
                    held: bool) -> None:
        with contextlib.suppress(ConnectionError, OSError):
            while data := await reader.read(_CHUNK):
                if held:
                    await self._passing.wait()
                    if writer.transport.is_closing():
                        return  # cut while it waited
                writer.write(data)
                await writer.drain()
        writer.transport.abort()
