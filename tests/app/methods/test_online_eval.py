"""Online evaluation: the logged kNN and probe accuracies against a float64 recomputation after a real fit,
the bank subset, and sharded + gathered evaluation on 2 gloo processes against a single process."""

from __future__ import annotations

from collections import Counter

import pytest
import torch
import torch.nn.functional as F

from sslib.app import methods
from sslib.app.checkpoint import load_backbone, load_checkpoint
from sslib.app.config import compose
from sslib.app.datamodule import SSLDataModule, shard, stratified_subset
from sslib.app.train import build_datamodule, config_changes, pretrain
from sslib.metrics import extract_features
from sslib.metrics.online import OnlineMonitor
from tests.app.methods.test_methods import TINY as METHOD_TINY
from tests.helpers.ddp import run_on_ranks

pytestmark = pytest.mark.usefixtures("one_thread")

TINY = [*(o for o in METHOD_TINY if not o.startswith("data.batch_size=")), "data.batch_size=16"]


def reference_knn(bank, bank_labels, val, val_labels, num_classes: int, k: int, temperature: float):
    """Top-1 and top-5 (percent) of DINO's weighted kNN in float64: cosine similarities s to the k nearest
    bank rows, class score sum_j exp(s_j / T) [y_j = c]."""
    bank, val = (F.normalize(x.double(), dim=1) for x in (bank, val))
    sims, idx = (val @ bank.T).topk(k, dim=1)
    weights = (sims / temperature).exp()  # (N_val, k)
    scores = (F.one_hot(bank_labels[idx], num_classes).double() * weights[..., None]).sum(dim=1)
    top5 = scores.topk(5, dim=1).indices
    hits = top5 == val_labels[:, None]
    return 100.0 * hits[:, 0].double().mean().item(), 100.0 * hits.any(1).double().mean().item()


def test_logged_online_metrics_equal_an_independent_recomputation(tmp_path):
    """After a 2-step fit, the logged val/knn_top1, val/knn_top5 and val/probe_top1 equal kNN and probe
    recomputed in float64 from features of the saved backbone, extracted outside the training loop.

    k = 200: at k = 20 the weights of this barely trained backbone's neighbours (cosine 0.89-1.0) hardly
    differ, so a kNN that ignored T would give the same accuracy; at k = 200 it does not (asserted)."""
    knn = ["online_eval.knn_k=200", "online_eval.bank_fraction=0.5"]
    cfg = compose(
        [*TINY, *knn, f"run_dir={tmp_path}", "trainer.max_epochs=1", "+trainer.limit_train_batches=2"]
    )
    results = pretrain(cfg)
    ckpt = tmp_path / "checkpoints" / "last.ckpt"
    backbone, _ = load_backbone(ckpt)
    data = build_datamodule(cfg)
    bank_loader, val_loader = data.val_dataloader()
    bank, bank_labels = extract_features(backbone, bank_loader, device="cpu")
    val, val_labels = extract_features(backbone, val_loader, device="cpu")
    assert (len(bank), len(val)) == (len(stratified_subset(data.train_set.targets, 0.5, 0)), 360)
    ev = cfg.online_eval
    top1, top5 = reference_knn(bank, bank_labels, val, val_labels, 10, ev.knn_k, ev.knn_temperature)
    one_sample = 100 / len(val)
    assert results["val/knn_top1"] == pytest.approx(top1, abs=one_sample / 10)
    assert results["val/knn_top5"] == pytest.approx(top5, abs=one_sample / 10)
    assert 0 < top1 < top5 < 100  # the comparison is not between two trivial values
    assert reference_knn(bank, bank_labels, val, val_labels, 10, ev.knn_k, 1.0)[0] != pytest.approx(top1)

    state = load_checkpoint(ckpt)["state_dict"]
    logits = val.double() @ state["probe.weight"].double().T + state["probe.bias"].double()
    probe = 100.0 * (logits.argmax(1) == val_labels).double().mean().item()
    assert results["val/probe_top1"] == pytest.approx(probe, abs=one_sample / 10)


def test_bank_subset_is_stratified_and_seeded():
    targets = [c for c in range(4) for _ in range(10 * (c + 1))]  # classes of 10, 20, 30 and 40 samples
    subset = stratified_subset(targets, 0.25, seed=3)
    assert Counter(targets[i] for i in subset) == {0: 2, 1: 5, 2: 8, 3: 10}  # round(n_c / 4)
    assert subset == sorted(set(subset)) == stratified_subset(targets, 0.25, seed=3)
    assert subset != stratified_subset(targets, 0.25, seed=4)
    assert Counter(targets[i] for i in stratified_subset(targets, 0.01, seed=0)) == dict.fromkeys(range(4), 1)

    dm = SSLDataModule("digits", global_crops={"n": 2, "size": 8}, bank_fraction=0.1, seed=5)
    bank, val = dm.val_dataloader()
    assert bank.dataset.indices == stratified_subset(dm.train_set.targets, 0.1, seed=5)
    per_class = Counter(dm.train_set.targets).values()
    assert len(bank.dataset) == sum(round(0.1 * n) for n in per_class) and len(val.dataset) == 360


