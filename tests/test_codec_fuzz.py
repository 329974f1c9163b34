"""Property tests: whatever bytes arrive, decode returns a validated message or raises PayloadRejected.

Strategies: random bytes; random JSON objects shaped like headers; hand-crafted safetensors blobs whose
header lies about lengths, offsets, dtypes and shapes; and byte-level mutations of valid payloads.
"""

from __future__ import annotations

import json
import os
import struct

import torch
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from proto.codec import META_KEY, WIRE_DTYPES, Decoded, decode, encode
from proto.errors import PayloadRejected
from proto.messages import ALL_MESSAGES, BY_KIND, Message, TensorMessage, UpdateReport, VehicleUpdate

# FEDRANK_FUZZ_EXAMPLES=5000 for a deeper search; 150 keeps the suite quick on a 2-core box.
FUZZ = settings(
    max_examples=int(os.environ.get("FEDRANK_FUZZ_EXAMPLES", "150")),
    deadline=None,
    suppress_health_check=[HealthCheck.too_slow],
)
EXPECTED = st.sampled_from([None, *ALL_MESSAGES])
LIMIT = 64 * 1024  # small, so that size-limit checks are exercised too

REPORT = UpdateReport(
    rank=1,
    samples=1,
    joules=0.0,
    energy_source="estimate-cpu-time",
    energy_measured=False,
    train_s=0.0,
    wall_s=0.0,
    local_accuracy=0.5,
    loss=0.1,
)
UPDATE = VehicleUpdate(sender="veh-1", task="t", round=0, rsu="r1", lora_alpha=8.0, report=REPORT)
VALID_UPDATE_HEADER = json.loads(UPDATE.model_dump_json())


def check_outcome(payload: bytes, expected: type[Message] | None) -> Decoded | None:
    """Decode; the only acceptable failure is PayloadRejected, and a success must honour its declaration."""
    try:
        out = decode(payload, expected, max_bytes=LIMIT)
    except PayloadRejected as exc:
        assert exc.reason and isinstance(exc.reason, str)
        return None
    assert expected is None or isinstance(out.msg, expected)
    if isinstance(out.msg, TensorMessage):
        assert set(out.tensors) == set(out.msg.tensors)
        for name, spec in out.msg.tensors.items():
            t = out.tensors[name]
            assert t.dtype == WIRE_DTYPES[spec.dtype]
            assert list(t.shape) == spec.shape
            assert bool(torch.isfinite(t).all())
    else:
        assert out.tensors == {}
    return out


# -- random bytes ---------------------------------------------------------------------------------


@FUZZ
@given(payload=st.binary(max_size=2048), expected=EXPECTED)
def test_random_bytes_never_escape_as_anything_but_payload_rejected(payload: bytes, expected: type | None) -> None:
    check_outcome(payload, expected)


@FUZZ
@given(n=st.integers(min_value=0, max_value=2**64 - 1), rest=st.binary(max_size=512), expected=EXPECTED)
def test_any_length_prefix_is_handled(n: int, rest: bytes, expected: type | None) -> None:
    check_outcome(struct.pack("<Q", n) + rest, expected)


# -- JSON that looks like a header --------------------------------------------------------------

SCALARS = (
    st.none()
    | st.booleans()
    | st.integers(min_value=-(2**70), max_value=2**70)
    | st.floats(allow_nan=True, allow_infinity=True)
    | st.text(max_size=20)
)
JSONISH = st.recursive(
    SCALARS,
    lambda inner: st.lists(inner, max_size=4) | st.dictionaries(st.text(max_size=8), inner, max_size=4),
    max_leaves=12,
)
FIELD_NAMES = sorted({f for m in ALL_MESSAGES for f in m.model_fields} | {"tensors", "report", "x"})


@st.composite
def header_like(draw: st.DrawFn) -> dict:
    obj: dict = {
        "kind": draw(st.sampled_from([*BY_KIND, "nope", 1, None])),
        "v": draw(st.sampled_from([1, 1, 1, 2, 0, True, 1.0, "1", None])),
    }
    for name in draw(st.lists(st.sampled_from(FIELD_NAMES), max_size=12)):
        obj[name] = draw(JSONISH)
    return obj


@FUZZ
@given(obj=header_like(), expected=EXPECTED)
def test_random_json_headers_are_validated_or_rejected(obj: dict, expected: type | None) -> None:
    check_outcome(json.dumps(obj).encode(), expected)  # json.dumps writes NaN/Infinity: the decoder must cope


@FUZZ
@given(base=st.sampled_from([VALID_UPDATE_HEADER]), overrides=st.dictionaries(st.sampled_from(FIELD_NAMES), JSONISH))
def test_mutated_valid_headers_are_validated_or_rejected(base: dict, overrides: dict) -> None:
    obj = {**base, **overrides}
    check_outcome(json.dumps(obj).encode(), None)


