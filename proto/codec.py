"""Encode and decode messages. Nothing on the wire is pickled.

- A message without tensors is UTF-8 JSON of its model.
- A message with tensors is ONE safetensors blob; its metadata key `fedrank` holds the JSON header,
  whose `tensors` field declares every tensor's shape and dtype. Decoding checks the size limit,
  the header, the declared names/shapes/dtypes and finiteness before anything reaches an agent.
"""

from __future__ import annotations

import json
import math
import struct
from collections.abc import Iterator, Mapping
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, TypeVar

from pydantic import ValidationError

from proto import SCHEMA_VERSION
from proto.errors import PayloadRejected
from proto.messages import BY_KIND, Message, TensorMessage, TensorSpec

DEFAULT_MAX_BYTES = 16 * 1024 * 1024
META_KEY = "fedrank"


class _WireDtypes(Mapping[str, "torch.dtype"]):
    """Wire name -> torch dtype. torch is imported on first lookup only: an idle daemon that handles JSON
    messages (status, budgets, commands) never pays for it."""

    _NAMES = ("F32", "F16", "BF16")

    def __getitem__(self, name: str) -> torch.dtype:
        import torch

        return {"F32": torch.float32, "F16": torch.float16, "BF16": torch.bfloat16}[name]

    def __iter__(self) -> Iterator[str]:
        return iter(self._NAMES)

    def __len__(self) -> int:
        return len(self._NAMES)


WIRE_DTYPES = _WireDtypes()
# Cap on the safetensors JSON header itself, so a hostile length prefix cannot make us parse megabytes.
_MAX_HEADER_BYTES = 4 * 1024 * 1024

M = TypeVar("M", bound=Message)

if TYPE_CHECKING:
    import torch
# json.loads raises ValueError (JSONDecodeError, or an integer past Python's 4300-digit limit) and
# RecursionError (deeply nested arrays/objects); every one of them is a hostile or broken payload.
_JSON_ERRORS = (UnicodeDecodeError, ValueError, RecursionError)


@dataclass(frozen=True)
class Decoded:
    """A validated message and its tensors (empty for JSON messages)."""

    msg: Message
    tensors: dict[str, torch.Tensor] = field(default_factory=dict)


def encode(msg: Message, tensors: dict[str, torch.Tensor] | None = None, dtype: str = "F32") -> bytes:
    """Serialise `msg` (and, for tensor messages, `tensors` cast to the wire `dtype`)."""
    if not msg.HAS_TENSORS:
        if tensors:
            raise ValueError(f"{msg.KIND} messages carry no tensors")
        return msg.model_dump_json().encode()
    if dtype not in WIRE_DTYPES:
        raise ValueError(f"wire dtype must be one of {sorted(WIRE_DTYPES)}, not {dtype!r}")
    tensors = tensors or {}
    if "__metadata__" in tensors:
        raise ValueError("'__metadata__' is reserved by safetensors and cannot name a tensor")
    from safetensors.torch import save as st_save

    wire = {k: t.detach().to("cpu", WIRE_DTYPES[dtype]).contiguous() for k, t in tensors.items()}
    specs = {k: TensorSpec(shape=list(t.shape), dtype=dtype) for k, t in wire.items()}
    header = msg.model_copy(update={"tensors": specs})
    return st_save(wire, metadata={META_KEY: header.model_dump_json()})


