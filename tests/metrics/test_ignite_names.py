"""Names PyTorch-Ignite users import that distengine added for them: ``utils._tree_map``,
``Metric(metrics_result_mode=...)``."""

from collections import namedtuple

import pytest
import torch

from distengine.engine import Engine
from distengine.metrics import Metric
from distengine.utils import _tree_map


def test_tree_map_calls_func_on_each_leaf_with_its_key_and_keeps_containers():
    Pair = namedtuple("Pair", "a b")
    tree = {"x": [1, (2, 3)], "y": Pair(4, "five"), "z": torch.tensor(6)}
    seen = []

    def double(leaf, key):
        seen.append(key)
        return leaf * 2

    out = _tree_map(double, tree)
    assert out["x"] == [2, (4, 6)] and isinstance(out["x"][1], tuple)
    assert out["y"] == Pair(8, "fivefive") and isinstance(out["y"], Pair)
    assert out["z"].item() == 12
    assert seen == [0, 0, 1, None, None, "z"]  # list/tuple index, named-tuple None, dict key
    assert _tree_map(lambda leaf, key: (key, leaf), 7, key="k") == ("k", 7)


class _Mapping(Metric):
    def __init__(self, value, **kwargs):
        super().__init__(**kwargs)
        self._value = value

    def reset(self):
        pass

    def update(self, output):
        pass

    def compute(self):
        return dict(self._value)


@pytest.mark.parametrize(
    "mode, keys", [("both", {"m", "a", "b"}), ("named", {"m"}), ("flatten", {"a", "b"})]
)
def test_metrics_result_mode_publishes_a_mapping_under_its_name_its_keys_or_both(mode, keys):
    engine = Engine(lambda e, b: b)
    _Mapping({"a": 1, "b": torch.tensor(2.0)}, metrics_result_mode=mode).attach(engine, "m")
    metrics = engine.run([0], max_epochs=1).metrics
    assert set(metrics) == keys
    if "m" in keys:
        assert metrics["m"] == {"a": 1, "b": 2.0}
    if "b" in keys:
        assert metrics["b"] == 2.0 and isinstance(metrics["b"], float)


def test_metrics_result_mode_is_checked_and_a_name_clash_raises_only_when_named():
    with pytest.raises(ValueError, match="metrics_result_mode should be one of .* got 'nested'"):
        _Mapping({}, metrics_result_mode="nested")
    clash = Engine(lambda e, b: b)
    _Mapping({"m": 1}, metrics_result_mode="named").attach(clash, "m")
    with pytest.raises(ValueError, match="Argument name 'm' is conflicting with mapping keys"):
        clash.run([0])
    flat = Engine(lambda e, b: b)
    _Mapping({"m": 1}, metrics_result_mode="flatten").attach(flat, "m")
    assert flat.run([0]).metrics == {"m": 1}
