"""Every reason a receiver gives for refusing a message: the `reason` of `WireError`, the metrics label, the log
field and the `reason` of a `rejected` notice sent back to a vehicle. proto/README.md documents each one."""

from __future__ import annotations

from enum import Enum


class Reason(str, Enum):
    """Why a message was refused. The value is what goes on the wire and into logs and metrics."""

    # codec (proto/codec.py): the bytes cannot become a message
    BAD_PAYLOAD = "bad_payload"  # not bytes
    TOO_LARGE = "too_large"  # over the size limit (the transport's, or the task's largest possible update)
    EMPTY = "empty"  # zero bytes
    BAD_JSON = "bad_json"  # not UTF-8 JSON, not an object, nested too deep, an integer of 4300+ digits
    BAD_SAFETENSORS = "bad_safetensors"  # framing: header length, header JSON, unreadable body
    DUPLICATE_KEY = "duplicate_key"  # a JSON object (header, metadata or message) names one key twice
    NO_HEADER = "no_header"  # safetensors metadata without the `fedrank` key
    UNKNOWN_KIND = "unknown_kind"
    WRONG_KIND = "wrong_kind"  # a kind the topic does not carry
    BAD_VERSION = "bad_version"  # `v` is not the JSON integer 1
    INVALID_FIELD = "invalid_field"  # a field missing, of the wrong type, or out of its bounds (proto/bounds.py)
    BAD_ENCODING = "bad_encoding"  # a tensor kind as JSON or a JSON kind as safetensors
    TENSOR_MISMATCH = "tensor_mismatch"  # stored tensor names != declared `tensors`
    BAD_DTYPE = "bad_dtype"
    BAD_SHAPE = "bad_shape"  # stored != declared shape; or factors that do not fit the task's layers and rank
    NOT_FINITE = "not_finite"  # a NaN or Inf element
    TENSOR_MAGNITUDE = "tensor_magnitude"  # an element beyond the kind's bound (1e4 for updates)
    # topics (proto/topics.py)
    FOREIGN_TOPIC = "foreign_topic"
    UNKNOWN_TOPIC = "unknown_topic"
    BAD_ID = "bad_id"
    BAD_ROOT = "bad_root"
    BAD_TOPIC = "bad_topic"
    UNEXPECTED_TOPIC = "unexpected_topic"  # a valid topic this receiver does not handle
    # the message against its topic and the receiver's clock
    SENDER_MISMATCH = "sender_mismatch"
    TOPIC_MISMATCH = "topic_mismatch"  # sender / task / RSU / vehicle in the payload != the topic's
    CLOCK_SKEW = "clock_skew"  # sent_at further ahead of the receiver's clock than it allows
    # an update against the RSU's task and round (rsu_agent)
    UNKNOWN_TASK = "unknown_task"  # this RSU does not host the task
    LATE = "late"  # for a round that has closed (counted, not an error)
    WRONG_ROUND = "wrong_round"  # for a round that has not opened
    NOT_PARTICIPANT = "not_participant"  # the sender is not in the open round's participants
    DUPLICATE = "duplicate"  # this identity already counted in the round (counted, not an error)
    BAD_MIGRATION = "bad_migration"  # `migrated_from` names a vehicle the sender was not asked to continue
    RANK_NOT_CANDIDATE = "rank_not_candidate"  # report.rank is not one of the round's `ranks`
    WORK_NOT_CANDIDATE = "work_not_candidate"  # report.work is not one of the round's `work` fractions
    ALPHA_MISMATCH = "alpha_mismatch"  # lora_alpha differs from the round's
    BAD_REPORT = "bad_report"
    BAD_LAYERS = "bad_layers"  # tensor names do not match the round's `layers` (+ lora_A / lora_B)
    BAD_HEAD = "bad_head"  # head names or shapes differ from the round's `head`
    NUMERICAL = "numerical"  # the update's own aggregate is not finite
    STORAGE = "storage"  # the RSU could not store the update durably (resend later)
    BAD_STATE = "bad_state"  # a stored file could not be read back (never sent to a vehicle)
    # statuses and budgets
    TOO_MANY_VEHICLES = "too_many_vehicles"  # the RSU tracks its maximum of vehicles; retry later
    BAD_BUDGET = "bad_budget"
    IMPOSSIBLE_COUNTS = "impossible_counts"  # cloud: more updates than participants
    IMPOSSIBLE_ENERGY = "impossible_energy"  # cloud: one round spent more than the whole budget


REASONS: frozenset[str] = frozenset(r.value for r in Reason)
