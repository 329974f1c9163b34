"""The tensor codec: one safetensors blob with the JSON header in its metadata, checked before use."""

from __future__ import annotations

import json
import pickle
import struct

import pytest
import torch
from safetensors.torch import save as st_save

from proto.codec import DEFAULT_MAX_BYTES, META_KEY, WIRE_DTYPES, decode, dtype_name, encode
from proto.errors import PayloadRejected
from proto.messages import AgentStatus, Handoff, RoundAnnouncement, TaskBudget, UpdateReport, VehicleUpdate

REPORT = UpdateReport(
    rank=2,
    samples=64,
    joules=3.0,
    energy_source="estimate-cpu-time",
    energy_measured=False,
    train_s=1.0,
    wall_s=1.5,
    local_accuracy=0.7,
    loss=0.6,
)
UPDATE = VehicleUpdate(sender="veh-1", seq=1, task="sst2", round=4, rsu="rsu_1", lora_alpha=16.0, report=REPORT)
ROUND = RoundAnnouncement(
    sender="rsu_1",
    task="sst2",
    task_type="sentence",
    round=4,
    deadline=60.0,
    lam=0.0,
    round_budget_j=50.0,
    ranks=[2, 4],
    rank=4,
    layers=["q"],
)
HANDOFF = Handoff(
    sender="rsu_1", task="sst2", round=4, rsu="rsu_1", vehicle="veh-3", migrated_from="veh-2", lora_alpha=16.0, rank=2
)
STATUS = AgentStatus(sender="veh-1", role="vehicle", state="online")


def lora_tensors(seed: int = 0, eta: int = 2, d: int = 8) -> dict[str, torch.Tensor]:
    g = torch.Generator().manual_seed(seed)
    return {
        "q.lora_A": torch.randn(eta, d, generator=g),  # (eta, d_in)
        "q.lora_B": torch.randn(d, eta, generator=g),  # (d_out, eta)
        "head.weight": torch.randn(2, d, generator=g),
    }


def craft(header: dict, body: bytes) -> bytes:
    """A safetensors blob written by hand, so a test can make it lie."""
    raw = json.dumps(header).encode()
    return struct.pack("<Q", len(raw)) + raw + body


def split_blob(payload: bytes) -> tuple[dict, bytes]:
    (n,) = struct.unpack("<Q", payload[:8])
    return json.loads(payload[8 : 8 + n]), payload[8 + n :]


def rejected(payload: bytes | object, expected: type | None = None, **kw: int) -> PayloadRejected:
    with pytest.raises(PayloadRejected) as e:
        decode(payload, expected, **kw)  # type: ignore[arg-type]
    return e.value


# -- format ---------------------------------------------------------------------------------------


def test_a_tensor_message_is_one_safetensors_blob_with_the_header_in_its_metadata() -> None:
    tensors = lora_tensors()
    payload = encode(UPDATE, tensors)
    header, body = split_blob(payload)
    inner = json.loads(header["__metadata__"][META_KEY])
    assert inner["kind"] == "update" and inner["v"] == 2 and inner["sender"] == "veh-1"
    assert inner["tensors"] == {
        "q.lora_A": {"shape": [2, 8], "dtype": "F32"},
        "q.lora_B": {"shape": [8, 2], "dtype": "F32"},
        "head.weight": {"shape": [2, 8], "dtype": "F32"},
    }
    assert set(header) == {"__metadata__", *tensors}
    assert len(body) == 4 * (2 * 8 + 8 * 2 + 2 * 8)  # every element once, fp32, nothing else


def test_a_json_message_is_plain_utf8_json_of_its_model() -> None:
    assert json.loads(encode(STATUS)) == json.loads(STATUS.model_dump_json())


def test_f32_round_trip_is_exact_for_every_tensor_kind() -> None:
    tensors = lora_tensors(seed=1)
    for msg in (UPDATE, HANDOFF, ROUND):
        out = decode(encode(msg, tensors), type(msg))
        assert out.msg.model_dump(exclude={"tensors"}) == msg.model_dump(exclude={"tensors"})
        assert set(out.tensors) == set(tensors)
        for k, t in tensors.items():
            assert out.tensors[k].dtype == torch.float32
            assert torch.equal(out.tensors[k], t)