def decode(payload: bytes, expected: type[M] | None = None, max_bytes: int = DEFAULT_MAX_BYTES) -> Decoded:
    """Validate and decode a payload; raise PayloadRejected with a reason for anything wrong.

    Args:
        payload: the raw MQTT payload.
        expected: the message class the topic calls for; None accepts any kind (JSON, or a
            safetensors blob recognised by its 8-byte length prefix followed by `{`).
        max_bytes: the size limit.
    """
    if not isinstance(payload, (bytes, bytearray, memoryview)):
        raise PayloadRejected("bad_payload", f"payload is {type(payload).__name__}, not bytes")
    payload = bytes(payload)
    if len(payload) > max_bytes:
        raise PayloadRejected("too_large", f"{len(payload)} bytes > limit {max_bytes}")
    if len(payload) == 0:
        raise PayloadRejected("empty", "empty payload")
    if (expected is not None and expected.HAS_TENSORS) or (expected is None and _looks_like_safetensors(payload)):
        return _decode_tensor_message(payload, expected)
    try:
        obj = json.loads(payload.decode("utf-8"), object_pairs_hook=_no_duplicates)
    except _JSON_ERRORS as exc:
        raise PayloadRejected("bad_json", f"{type(exc).__name__}: {str(exc)[:200]}") from exc
    msg = _validate_header(obj, expected)
    if msg.HAS_TENSORS:
        raise PayloadRejected("bad_encoding", f"{msg.KIND} must travel as safetensors, not JSON")
    return Decoded(msg)


def _validate_header(obj: object, expected: type[Message] | None) -> Message:
    if not isinstance(obj, dict):
        raise PayloadRejected("bad_json", "header is not a JSON object")
    kind = obj.get("kind")
    cls = BY_KIND.get(kind) if isinstance(kind, str) else None
    if cls is None:
        raise PayloadRejected("unknown_kind", repr(kind)[:80])
    if expected is not None and cls is not expected:
        raise PayloadRejected("wrong_kind", f"got {kind!r}, topic expects {expected.KIND!r}")
    v = obj.get("v")
    # `True == 1` and `1.0 == 1` in Python: only the JSON integer 1 is version 1.
    if type(v) is not int or v != SCHEMA_VERSION:
        raise PayloadRejected("bad_version", f"schema version {v!r}, this build speaks {SCHEMA_VERSION}")
    try:
        return cls.model_validate(obj)
    except ValidationError as exc:
        first = exc.errors()[0]
        where = ".".join(str(p) for p in first.get("loc", ()))
        raise PayloadRejected("invalid_field", f"{where}: {first.get('msg')}") from exc


def _looks_like_safetensors(payload: bytes) -> bool:
    """An 8-byte little-endian header length below 2**24 (top 5 bytes zero) then `{`: never valid JSON."""
    return len(payload) >= 9 and payload[3:8] == b"\0" * 5 and payload[8:9] == b"{"


def decode_header(payload: bytes, expected: type[M], max_bytes: int = DEFAULT_MAX_BYTES) -> M:
    """The validated header of a tensor message, without loading its tensors (nor torch).

    Lets a receiver decide whether a message concerns it before paying for the tensors; `decode` still checks
    everything (tensor declarations, dtypes, shapes, finiteness) when it does.
    """
    if not isinstance(payload, (bytes, bytearray, memoryview)):
        raise PayloadRejected("bad_payload", f"payload is {type(payload).__name__}, not bytes")
    payload = bytes(payload)
    if len(payload) > max_bytes:
        raise PayloadRejected("too_large", f"{len(payload)} bytes > limit {max_bytes}")
    msg, _ = _tensor_header(payload, expected)
    return msg  # type: ignore[return-value]


def _tensor_header(payload: bytes, expected: type[Message] | None) -> tuple[TensorMessage, dict]:
    raw_header = _safetensors_header(payload)
    meta = raw_header.get("__metadata__")
    if not isinstance(meta, dict) or not isinstance(meta.get(META_KEY), str):
        raise PayloadRejected("no_header", "safetensors metadata has no fedrank header")
    try:
        header_obj = json.loads(meta[META_KEY], object_pairs_hook=_no_duplicates)
    except _JSON_ERRORS as exc:
        raise PayloadRejected("bad_json", f"{type(exc).__name__}: {str(exc)[:200]}") from exc
    msg = _validate_header(header_obj, expected)
    if not isinstance(msg, TensorMessage):
        raise PayloadRejected("bad_encoding", f"{msg.KIND} must travel as JSON, not safetensors")
    return msg, raw_header


