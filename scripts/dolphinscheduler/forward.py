"""Forward TCP ports on 127.0.0.1 to Unix sockets: python3 forward.py PORT=SOCKET [PORT=SOCKET ...]

Started inside the DolphinScheduler server's network namespace by scripts/dolphinscheduler.sh
(DS_FORWARD), so that its tasks reach a service of the machine, such as a PostgreSQL warehouse
on 127.0.0.1:5432, at the same address as everything else does: the namespace has its own
loopback, but Unix sockets live in the shared filesystem.
"""

import asyncio
import sys


async def _pipe(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
    try:
        while data := await reader.read(65536):
            writer.write(data)
            await writer.drain()
    except (ConnectionError, OSError):
        pass
    finally:
        writer.close()


def _handler(path: str):
    async def handle(client_reader: asyncio.StreamReader, client_writer: asyncio.StreamWriter) -> None:
        try:
            upstream_reader, upstream_writer = await asyncio.open_unix_connection(path)
        except OSError as exc:
            print(f"forward: cannot connect to {path}: {exc}", file=sys.stderr, flush=True)
            client_writer.close()
            return
        await asyncio.gather(_pipe(client_reader, upstream_writer), _pipe(upstream_reader, client_writer))

    return handle


async def main(pairs: list[str]) -> None:
    servers = []
    for pair in pairs:
        port, _, path = pair.partition("=")
        if not port.isdigit() or not path.startswith("/"):
            sys.exit(f"forward: expected PORT=/path/to/socket, got {pair!r}")
        servers.append(await asyncio.start_server(_handler(path), "127.0.0.1", int(port)))
        print(f"forward: 127.0.0.1:{port} -> {path}", file=sys.stderr, flush=True)
    await asyncio.gather(*(s.serve_forever() for s in servers))


if __name__ == "__main__":
    asyncio.run(main(sys.argv[1:]))
