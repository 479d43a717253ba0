"""The canonical form and the hash chain, checked against an independent computation."""

from __future__ import annotations

import hashlib

import orjson
import pytest
from audit_support import stream_lines

from fastproxy.audit.chain import GENESIS, Chain, LineError, canonical, check_line, scan_tail, seal, span_of


def test_seal_follows_the_documented_canonical_form() -> None:
    record = b'{"v":1,"x":"y"}'
    line, digest = seal(record, GENESIS)
    body = b'{"v":1,"x":"y","prev":"' + b"0" * 64 + b'"}'
    expected = hashlib.sha256(body).hexdigest()
    assert digest == expected.encode()
    assert line == b'{"v":1,"x":"y","prev":"' + b"0" * 64 + b'","hash":"' + digest + b'"}\n'
    assert canonical(line[:-1]) == body
    # Re-serializing the parsed object without its hash gives the same bytes.
    obj = orjson.loads(line)
    del obj["hash"]
    assert orjson.dumps(obj) == body


def test_chain_extend_links_each_line_to_the_one_before() -> None:
    records = [b'{"n":%d}' % i for i in range(5)]
    out: list[bytes] = []
    chain = Chain()
    chain.extend(records[:2], out)
    chain.extend(records[2:], out)  # across batches
    prev = GENESIS
    for record, line in zip(records, out, strict=True):
        expected, prev = seal(record, prev)
        assert line == expected
    assert chain.head == prev


def test_check_line_accepts_good_lines_and_names_what_is_wrong() -> None:
    line = stream_lines(1)[0][:-1]
    assert check_line(line)["seq"] == 1
    edited = line.replace(b'"pid":4242', b'"pid":4243')
    with pytest.raises(LineError, match="hash mismatch"):
        check_line(edited)
    with pytest.raises(LineError, match='"hash" member'):
        check_line(line[:-10] + b"}")
    spaced = line.replace(b'"v":1,', b'"v": 1,')
    with pytest.raises(LineError, match="hash mismatch"):
        check_line(spaced)
    no_prev = b'{"a":1,"hash":"' + hashlib.sha256(b'{"a":1}').hexdigest().encode() + b'"}'
    with pytest.raises(LineError, match="last two members"):
        check_line(no_prev)
    with pytest.raises(LineError, match="not JSON"):
        check_line(b'{"a":1,,"hash":"' + b"0" * 64 + b'"}')


def test_span_of_gap_and_plain_records() -> None:
    assert span_of({"boot": "b", "worker": 2, "seq": 10, "gap": 5}) == (("b", 2), 10, 14)
    assert span_of({"boot": "b", "worker": 2, "seq": 10}) == (("b", 2), 10, 10)
    assert span_of({"boot": "b", "event": "writer_start"}) is None


def test_scan_tail_finds_the_head_and_last_seq_of_each_stream() -> None:
    lines = stream_lines(20)
    data = b"".join(lines)
    state = scan_tail(data, from_start=True)
    assert state.head == orjson.loads(lines[-1])["hash"].encode()
    assert state.last_seq == {("b00700000000beef", 1): 21}
    assert state.records == 21
    # From the middle of a line: the cut first line is skipped.
    part = scan_tail(data[len(data) // 2 :], from_start=False)
    assert part.head == state.head and part.last_seq == state.last_seq
    with pytest.raises(LineError):
        scan_tail(data[:-1], from_start=True)
    with pytest.raises(LineError):
        scan_tail(data + b'{"garbage":1}\n', from_start=True)
    assert scan_tail(lines[0], from_start=True).records == 1
