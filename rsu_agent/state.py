"""What an RSU keeps across restarts, written atomically (temp file, fsync, os.replace, fsync dir).

Per task, under `{state_dir}/tasks/{task}/`:
- `meta.json`: round counter, seq, lam, cumulative violation, budget, the open round (participants, times,
  fault-tolerance decisions, ids of accepted updates with their reports) and the name of the global file.
  Writing it is the commit point of a round: a new global is written to a fresh file first, then meta names it.
- `global_r{N}.safetensors`: the global factors `{layer}.U/.S/.Vt` and `head.*` after round N-1 closed.
- `round_{r}/accepted/{identity}.safetensors`: every accepted update (tensors + its wire header), written
  before it counts; on restart these files, not the list in meta, say which updates were accepted.
- `round_{r}/held/{identity}.safetensors`: a migrating vehicle's partial, kept for the fallback.
"""

from __future__ import annotations

import logging
import os
import shutil
from dataclasses import dataclass
from pathlib import Path
from typing import Literal, cast

import torch
from pydantic import BaseModel, Field, ValidationError, model_validator
from safetensors import SafetensorError
from safetensors.torch import load as st_load
from safetensors.torch import save as st_save

from fedrank.state import atomic_write_bytes, atomic_write_json, read_json
from proto.adapter import Factored, pack_factored, unpack_factored
from proto.codec import decode, dtype_name, encode
from proto.errors import PayloadRejected
from proto.messages import RoundAnnouncement, UpdateReport, VehicleUpdate

log = logging.getLogger(__name__)

Kind = Literal["accepted", "held"]


class FtRecord(BaseModel):
    """A fault-tolerance decision sent for one vehicle in one round (docs/algorithms.md section 6)."""

    action: Literal["early_upload", "migrate", "abandon"]
    migrate_to: str | None = None
    costs: dict[str, float] = Field(default_factory=dict)
    exit_in_s: float = 0.0
    decided_at: float = 0.0
    failed: bool = False  # migrate only: the target went offline, so the held partial is the fallback


class PendingRound(BaseModel):
    """The open round of one task."""

    round: int
    announced_at: float
    deadline: float
    participants: list[str]
    budget_j: float
    lam: float
    announcement: str  # the RoundAnnouncement header as JSON, so a restart republishes the same message
    shares: dict[str, float] = Field(default_factory=dict)  # vehicle -> its announced budget share b_v (shares.py)
    accepted: dict[str, UpdateReport] = Field(default_factory=dict)  # identity -> report (files are authoritative)
    ft: dict[str, FtRecord] = Field(default_factory=dict)  # vehicle -> decision
    dropped: list[str] = Field(default_factory=list)  # went offline before delivering

    @model_validator(mode="after")
    def _shares_from_announcement(self) -> PendingRound:
        """A round opened before `shares` was stored keeps the shares its announcement carried."""
        if not self.shares and self.announcement:
            try:
                self.shares = dict(RoundAnnouncement.model_validate_json(self.announcement).shares)
            except ValidationError:
                log.warning("round %d: stored announcement unreadable; equal budget shares assumed", self.round)
        return self

    def share_j(self, vehicle: str) -> float:
        """The vehicle's announced share of the round budget; the equal share B / |V| when it was announced none
        (a vehicle that was not invited, e.g. a migration candidate that arrived after the round opened)."""
        own = self.shares.get(vehicle)
        return own if own is not None else self.budget_j / max(1, len(self.participants))


class TaskMeta(BaseModel):
    """Everything about one task except tensors."""

    task: str
    next_round: int = 0
    seq: int = 0
    lam: float = 0.0
    violation_j: float = 0.0  # cumulative sum_t max(0, E_round - B_m(t)), docs/algorithms.md section 4
    budget_j: float | None = None  # latest B_m(t) from the cloud; None until the first budget
    budget_window: int = -1  # the cloud's window index of that budget
    expected_round_s: float = 0.0
    last_accuracy: float | None = None
    last_loss: float | None = None
    last_round_latency_s: float | None = None  # tau_round of the last closed round, announced with the next
    global_file: str | None = None
    pending: PendingRound | None = None
    # vehicle -> configuration -> [rounds, mean joules]: the share rule's cost table (shares.py)
    ref_costs: dict[str, dict[str, list[float]]] = Field(default_factory=dict)


