"""Records as a worker encodes them: fields, order, timestamps, odd values, size bound."""

from __future__ import annotations

import orjson
from audit_support import BOOT, T0, Clock, request

from fastproxy.audit.record import RECORD_MAX, RecordEncoder, format_timestamp


def test_request_record_has_the_spec_fields_in_order() -> None:
    encoder = RecordEncoder(BOOT, 3, Clock())
    data = request(encoder, 1841, 7)
    assert data == (
        b'{"v":1,"ts":"2026-11-28T03:00:00.123456Z","boot":"b00700000000beef","worker":3,"seq":1841,'
        b'"request_id":"req-7","client_ip":"203.0.113.7","method":"GET","path":"/api/orders/7",'
        b'"route":"orders-read","principal":"alice","auth":"jwt:corp","decision":"allow","reason":"ok",'
        b'"mode":"enforce","status":200,"upstream":"api","latency_ms":1.92,"bytes_in":0,"bytes_out":734,'
        b'"masked":2}'
    )


def test_absent_values_are_null_and_would_deny_appears_only_when_set() -> None:
    encoder = RecordEncoder(BOOT, 1, Clock())
    denied = orjson.loads(
        request(
            encoder, 1, route=None, principal=None, auth=None, upstream=None, decision="deny",
            reason="no_route", status=404,
        )
    )  # fmt: skip
    assert denied["route"] is None and denied["principal"] is None and denied["upstream"] is None
    assert "would_deny" not in denied and "truncated" not in denied
    shadow = orjson.loads(request(encoder, 2, mode="shadow", would_deny="forbidden:role"))
    assert shadow["decision"] == "allow" and shadow["would_deny"] == "forbidden:role"
    assert list(shadow)[-1] == "would_deny"


def test_bytes_request_id_is_text_and_latency_is_rounded_to_microseconds() -> None:
    encoder = RecordEncoder(BOOT, 1, Clock())
    record = orjson.loads(request(encoder, 1, request_id=b"a1b2-3f", latency_ms=1.23456789))
    assert record["request_id"] == "a1b2-3f"
    assert record["latency_ms"] == 1.235


def test_timestamps_are_utc_with_microseconds() -> None:
    clock = Clock()
    encoder = RecordEncoder(BOOT, 1, clock)
    assert encoder.timestamp() == "2026-11-28T03:00:00.123456Z"
    clock.now += 999_000  # same second: the cached prefix
    assert encoder.timestamp() == "2026-11-28T03:00:00.124455Z"
    clock.now = T0 + 3_600_000_000_000 + 877_000_000  # another second: formatted again
    assert encoder.timestamp() == "2026-11-28T04:00:01.000456Z"
    assert format_timestamp(T0) == "2026-11-28T03:00:00.123456Z"
    assert format_timestamp(0) == "1970-01-01T00:00:00.000000Z"


def test_text_is_escaped_and_lone_surrogates_do_not_break_encoding() -> None:
    encoder = RecordEncoder(BOOT, 1, Clock())
    odd = '/a"b\\c\nd\x00é☃'
    assert orjson.loads(request(encoder, 1, path=odd))["path"] == odd
    record = orjson.loads(request(encoder, 2, path="/x\udcff"))
    assert record["path"] == "/x\\udcff"


def test_an_oversized_record_is_cut_and_marked() -> None:
    encoder = RecordEncoder(BOOT, 1, Clock())
    data = request(encoder, 1, path="/" + "\x01" * 20000, principal="p" * 5000)
    assert len(data) <= RECORD_MAX
    record = orjson.loads(data)
    assert record["truncated"] is True
    assert len(record["path"]) == 1024 and record["principal"] == "p" * 1024


def test_gap_and_worker_start_records() -> None:
    encoder = RecordEncoder(BOOT, 4, Clock())
    assert orjson.loads(encoder.gap(10, 3, "queue_full")) == {
        "v": 1, "ts": "2026-11-28T03:00:00.123456Z", "boot": BOOT, "worker": 4, "seq": 10, "gap": 3,
        "reason": "queue_full",
    }  # fmt: skip
    start = orjson.loads(encoder.worker_start(1, 999))
    assert start["event"] == "worker_start" and start["seq"] == 1 and start["pid"] == 999
    assert "request_id" not in start


def test_records_are_what_orjson_writes_for_the_parsed_object() -> None:
    # The canonical form may be re-derived by re-serializing (documented in fastproxy.audit.chain).
    encoder = RecordEncoder(BOOT, 1, Clock())
    for n, latency in enumerate([0.0, 0.001, 1.92, 12345.678, 99999999.999]):
        data = request(encoder, n + 1, n, latency_ms=latency, path="/é\u2028\x7f\x1f")
        assert orjson.dumps(orjson.loads(data)) == data


def test_mask_skipped_appears_only_when_a_masked_route_sent_its_response_unmasked() -> None:
    encoder = RecordEncoder(BOOT, 1, Clock())
    assert "mask_skipped" not in orjson.loads(request(encoder, 1))
    record = orjson.loads(request(encoder, 2, masked=0, mask_skipped="too_large"))
    assert record["mask_skipped"] == "too_large"
    assert list(record)[-1] == "mask_skipped"  # after the SPEC's fields, before prev and hash
