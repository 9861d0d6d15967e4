"""Names PyTorch-Ignite users import that distengine added for them: ``utils._tree_map``,
``Metric(metrics_result_mode=...)``, ``ClassificationReport``, ``HSIC``,
``MaximumMeanDiscrepancy``, ``metrics.clustering`` (these four also on 2 ranks), attributes of
``_state_dict_all_req_keys`` in state dicts."""

import json
from collections import namedtuple

import pytest
import torch

from distengine.engine import Engine, Events
from distengine.metrics import (
    HSIC,
    Accuracy,
    CharacterErrorRate,
    ClassificationReport,
    Frequency,
    HitRate,
    MaximumMeanDiscrepancy,
    Metric,
    MultiLabelConfusionMatrix,
    NotComputableError,
    Perplexity,
)
from distengine.metrics.clustering import (
    CalinskiHarabaszScore,
    DaviesBouldinScore,
    SilhouetteScore,
)
from distengine.metrics.metric import reinit__is_reduced, sync_all_reduce
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


# ------------------------------------------------- ClassificationReport, HSIC, MMD
def _report_data():  # Ignite's docstring example: its printed report is the expected one
    y = torch.tensor([2, 0, 2, 1, 0, 1])
    y_pred = torch.tensor(
        [
            [0.0266, 0.1719, 0.3055],
            [0.6886, 0.3978, 0.8176],
            [0.9230, 0.0197, 0.8395],
            [0.1785, 0.2670, 0.6084],
            [0.8448, 0.7177, 0.7288],
            [0.7748, 0.9542, 0.8573],
        ]
    )
    return y_pred, y


def test_classification_report_gives_ignites_report_as_a_dict_or_json_with_labels():
    engine = Engine(lambda e, b: b)
    ClassificationReport(output_dict=True).attach(engine, "cr")
    ClassificationReport(labels=["cat", "dog", "bird"]).attach(engine, "text")
    metrics = engine.run([_report_data()]).metrics
    report = metrics["cr"]
    assert list(report) == ["0", "1", "2", "macro avg"]
    assert report["1"] == {"precision": 1.0, "recall": 0.5, "f1-score": pytest.approx(2 / 3)}
    assert report["macro avg"]["precision"] == pytest.approx(0.6111, abs=1e-4)
    assert report["macro avg"]["f1-score"] == pytest.approx(0.5222, abs=1e-4)
    assert metrics["macro avg"] == report["macro avg"]  # each key is published too
    text = json.loads(metrics["text"])
    assert list(text) == ["cat", "dog", "bird", "macro avg"] and text["dog"] == report["1"]
    short = ClassificationReport(labels=["a", "b"])
    short.update(_report_data())
    with pytest.raises(ValueError, match="labels name 2 classes, the data has 3"):
        short.compute()


def _sine_batch():  # Ignite's HSIC docstring example
    x = torch.arange(50.0).reshape(10, 5)
    return x, torch.sin(x * torch.pi * 2 / 50)


def _mmd(x, y, var):
    """The unbiased squared MMD of one batch, written out pair by pair."""
    n = x.shape[0]

    def k(a, b):
        return torch.exp(-((a - b) ** 2).sum() / (2 * var))

    xx = sum(k(x[i], x[j]) for i in range(n) for j in range(n) if i != j) / (n * (n - 1))
    yy = sum(k(y[i], y[j]) for i in range(n) for j in range(n) if i != j) / (n * (n - 1))
    xy = sum(k(x[i], y[j]) for i in range(n) for j in range(n)) / (n * n)
    return float(xx + yy - 2 * xy)


def test_hsic_and_mmd_give_ignites_values_and_check_their_batches():
    engine = Engine(lambda e, b: b)
    HSIC().attach(engine, "hsic")
    assert engine.run([_sine_batch()]).metrics["hsic"] == pytest.approx(0.0922664627, abs=1e-7)
    with pytest.raises(ValueError, match="at least 4 samples, got only 3"):
        HSIC(ignore_invalid_batch=False).update((torch.ones(3, 2), torch.ones(3, 2)))
    skipped = HSIC()
    skipped.update((torch.ones(3, 2), torch.ones(3, 2)))
    with pytest.raises(NotComputableError, match="HSIC must have at least one batch"):
        skipped.compute()

    torch.manual_seed(0)
    batches = [(torch.randn(6, 3), torch.rand(6, 3) + 0.5) for _ in range(2)]
    mmd = MaximumMeanDiscrepancy(var=2.0)
    for batch in batches:
        mmd.update(batch)
    expected = (sum(_mmd(x, y, 2.0) for x, y in batches) / 2) ** 0.5
    assert mmd.compute() == pytest.approx(expected, rel=1e-5)
    with pytest.raises(ValueError, match="x and y must be in the same shape"):
        mmd.update((torch.ones(4, 2), torch.ones(3, 2)))


