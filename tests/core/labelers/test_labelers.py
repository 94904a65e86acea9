"""Pseudo-labelers checked against float64 references of the papers' equations."""

from __future__ import annotations

import math

import pytest
import torch

import sslib.labelers as L
from sslib.labelers.kmeans import spherical_kmeans
from sslib.labelers.mira import (
    Q_FLOOR,
    V_MAX,
    _fixed_point,
    _flushed_exp,
    _TorchKernels,
    _weight_floor,
    mira_targets,
)
from sslib.labelers.sinkhorn import sinkhorn_targets
from tests.helpers.reference import eq4_objective, eq5_rhs, eq6_rhs, mira_eq7, swav_sinkhorn

TAU, BETA = 0.225, 2 / 3


def cosine_logits(n: int, k: int, seed: int = 0, dim: int = 16) -> torch.Tensor:
    """Cosine similarities between random unit embeddings and prototypes, like a prototype head."""
    g = torch.Generator().manual_seed(seed)
    x = torch.nn.functional.normalize(torch.randn(n, dim, generator=g), dim=1)
    c = torch.nn.functional.normalize(torch.randn(k, dim, generator=g), dim=1)
    return x @ c.t()


def build(name: str, k: int = 3000, **kw) -> L.Labeler:
    return L.build(name, num_prototypes=k, **kw) if name == "dino" else L.build(name, **kw)


# --- registry and arguments ---------------------------------------------------------------------


def test_registry_lists_builtins_and_accepts_user_labelers():
    assert L.available() == ["dino", "mira", "nearest", "sinkhorn"]

    @L.register("argmax-test")
    class ArgmaxLabeler(L.Labeler):
        def assign(self, logits):
            return torch.nn.functional.one_hot(logits.argmax(1), logits.shape[1]).float()

    try:
        out = L.build("argmax-test")(torch.tensor([[0.0, 2.0], [3.0, 1.0]]))
        assert out.tolist() == [[0.0, 1.0], [1.0, 0.0]]
        with pytest.raises(ValueError, match="already registered"):
            L.register("argmax-test")(ArgmaxLabeler)
    finally:
        L.LABELERS._factories.pop("argmax-test")


@pytest.mark.parametrize(
    ("name", "kwargs", "match"),
    [
        ("nope", {}, r"unknown labeler 'nope'; available: dino, mira, nearest, sinkhorn"),
        ("mira", {"beta": 1.0}, r"beta must be in \[0, 1\), got 1.0"),
        ("mira", {"beta": -0.1}, r"beta must be in \[0, 1\), got -0.1"),
        ("mira", {"temperature": 0.0}, r"temperature must be a finite number > 0, got 0.0"),
        ("mira", {"n_iters": 0}, r"n_iters must be an integer >= 1, got 0"),
        ("mira", {"backend": "cuda"}, r"backend must be one of auto, torch, graph, got 'cuda'"),
        ("mira", {"backend": "native"}, r"backend must be one of auto, torch, graph, got 'native'"),
        (
            "mira",
            {"temprature": 0.1},
            r"unexpected argument\(s\) temprature; allowed: temperature, beta, n_iters, backend",
        ),
        ("sinkhorn", {"epsilon": -1.0}, r"epsilon must be a finite number > 0, got -1.0"),
        ("sinkhorn", {"n_iters": 0}, r"n_iters must be an integer >= 1"),
        ("dino", {"temperature": -0.04}, r"temperature must be a finite number > 0"),
        ("dino", {"center_momentum": 1.5}, r"center_momentum must be in \[0, 1\], got 1.5"),
        (
            "nearest",
            {"n_iters": 10},
            r"labeler 'nearest' got unexpected argument\(s\) n_iters; allowed: none",
        ),
    ],
)
def test_bad_arguments_raise_one_line_value_error(name, kwargs, match):
    with pytest.raises(ValueError, match=match) as err:
        L.build(name, **kwargs)
    assert "\n" not in str(err.value)


def test_schedules_are_validated_too():
    lab = L.build("mira")
    lab.beta = 0.75
    assert lab.beta == 0.75
    with pytest.raises(ValueError, match="beta must be in"):
        lab.beta = 1.2