@pytest.mark.parametrize(("dtype", "rel"), [("F16", 2.0**-11), ("BF16", 2.0**-8)])
def test_half_precision_round_trip_stays_within_one_rounding_step(dtype: str, rel: float) -> None:
    # Round-to-nearest keeps |x - q(x)| <= |x| * 2^-(mantissa bits + 1): fp16 has 10, bf16 has 7;
    # below fp16's normal range the spacing is fixed at 2^-24, so half of it is the absolute floor.
    t = torch.linspace(-3.0, 3.0, 401).reshape(1, 401)  # includes ~6.7e-8, a subnormal in fp16
    out = decode(encode(UPDATE, {"x.lora_A": t}, dtype=dtype), VehicleUpdate)
    back = out.tensors["x.lora_A"]
    assert back.dtype == WIRE_DTYPES[dtype]
    assert out.msg.tensors["x.lora_A"].dtype == dtype
    err = (back.float() - t).abs()
    assert bool((err <= t.abs() * rel + 2.0**-25).all())
    assert float(err.max()) > 0  # it really went through half precision


def test_decode_without_an_expected_class_recognises_a_safetensors_blob() -> None:
    out = decode(encode(HANDOFF, lora_tensors()))
    assert isinstance(out.msg, Handoff)
    assert out.tensors.keys() == lora_tensors().keys()


def test_decode_accepts_bytearray_and_memoryview() -> None:
    payload = encode(UPDATE, lora_tensors())
    assert decode(bytearray(payload), VehicleUpdate).msg == decode(memoryview(payload), VehicleUpdate).msg


def test_nothing_is_unpickled_on_decode(monkeypatch: pytest.MonkeyPatch) -> None:
    def refuse(*_a: object, **_k: object) -> None:
        raise AssertionError("the codec tried to unpickle")

    monkeypatch.setattr(pickle, "loads", refuse)
    monkeypatch.setattr(pickle, "load", refuse)
    monkeypatch.setattr(pickle, "Unpickler", refuse)
    monkeypatch.setattr(torch, "load", refuse)
    assert decode(encode(UPDATE, lora_tensors()), VehicleUpdate).tensors.keys() == lora_tensors().keys()
    assert decode(encode(STATUS), AgentStatus).msg == STATUS


def test_encode_refuses_tensors_on_a_json_kind_and_unknown_wire_dtypes() -> None:
    with pytest.raises(ValueError):
        encode(STATUS, {"x": torch.zeros(1)})
    with pytest.raises(ValueError):
        encode(UPDATE, lora_tensors(), dtype="F64")
    with pytest.raises(ValueError):
        encode(UPDATE, {"__metadata__": torch.zeros(1)})


def test_dtype_names() -> None:
    assert [dtype_name(d) for d in (torch.float32, torch.float16, torch.bfloat16)] == ["F32", "F16", "BF16"]


# -- size ----------------------------------------------------------------------------------------


def test_the_size_limit_is_inclusive_and_configurable() -> None:
    payload = encode(UPDATE, lora_tensors())
    assert decode(payload, VehicleUpdate, max_bytes=len(payload)).tensors
    e = rejected(payload, VehicleUpdate, max_bytes=len(payload) - 1)
    assert e.reason == "too_large"


def test_default_limit_refuses_a_payload_one_byte_over_16_mib() -> None:
    assert DEFAULT_MAX_BYTES == 16 * 1024 * 1024
    assert rejected(b" " * (DEFAULT_MAX_BYTES + 1)).reason == "too_large"


def test_empty_and_non_bytes_payloads_are_rejected() -> None:
    assert rejected(b"").reason == "empty"
    assert rejected("{}").reason == "bad_payload"
    assert rejected(None).reason == "bad_payload"


