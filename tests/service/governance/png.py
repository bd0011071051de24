"""Just enough PNG reading to count pixels of a colour in a Chromium screenshot (8-bit RGB/RGBA)."""

from __future__ import annotations

import struct
import zlib
from collections.abc import Iterable
from pathlib import Path


def _paeth(a: int, b: int, c: int) -> int:
    p = a + b - c
    pa, pb, pc = abs(p - a), abs(p - b), abs(p - c)
    if pa <= pb and pa <= pc:
        return a
    return b if pb <= pc else c


def pixels(path: Path) -> tuple[int, int, list[bytearray], int]:
    """(width, height, rows of raw bytes, bytes per pixel) of a non-interlaced 8-bit RGB(A) PNG."""
    data = path.read_bytes()
    if data[:8] != b"\x89PNG\r\n\x1a\n":
        raise ValueError("not a PNG")
    offset, idat = 8, b""
    width = height = channels = 0
    while offset < len(data):
        (length,) = struct.unpack(">I", data[offset : offset + 4])
        kind = data[offset + 4 : offset + 8]
        body = data[offset + 8 : offset + 8 + length]
        if kind == b"IHDR":
            width, height, depth, colour, _, _, interlace = struct.unpack(">IIBBBBB", body)
            if depth != 8 or colour not in (2, 6) or interlace:
                raise ValueError("only 8-bit, non-interlaced RGB or RGBA")
            channels = 3 if colour == 2 else 4
        elif kind == b"IDAT":
            idat += body
        offset += 12 + length
    raw = zlib.decompress(idat)
    stride = width * channels
    rows: list[bytearray] = []
    previous = bytearray(stride)
    for y in range(height):
        start = y * (stride + 1)
        kind, line = raw[start], bytearray(raw[start + 1 : start + 1 + stride])
        if kind == 0:
            rows.append(line)
            previous = line
            continue
        if kind == 2:
            line = bytearray((a + b) & 0xFF for a, b in zip(line, previous, strict=True))
            rows.append(line)
            previous = line
            continue
        for i in range(stride):
            left = line[i - channels] if i >= channels else 0
            up = previous[i]
            corner = previous[i - channels] if i >= channels else 0
            if kind == 1:
                line[i] = (line[i] + left) & 0xFF
            elif kind == 2:
                line[i] = (line[i] + up) & 0xFF
            elif kind == 3:
                line[i] = (line[i] + (left + up) // 2) & 0xFF
            elif kind == 4:
                line[i] = (line[i] + _paeth(left, up, corner)) & 0xFF
        rows.append(line)
        previous = line
    return width, height, rows, channels


def colour_pixels(path: Path, colours: Iterable[str]) -> dict[str, int]:
    """About how many pixels have each colour (``#rrggbb``): byte runs counted per row, in C."""
    _, _, rows, channels = pixels(path)
    wanted = {colour: bytes.fromhex(colour.removeprefix("#")) for colour in colours}
    if channels == 4:
        wanted = {colour: value + b"\xff" for colour, value in wanted.items()}
    return {colour: sum(row.count(value) for row in rows) for colour, value in wanted.items()}