@pytest.mark.parametrize("name", ["mira", "sinkhorn", "dino", "nearest"])
@pytest.mark.parametrize(
    ("bad", "match"),
    [
        (torch.zeros(5), "must be a 2-D tensor"),
        (torch.zeros(2, 3, 4), "must be a 2-D tensor"),
        (torch.zeros(0, 3000), "non-empty"),
        (torch.zeros(2, 3000).index_fill(1, torch.tensor([7]), float("nan")), "finite"),
        (torch.full((2, 3000), float("inf")), "finite"),
    ],
)
def test_bad_logits_raise(name, bad, match):
    with pytest.raises(ValueError, match=match):
        build(name)(bad)


@pytest.mark.parametrize("name", ["mira", "sinkhorn", "dino"])
def test_label_views_checks_finiteness_unless_the_step_leaves_it_to_its_loss_guard(name):
    good, bad = torch.randn(4, 3000), torch.full((4, 3000), float("nan"))
    with pytest.raises(ValueError, match="logits must be finite"):
        build(name).label_views([good, bad])
    targets = build(name).label_views([good, bad], check_finite=False)  # no read of the values
    assert torch.isfinite(targets[0]).all()  # each view is labelled on its own
    assert torch.isnan(targets[1]).any()
    with pytest.raises(ValueError, match="must be a 2-D tensor"):  # the shape is checked either way
        build(name).label_views([torch.zeros(3)], check_finite=False)


def test_dino_rejects_wrong_number_of_prototypes():
    with pytest.raises(ValueError, match="num_prototypes=3000, got logits with 10 columns"):
        build("dino")(torch.zeros(4, 10))


# --- MIRA against the paper --------------------------------------------------------------------


@pytest.mark.parametrize("n_iters", [1, 3, 30])
def test_mira_follows_eq7_iterates_from_the_specified_start(n_iters):
    z = cosine_logits(128, 50)
    ours = mira_targets(z, TAU, BETA, n_iters).double()
    ref = mira_eq7(z, TAU, BETA, n_iters)
    assert (ours - ref).abs().max() < 1e-6


def kkt_residuals(w: torch.Tensor, p: torch.Tensor, beta: float) -> tuple[float, float]:
    """Max deviation of W (B, K) from Eq. 5 and of its marginal from the fixed point of Eq. 6."""
    w = w.double()
    wbar = w.mean(0)
    return float((w - eq5_rhs(w, p, beta)).abs().max()), float((wbar - eq6_rhs(wbar, p, beta)).abs().max())


@pytest.mark.parametrize("beta", [0.3, 2 / 3])
def test_mira_converged_point_satisfies_kkt_eq5_and_fixed_point_eq6(beta):
    """Float32 logits in, float32 targets out: residuals < 1e-6. The conditioning grows like 1 / (1 - beta):
    at beta = 0.9 float32 column sums over the batch alone leave ~1e-6, so float32 is checked up to the
    paper's beta here and float64 at every beta in the next test."""
    z = cosine_logits(256, 40, seed=1)
    p = torch.softmax(z.double() / TAU, dim=1)
    w = L.build("mira", temperature=TAU, beta=beta, n_iters=2000)(z)
    assert max(kkt_residuals(w, p, beta)) < 1e-6
    # A few iterations are not converged: the residual check can fail.
    w1 = L.build("mira", temperature=TAU, beta=beta, n_iters=1)(z)
    assert kkt_residuals(w1, p, beta)[0] > 1e-5


@pytest.mark.parametrize("beta", [0.3, 2 / 3, 0.9])
def test_mira_torch_path_is_exact_in_float64(beta):
    z = cosine_logits(256, 40, seed=1).double()
    p = torch.softmax(z / TAU, dim=1)
    assert max(kkt_residuals(mira_targets(z, TAU, beta, 2000, backend="torch"), p, beta)) < 1e-12


def test_mira_minimises_eq4():
    z = cosine_logits(200, 30, seed=2)
    p = torch.softmax(z.double() / TAU, dim=1)
    w = L.build("mira", temperature=TAU, beta=BETA, n_iters=500)(z).double()
    best = eq4_objective(w, p, BETA)
    assert best < eq4_objective(p, p, BETA) - 1e-4  # strictly better than the softmax target
    torch.manual_seed(0)
    for _ in range(20):
        rand = torch.distributions.Dirichlet(torch.ones(30)).sample((200,)).double()
        assert best < eq4_objective(rand, p, BETA)
        for eps in (1e-1, 1e-2):  # feasible points near the optimum are worse too (strict convexity)
            assert best < eq4_objective((1 - eps) * w + eps * rand, p, BETA)


