"""A PNG writer and a tiny rasterizer, standard library only: the benchmark's charts need no plotting
library.

Theory of operation: a PNG file is an 8-byte signature and then chunks, each one its data length
(4 bytes, big-endian), a 4-letter type, the data and a CRC-32 of type and data. IHDR says width,
height, bit depth 8 and colour type 2 (RGB, 3 bytes a pixel); IDAT holds the zlib stream of the
rows, each row led by its filter byte (0: the bytes as they are); IEND closes the file.

`Canvas` is a white RGB raster: clipped pixels, filled rectangles, Bresenham lines (thick, dashed)
and text in a built-in 5x7 font (upper case: lower case letters are drawn as capitals).
"""

import struct
import zlib

SIGNATURE = b"\x89PNG\r\n\x1a\n"

Color = tuple[int, int, int]
WHITE: Color = (255, 255, 255)
BLACK: Color = (0, 0, 0)

GLYPH_WIDTH, GLYPH_HEIGHT = 5, 7

# Each glyph is 7 rows of 5 pixels, top row first; '#' is ink.
_GLYPHS = {
    "0": ".###. #...# #..## #.#.# ##..# #...# .###.",
    "1": "..#.. .##.. ..#.. ..#.. ..#.. ..#.. .###.",
    "2": ".###. #...# ....# ...#. ..#.. .#... #####",
    "3": "##### ...#. ..#.. ...#. ....# #...# .###.",
    "4": "...#. ..##. .#.#. #..#. ##### ...#. ...#.",
    "5": "##### #.... ####. ....# ....# #...# .###.",
    "6": "..##. .#... #.... ####. #...# #...# .###.",
    "7": "##### ....# ...#. ..#.. .#... .#... .#...",
    "8": ".###. #...# #...# .###. #...# #...# .###.",
    "9": ".###. #...# #...# .#### ....# ...#. .##..",
    "A": ".###. #...# #...# ##### #...# #...# #...#",
    "B": "####. #...# #...# ####. #...# #...# ####.",
    "C": ".###. #...# #.... #.... #.... #...# .###.",
    "D": "####. #...# #...# #...# #...# #...# ####.",
    "E": "##### #.... #.... ####. #.... #.... #####",
    "F": "##### #.... #.... ####. #.... #.... #....",
    "G": ".###. #...# #.... #.### #...# #...# .####",
    "H": "#...# #...# #...# ##### #...# #...# #...#",
    "I": ".###. ..#.. ..#.. ..#.. ..#.. ..#.. .###.",
    "J": "..### ...#. ...#. ...#. ...#. #..#. .##..",
    "K": "#...# #..#. #.#.. ##... #.#.. #..#. #...#",
    "L": "#.... #.... #.... #.... #.... #.... #####",
    "M": "#...# ##.## #.#.# #.#.# #...# #...# #...#",
    "N": "#...# #...# ##..# #.#.# #..## #...# #...#",
    "O": ".###. #...# #...# #...# #...# #...# .###.",
    "P": "####. #...# #...# ####. #.... #.... #....",
    "Q": ".###. #...# #...# #...# #.#.# #..#. .##.#",
    "R": "####. #...# #...# ####. #.#.. #..#. #...#",
    "S": ".#### #.... #.... .###. ....# ....# ####.",
    "T": "##### ..#.. ..#.. ..#.. ..#.. ..#.. ..#..",
    "U": "#...# #...# #...# #...# #...# #...# .###.",
    "V": "#...# #...# #...# #...# #...# .#.#. ..#..",
    "W": "#...# #...# #...# #.#.# #.#.# #.#.# .#.#.",
    "X": "#...# #...# .#.#. ..#.. .#.#. #...# #...#",
    "Y": "#...# #...# .#.#. ..#.. ..#.. ..#.. ..#..",
    "Z": "##### ....# ...#. ..#.. .#... #.... #####",
    " ": "..... ..... ..... ..... ..... ..... .....",
    ".": "..... ..... ..... ..... ..... .##.. .##..",
    ",": "..... ..... ..... ..... .##.. ..#.. .#...",
    "-": "..... ..... ..... .###. ..... ..... .....",
    ":": "..... .##.. .##.. ..... .##.. .##.. .....",
    "/": "..... ....# ...#. ..#.. .#... #.... .....",
    "(": "...#. ..#.. .#... .#... .#... ..#.. ...#.",
    ")": ".#... ..#.. ...#. ...#. ...#. ..#.. .#...",
    "%": "##... ##..# ...#. ..#.. .#... #..## ...##",
    "_": "..... ..... ..... ..... ..... ..... #####",
    "+": "..... ..#.. ..#.. ##### ..#.. ..#.. .....",
    "=": "..... ..... ##### ..... ##### ..... .....",
    "?": ".###. #...# ....# ...#. ..#.. ..... ..#..",
}