def _kernel_and_report_batches():
    torch.manual_seed(3)
    out = []
    for _ in range(3):
        x = torch.randn(8, 4)
        out.append((x, torch.sin(3 * x) + 0.1 * torch.randn(8, 4), torch.randint(0, 3, (8,))))
    return out


def _evaluate(batches):
    from tests.metrics.test_ranks import CollectiveCounter

    engine = Engine(lambda e, b: b)
    HSIC(output_transform=lambda b: b[:2]).attach(engine, "hsic")
    MaximumMeanDiscrepancy(output_transform=lambda b: b[:2]).attach(engine, "mmd")
    report = ClassificationReport(output_dict=True, output_transform=lambda b: (b[0][:, :3], b[2]))
    report.attach(engine, "cr")
    SilhouetteScore(output_transform=lambda b: (b[0], b[2])).attach(engine, "silhouette")
    Perplexity(output_transform=lambda b: (b[0], b[2])).attach(engine, "ppl")
    as_text = lambda b: ([str(v) for v in b[2].tolist()], ["1"] * len(b[2]))  # noqa: E731
    CharacterErrorRate(output_transform=as_text).attach(engine, "cer")
    HitRate(top_k=[1, 2], output_transform=lambda b: (b[0], (b[1] > 0).long())).attach(engine, "hr")
    as_labels = lambda b: ((b[0] > 0).long(), (b[1] > 0).long())  # noqa: E731
    MultiLabelConfusionMatrix(4, output_transform=as_labels).attach(engine, "mlcm")
    with CollectiveCounter() as counter:
        metrics = engine.run(batches).metrics
    return {
        k: metrics[k] for k in ("hsic", "mmd", "cr", "silhouette", "ppl", "cer", "hr", "mlcm")
    }, counter.count


def _evaluate_rank_share():
    import torch.distributed as dist

    batches = _kernel_and_report_batches()
    mine = batches[:1] if dist.get_rank() == 0 else batches[1:]  # uneven: 1 and 2 batches
    return _evaluate(mine)


def test_on_two_ranks_they_equal_one_process_over_all_the_batches(ranks2):
    expected, _ = _evaluate(_kernel_and_report_batches())
    for metrics, collectives in ranks2.run(_evaluate_rank_share):
        assert metrics["hsic"] == pytest.approx(expected["hsic"], rel=1e-9)
        assert metrics["mmd"] == pytest.approx(expected["mmd"], rel=1e-9)
        assert metrics["cr"] == expected["cr"]
        assert metrics["silhouette"] == pytest.approx(expected["silhouette"], rel=1e-9)
        assert metrics["ppl"] == pytest.approx(expected["ppl"], rel=1e-9)
        assert metrics["cer"] == expected["cer"] and 0 < expected["cer"] < 1
        assert torch.equal(metrics["mlcm"], expected["mlcm"]) and expected["mlcm"].sum() == 96
        assert metrics["hr"] == expected["hr"] and 0 < expected["hr"][0] < expected["hr"][1]
        assert collectives == 3  # fixed states in one gather; lazy counts (int64) and the
        # silhouette's rows (float32 features; int64 labels go with the counts): one per dtype


# ------------------------------------------------------------ _state_dict_all_req_keys
class _Collect(Metric):
    """An Ignite-style metric: its state is attributes, listed for checkpoints."""

    _state_dict_all_req_keys = ("_values", "_count", "_inner")

    def __init__(self):
        self._inner = {"acc": Accuracy()}
        super().__init__()

    def reset(self):
        self._values, self._count = [], 0
        self._inner["acc"].reset()

    def update(self, output):
        self._values.append(output[0].sum())
        self._count += 1
        self._inner["acc"].update(output)

    def compute(self):
        return float(sum(self._values)), self._count, self._inner["acc"].compute()