def test_mira_beta_zero_is_the_softmax_target():
    z = cosine_logits(64, 20)
    w = L.build("mira", temperature=TAU, beta=0.0, n_iters=5)(z)
    assert torch.allclose(w, torch.softmax(z / TAU, dim=1), atol=1e-6)


def test_mira_spreads_mass_over_clusters():
    # All samples prefer the same cluster a little: MIRA's MI term increases the marginal entropy.
    z = cosine_logits(256, 20, seed=3)
    z[:, 0] += 0.5
    p, w = torch.softmax(z / TAU, dim=1), L.build("mira", temperature=TAU, beta=BETA, n_iters=30)(z)
    sp, sw = L.label_stats(p), L.label_stats(w)
    assert sw.marginal_entropy > sp.marginal_entropy + 0.05
    assert sw.mutual_information > sp.mutual_information + 0.5


def test_mira_loop_stays_in_normal_float32_range():
    """Every product the loop forms is a normal float32: no denormal slow path on CPU."""
    z = torch.randn(64, 3000) * 50  # huge spread: most of q underflows
    q = _flushed_exp(z, 1.0 / (TAU * (1 - BETA)))
    nonzero = q[q > 0]
    assert nonzero.min() >= Q_FLOOR and q.max(dim=1).values.eq(1).all()
    kernels = _TorchKernels(q)
    v = kernels.weights(kernels.mass(torch.ones(3000), out=torch.empty(3000)), BETA, _weight_floor(BETA))
    assert v.min() == 1.0 and v.max() <= V_MAX * (1 + 1e-5)  # float32 pow is not exactly rounded
    s = q @ v
    assert (nonzero.min() * v.min()) >= torch.finfo(torch.float32).tiny
    assert (s.reciprocal().min() * nonzero.min()) >= torch.finfo(torch.float32).tiny


def test_graph_backend_needs_cuda_and_says_so():
    with pytest.raises(ValueError, match=r"backend='graph' needs CUDA logits in a single process.*got cpu"):
        mira_targets(cosine_logits(8, 50), TAU, BETA, 30, backend="graph")


class _SyncingKernels(_TorchKernels):
    """The torch kernels with a value read back to the host in every pass (what the loop must not do)."""

    @staticmethod
    def weights(mass, beta, floor):
        return mass.div_(float(mass.max())).clamp_min_(floor).pow_(-beta)


def _loop(kernels_type: type[_TorchKernels], q: torch.Tensor, beta: float | torch.Tensor) -> torch.Tensor:
    """Eq. 7's loop and Eq. 5 on ``q`` (B, K) with ``kernels_type``."""
    kernels = kernels_type(q)
    return kernels.assign(_fixed_point(kernels, beta, 30))


def test_mira_loop_reads_nothing_back_to_the_host():
    """What the CUDA graph captures: 31 passes that never read a value back to the host (an ``.item()`` or
    ``bool(tensor)`` is a device sync on GPU and breaks a capture). On meta tensors, which hold no data,
    any such read fails; the loop also traces as one graph and then gives the eager result."""
    meta = torch.empty(16, 40, device="meta")
    assert _loop(_TorchKernels, meta, torch.tensor(BETA, device="meta")).shape == (16, 40)
    with pytest.raises((NotImplementedError, RuntimeError), match="meta"):
        _loop(_SyncingKernels, meta, torch.tensor(BETA, device="meta"))
    torch._dynamo.reset()
    q = _flushed_exp(cosine_logits(16, 40), 1.0 / (TAU * (1 - BETA)))
    traced = torch.compile(_loop, fullgraph=True, backend="eager")(
        _TorchKernels, q.clone(), torch.tensor(BETA)
    )
    assert (traced - _loop(_TorchKernels, q.clone(), BETA)).abs().max() < 1e-6


def test_weight_floor_of_a_tensor_beta_is_the_float_floor():
    for beta in (0.0, 0.3, 2 / 3, 0.9):
        assert _weight_floor(torch.tensor(beta)).item() == pytest.approx(_weight_floor(beta), rel=1e-6)


# --- Sinkhorn against SwAV ---------------------------------------------------------------------


@pytest.mark.parametrize("n_iters", [1, 3, 10])
def test_sinkhorn_matches_swav(n_iters):
    z = cosine_logits(96, 40, seed=4)
    ours = sinkhorn_targets(z, 0.05, n_iters).double()
    assert (ours - swav_sinkhorn(z, 0.05, n_iters)).abs().max() < 1e-5


