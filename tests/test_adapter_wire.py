"""The factored adapter on the wire: tensor naming, packing through the codec, the balanced split."""

from __future__ import annotations

import math

import pytest
import torch

from proto.adapter import (
    HEAD_PREFIX,
    Factored,
    LoraFactors,
    balanced_split,
    lora_scale,
    pack_factored,
    pack_lora,
    split_head,
    unpack_factored,
    unpack_lora,
)
from proto.codec import decode, encode
from proto.errors import PayloadRejected
from proto.messages import RoundAnnouncement, UpdateReport, VehicleUpdate

LAYERS = ["enc.0.q", "enc.0.v"]
ROUND = RoundAnnouncement(
    sender="rsu_1",
    task="sst2",
    task_type="sentence",
    round=1,
    deadline=30.0,
    lam=0.0,
    round_budget_j=10.0,
    ranks=[1, 2, 4],
    rank=4,
    layers=LAYERS,
)
UPDATE = VehicleUpdate(
    sender="veh-1",
    task="sst2",
    round=1,
    rsu="rsu_1",
    lora_alpha=8.0,
    report=UpdateReport(
        rank=2,
        samples=10,
        joules=1.0,
        energy_source="estimate-cpu-time",
        energy_measured=False,
        train_s=1.0,
        wall_s=1.0,
        local_accuracy=0.5,
        loss=0.7,
    ),
)


def factored(d_out: int, d_in: int, r: int, seed: int) -> Factored:
    g = torch.Generator().manual_seed(seed)
    U, _ = torch.linalg.qr(torch.randn(d_out, r, generator=g))  # (d_out, r)
    Vt = torch.linalg.qr(torch.randn(d_in, r, generator=g))[0].T  # (r, d_in)
    S = torch.sort(torch.rand(r, generator=g) + 0.1, descending=True).values  # (r,)
    return Factored(U=U, S=S, Vt=Vt)


def test_announcement_tensors_are_named_layer_dot_u_s_vt_and_head_dot_param() -> None:
    packed = pack_factored({"q": factored(6, 5, 3, 0)}, {"weight": torch.zeros(2, 6)})
    assert set(packed) == {"q.U", "q.S", "q.Vt", "head.weight"}
    assert packed["q.U"].shape == (6, 3) and packed["q.S"].shape == (3,) and packed["q.Vt"].shape == (3, 5)


def test_update_tensors_are_named_layer_dot_lora_a_and_lora_b() -> None:
    packed = pack_lora({"q": LoraFactors(A=torch.zeros(2, 5), B=torch.zeros(6, 2))}, {"bias": torch.zeros(2)})
    assert set(packed) == {"q.lora_A", "q.lora_B", "head.bias"}


def test_a_factored_adapter_survives_the_codec_in_f32() -> None:
    layers = {n: factored(8, 7, 4, i) for i, n in enumerate(LAYERS)}
    head = {"weight": torch.randn(2, 8), "bias": torch.randn(2)}
    out = decode(encode(ROUND, pack_factored(layers, head)), RoundAnnouncement)
    got, got_head = unpack_factored(out.tensors, out.msg.layers)
    for n in LAYERS:
        assert torch.equal(got[n].U, layers[n].U)
        assert torch.equal(got[n].S, layers[n].S)
        assert torch.equal(got[n].Vt, layers[n].Vt)
        assert got[n].rank == 4
    assert got_head.keys() == head.keys()
    assert all(torch.equal(got_head[k], head[k]) for k in head)


def test_lora_factors_survive_the_codec_in_bf16_within_tolerance() -> None:
    g = torch.Generator().manual_seed(3)
    layers = {n: LoraFactors(A=torch.randn(2, 7, generator=g), B=torch.randn(8, 2, generator=g)) for n in LAYERS}
    out = decode(encode(UPDATE, pack_lora(layers, {}), dtype="BF16"), VehicleUpdate)
    got, head = unpack_lora(out.tensors, LAYERS)
    assert head == {}
    for n in LAYERS:
        assert got[n].rank == 2
        # bf16 keeps 8 significant bits: relative error at most 2^-8 per element.
        assert torch.allclose(got[n].A.float(), layers[n].A, rtol=2.0**-8, atol=0)
        assert torch.allclose(got[n].B.float(), layers[n].B, rtol=2.0**-8, atol=0)


