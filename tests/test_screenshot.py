"""scripts/screenshot_tensorboard.py: a headless-Chromium screenshot of TensorBoard with gradwatch's charts.

Skipped, with the reason, where no Chromium is installed (CI): the script needs a browser binary.
"""

from __future__ import annotations

import importlib.util
import os
import struct
import zlib

import numpy as np
import pytest

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
SCRIPT = os.path.join(ROOT, "scripts", "screenshot_tensorboard.py")


def load_script():
    spec = importlib.util.spec_from_file_location("screenshot_tensorboard", SCRIPT)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def read_png(path) -> np.ndarray:
    """Pixels (height, width, channels) of an 8-bit, non-interlaced RGB or RGBA PNG."""
    data = open(path, "rb").read()
    assert data[:8] == b"\x89PNG\r\n\x1a\n", "not a PNG file"
    pos, idat, header = 8, b"", None
    while pos < len(data):
        (length,) = struct.unpack(">I", data[pos:pos + 4])
        kind, body = data[pos + 4:pos + 8], data[pos + 8:pos + 8 + length]
        pos += 12 + length
        if kind == b"IHDR":
            header = struct.unpack(">IIBBBBB", body)
        elif kind == b"IDAT":
            idat += body
    width, height, depth, color, _, _, interlace = header
    assert depth == 8 and color in (2, 6) and interlace == 0, f"unexpected PNG format {header}"
    channels = 3 if color == 2 else 4
    raw = zlib.decompress(idat)
    stride = width * channels
    out = np.zeros((height, stride), dtype=np.int64)
    prev = np.zeros(stride, dtype=np.int64)
    for y in range(height):
        kind = raw[y * (stride + 1)]
        row = np.frombuffer(raw, dtype=np.uint8, count=stride, offset=y * (stride + 1) + 1).astype(np.int64)
        if kind == 1:  # Sub
            row = row.copy()
            for x in range(channels, stride):
                row[x] = (row[x] + row[x - channels]) & 255
        elif kind == 2:  # Up
            row = (row + prev) & 255
        elif kind == 3:  # Average
            row = row.copy()
            for x in range(stride):
                left = row[x - channels] if x >= channels else 0
                row[x] = (row[x] + (left + prev[x]) // 2) & 255
        elif kind == 4:  # Paeth
            row = row.copy()
            for x in range(stride):
                a = row[x - channels] if x >= channels else 0
                b = prev[x]
                c = prev[x - channels] if x >= channels else 0
                p = a + b - c
                pa, pb, pc = abs(p - a), abs(p - b), abs(p - c)
                row[x] = (row[x] + (a if pa <= pb and pa <= pc else b if pb <= pc else c)) & 255
        out[y] = row
        prev = out[y]
    return out.reshape(height, width, channels)[:, :, :3].astype(np.uint8)


def test_screenshot_shows_tensorboard_with_gradwatch_charts(tmp_path):
    script = load_script()
    if script.find_browser() is None:
        pytest.skip("no Chromium binary found (install Debian's `chromium` or set $CHROMIUM) - "
                    "the screenshot needs a browser")
    out = tmp_path / "tensorboard.png"
    assert script.main(["--out", str(out), "--width", "1200", "--height", "600"]) == 0
    pixels = read_png(out)
    assert pixels.shape == (600, 1200, 3)
    header = pixels[:50].reshape(-1, 3).astype(int)
    orange = (np.abs(header - [245, 124, 0]).max(axis=1) < 40).mean()
    assert orange > 0.5, "TensorBoard's orange header is missing: the page did not load"
    body = pixels[120:, 350:].reshape(-1, 3)
    blue = ((body[:, 2].astype(int) - body[:, 0].astype(int) > 80) & (body[:, 1] < 170)).sum()
    assert blue > 300, "no chart line of the buggy run (blue) in the dashboard"


def test_png_reader_reads_what_it_should(tmp_path):
    # a 2x2 RGB image written with filter 0 rows: the reader used above must read it exactly
    rows = b"".join(b"\x00" + bytes(row) for row in ([255, 0, 0, 0, 255, 0], [0, 0, 255, 9, 9, 9]))
    def chunk(kind, body):
        return struct.pack(">I", len(body)) + kind + body + struct.pack(">I", zlib.crc32(kind + body))
    png = (b"\x89PNG\r\n\x1a\n" + chunk(b"IHDR", struct.pack(">IIBBBBB", 2, 2, 8, 2, 0, 0, 0))
           + chunk(b"IDAT", zlib.compress(rows)) + chunk(b"IEND", b""))
    path = tmp_path / "tiny.png"
    path.write_bytes(png)
    np.testing.assert_array_equal(read_png(path), [[[255, 0, 0], [0, 255, 0]], [[0, 0, 255], [9, 9, 9]]])