def _decode_tensor_message(payload: bytes, expected: type[Message] | None) -> Decoded:
    msg, raw_header = _tensor_header(payload, expected)
    entries = {k: v for k, v in raw_header.items() if k != "__metadata__"}
    if set(entries) != set(msg.tensors):
        missing = sorted(set(msg.tensors) - set(entries))[:3]
        extra = sorted(set(entries) - set(msg.tensors))[:3]
        raise PayloadRejected("tensor_mismatch", f"missing {missing}, undeclared {extra}")
    for name, spec in msg.tensors.items():
        entry = entries[name]
        if not isinstance(entry, dict) or entry.get("dtype") != spec.dtype:
            raise PayloadRejected("bad_dtype", f"{name}: {entry.get('dtype') if isinstance(entry, dict) else entry!r}")
        if entry.get("shape") != spec.shape:
            raise PayloadRejected("bad_shape", f"{name}: {entry.get('shape')} != declared {spec.shape}")
    try:
        from safetensors.torch import load as st_load

        tensors = st_load(payload)
    except Exception as exc:  # safetensors raises its own error type for corrupt bodies
        raise PayloadRejected("bad_safetensors", str(exc)[:200]) from exc
    if set(tensors) != set(msg.tensors):
        raise PayloadRejected("tensor_mismatch", "safetensors loaded other names than declared")
    for name, t in tensors.items():
        # Re-check what safetensors actually built against the declaration (a header with duplicate
        # keys could otherwise show our JSON parser one entry and safetensors' another).
        spec = msg.tensors.get(name)
        if spec is None or t.dtype != WIRE_DTYPES[spec.dtype] or list(t.shape) != spec.shape:
            raise PayloadRejected("tensor_mismatch", f"{name}: loaded {t.dtype} {list(t.shape)} != declaration")
        peak = _max_abs(t)
        if not math.isfinite(peak):
            raise PayloadRejected("not_finite", f"{name} holds NaN or Inf")
        if peak > msg.MAX_ABS:
            raise PayloadRejected("tensor_magnitude", f"{name}: |element| up to {peak:.3g} > bound {msg.MAX_ABS:.3g}")
    return Decoded(msg, tensors)


def _max_abs(t: torch.Tensor) -> float:
    """The largest |element|, NaN when any element is NaN, inf when one is +-Inf (one aminmax pass, about 3x
    faster than a float64 sum and exact: aminmax propagates NaN)."""
    import torch

    if t.numel() == 0:
        return 0.0
    lo, hi = torch.aminmax(t)
    return max(-float(lo), float(hi)) if not (math.isnan(float(lo)) or math.isnan(float(hi))) else math.nan


def _no_duplicates(pairs: list[tuple[str, object]]) -> dict:
    """json object_pairs_hook: a key given twice makes the header non-canonical (parsers disagree on which
    entry wins), so it is refused rather than resolved."""
    out: dict = {}
    for k, v in pairs:
        if k in out:
            raise PayloadRejected("duplicate_key", f"key {k[:80]!r} appears more than once")
        out[k] = v
    return out


def _safetensors_header(payload: bytes) -> dict:
    if len(payload) < 8:
        raise PayloadRejected("bad_safetensors", "shorter than the 8-byte header length")
    (n,) = struct.unpack("<Q", payload[:8])
    if n > _MAX_HEADER_BYTES or 8 + n > len(payload):
        raise PayloadRejected("bad_safetensors", f"header length {n} does not fit a {len(payload)}-byte payload")
    try:
        header = json.loads(payload[8 : 8 + n].decode("utf-8"), object_pairs_hook=_no_duplicates)
    except _JSON_ERRORS as exc:
        raise PayloadRejected("bad_safetensors", f"header is not JSON: {str(exc)[:120]}") from exc
    if not isinstance(header, dict):
        raise PayloadRejected("bad_safetensors", "header is not a JSON object")
    return header


def dtype_name(dtype: torch.dtype) -> str:
    """The wire name of a torch dtype (F32/F16/BF16)."""
    return next(name for name, dt in WIRE_DTYPES.items() if dt == dtype)
