"""Boundaries the other tests walk past: tri-feedback's u = 1 when A = 0,
the codec's header-size limits, lam_max >= 0."""

from __future__ import annotations

import json
import struct

import pytest

from cloud_agent.tri_feedback import TaskWindow, TriFeedbackConfig, TriFeedbackState, allocate
from proto.codec import decode, decode_header, encode
from proto.errors import PayloadRejected
from proto.messages import VehicleUpdate
from rsu_agent.dual import dual_step
from tests.helpers_rsu import make_update

MIB4 = 4 * 1024 * 1024


# -- tri-feedback ----------------------------------------------------------------------------------------------
def test_a_task_with_no_allocation_counts_as_fully_used() -> None:
    # equal difficulty (100 J / 0.1): the weights differ only by u; u_a = 1 (A = 0), u_b = 100 / 200
    windows = [TaskWindow("a", used_j=100.0, allocated_j=0.0, accuracy_gain=0.1),
               TaskWindow("b", used_j=100.0, allocated_j=200.0, accuracy_gain=0.1)]
    cfg = TriFeedbackConfig(rho_max=1.0)
    alloc, _ = allocate(windows, TriFeedbackState(), 500.0, cfg)
    # surplus 300 J split 1 : 0.5
    assert alloc == pytest.approx({"a": 100 + 200.0, "b": 100 + 100.0})


# -- codec ------------------------------------------------------------------------------------------------------
def _with_header_length(n: int, total: int | None = None) -> bytes:
    body = b"{" + b" " * (n - 2) + b"}"  # a JSON object of exactly n bytes
    payload = struct.pack("<Q", n) + body
    return payload if total is None else payload + b"\0" * (total - len(payload))


def test_a_header_of_exactly_4_mib_is_read_and_one_byte_more_is_refused() -> None:
    with pytest.raises(PayloadRejected) as at_cap:
        decode_header(_with_header_length(MIB4), VehicleUpdate)
    assert at_cap.value.reason == "no_header"  # parsed: the object is read, it just holds no fedrank header
    with pytest.raises(PayloadRejected) as over:
        decode_header(_with_header_length(MIB4 + 1), VehicleUpdate)
    assert over.value.reason == "bad_safetensors" and "header length 4194305" in over.value.detail


def test_a_header_length_beyond_the_payload_is_refused() -> None:
    good = make_update("v1", 0).payload
    (n,) = struct.unpack("<Q", good[:8])
    short = struct.pack("<Q", len(good) - 7) + good[8:]  # 8 + n = len + 1
    with pytest.raises(PayloadRejected, match="does not fit") as exc:
        decode_header(short, VehicleUpdate)
    assert exc.value.reason == "bad_safetensors"
    fits = struct.pack("<Q", len(good) - 8) + good[8:]  # 8 + n = len: the length fits, the JSON does not parse
    with pytest.raises(PayloadRejected) as exc2:
        decode_header(fits, VehicleUpdate)
    assert "header is not JSON" in exc2.value.detail
    with pytest.raises(PayloadRejected, match="shorter than the 8-byte"):
        decode_header(good[:7], VehicleUpdate)
    assert decode_header(good, VehicleUpdate).sender == "v1" and n < len(good)


def test_decode_header_enforces_its_size_limit_at_the_byte() -> None:
    good = make_update("v1", 0).payload
    assert decode_header(good, VehicleUpdate, max_bytes=len(good)).round == 0
    with pytest.raises(PayloadRejected) as exc:
        decode_header(good, VehicleUpdate, max_bytes=len(good) - 1)
    assert exc.value.reason == "too_large"
    with pytest.raises(PayloadRejected) as exc2:
        decode_header("not bytes", VehicleUpdate)  # type: ignore[arg-type]
    assert exc2.value.reason == "bad_payload"


def test_a_json_message_in_safetensors_clothing_is_refused_by_decode_header() -> None:
    from proto.messages import AgentStatus

    status = encode(AgentStatus(sender="v1", role="vehicle", state="online"))
    fake = json.dumps({"__metadata__": {"fedrank": status.decode()}}).encode()
    with pytest.raises(PayloadRejected) as exc:
        decode_header(struct.pack("<Q", len(fake)) + fake, AgentStatus)  # type: ignore[type-var]
    assert exc.value.reason == "bad_encoding"
    assert decode(status).msg.sender == "v1"


# -- dual ---------------------------------------------------------------------------------------------------------
def test_lam_max_must_be_non_negative_and_zero_pins_lambda() -> None:
    assert dual_step(0.5, 300.0, 100.0, mu=0.5, lam_max=0.0) == 0.0
    with pytest.raises(ValueError, match="lam_max"):
        dual_step(0.5, 300.0, 100.0, mu=0.5, lam_max=-1.0)
    # 0.5 + 0.5 * min(2, 1) = 1.0 (one round moves lambda by at most mu), clipped to 0.8
    assert dual_step(0.5, 300.0, 100.0, mu=0.5, lam_max=0.8) == pytest.approx(0.8)
