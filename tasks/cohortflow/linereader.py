"""The lines of one landing file, including a file that breaks off part way.

A truncated ``.gz``, a plain text file named ``.gz``, corrupt compressed data
or a read error does not stop the day: :class:`FileLines` yields every line
read before the break (the fragment at the break too, as a line of its own,
so the ingest judges it like any other) and then says what broke in
``damage``. The ledger records the file as damaged with the lines it did read.

Lines are split on ``\\n``; trailing ``\\r`` characters are removed (CRLF
files); a last line without a newline is a line. So the lines of an intact
file are exactly its physical lines.
"""

from __future__ import annotations

import zlib
from collections.abc import Iterator
from pathlib import Path

CHUNK_BYTES = 1 << 20


class DamagedFile(Exception):
    """The file breaks off here; the message says why."""


class FileLines:
    """Iterate (1-based line number, raw bytes without the line ending); ``damage`` is set when the file broke off."""

    def __init__(self, path: Path) -> None:
        self.path = path
        self.damage: str | None = None

    def __iter__(self) -> Iterator[tuple[int, bytes]]:
        number = 0
        buf = bytearray()
        try:
            for chunk in self._chunks():
                buf += chunk
                end = buf.rfind(b"\n")
                if end < 0:
                    continue
                for line in bytes(buf[:end]).split(b"\n"):
                    number += 1
                    yield number, line.rstrip(b"\r")
                del buf[: end + 1]
        except DamagedFile as exc:
            self.damage = str(exc)
        if buf:
            number += 1
            yield number, bytes(buf).rstrip(b"\r")

    def _chunks(self) -> Iterator[bytes]:
        try:
            fh = open(self.path, "rb")  # noqa: SIM115 - closed below, also when the caller stops early
        except OSError as exc:
            raise DamagedFile(f"cannot open: {exc.strerror or exc}") from None
        try:
            raw = _read_chunks(fh)
            yield from (_gunzip(raw) if self.path.name.endswith(".gz") else raw)
        finally:
            fh.close()


def _read_chunks(fh) -> Iterator[bytes]:
    while True:
        try:
            data = fh.read(CHUNK_BYTES)
        except OSError as exc:
            raise DamagedFile(f"read error: {exc.strerror or exc}") from None
        if not data:
            return
        yield data


def _gunzip(chunks: Iterator[bytes]) -> Iterator[bytes]:
    """Decompress gzip data (one or more members), yielding everything decompressed before any error."""
    inflater = zlib.decompressobj(zlib.MAX_WBITS | 16)
    in_member = False
    for data in chunks:
        while data:
            if not in_member:
                # Between members: zero padding is allowed (as the gzip module allows it).
                data = data.lstrip(b"\x00")
                if not data:
                    break
                in_member = True
            try:
                out = inflater.decompress(data)
            except zlib.error as exc:
                detail = "not gzip data" if "header" in str(exc) else "corrupt gzip data"
                raise DamagedFile(f"{detail} ({exc})") from None
            if out:
                yield out
            if inflater.eof:
                data = inflater.unused_data
                inflater = zlib.decompressobj(zlib.MAX_WBITS | 16)
                in_member = False
            else:
                data = b""
    if in_member:
        tail = inflater.flush()
        if tail:
            yield tail
        raise DamagedFile("truncated: the gzip data ends before the end of its stream")