def _glyph_pixels(rows: str) -> tuple[tuple[int, int], ...]:
    return tuple((x, y) for y, row in enumerate(rows.split()) for x, ink in enumerate(row) if ink == "#")


FONT: dict[str, tuple[tuple[int, int], ...]] = {char: _glyph_pixels(rows) for char, rows in _GLYPHS.items()}


def text_width(text: str, scale: int = 1) -> int:
    """Pixels from the left of the first glyph to the right of the last (one column between)."""
    return max(0, len(text) * (GLYPH_WIDTH + 1) * scale - scale)


def text_height(scale: int = 1) -> int:
    return GLYPH_HEIGHT * scale


def _chunk(kind: bytes, data: bytes) -> bytes:
    return struct.pack(">I", len(data)) + kind + data + struct.pack(">I", zlib.crc32(kind + data))


def encode_png(width: int, height: int, rgb: bytes) -> bytes:
    """The PNG file of an image given as rows of RGB bytes, top row first."""
    stride = width * 3
    if width < 1 or height < 1 or len(rgb) != stride * height:
        raise ValueError(f"{len(rgb)} bytes is not a {width}x{height} RGB image")
    rows = b"".join(b"\x00" + rgb[y * stride : (y + 1) * stride] for y in range(height))
    header = struct.pack(">IIBBBBB", width, height, 8, 2, 0, 0, 0)
    return (
        SIGNATURE + _chunk(b"IHDR", header) + _chunk(b"IDAT", zlib.compress(rows, 9)) + _chunk(b"IEND", b"")
    )


class Canvas:
    """An RGB raster; anything drawn outside it is clipped."""

    def __init__(self, width: int, height: int, background: Color = WHITE) -> None:
        self.width = width
        self.height = height
        self.rgb = bytearray(bytes(background) * (width * height))

    def pixel(self, x: int, y: int) -> Color:
        i = (y * self.width + x) * 3
        return self.rgb[i], self.rgb[i + 1], self.rgb[i + 2]

    def set(self, x: int, y: int, color: Color) -> None:
        if 0 <= x < self.width and 0 <= y < self.height:
            i = (y * self.width + x) * 3
            self.rgb[i : i + 3] = bytes(color)

    def fill_rect(self, x0: int, y0: int, x1: int, y1: int, color: Color) -> None:
        """Fill the rectangle with corners (x0, y0) and (x1, y1), both included."""
        left, right = max(0, min(x0, x1)), min(self.width - 1, max(x0, x1))
        top, bottom = max(0, min(y0, y1)), min(self.height - 1, max(y0, y1))
        if left > right or top > bottom:
            return
        row = bytes(color) * (right - left + 1)
        for y in range(top, bottom + 1):
            start = (y * self.width + left) * 3
            self.rgb[start : start + len(row)] = row

    def line(
        self, x0: int, y0: int, x1: int, y1: int, color: Color, *, width: int = 1, dash: int = 0
    ) -> None:
        """Bresenham's line, every point a width x width square; dash > 0: dash on, dash off."""
        dx, dy = abs(x1 - x0), -abs(y1 - y0)
        sx, sy = (1 if x0 < x1 else -1), (1 if y0 < y1 else -1)
        err = dx + dy
        before = (width - 1) // 2
        step = 0
        while True:
            if not dash or (step // dash) % 2 == 0:
                self.fill_rect(
                    x0 - before, y0 - before, x0 - before + width - 1, y0 - before + width - 1, color
                )
            if x0 == x1 and y0 == y1:
                return
            step += 1
            doubled = 2 * err
            if doubled >= dy:
                err += dy
                x0 += sx
            if doubled <= dx:
                err += dx
                y0 += sy

    def text(self, x: int, y: int, text: str, color: Color = BLACK, scale: int = 1) -> int:
        """Draw text with its top left corner at (x, y); returns its width."""
        for i, char in enumerate(text):
            glyph = FONT.get(char, FONT.get(char.upper(), FONT["?"]))
            left = x + i * (GLYPH_WIDTH + 1) * scale
            for gx, gy in glyph:
                px, py = left + gx * scale, y + gy * scale
                self.fill_rect(px, py, px + scale - 1, py + scale - 1, color)
        return text_width(text, scale)

    def to_png(self) -> bytes:
        return encode_png(self.width, self.height, bytes(self.rgb))