# -- JSON messages -------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("payload", "reason"),
    [
        (b"{not json", "bad_json"),
        (b"\xff\xfe{}", "bad_json"),
        (b"[1, 2]", "bad_json"),  # valid JSON, not an object
        (b"[" * 100_000 + b"]" * 100_000, "bad_json"),  # nesting past the recursion limit
        (b'{"kind":"status","v":2,"seq":' + b"9" * 5000 + b"}", "bad_json"),  # integer past Python's digit limit
        (b'{"kind":"telemetry","v":2}', "unknown_kind"),
        (b'{"v":2}', "unknown_kind"),
        (b'{"kind":["status"],"v":2}', "unknown_kind"),
        (b'{"kind":"status","v":2,"sender":"veh-1","role":"vehicle"}', "invalid_field"),  # no state
        (
            b'{"kind":"budget","v":2,"sender":"c0","task":"t","round":0,"window_rounds":5,'
            b'"window_budget_j":NaN,"round_budget_j":1}',
            "invalid_field",
        ),
    ],
)
def test_bad_json_payloads_get_a_typed_reason(payload: bytes, reason: str) -> None:
    assert rejected(payload).reason == reason


def test_the_invalid_field_reason_names_the_field() -> None:
    e = rejected(b'{"kind":"status","v":2,"sender":"veh-1","role":"vehicle"}', AgentStatus)
    assert e.detail.startswith("state")


def test_a_kind_other_than_the_topic_calls_for_is_rejected() -> None:
    assert rejected(encode(STATUS), TaskBudget).reason == "wrong_kind"
    assert rejected(encode(HANDOFF, lora_tensors()), VehicleUpdate).reason == "wrong_kind"


def test_a_tensor_kind_sent_as_json_is_rejected() -> None:
    assert rejected(UPDATE.model_dump_json().encode()).reason == "bad_encoding"


def test_a_json_kind_sent_as_safetensors_is_rejected() -> None:
    payload = st_save({}, metadata={META_KEY: STATUS.model_dump_json()})
    assert rejected(payload).reason == "bad_encoding"


def test_json_sent_where_the_topic_expects_tensors_is_rejected() -> None:
    assert rejected(UPDATE.model_dump_json().encode(), VehicleUpdate).reason == "bad_safetensors"


# -- tensor messages -----------------------------------------------------------------------------


def header_of(msg: VehicleUpdate, tensors: dict[str, dict]) -> str:
    obj = json.loads(msg.model_dump_json())
    obj["tensors"] = tensors
    return json.dumps(obj)


def test_a_blob_without_the_fedrank_header_is_rejected() -> None:
    assert rejected(st_save({"x": torch.zeros(2)}), VehicleUpdate).reason == "no_header"
    assert rejected(st_save({"x": torch.zeros(2)}, metadata={"other": "1"}), VehicleUpdate).reason == "no_header"


def test_a_header_that_is_not_json_is_rejected() -> None:
    payload = st_save({"x": torch.zeros(2)}, metadata={META_KEY: "{oops"})
    assert rejected(payload, VehicleUpdate).reason == "bad_json"


@pytest.mark.parametrize("bad", [float("nan"), float("inf"), float("-inf")])
@pytest.mark.parametrize("dtype", ["F32", "F16", "BF16"])
def test_nan_or_inf_anywhere_in_a_tensor_is_rejected(bad: float, dtype: str) -> None:
    tensors = lora_tensors()
    tensors["q.lora_B"][3, 1] = bad
    e = rejected(encode(UPDATE, tensors, dtype=dtype), VehicleUpdate)
    assert e.reason == "not_finite" and "q.lora_B" in e.detail


@pytest.mark.parametrize("dtype", ["F32", "F16", "BF16"])
def test_large_finite_values_are_not_mistaken_for_inf(dtype: str) -> None:
    # A sum in the wire dtype would overflow here (fp16 max 65504); the finiteness check must not.
    top = torch.finfo(WIRE_DTYPES[dtype]).max
    t = torch.full((64, 64), top, dtype=WIRE_DTYPES[dtype])
    out = decode(encode(UPDATE, {"big": t}, dtype=dtype), VehicleUpdate)
    assert torch.equal(out.tensors["big"], t)