def test_sinkhorn_converges_to_equipartition():
    z = cosine_logits(120, 30, seed=5)
    q = L.build("sinkhorn", epsilon=0.05, n_iters=300)(z).double()
    assert torch.allclose(q.sum(1), torch.ones(120, dtype=torch.float64), atol=1e-5)
    assert torch.allclose(q.sum(0), torch.full((30,), 120 / 30, dtype=torch.float64), atol=1e-3)


# --- DINO --------------------------------------------------------------------------------------


def test_dino_centres_sharpens_and_updates_the_centre_after_use():
    lab = L.build("dino", temperature=0.04, center_momentum=0.9, num_prototypes=6)
    t1, t2 = torch.randn(5, 6), torch.randn(7, 6)
    assert torch.allclose(lab(t1), torch.softmax(t1 / 0.04, dim=1))  # c = 0 when first used
    c1 = 0.1 * t1.mean(0, keepdim=True)
    assert torch.allclose(lab.center, c1)
    assert torch.allclose(lab(t2), torch.softmax((t2 - c1) / 0.04, dim=1), atol=1e-6)
    assert torch.allclose(lab.center, 0.9 * c1 + 0.1 * t2.mean(0, keepdim=True))
    assert torch.equal(lab.state_dict()["center"], lab.center)


def test_dino_eval_mode_freezes_centre_and_views_update_once():
    lab = L.build("dino", num_prototypes=4)
    lab.eval()
    lab(torch.randn(3, 4))
    assert torch.count_nonzero(lab.center) == 0
    lab.train()
    v1, v2 = torch.randn(3, 4), torch.randn(3, 4)
    out = lab.label_views([v1, v2])
    assert torch.allclose(out[1], torch.softmax(v2 / 0.04, dim=1))  # same centre for both views
    assert torch.allclose(lab.center, 0.1 * torch.cat([v1, v2]).mean(0, keepdim=True))


# --- k-means (DeepCluster-v2) ------------------------------------------------------------------


def test_nearest_labeler_is_the_one_hot_of_the_argmax():
    z = cosine_logits(64, 30, seed=7)
    ref = torch.nn.functional.one_hot(z.double().argmax(1), 30).double()
    assert torch.equal(L.build("nearest")(z).double(), ref)


def well_separated_clusters(k: int = 4, per_cluster: int = 25, dim: int = 16) -> tuple[torch.Tensor, ...]:
    """Unit rows (k * per_cluster, dim) scattered tightly around k orthogonal directions, and their labels."""
    g = torch.Generator().manual_seed(0)
    labels = torch.arange(k).repeat_interleave(per_cluster)
    x = torch.nn.functional.one_hot(labels, dim).float() + 0.1 * torch.randn(len(labels), dim, generator=g)
    return torch.nn.functional.normalize(x, dim=1), labels


def test_spherical_kmeans_recovers_well_separated_clusters():
    x, labels = well_separated_clusters()
    start = x[[3, 30, 60, 90]] + 0.3 * torch.eye(16)[4:8]  # one rough start per cluster
    centroids = spherical_kmeans(x, torch.nn.functional.normalize(start, dim=1), n_iters=5)
    means = torch.stack([x[labels == j].double().sum(0) for j in range(4)])
    ref = torch.nn.functional.normalize(means, dim=1)  # float64: the normalised mean of each cluster
    assert (centroids.double() - ref).abs().max() < 1e-6
    assert torch.equal((x @ centroids.t()).argmax(1), labels)


def test_spherical_kmeans_keeps_the_centroid_of_an_empty_cluster_and_zero_iterations_change_nothing():
    x, _ = well_separated_clusters()
    far = torch.nn.functional.one_hot(torch.tensor([15]), 16).float().neg()  # nearest to no row
    start = torch.cat([x[[0, 25, 50, 75]], far])
    out = spherical_kmeans(x, start, n_iters=3)
    assert torch.equal(out[4], far[0]) and torch.equal(spherical_kmeans(x, start, n_iters=0), start)


# --- every labeler: contract and robustness ----------------------------------------------------

EXTREME = {
    "huge": lambda: torch.randint(0, 2, (32, 3000)).float().mul(2e4).sub(1e4),
    "small_batch_many_clusters": lambda: cosine_logits(64, 3000, seed=6),
    "constant": lambda: torch.full((16, 3000), 0.7),
    "one_hot_like": lambda: torch.nn.functional.one_hot(torch.arange(16) % 5, 3000).float() * 1e3,
    "single_row": lambda: cosine_logits(1, 3000),
    "bf16": lambda: cosine_logits(32, 3000).bfloat16(),
    "fp16": lambda: (cosine_logits(32, 3000) * 30).half(),
}


