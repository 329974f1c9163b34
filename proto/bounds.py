"""Plausibility bounds of every value on the wire, in one place.

A value outside these bounds cannot be true for a vehicle, an RSU or a cloud of this system, and would only
make arithmetic downstream overflow (a squared position of 1e200, a loss of 1e305 weighted by 1e400 samples, a
LoRA factor of 1e20 whose product has no SVD). The message models (`proto.messages`) use the annotated types
below, so an out-of-bounds message is refused by the codec like any other invalid field (`invalid_field`, the
detail names the field and the bound) and never reaches an agent, let alone its state on disk.

The bounds are deliberately generous: they exist to keep sums, squares and products of many values finite in
float64, not to judge whether a figure is good.
"""

from __future__ import annotations

from typing import Annotated

from pydantic import Field

MAX_COORD_M = 1e7  # |x|, |y| in the deployment's local frame: 10,000 km
MAX_SPEED_MS = 200.0  # |vx|, |vy|: 720 km/h
MAX_TIME_S = 1e11  # sent_at and deadlines: epoch seconds (year 5138) or simulated seconds from 0
MAX_DURATION_S = 1e7  # train_s, upload_s, wall_s, exit_in_s: about 115 days
MAX_JOULES = 1e12  # any single energy figure (a window's budget included)
MAX_CUMULATIVE_JOULES = 1e15  # cumulative violation
MAX_LOSS = 1e4  # a training loss (cross-entropy of a uniform guess over 1e4 classes is 9.2)
MAX_SAMPLES = 10**9
MAX_STEPS = 10**9
MAX_RANK = 4096
MAX_ROUND = 10**9
MAX_SEQ = 2**63 - 1
MAX_COUNT = 10**6  # participants / updates per round
MAX_LAMBDA = 1e9
MAX_ALPHA = 1e6
MAX_COST = 1e15
# Tensor element magnitudes. Vehicle factors and heads are O(1) in practice (LoRA A is Kaiming-initialised,
# B starts at zero); 1e4 leaves four orders of magnitude and keeps (alpha / eta) B A far from float32 overflow.
MAX_UPDATE_ABS = 1e4
# The RSU's announcement carries singular values, which grow with the layer size; it only needs to be finite
# in float32 (the wire's widest dtype).
MAX_ANNOUNCE_ABS = 3.4028234663852886e38  # float32 max

# Lengths.
MAX_ID_LIST = 10_000  # participants
MAX_TASKS = 64  # tasks one agent lists
MAX_RANKS = 64
MAX_LAYERS = 4096
MAX_TENSORS = 2 * MAX_LAYERS * 2 + 64  # two factors per layer (or three for U, S, Vt) plus the head
MAX_DIMS = 8
MAX_DIM = 2**31 - 1
MAX_TEXT = 1024  # free text (status detail)
MAX_LABEL = 64  # short labels (energy source)
MAX_COSTS = 16

Coord = Annotated[float, Field(ge=-MAX_COORD_M, le=MAX_COORD_M, allow_inf_nan=False)]
Speed = Annotated[float, Field(ge=-MAX_SPEED_MS, le=MAX_SPEED_MS, allow_inf_nan=False)]
Timestamp = Annotated[float, Field(ge=0, le=MAX_TIME_S, allow_inf_nan=False)]
Duration = Annotated[float, Field(ge=0, le=MAX_DURATION_S, allow_inf_nan=False)]
Joules = Annotated[float, Field(ge=0, le=MAX_JOULES, allow_inf_nan=False)]
CumulativeJoules = Annotated[float, Field(ge=0, le=MAX_CUMULATIVE_JOULES, allow_inf_nan=False)]
Loss = Annotated[float, Field(ge=0, le=MAX_LOSS, allow_inf_nan=False)]
Lambda = Annotated[float, Field(ge=0, le=MAX_LAMBDA, allow_inf_nan=False)]
Alpha = Annotated[float, Field(gt=0, le=MAX_ALPHA, allow_inf_nan=False)]
Cost = Annotated[float, Field(ge=-MAX_COST, le=MAX_COST, allow_inf_nan=False)]
Samples = Annotated[int, Field(ge=1, le=MAX_SAMPLES)]
Steps = Annotated[int, Field(ge=0, le=MAX_STEPS)]
Rank = Annotated[int, Field(ge=1, le=MAX_RANK)]
RoundNo = Annotated[int, Field(ge=0, le=MAX_ROUND)]
Count = Annotated[int, Field(ge=0, le=MAX_COUNT)]
Seq = Annotated[int, Field(ge=0, le=MAX_SEQ)]
Dim = Annotated[int, Field(ge=0, le=MAX_DIM)]
Text = Annotated[str, Field(max_length=MAX_TEXT)]
Label = Annotated[str, Field(max_length=MAX_LABEL)]
