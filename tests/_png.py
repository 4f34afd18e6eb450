"""A tiny PNG decoder (standard library only) for the report screenshot tests."""

import struct
import zlib
from dataclasses import dataclass
from pathlib import Path


@dataclass(frozen=True)
class PngStats:
    """What :func:`png_stats` found: file ``size`` in bytes, ``width``, ``height``, the
    number of distinct colours in a sample of pixels and the share of the most common one."""

    size: int
    width: int
    height: int
    n_colors: int
    top_color_share: float

    @property
    def blank(self) -> bool:
        return self.n_colors <= 1


def _paeth(a: int, b: int, c: int) -> int:
    p = a + b - c
    pa, pb, pc = abs(p - a), abs(p - b), abs(p - c)
    if pa <= pb and pa <= pc:
        return a
    return b if pb <= pc else c


def png_stats(path: "str | Path", sample_rows: int = 200) -> PngStats:
    """Decode an 8-bit RGB/RGBA PNG (standard library only) and count colours.

    Only ``sample_rows`` evenly spaced rows are inspected (decoding is row by row anyway).
    """
    data = Path(path).read_bytes()
    if data[:8] != b"\x89PNG\r\n\x1a\n":
        raise ValueError(f"{path} is not a PNG file.")
    pos, idat = 8, []
    width = height = depth = ctype = 0
    while pos < len(data):
        (length,) = struct.unpack(">I", data[pos : pos + 4])
        kind = data[pos + 4 : pos + 8]
        chunk = data[pos + 8 : pos + 8 + length]
        if kind == b"IHDR":
            width, height, depth, ctype = struct.unpack(">IIBB", chunk[:10])
        elif kind == b"IDAT":
            idat.append(chunk)
        pos += 12 + length
    channels = {2: 3, 6: 4}.get(ctype)
    if depth != 8 or channels is None:
        raise ValueError(f"{path}: only 8-bit RGB/RGBA PNGs are supported (type {ctype}).")
    raw = zlib.decompress(b"".join(idat))
    stride = width * channels
    prev = bytearray(stride)
    step = max(1, height // max(1, sample_rows))
    counts: dict[bytes, int] = {}
    for y in range(height):
        f = raw[y * (stride + 1)]
        line = bytearray(raw[y * (stride + 1) + 1 : (y + 1) * (stride + 1)])
        for i in range(stride):
            a = line[i - channels] if i >= channels else 0
            b = prev[i]
            c = prev[i - channels] if i >= channels else 0
            if f == 1:
                line[i] = (line[i] + a) & 0xFF
            elif f == 2:
                line[i] = (line[i] + b) & 0xFF
            elif f == 3:
                line[i] = (line[i] + ((a + b) >> 1)) & 0xFF
            elif f == 4:
                line[i] = (line[i] + _paeth(a, b, c)) & 0xFF
        if y % step == 0:
            for x in range(0, stride, channels * 4):
                px = bytes(line[x : x + 3])
                counts[px] = counts.get(px, 0) + 1
        prev = line
    total = sum(counts.values()) or 1
    return PngStats(
        size=len(data),
        width=width,
        height=height,
        n_colors=len(counts),
        top_color_share=max(counts.values(), default=0) / total,
    )