def test_an_undeclared_tensor_is_rejected() -> None:
    tensors = {"a": torch.zeros(2), "b": torch.ones(3)}
    payload = st_save(tensors, metadata={META_KEY: header_of(UPDATE, {"a": {"shape": [2], "dtype": "F32"}})})
    assert rejected(payload, VehicleUpdate).reason == "tensor_mismatch"


def test_a_declared_but_missing_tensor_is_rejected() -> None:
    decl = {"a": {"shape": [2], "dtype": "F32"}, "b": {"shape": [3], "dtype": "F32"}}
    payload = st_save({"a": torch.zeros(2)}, metadata={META_KEY: header_of(UPDATE, decl)})
    assert rejected(payload, VehicleUpdate).reason == "tensor_mismatch"


def test_a_dtype_other_than_declared_is_rejected() -> None:
    decl = {"a": {"shape": [2], "dtype": "F16"}}
    payload = st_save({"a": torch.zeros(2)}, metadata={META_KEY: header_of(UPDATE, decl)})
    assert rejected(payload, VehicleUpdate).reason == "bad_dtype"


def test_a_dtype_outside_the_wire_set_cannot_even_be_declared() -> None:
    t = {"a": torch.zeros(2, dtype=torch.float64)}
    payload = st_save(t, metadata={META_KEY: header_of(UPDATE, {"a": {"shape": [2], "dtype": "F64"}})})
    e = rejected(payload, VehicleUpdate)
    assert e.reason == "invalid_field" and "dtype" in e.detail
    int_payload = st_save({"a": torch.zeros(2, dtype=torch.int64)}, metadata={META_KEY: header_of(UPDATE, {})})
    assert rejected(int_payload, VehicleUpdate).reason == "tensor_mismatch"


def test_a_shape_other_than_declared_is_rejected() -> None:
    decl = {"a": {"shape": [3, 2], "dtype": "F32"}}
    payload = st_save({"a": torch.zeros(2, 3)}, metadata={META_KEY: header_of(UPDATE, decl)})
    e = rejected(payload, VehicleUpdate)
    assert e.reason == "bad_shape" and "[2, 3]" in e.detail


def test_a_header_length_longer_than_the_payload_is_rejected() -> None:
    payload = encode(UPDATE, lora_tensors())
    lying = struct.pack("<Q", len(payload)) + payload[8:]
    assert rejected(lying, VehicleUpdate).reason == "bad_safetensors"
    assert rejected(payload[:7], VehicleUpdate).reason == "bad_safetensors"


def test_data_offsets_that_point_past_the_body_are_rejected() -> None:
    header, body = split_blob(encode(UPDATE, {"a": torch.ones(4)}))
    header["a"]["data_offsets"] = [0, 32]  # 8 floats claimed, 4 present
    assert rejected(craft(header, body), VehicleUpdate).reason == "bad_safetensors"


def test_a_truncated_body_is_rejected() -> None:
    payload = encode(UPDATE, lora_tensors())
    assert rejected(payload[:-4], VehicleUpdate).reason == "bad_safetensors"


def test_an_extra_unknown_field_in_the_tensor_header_is_ignored() -> None:
    header, body = split_blob(encode(UPDATE, {"a": torch.ones(4)}))
    inner = json.loads(header["__metadata__"][META_KEY])
    inner["compression"] = "none"
    header["__metadata__"][META_KEY] = json.dumps(inner)
    out = decode(craft(header, body), VehicleUpdate)
    assert torch.equal(out.tensors["a"], torch.ones(4))


def test_the_version_check_applies_inside_the_safetensors_header() -> None:
    header, body = split_blob(encode(UPDATE, {"a": torch.ones(4)}))
    inner = json.loads(header["__metadata__"][META_KEY])
    inner["v"] = 1
    header["__metadata__"][META_KEY] = json.dumps(inner)
    assert rejected(craft(header, body), VehicleUpdate).reason == "bad_version"
