"""RequestHead: the constructor's positional order (the C callbacks rely on it), has_body, repr."""

from __future__ import annotations

import pytest

from fastproxy.http.head import FIELDS, RequestHead


def test_positional_arguments_land_in_the_fields_in_order() -> None:
    values = (
        "POST",
        b"/a?b",
        "/a",
        "1.0",
        [(b"x", b"y")],
        False,
        12,
        True,
        b"example.com",
        b"rid",
        b"10.0.0.1",
        b"https",
        True,
        b"Bearer t",
        b"k",
    )
    head = RequestHead(*values)  # type: ignore[arg-type]
    assert len(FIELDS) == len(values)
    assert tuple(getattr(head, name) for name in FIELDS) == values


def test_defaults_are_a_bodiless_request_without_optional_headers() -> None:
    head = RequestHead("GET", b"/", "/", "1.1", [], True)
    assert [getattr(head, name) for name in FIELDS[6:]] == [
        None,
        False,
        None,
        None,
        None,
        None,
        False,
        None,
        None,
    ]


@pytest.mark.parametrize(
    ("content_length", "chunked", "expected"),
    [(None, False, False), (0, False, False), (1, False, True), (None, True, True)],
)
def test_has_body(content_length: int | None, chunked: bool, expected: bool) -> None:
    head = RequestHead("POST", b"/", "/", "1.1", [], True, content_length, chunked)
    assert head.has_body is expected


def test_repr_names_every_field_but_never_a_credential() -> None:
    head = RequestHead("GET", b"/", "/", "1.1", [], True, authorization=b"Bearer s3cret", api_key=b"k3y")
    text = repr(head)
    assert "s3cret" not in text and "k3y" not in text
    assert all(f"{name}=" in text for name in FIELDS)