def test_state_dict_saves_the_attributes_of_state_dict_all_req_keys(tmp_path):
    metric = _Collect()
    for hits in (1, 2):
        metric.update(
            (torch.tensor([[0.0, 1.0], [0.0, 1.0]]), torch.tensor([1] * hits + [0] * (2 - hits)))
        )
    value = metric.compute()
    torch.save(metric.state_dict(), tmp_path / "m.pt")
    metric.reset()
    metric.load_state_dict(torch.load(tmp_path / "m.pt", weights_only=True))
    assert metric.compute() == value == (4.0, 2, 0.75)
    wrapped = {"__metric_state_per_rank": [metric.state_dict()]}  # Ignite's form loads too
    metric.load_state_dict(wrapped)
    assert metric.compute() == value
    with pytest.raises(ValueError, match="size equal world_size: 1, but got 2"):
        metric.load_state_dict({"__metric_state_per_rank": [{}, {}]})
    with pytest.raises(ValueError, match=r"keeps \['_values', '_count', '_inner'\] .* per rank"):
        metric.load_per_rank_state_dicts([metric.state_dict()] * 2)  # another world size
    metric._count = "three"
    with pytest.raises(TypeError, match="unsupported type.*str in _Collect"):
        metric.state_dict()


class _IgniteAccuracy(Metric):
    """Ignite's own pattern: the attributes compute reduces, also listed for checkpoints."""

    _state_dict_all_req_keys = ("_num_correct", "_num_examples")

    @reinit__is_reduced
    def reset(self):
        self._num_correct, self._num_examples = torch.tensor(0), 0

    @reinit__is_reduced
    def update(self, output):
        self._num_correct += (output[0].argmax(1) == output[1]).sum()
        self._num_examples += len(output[1])

    @sync_all_reduce("_num_examples", "_num_correct:SUM")
    def compute(self):
        return self._num_correct.item() / self._num_examples


def test_reduced_attributes_listed_for_checkpoints_still_resume_on_another_world_size():
    # bug: listing them in _state_dict_all_req_keys (as Ignite's metrics do) refused a
    # checkpoint of 2 ranks resumed on 1, which merged them before
    saved = []
    for y in (torch.tensor([0, 1, 1]), torch.tensor([0, 1])):
        rank = _IgniteAccuracy()
        rank.update((torch.eye(len(y)), y))
        saved.append(rank.state_dict())
    resumed = _IgniteAccuracy()
    resumed.load_per_rank_state_dicts(saved)
    assert resumed.compute() == 4 / 5
    resumed.load_state_dict(saved[0])
    assert resumed.compute() == 2 / 3


def test_clustering_scores_read_features_and_labels_and_are_sklearns():
    from sklearn import metrics as sk

    torch.manual_seed(1)
    labels = torch.randint(0, 3, (12,))
    features = torch.randn(12, 2) + 3 * labels[:, None]
    for cls, score in (
        (SilhouetteScore, sk.silhouette_score),
        (CalinskiHarabaszScore, sk.calinski_harabasz_score),
        (DaviesBouldinScore, sk.davies_bouldin_score),
    ):
        engine = Engine(lambda e, b: b)
        cls().attach(engine, "s")
        batches = [{"features": features[:5], "labels": labels[:5]}]
        batches.append({"features": features[5:], "labels": labels[5:]})
        value = engine.run(batches).metrics["s"]
        assert value == pytest.approx(score(features.numpy(), labels.numpy()), rel=1e-6)
    single = SilhouetteScore()
    single.update((features[:3], torch.zeros(3, dtype=torch.long)))  # one cluster: undefined
    assert single.compute() != single.compute()  # nan
    with pytest.raises(ValueError, match=r"Features should be of shape \(batch_size, n_targets\)"):
        SilhouetteScore().update((features[:, 0], labels))
    with pytest.raises(ValueError, match="Incoherent types between input labels and stored labels"):
        single.update((features[:3], torch.zeros(3)))


def test_nlp_metrics_and_helpers_give_ignites_values():
    from distengine.metrics.nlp.utils import lcs, modified_precision, ngrams

    cer = CharacterErrorRate()
    cer.update((["helo", "cat"], ["hello", "bat"]))
    cer.update(("café", "cafe"))
    assert cer.compute() == pytest.approx(3 / 12)
    with pytest.raises(ValueError, match="y_pred and y must have the same length"):
        cer.update((["a"], ["a", "b"]))
    empty = CharacterErrorRate()
    empty.update((["abc"], [""]))
    assert empty.compute() == 1.0  # errors, but no reference characters

    logits, ids = torch.randn(2, 5, 3), torch.tensor([[1, 4, 0], [2, 0, 3]])
    ppl = Perplexity(ignore_index=0)
    ppl.update((logits, ids))
    nll = torch.nn.functional.cross_entropy(logits, ids, ignore_index=0)  # mean over 4 tokens
    assert ppl.compute() == pytest.approx(nll.exp().item(), rel=1e-6)
    with pytest.raises(ValueError, match="exactly one more dimension than y"):
        ppl.update((logits, ids[0]))
    with pytest.raises(NotComputableError, match="Perplexity must have at least one example"):
        Perplexity().compute()

    assert ngrams("abab", 2) == {("a", "b"): 2, ("b", "a"): 1}
    assert lcs("abcde", "ace") == 3 and lcs("", "abc") == 0
    assert modified_precision([["the", "cat"], ["the", "the", "dog"]], ["the"] * 3, 1) == (2, 3)


