"""LoRA target modules: presets, explicit lists, the FLOP model and wire sizes follow them; bad names refused."""

from __future__ import annotations

import pytest
from pydantic import ValidationError

from edge_agent.model import TARGET_PRESETS, layer_shapes, resolve_targets
from fleet.config import FleetConfig
from fleet.costing import WireSizes
from fleet.sim.compute import BERT_BASE, MINILM_L6, bert_layer_shapes, model_train_flops
from tests.tiny_model import make_tiny_bert


def test_presets_resolve_and_bad_targets_are_refused_naming_the_field() -> None:
    assert FleetConfig().targets == ("query", "value")
    assert FleetConfig(lora_targets="qkvo").targets == TARGET_PRESETS["qkvo"]
    assert FleetConfig(lora_targets=["query", "key"]).targets == ("query", "key")
    for bad in ("qkv", [], ["query", "not a name"]):
        with pytest.raises(ValidationError, match="lora_targets"):
            FleetConfig(lora_targets=bad)
    with pytest.raises(ValueError, match="lora_targets"):
        resolve_targets("everything")
    with pytest.raises(ValidationError, match="surrogate"):
        FleetConfig(model="bert-base-shape")


def test_target_sets_pick_the_right_layers_of_a_real_encoder(tmp_path) -> None:
    model = make_tiny_bert(tmp_path / "tiny")
    qv = layer_shapes(model, TARGET_PRESETS["qv"])
    qkvo = layer_shapes(model, TARGET_PRESETS["qkvo"])
    every = layer_shapes(model, TARGET_PRESETS["all-linear"])
    n_layers = len(qv) // 2
    assert len(qkvo) == 4 * n_layers and len(every) == 6 * n_layers
    assert not any(n.startswith("pooler") for n in every)  # the pooler is not an encoder layer
    assert all(n.endswith("attention.output.dense") for n in set(qkvo) - set(qv) - {
        n for n in qkvo if n.endswith(("key", "query", "value"))})
    with pytest.raises(ValueError, match="lora_targets"):
        layer_shapes(model, ("query", "no_such_module"))


def test_bert_base_shape_sizes_the_wire_and_the_flops_by_hand() -> None:
    qkvo = bert_layer_shapes(TARGET_PRESETS["qkvo"])
    assert len(qkvo) == 48 and set(qkvo.values()) == {(768, 768)}
    every = bert_layer_shapes(TARGET_PRESETS["all-linear"])
    per_rank = 12 * (4 * (768 + 768) + 2 * (3072 + 768))  # q, k, v, o + FFN in and out
    assert sum(a + b for a, b in every.values()) == per_rank
    # rank 16 of q,k,v,o in fp16: 16 * 48 * 1536 * 2 bytes, the ~1.2 MB the design plans for
    assert WireSizes(qkvo, 32, 16).upload(16) == 16 * 48 * 1536 * 2
    shape = BERT_BASE.with_adapted(every)
    tokens = 10 * 64
    assert model_train_flops(shape, 4, 10, 1, 64) == pytest.approx((6 * 4 * per_rank + 4 * BERT_BASE.base_params)
                                                                  * tokens)
    # the square default agrees with the explicit widths for q,v
    qv = {f"l{i}.{t}": (384, 384) for i in range(6) for t in "qv"}
    assert model_train_flops(MINILM_L6.with_adapted(qv), 8, 10, 1, 64) == pytest.approx(
        model_train_flops(MINILM_L6, 8, 10, 1, 64))