@dataclass
class StoredUpdate:
    """An update as it was accepted: who sent it, its header and its tensors."""

    sender: str
    msg: VehicleUpdate
    tensors: dict[str, torch.Tensor]


class TaskStore:
    """Files of one task under `{root}/tasks/{task}`."""

    def __init__(self, root: Path, task: str) -> None:
        self.dir = Path(root) / "tasks" / task
        self.task = task

    # -- meta ---------------------------------------------------------------------------------------
    def load_meta(self) -> TaskMeta | None:
        raw = read_json(self.dir / "meta.json")
        if raw is None:
            return None
        try:
            return TaskMeta.model_validate(raw)
        except ValidationError as exc:
            aside = self.dir / "meta.json.invalid"
            log.error("task %s: meta.json does not validate (%s); moved to %s, starting fresh", self.task, exc, aside)
            os.replace(self.dir / "meta.json", aside)
            return None

    def save_meta(self, meta: TaskMeta) -> None:
        atomic_write_json(self.dir / "meta.json", meta.model_dump(mode="json"))

    # -- global adapter -----------------------------------------------------------------------------
    def save_global(self, round_: int, layers: dict[str, Factored], head: dict[str, torch.Tensor]) -> str:
        """Write the global produced by closing `round_` to a new file; return its name for meta."""
        name = f"global_r{round_ + 1}.safetensors"
        tensors = {k: v.detach().contiguous() for k, v in pack_factored(layers, head).items()}
        atomic_write_bytes(self.dir / name, st_save(tensors))
        return name

    def load_global(self, name: str, layer_names: list[str]) -> tuple[dict[str, Factored], dict[str, torch.Tensor]]:
        """Read a global file; raise PayloadRejected if it does not hold U, S, Vt for every layer."""
        try:
            tensors = st_load((self.dir / name).read_bytes())
        except (OSError, SafetensorError) as exc:
            raise PayloadRejected("bad_state", f"{self.dir / name}: {exc}") from exc
        return unpack_factored(tensors, layer_names)

    def prune_globals(self, keep: str | None) -> None:
        """Remove global files other than `keep` (called after meta names the new one)."""
        for p in self.dir.glob("global_r*.safetensors"):
            if p.name != keep:
                p.unlink(missing_ok=True)

    # -- updates of the open round ------------------------------------------------------------------
    def _update_path(self, round_: int, kind: Kind, identity: str) -> Path:
        return self.dir / f"round_{round_}" / kind / f"{identity}.safetensors"

    def save_update(self, round_: int, kind: Kind, identity: str, upd: StoredUpdate) -> None:
        """Stored as the wire payload (same codec, same dtype), so reading it back re-runs every wire check."""
        dtype = dtype_name(next(iter(upd.tensors.values())).dtype) if upd.tensors else "F32"
        atomic_write_bytes(self._update_path(round_, kind, identity), encode(upd.msg, upd.tensors, dtype))

    def load_updates(self, round_: int, kind: Kind) -> dict[str, StoredUpdate]:
        """identity -> update for every readable file; an unreadable one is moved aside and logged."""
        out: dict[str, StoredUpdate] = {}
        folder = self.dir / f"round_{round_}" / kind
        for p in sorted(folder.glob("*.safetensors")):
            try:
                data = p.read_bytes()
                dec = decode(data, VehicleUpdate, max_bytes=len(data))
                msg = cast(VehicleUpdate, dec.msg)  # decode checked the kind
                out[p.stem] = StoredUpdate(sender=msg.sender, msg=msg, tensors=dec.tensors)
            except (OSError, PayloadRejected) as exc:
                log.error("task %s: stored update %s unreadable (%s); moved aside", self.task, p, exc)
                os.replace(p, p.with_suffix(".corrupt"))
        return out

    def drop_round(self, round_: int) -> None:
        shutil.rmtree(self.dir / f"round_{round_}", ignore_errors=True)