def test_hit_rate_counts_rows_with_a_relevant_item_among_the_top_k():
    scores = torch.tensor([[0.9, 0.1, 0.5], [0.2, 0.8, 0.1], [0.3, 0.2, 0.1]])
    relevant = torch.tensor([[0, 0, 1], [0, 1, 0], [0, 0, 0]])
    rate = HitRate(top_k=[2, 1])
    rate.update((scores, relevant))
    assert rate.top_k == [1, 2] and rate.compute() == [0.5, 1.0]  # the third row has no hit
    counting = HitRate(top_k=2, ignore_zero_hits=False)
    counting.update((scores, relevant))
    assert counting.compute() == [2 / 3]
    with pytest.raises(ValueError, match="top_k must be list of positive integers only"):
        HitRate(top_k=[0])


def test_a_metric_written_on_ignites_base_regression_gets_checked_pairs():
    from distengine.metrics.regression._base import _BaseRegression, _torch_median

    class SumOfErrors(_BaseRegression):
        def reset(self):
            self._sum = 0.0

        def _update(self, output):
            y_pred, y = output
            assert y_pred.shape == y.shape == (3,)
            self._sum += (y - y_pred).abs().sum().item()

        def compute(self):
            return self._sum

    metric = SumOfErrors()
    metric.update((torch.zeros(3, 1), torch.ones(3, 1)))
    assert metric.compute() == 3.0
    with pytest.raises(TypeError, match="Input y dtype should be float"):
        metric.update((torch.zeros(3), torch.ones(3, dtype=torch.long)))
    assert _torch_median(torch.tensor([4.0, 1.0, 3.0, 2.0])) == 2.5


def test_multilabel_confusion_matrix_counts_each_class_and_refuses_non_binary_at_compute():
    mlcm = MultiLabelConfusionMatrix(num_classes=2)
    mlcm.update((torch.tensor([[1, 0], [1, 1]]), torch.tensor([[1, 1], [0, 1]])))
    assert mlcm.compute().tolist() == [[[0, 1], [0, 1]], [[0, 0], [1, 1]]]
    mlcm.update((torch.tensor([[2, 0]]), torch.tensor([[1, 0]])))  # no host sync here
    with pytest.raises(ValueError, match="1 value.s. did not"):
        mlcm.compute()
    with pytest.raises(ValueError, match="y_pred does not have correct number of classes: 3 vs 2"):
        mlcm.update((torch.zeros(1, 3, dtype=torch.long), torch.zeros(1, 2, dtype=torch.long)))


def _items_per_second(batches=(4, 4), every=2):
    """Frequency on a fake clock: each iteration takes 2 s and brings rank + 3 items;
    rank r runs ``batches[r]`` iterations and reads the value at ``every`` (None: each)."""
    import distengine.distributed as idist
    import distengine.metrics.frequency as frequency

    clock, original = [100.0], frequency._now
    frequency._now = lambda: clock[0]
    try:
        engine = Engine(lambda e, b: {"n": idist.get_rank() + 3})
        tick = lambda: clock.__setitem__(0, clock[0] + 2)  # noqa: E731
        engine.add_event_handler(Events.ITERATION_STARTED, tick)
        event = Events.ITERATION_COMPLETED(every=every) if every else Events.ITERATION_COMPLETED
        Frequency(output_transform=lambda out: out["n"]).attach(engine, "wps", event_name=event)
        seen = []
        engine.add_event_handler(event, lambda e: seen.append(e.state.metrics.get("wps")))
        engine.run(range(batches[idist.get_rank()]), max_epochs=1)
        return seen
    finally:
        frequency._now = original


def test_frequency_is_items_per_second_published_at_its_event():
    assert _items_per_second() == [1, 1]  # 3 items every 2 s, as an int


def test_frequency_on_two_ranks_is_every_ranks_items_over_the_mean_time(ranks2):
    assert ranks2.run(_items_per_second) == [[3, 3]] * 2  # (3 + 4) items every 2 s, as an int


def test_frequency_on_uneven_and_empty_shards_never_keeps_a_rank_waiting(ranks2):
    # agreed through the board over the iterations every rank runs: as of the one before
    assert ranks2.run(_items_per_second, (3, 1), None) == [[None, 3, 3], [None]]
    assert ranks2.run(_items_per_second, (3, 0), None) == [[None, None, None], []]
