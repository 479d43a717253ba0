"""bench.png: the PNG a canvas encodes decodes back to the same pixels; lines, rectangles, text."""

import pytest
from bench_support import decode_png

from bench.png import FONT, GLYPH_HEIGHT, GLYPH_WIDTH, WHITE, Canvas, encode_png, text_width

pytestmark = pytest.mark.timeout(10)

RED = (200, 10, 20)


def test_encoded_canvas_decodes_to_its_pixels() -> None:
    canvas = Canvas(7, 3)
    canvas.set(0, 0, RED)
    canvas.set(6, 2, (1, 2, 3))
    canvas.set(7, 0, RED)  # outside: clipped
    image = decode_png(canvas.to_png())
    assert (image.width, image.height) == (7, 3)
    assert image.chunk_types == [b"IHDR", b"IDAT", b"IEND"]
    assert image.pixel(0, 0) == RED and image.pixel(6, 2) == (1, 2, 3)
    assert image.pixel(1, 0) == WHITE
    assert [bytes(row) for row in image.rows] == [bytes(canvas.rgb[y * 21 : (y + 1) * 21]) for y in range(3)]


def test_encode_rejects_a_buffer_of_the_wrong_size() -> None:
    with pytest.raises(ValueError):
        encode_png(2, 2, b"\x00" * 11)
    with pytest.raises(ValueError):
        encode_png(0, 1, b"")


def test_diagonal_and_horizontal_lines_land_on_the_expected_pixels() -> None:
    canvas = Canvas(30, 20)
    canvas.line(2, 3, 12, 13, RED)
    canvas.line(25, 5, 15, 5, (0, 0, 255))
    image = decode_png(canvas.to_png())
    assert all(image.pixel(2 + i, 3 + i) == RED for i in range(11))
    assert image.pixel(3, 3) == WHITE and image.pixel(13, 14) == WHITE
    assert all(image.pixel(x, 5) == (0, 0, 255) for x in range(15, 26))
    assert image.pixel(14, 5) == WHITE and image.pixel(26, 5) == WHITE


def test_steep_line_has_one_pixel_per_row_and_thick_lines_cover_their_width() -> None:
    canvas = Canvas(20, 40)
    canvas.line(3, 2, 9, 35, RED)
    image = decode_png(canvas.to_png())
    for y in range(2, 36):
        assert sum(image.pixel(x, y) == RED for x in range(20)) == 1
    thick = Canvas(20, 20)
    thick.line(2, 10, 17, 10, RED, width=3)
    assert all(thick.pixel(10, y) == RED for y in (9, 10, 11))
    assert thick.pixel(10, 8) == WHITE and thick.pixel(10, 12) == WHITE


def test_dashed_line_alternates_ink_and_gaps() -> None:
    canvas = Canvas(40, 3)
    canvas.line(0, 1, 39, 1, RED, dash=5)
    row = [canvas.pixel(x, 1) == RED for x in range(40)]
    assert row == [(x // 5) % 2 == 0 for x in range(40)]


def test_fill_rect_includes_both_corners_and_is_clipped() -> None:
    canvas = Canvas(10, 10)
    canvas.fill_rect(8, 8, 3, 12, RED)
    assert canvas.pixel(3, 8) == RED and canvas.pixel(8, 9) == RED
    assert canvas.pixel(2, 8) == WHITE and canvas.pixel(9, 9) == WHITE


def test_text_stays_in_its_box_and_case_folds() -> None:
    assert all(0 <= x < GLYPH_WIDTH and 0 <= y < GLYPH_HEIGHT for glyph in FONT.values() for x, y in glyph)
    for char in "0123456789ABCDEFGHIJKLMNOPQRSTUVWXYZ.-x:":
        assert FONT.get(char, FONT.get(char.upper())), char
    canvas = Canvas(60, 20)
    width = canvas.text(2, 3, "Ab1", RED, scale=2)
    assert width == text_width("Ab1", 2) == 34
    inked = [(x, y) for y in range(20) for x in range(60) if canvas.pixel(x, y) == RED]
    assert inked and all(2 <= x < 2 + width and 3 <= y < 3 + 14 for x, y in inked)
    upper = Canvas(60, 20)
    upper.text(2, 3, "AB1", RED, scale=2)
    assert upper.rgb == canvas.rgb
    blank = Canvas(20, 10)
    blank.text(0, 0, "  ", RED)
    assert RED not in {blank.pixel(x, y) for y in range(10) for x in range(20)}
    unknown, question = Canvas(10, 10), Canvas(10, 10)
    unknown.text(0, 0, "~", RED)
    question.text(0, 0, "?", RED)
    assert unknown.rgb == question.rgb