@pytest.mark.parametrize("fraction", [0, 1.5, float("nan"), "all", True])
def test_bad_bank_fraction_is_one_line(fraction):
    with pytest.raises(ValueError) as err:
        SSLDataModule("digits", bank_fraction=fraction)
    assert str(err.value) == f"bank_fraction must be a number in (0, 1], got {fraction!r}"


@pytest.mark.parametrize(
    ("override", "message"),
    [
        ("online_eval.every_n_epochs=0", "online_eval.every_n_epochs must be an integer >= 1, got 0"),
        (
            "online_eval.bank_dtype=int8",
            "online_eval.bank_dtype must be one of float32, float16, bfloat16, got 'int8'",
        ),
        ("online_eval.knn_k=0", "online_eval.knn_k must be an integer >= 1, got 0"),
        ("online_eval.knn_temperature=-1", "online_eval.knn_temperature must be a finite number > 0, got -1"),
    ],
)
def test_bad_online_eval_settings_are_one_line(override, message):
    with pytest.raises(ValueError) as err:
        methods.build(compose([*TINY, override]), num_classes=10, n_global=2)
    assert str(err.value) == message


def test_a_run_resumes_with_other_online_eval_settings():
    settings = [
        "online_eval.every_n_epochs=10",
        "online_eval.bank_fraction=0.1",
        "online_eval.bank_dtype=float16",
        "online_eval.monitor_samples=0",
        "online_eval.rank_collapse_threshold=0.1",
    ]
    assert config_changes(compose(TINY), compose([*TINY, *settings])) == []
    assert config_changes(compose(TINY), compose([*TINY, "online_eval.knn_k=10"])) == ["online_eval.knn_k"]


def test_shards_are_contiguous_disjoint_and_cover_in_order():
    for n, world in [(10, 3), (7, 2), (4, 4), (1437, 2)]:
        shards = [shard(n, r, world) for r in range(world)]
        assert [i for s in shards for i in s] == list(range(n))
        assert max(map(len, shards)) - min(map(len, shards)) <= 1


def _evaluate(rank: int) -> dict:
    """One evaluation pass over the digits bank (25% subset: 359 images, float16) and val loaders of this rank, with
    pixels as features and their first 10 values as probe logits (both exact per sample)."""
    dm = SSLDataModule("digits", batch_size=64, global_crops={"n": 2, "size": 8}, bank_fraction=0.25)
    loaders = dm.val_dataloader()
    monitor = OnlineMonitor(num_classes=10, k=20, temperature=0.07, bank_dtype=torch.float16)

    def one_pass() -> None:
        for images, labels in loaders[0]:
            monitor.add_bank(images.flatten(1), labels)
        for images, labels in loaders[1]:
            monitor.add_val(images.flatten(1), labels, images.flatten(1)[:, :10])

    one_pass()
    (bank, bank_labels), (val, val_labels, hits) = monitor.gathered()
    one_pass()
    metrics = monitor.compute()
    return {
        "subset": torch.tensor(dm.bank_set.indices),
        "shard_sizes": torch.tensor([len(loader.dataset) for loader in loaders]),
        "bank": bank,
        "bank_labels": bank_labels,
        "val": val,
        "val_labels": val_labels,
        "hits": hits,
        "metrics": torch.tensor([metrics["knn_top1"], metrics["knn_top5"], metrics["probe_top1"]]),
    }


def test_sharded_and_gathered_evaluation_equals_one_process(tmp_path):
    ranks = run_on_ranks(_evaluate, tmp_path)
    single = _evaluate(0)  # this process: no process group, whole bank and val
    assert len(single["subset"]) % 2 == 1 and len(single["val_labels"]) == 360  # uneven shards on 2 ranks
    assert [r["shard_sizes"].tolist() for r in ranks] == [
        [(len(single["subset"]) + 1) // 2, 180],
        [len(single["subset"]) // 2, 180],
    ]
    assert single["bank"].dtype == torch.float16
    for result in ranks:  # every rank holds every sample once, in dataset order, and the same metrics
        for key, value in single.items():
            if key != "shard_sizes":
                assert torch.equal(result[key], value), key