def test_balanced_split_reproduces_the_top_eta_components_by_hand() -> None:
    # Delta W = diag(3, 2, 1) with U = Vt = I. eta = 2, alpha = 4 -> s = alpha/eta = 2.
    f = Factored(U=torch.eye(3), S=torch.tensor([3.0, 2.0, 1.0]), Vt=torch.eye(3))
    lf = balanced_split(f, eta=2, alpha=4.0)
    # B = U_2 sqrt(S_2) / sqrt(2): columns sqrt(3/2) e1, sqrt(1) e2; A is its transpose here.
    expected_B = torch.tensor([[math.sqrt(1.5), 0.0], [0.0, 1.0], [0.0, 0.0]])
    assert torch.allclose(lf.B, expected_B)
    assert torch.allclose(lf.A, expected_B.T)
    assert torch.allclose(lora_scale(4.0, 2) * lf.B @ lf.A, torch.diag(torch.tensor([3.0, 2.0, 0.0])))
    assert lf.A.shape == (2, 3) and lf.B.shape == (3, 2)


def test_balanced_split_at_full_rank_rebuilds_the_whole_update() -> None:
    f = factored(9, 6, 4, seed=5)
    dense = f.U @ torch.diag(f.S) @ f.Vt
    lf = balanced_split(f, eta=4, alpha=16.0)
    assert torch.allclose(lora_scale(16.0, 4) * lf.B @ lf.A, dense, atol=1e-5)
    assert torch.allclose(lf.B.norm(), lf.A.norm(), atol=1e-5)  # "balanced": both sides carry sqrt(S)


@pytest.mark.parametrize("eta", [0, -1, 5])
def test_balanced_split_refuses_ranks_outside_one_to_the_factored_rank(eta: int) -> None:
    with pytest.raises(ValueError):
        balanced_split(factored(4, 4, 4, 0), eta=eta, alpha=8.0)


def test_split_head_strips_the_prefix_and_keeps_the_rest() -> None:
    rest, head = split_head({"q.U": torch.zeros(1), HEAD_PREFIX + "classifier.weight": torch.ones(1)})
    assert set(rest) == {"q.U"}
    assert set(head) == {"classifier.weight"}


def reason(fn: object, *args: object) -> str:
    with pytest.raises(PayloadRejected) as e:
        fn(*args)  # type: ignore[operator]
    return e.value.reason


def test_unpack_factored_rejects_missing_or_extra_parts() -> None:
    packed = pack_factored({"q": factored(4, 3, 2, 0)}, {})
    missing_s = {k: v for k, v in packed.items() if k != "q.S"}
    assert reason(unpack_factored, missing_s, ["q"]) == "bad_layers"
    assert reason(unpack_factored, {**packed, "k.U": torch.zeros(4, 2)}, ["q"]) == "bad_layers"
    assert reason(unpack_factored, packed, ["q", "v"]) == "bad_layers"


def test_unpack_factored_rejects_inconsistent_ranks() -> None:
    packed = pack_factored({"q": factored(4, 3, 2, 0)}, {})
    assert reason(unpack_factored, {**packed, "q.S": torch.ones(3)}, ["q"]) == "bad_shape"
    assert reason(unpack_factored, {**packed, "q.S": torch.ones(2, 1)}, ["q"]) == "bad_shape"
    assert reason(unpack_factored, {**packed, "q.Vt": torch.ones(2, 3, 1)}, ["q"]) == "bad_shape"


def test_unpack_lora_rejects_unpaired_or_mismatched_factors() -> None:
    ok = {"q.lora_A": torch.zeros(2, 5), "q.lora_B": torch.zeros(6, 2)}
    assert reason(unpack_lora, {"q.lora_A": ok["q.lora_A"]}) == "bad_layers"
    assert reason(unpack_lora, {**ok, "q.lora_C": torch.zeros(1)}) == "bad_layers"
    assert reason(unpack_lora, {**ok, "q.lora_B": torch.zeros(6, 3)}) == "bad_shape"  # rank 2 vs 3
    assert reason(unpack_lora, {**ok, "q.lora_A": torch.zeros(2)}) == "bad_shape"
    assert reason(unpack_lora, ok, ["q", "v"]) == "bad_layers"
    got, _ = unpack_lora(ok, ["q"])
    assert got["q"].rank == 2