# -- crafted safetensors blobs ---------------------------------------------------------------------

DTYPES = st.sampled_from(["F32", "F16", "BF16", "F64", "I8", "U8", "BOOL", "F8_E4M3", "XX", 7, None])
SHAPES = st.lists(st.integers(min_value=-2, max_value=2**40), max_size=4) | st.lists(
    st.integers(min_value=0, max_value=6), max_size=3
)
OFFSETS = st.lists(st.integers(min_value=-1, max_value=2**64), min_size=0, max_size=3) | st.tuples(
    st.integers(0, 256), st.integers(0, 256)
).map(list)


@st.composite
def crafted_blob(draw: st.DrawFn) -> bytes:
    names = draw(st.lists(st.sampled_from(["q.lora_A", "q.lora_B", "head.w", "__x__"]), max_size=3, unique=True))
    entries = {n: {"dtype": draw(DTYPES), "shape": draw(SHAPES), "data_offsets": draw(OFFSETS)} for n in names}
    # The fedrank declaration either repeats the entries (the usual liar) or is drawn independently.
    if draw(st.booleans()):
        declared = {n: {"dtype": e["dtype"], "shape": e["shape"]} for n, e in entries.items()}
    else:
        declared = {
            n: {"dtype": draw(DTYPES), "shape": draw(SHAPES)} for n in draw(st.lists(st.sampled_from(names or ["a"])))
        }
    meta_header = {**VALID_UPDATE_HEADER, "tensors": declared}
    meta_value = draw(st.sampled_from(["json", "junk", "missing", "not_str"]))
    header: dict = dict(entries)
    if meta_value == "json":
        header["__metadata__"] = {META_KEY: json.dumps(meta_header)}
    elif meta_value == "junk":
        header["__metadata__"] = {META_KEY: draw(st.text(max_size=30))}
    elif meta_value == "not_str":
        header["__metadata__"] = {META_KEY: meta_header}
    raw = json.dumps(header).encode()
    prefix = len(raw) + draw(st.sampled_from([0, 0, 0, -1, 1, 2**32]))
    body = draw(st.binary(max_size=300))
    return struct.pack("<Q", max(prefix, 0)) + raw + body


@FUZZ
@given(payload=crafted_blob(), expected=st.sampled_from([None, VehicleUpdate]))
def test_crafted_safetensors_headers_with_lying_fields_never_escape(payload: bytes, expected: type | None) -> None:
    check_outcome(payload, expected)


@FUZZ
@given(
    eta=st.integers(1, 4),
    d=st.integers(1, 6),
    dtype=st.sampled_from(sorted(WIRE_DTYPES)),
    data=st.data(),
)
def test_byte_mutations_of_a_valid_payload_are_decoded_or_rejected(
    eta: int, d: int, dtype: str, data: st.DataObject
) -> None:
    g = torch.Generator().manual_seed(eta * 10 + d)
    tensors = {"q.lora_A": torch.randn(eta, d, generator=g), "q.lora_B": torch.randn(d, eta, generator=g)}
    payload = bytearray(encode(UPDATE, tensors, dtype=dtype))
    assert check_outcome(bytes(payload), VehicleUpdate) is not None  # the unmutated payload decodes
    for _ in range(data.draw(st.integers(1, 4))):
        op = data.draw(st.sampled_from(["flip", "truncate", "extend", "splice"]))
        if op == "flip" and payload:
            i = data.draw(st.integers(0, len(payload) - 1))
            payload[i] = data.draw(st.integers(0, 255))
        elif op == "truncate":
            del payload[data.draw(st.integers(0, len(payload))) :]
        elif op == "extend":
            payload += data.draw(st.binary(min_size=1, max_size=64))
        else:
            i = data.draw(st.integers(0, len(payload)))
            payload[i:i] = data.draw(st.binary(min_size=1, max_size=16))
    check_outcome(bytes(payload), data.draw(st.sampled_from([None, VehicleUpdate])))


@FUZZ
@given(
    shape=st.lists(st.integers(0, 5), min_size=1, max_size=3),
    dtype=st.sampled_from(sorted(WIRE_DTYPES)),
    poison=st.sampled_from([None, float("nan"), float("inf"), float("-inf")]),
    data=st.data(),
)
def test_valid_tensor_payloads_round_trip_unless_poisoned(
    shape: list[int], dtype: str, poison: float | None, data: st.DataObject
) -> None:
    t = torch.arange(float(torch.Size(shape).numel())).reshape(shape) / 7.0
    if poison is not None and t.numel():
        t.view(-1)[data.draw(st.integers(0, t.numel() - 1))] = poison
    payload = encode(UPDATE, {"x": t}, dtype=dtype)
    out = check_outcome(payload, VehicleUpdate)
    if poison is not None and t.numel():
        assert out is None
    else:
        assert out is not None
        assert torch.equal(out.tensors["x"], t.to(WIRE_DTYPES[dtype]))