@pytest.mark.parametrize("case", sorted(EXTREME))
@pytest.mark.parametrize("name", ["mira", "sinkhorn", "dino", "nearest"])
def test_outputs_are_finite_row_stochastic_float32(name, case):
    logits = EXTREME[case]()
    out = build(name)(logits)
    assert out.dtype == torch.float32 and out.shape == logits.shape
    assert torch.isfinite(out).all() and (out >= 0).all()
    assert torch.allclose(out.sum(1), torch.ones(out.shape[0]), atol=1e-5)


@pytest.mark.parametrize("name", ["mira", "sinkhorn", "dino", "nearest"])
def test_no_grad_flows_through_targets(name):
    logits = cosine_logits(8, 3000).requires_grad_()
    assert not build(name)(logits).requires_grad


def test_constant_logits_give_uniform_targets():
    for name in ("mira", "sinkhorn", "dino"):
        out = build(name, k=10)(torch.full((4, 10), 0.3))
        assert torch.allclose(out, torch.full((4, 10), 0.1), atol=1e-6), name


def test_mira_one_hot_like_logits_keep_the_assignment():
    logits = torch.nn.functional.one_hot(torch.arange(16) % 5, 3000).float() * 1e3
    assert build("mira")(logits).argmax(1).tolist() == (torch.arange(16) % 5).tolist()


# --- diagnostics -------------------------------------------------------------------------------


def test_label_stats_on_known_assignments():
    hard = torch.eye(8).repeat(3, 1)  # 24 samples, each cluster used 3 times
    s = L.label_stats(hard)
    assert math.isclose(s.marginal_entropy, math.log(8), rel_tol=1e-6)
    assert abs(s.conditional_entropy) < 1e-7 and s.clusters_used == 8 and s.n_clusters == 8
    assert math.isclose(s.mutual_information, math.log(8), rel_tol=1e-6)
    uniform = L.label_stats(torch.full((10, 8), 1 / 8))
    assert abs(uniform.mutual_information) < 1e-6 and uniform.clusters_used == 1


def test_label_statistics_of_a_training_step_read_nothing_back_to_the_host():
    """The step logs :func:`label_stats_tensors` as device tensors: on meta tensors, which hold no data, any
    ``.item()``, ``bool(tensor)`` or size-from-data op (``bincount``) would raise; the values are those of
    :func:`label_stats`."""
    w = torch.softmax(torch.randn(20, 6) * 2, dim=1)
    meta = L.label_stats_tensors(w.to("meta"))
    assert all(v.device.type == "meta" and v.dim() == 0 for v in meta.values())
    stats, plain = L.label_stats_tensors(w), L.label_stats(w)
    assert {k: v.item() for k, v in stats.items()} == {
        k: v for k, v in plain.as_dict().items() if k != "n_clusters"
    }


def test_label_stats_match_eq2_in_float64():
    w = torch.softmax(torch.randn(50, 12) * 3, dim=1)
    wd = w.double()
    wbar = wd.mean(0)
    h = float(-(wbar * wbar.log()).sum())
    hc = float(-(wd * wd.log()).sum() / 50)
    s = L.label_stats(w)
    assert math.isclose(s.marginal_entropy, h, rel_tol=1e-5)
    assert math.isclose(s.conditional_entropy, hc, rel_tol=1e-5)
    assert math.isclose(s.mutual_information, h - hc, rel_tol=1e-4)
    assert s.clusters_used == len(set(w.argmax(1).tolist()))
    assert set(s.as_dict("labels/")) == {
        "labels/marginal_entropy",
        "labels/conditional_entropy",
        "labels/mutual_information",
        "labels/clusters_used",
        "labels/n_clusters",
    }


def test_nearest_keeps_float64_rows_in_float64_and_half_rows_in_float32():
    rows = torch.randn(40, 4, dtype=torch.float64, generator=torch.Generator().manual_seed(0))
    x = torch.nn.functional.normalize(rows, dim=1)
    start = x[:3].float()  # centroids of another dtype than the rows
    assert spherical_kmeans(x, start, 3).dtype == torch.float64
    assert spherical_kmeans(x.to(torch.bfloat16), start, 3).dtype == torch.float32
    assert L.build("nearest")(x @ x[:3].T).dtype == torch.float64
