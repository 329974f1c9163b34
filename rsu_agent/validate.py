"""Checks an update must pass before it may reach the aggregate; each failure names a reason.

The codec has already checked sizes, dtypes, declared shapes and finiteness; here the update is checked
against the task it claims: candidate ranks, the task's layers and their (d_out, d_in), and the head.
Round and membership checks need the round's state and live in `rsu_agent.rounds`.
"""

from __future__ import annotations

import math

import torch

from proto.adapter import LoraFactors, unpack_lora
from proto.errors import PayloadRejected, WireError
from proto.messages import VehicleUpdate
from rsu_agent.aggregate import ClientUpdate
from rsu_agent.settings import RsuTaskConfig

HeadSpec = dict[str, tuple[int, ...]]


class UpdateRejected(WireError):
    """An update that decoded but must not count: `reason` is the counter key, `detail` goes to the log."""


def head_spec(head: dict[str, torch.Tensor]) -> HeadSpec:
    """Names and shapes of a head, which every later update must match."""
    return {k: tuple(v.shape) for k, v in head.items()}


def _check_report(msg: VehicleUpdate, cfg: RsuTaskConfig) -> None:
    rep = msg.report
    # pydantic refuses these on the wire; checked again so a constructed message cannot slip through.
    numbers = {"joules": rep.joules, "local_accuracy": rep.local_accuracy, "loss": rep.loss, "wall_s": rep.wall_s}
    for name, value in numbers.items():
        if not (isinstance(value, (int, float)) and math.isfinite(value) and value >= 0):
            raise UpdateRejected("bad_report", f"{name} = {value!r} must be finite and >= 0")
    if not 0 <= rep.local_accuracy <= 1:
        raise UpdateRejected("bad_report", f"local_accuracy = {rep.local_accuracy} outside [0, 1]")
    if not (isinstance(rep.samples, int) and rep.samples >= 1):
        raise UpdateRejected("bad_report", f"samples = {rep.samples!r} must be a positive integer")
    if rep.rank not in cfg.ranks:
        raise UpdateRejected("rank_not_candidate", f"rank {rep.rank} not in {cfg.ranks}")
    if not any(math.isclose(rep.work, w, rel_tol=1e-9) for w in cfg.work):
        raise UpdateRejected("work_not_candidate", f"work {rep.work} not in {cfg.work}")
    if not (math.isfinite(msg.lora_alpha) and math.isclose(msg.lora_alpha, cfg.lora_alpha, rel_tol=1e-6)):
        # s(eta) = alpha / eta must be the one the round announced, or the aggregate mixes scales.
        raise UpdateRejected("alpha_mismatch", f"lora_alpha {msg.lora_alpha} != task's {cfg.lora_alpha}")


def validate_update(
    msg: VehicleUpdate, tensors: dict[str, torch.Tensor], cfg: RsuTaskConfig, expected_head: HeadSpec | None
) -> ClientUpdate:
    """Check an update against its task; return it ready to aggregate (factors upcast to float32).

    Args:
        msg: the decoded update header.
        tensors: its tensors, `{layer}.lora_A` (eta, d_in), `{layer}.lora_B` (d_out, eta), `head.*`.
        cfg: the task it is for.
        expected_head: the head every update must carry (names and shapes); None while no head is fixed yet.

    Raises:
        UpdateRejected: with reason rank_not_candidate, work_not_candidate, alpha_mismatch, bad_report,
            bad_layers, bad_shape, bad_head.
    """
    _check_report(msg, cfg)
    try:
        layers, head = unpack_lora(tensors, list(cfg.layers))
    except PayloadRejected as exc:
        raise UpdateRejected(exc.reason, exc.detail) from exc
    eta = msg.report.rank
    out: dict[str, LoraFactors] = {}
    for name, (d_out, d_in) in cfg.layers.items():
        f = layers[name]
        if tuple(f.A.shape) != (eta, d_in) or tuple(f.B.shape) != (d_out, eta):
            got = f"A{tuple(f.A.shape)} B{tuple(f.B.shape)}"
            raise UpdateRejected("bad_shape", f"{name}: {got}, expected A({eta}, {d_in}) B({d_out}, {eta})")
        out[name] = LoraFactors(A=f.A.to(torch.float32), B=f.B.to(torch.float32))
    if expected_head is not None and head_spec(head) != expected_head:
        raise UpdateRejected("bad_head", f"head {head_spec(head)} does not match {expected_head}")
    return ClientUpdate(
        layers=out,
        head={k: v.to(torch.float32) for k, v in head.items()},
        samples=msg.report.samples,
        alpha=float(msg.lora_alpha),
    )
