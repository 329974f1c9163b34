"""Cheap checks first: an update is judged from its topic and its JSON header before any tensor is loaded.

Order (each step costs more than the one before, and most hostile traffic stops at the first two):
1. the topic: this RSU hosts the task (`unknown_task`);
2. the size: no bigger than the task's largest possible update (`too_large`), computed from its layers and r_max;
3. the header alone (`proto.codec.decode_header`, no torch): the kind, version and fields, sender / task / RSU
   against the topic (`topic_mismatch`), the clock (`clock_skew`), the round and the participation
   (`late`, `wrong_round`, `not_participant`, `bad_migration`, `duplicate`).
Only an update that passes all of them is decoded in full (tensors, dtypes, shapes, magnitudes) and validated.
"""

from __future__ import annotations

import math
from collections.abc import Callable

from proto.codec import decode_header
from proto.messages import Message, VehicleUpdate
from rsu_agent.rounds import TaskRounds
from rsu_agent.validate import UpdateRejected

HEADER_SLACK_BYTES = 256 * 1024  # JSON header and safetensors framing of an update, generously
HEAD_SLACK_ELEMENTS = 4 * 1024 * 1024  # a classifier head before the first one fixes its shape (4 M floats)


def max_update_bytes(tr: TaskRounds) -> int:
    """The largest update this task can receive: r_max factors of every layer in F32, its head, the header."""
    per = 4  # bytes per element of F32, the widest wire dtype
    factors = tr.cfg.r_max * sum(d_out + d_in for d_out, d_in in tr.cfg.layers.values())
    spec = tr.expected_head()  # the global's head, else the first accepted update's; None while free
    head = sum(math.prod(shape) for shape in spec.values()) if spec is not None else HEAD_SLACK_ELEMENTS
    return per * (factors + head) + HEADER_SLACK_BYTES


def precheck_update(tasks: dict[str, TaskRounds], rsu_id: str, payload: bytes, sender: str, task: str,
                    max_bytes: int, check_clock: Callable[[Message], None]) -> tuple[TaskRounds, str, bool]:
    """(the task's rounds, the update's identity, hold) for an update worth decoding; UpdateRejected otherwise."""
    tr = tasks.get(task)
    if tr is None:
        raise UpdateRejected("unknown_task", f"this RSU does not host {task}")
    limit = min(max_bytes, max_update_bytes(tr))
    if len(payload) > limit:
        raise UpdateRejected("too_large", f"{len(payload)} bytes > {limit}, the largest update task {task} takes")
    msg = decode_header(payload, VehicleUpdate, limit)
    if msg.sender != sender or msg.task != task or msg.rsu != rsu_id:
        raise UpdateRejected("topic_mismatch", f"{msg.sender}/{msg.task}/{msg.rsu} on {sender}/{task}/{rsu_id}")
    check_clock(msg)
    identity, hold = tr.admit(sender, msg)
    return tr, identity, hold
