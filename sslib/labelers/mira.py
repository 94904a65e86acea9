"""MIRA: mutual-information regularised assignment (Lee et al., NeurIPS 2022, §3.1-3.2)."""

from __future__ import annotations

import functools
from collections.abc import Callable

import torch

from sslib.distributed import all_reduce, world_size
from sslib.errors import ConfigError
from sslib.labelers.base import Labeler
from sslib.labelers.registry import register
from sslib.validation import Checked, check_choice, check_int_at_least, check_positive, check_unit_interval

# Dynamic-range guards. A mat-vec whose products underflow below float32's normal range runs ~10x
# slower on CPU (measured here), and the plain form p^(1/(1-beta)) underflows to 0 and then gives
# 0 * inf = NaN. So q is flushed to 0 below Q_FLOOR (relative to its row's largest entry) and the
# cluster weights v are kept in [1, V_MAX]: every product in the loop stays a normal float32 for
# K < 1e5. Neither bound binds unless a cluster's marginal is < V_MAX^(-1/beta) (1e-24 at beta=2/3)
# of the largest one, i.e. below float32 resolution of the targets.
Q_FLOOR = 1e-16
V_MAX = 1e16
FLOAT32_TINY = torch.finfo(torch.float32).tiny
BACKENDS = ("auto", "torch", "graph")

Callback = Callable[[int, torch.Tensor], None]


def mira_targets(
    logits: torch.Tensor,
    temperature: float,
    beta: float,
    n_iters: int,
    callback: Callback | None = None,
    backend: str = "auto",
) -> torch.Tensor:
    """Solve Eq. 4 for ``logits``: MIRA's targets W*, rows on the simplex.

    With p = softmax(logits / tau), the iteration of Eq. 7 is run on the marginal and W is read
    off with Eq. 5. Both equations only use p_ij^(1/(1-beta)) up to a per-row factor, so we use
    q = softmax(logits / (tau (1 - beta))) (row-normalised, no underflow). Writing
    v_j = u_j^(-beta/(1-beta)), one step of Eq. 7 is one pass over q and a K-vector update:

        r_i = 1 / sum_k q_ik v_k,   m_j = 1/B sum_i q_ij r_i,   v_j <- m_j^(-beta)   (u_j = m_j^(1-beta))

    and Eq. 5 is w_ij = q_ij v_j r_i. W depends on v only up to scale, so v is taken relative to
    the largest cluster (and 1/B drops out). The start u0_j = (mean_i q_ij)^(1-beta) is the same
    pass from v = 1. Sums over the batch are all-reduced, so the result is the same for any split of
    the batch over ranks. No pass reads a value back to the host, so a GPU never waits for the CPU
    inside the loop.

    Args:
        logits: Teacher logits, shape ``(B, K)``.
        temperature: The teacher temperature tau, > 0.
        beta: The trade-off beta in [0, 1).
        n_iters: The number of fixed-point iterations of Eq. 7.
        callback: Called as ``callback(n, W_n)`` after each iteration (for convergence studies).
        backend: Picks the pass: ``"torch"`` two mat-vecs (any device or dtype), ``"graph"`` the same
            n_iters + 1 passes and Eq. 5 replayed as one captured CUDA graph (CUDA tensors, one
            process), ``"auto"``: graph on CUDA in a single process without ``callback``, else torch.

    Returns:
        W*, shape ``(B, K)``, rows on the simplex.

    Raises:
        ConfigError: If ``backend`` is unknown, or is ``"graph"`` where the graph cannot run.
    """
    backend = check_choice("backend", backend, BACKENDS)
    scale = 1.0 / (temperature * (1.0 - beta))
    if _use_graph(logits, backend, callback):
        return _graph_loop(logits.shape, logits.dtype, logits.device, n_iters)(logits, scale, beta)
    kernels = _TorchKernels(_flushed_exp(logits, scale))
    return kernels.assign(_fixed_point(kernels, beta, n_iters, callback), out=kernels.q)


def _fixed_point(
    kernels: _TorchKernels, beta: float | torch.Tensor, n_iters: int, callback: Callback | None = None
) -> torch.Tensor:
    """The cluster weights v (K,) after Eq. 7's start pass and ``n_iters`` passes over ``kernels.q``.

    ``beta`` is a float or a 0-d tensor (the captured graph's input). No value is read back to the
    host: the loop runs a fixed number of passes (``tests/core/labelers/test_labelers.py`` traces it whole).
    """
    q = kernels.q
    floor = _weight_floor(beta)
    v, mass = q.new_ones(q.shape[1]), q.new_empty(q.shape[1])  # two buffers: a pass reads v, writes mass
    for it in range(n_iters + 1):
        v, mass = kernels.weights(all_reduce(kernels.mass(v, out=mass)), beta, floor), v
        if callback is not None and it > 0:
            callback(it, kernels.assign(v))
    return v


def _flushed_exp(logits: torch.Tensor, scale: float, out: torch.Tensor | None = None) -> torch.Tensor:
    """exp(scale (l_ij - max_k l_ik)) (B, K), in ``out`` or a new tensor, entries below Q_FLOOR set to 0.

    This is q up to a per-row factor (rows peak at 1), to which Eq. 5 and Eq. 7 are invariant.
    The difference is taken before scaling, so the largest entries (l_ij near the max) keep full
    precision. (exp2 is ~1.6x cheaper than exp on CPU, but measured here it doubled the Eq. 5 residual
    at beta = 0.9, to 1.2e-6, so exp stays.)
    """
    q = torch.sub(logits, logits.amax(dim=1, keepdim=True), out=out).mul_(scale).exp_()
    return torch.threshold_(q, Q_FLOOR, 0.0)


def _weight_floor(beta: float | torch.Tensor) -> float | torch.Tensor:
    """The lower bound V_MAX^(-1/beta) of m_j / max_k m_k, kept a normal float32 (FLOAT32_TINY at beta = 0).

    It puts v = max(m_j / max_k m_k, floor)^(-beta) in [1, V_MAX], so empty clusters get V_MAX, which
    multiplies only zeros. A 0-d tensor ``beta`` gives a 0-d tensor, computed on its device.
    """
    if isinstance(beta, torch.Tensor):
        return torch.pow(V_MAX, -1.0 / beta).clamp_min(FLOAT32_TINY)
    return max(V_MAX ** (-1.0 / beta), FLOAT32_TINY) if beta > 0 else FLOAT32_TINY


class _TorchKernels:
    """Eq. 7's pass as two mat-vecs and Eq. 5 with torch ops: any device, any float dtype."""

    def __init__(self, q: torch.Tensor) -> None:
        self.q, self.qt, self.r = q, q.t(), q.new_empty(q.shape[0])

    def mass(self, v: torch.Tensor, out: torch.Tensor) -> torch.Tensor:
        """sum_i q_ij / sum_k q_ik v_k (K,), written into ``out``."""
        torch.mv(self.q, v, out=self.r).reciprocal_()
        return torch.mv(self.qt, self.r, out=out)

    def weights(
        self, mass: torch.Tensor, beta: float | torch.Tensor, floor: float | torch.Tensor
    ) -> torch.Tensor:
        """v_j = max(m_j / max_k m_k, floor)^(-beta) (K,) from the column mass (K,) = B m_j, in place.

        ``pow`` is accurate to an ulp, where exp2(-beta log2 x) loses ~|log2 x| ulps; at beta = 0 it
        gives 1 exactly.
        """
        return mass.div_(mass.max()).clamp_min_(floor).pow_(-beta)

    def assign(self, v: torch.Tensor, out: torch.Tensor | None = None) -> torch.Tensor:
        """Eq. 5: q_ij v_j / sum_k q_ik v_k (B, K), written into ``out`` when given."""
        w = torch.mul(self.q, v, out=out)
        return w.div_(w.sum(dim=1, keepdim=True))


class _GraphLoop:
    """Eq. 7's start pass, ``n_iters`` passes and Eq. 5 of the torch path, captured once as a CUDA graph.

    For one (B, K) shape and dtype on one CUDA device: a call writes q into the graph's input (B, K)
    and beta into its 0-d input, replays the ~6 (n_iters + 1) kernels with a single launch and returns
    a copy of W (B, K). beta may change between calls (schedules) without a new capture.
    """

    def __init__(self, shape: torch.Size, dtype: torch.dtype, device: torch.device, n_iters: int) -> None:
        self.q = torch.ones(shape, dtype=dtype, device=device)
        self.beta = torch.zeros((), dtype=dtype, device=device)
        self.graph = torch.cuda.CUDAGraph()
        kernels = _TorchKernels(self.q)
        side = torch.cuda.Stream(device)  # warm-up off the capture (cuBLAS sets up its workspace)
        side.wait_stream(torch.cuda.current_stream(device))
        with torch.cuda.stream(side):
            kernels.assign(_fixed_point(kernels, self.beta, n_iters))
        torch.cuda.current_stream(device).wait_stream(side)
        # thread_local: data-loading threads may use CUDA (pinned memory) while this thread captures
        with torch.cuda.graph(self.graph, capture_error_mode="thread_local"):
            self.w = kernels.assign(_fixed_point(kernels, self.beta, n_iters))

    def __call__(self, logits: torch.Tensor, scale: float, beta: float) -> torch.Tensor:
        _flushed_exp(logits, scale, out=self.q)
        self.beta.fill_(beta)
        self.graph.replay()
        return self.w.clone()


@functools.lru_cache(maxsize=4)
def _graph_loop(shape: torch.Size, dtype: torch.dtype, device: torch.device, n_iters: int) -> _GraphLoop:
    """The captured loop for one shape (a training run uses one or two: with and without a queue)."""
    return _GraphLoop(shape, dtype, device, n_iters)


def _use_graph(logits: torch.Tensor, backend: str, callback: Callback | None) -> bool:
    """Whether ``backend`` runs the captured graph on ``logits``; ``"graph"`` errors where it cannot."""
    fits = logits.device.type == "cuda" and world_size() == 1 and callback is None
    fits = fits and not torch.cuda.is_current_stream_capturing()
    if backend == "graph" and not fits:
        raise ConfigError(
            "MIRA backend='graph' needs CUDA logits in a single process and no callback, got "
            f"{logits.device.type} logits, {world_size()} processes; use backend='auto' or 'torch'"
        )
    return fits and backend in ("auto", "graph")


@register("mira")
class MIRALabeler(Labeler):
    """MIRA pseudo-labels (Eq. 4-7): KL to p = softmax(logits / tau) minus beta times the MI estimate.

    ``beta`` and ``temperature`` may be changed during training (schedules).

    Args:
        temperature: The teacher temperature tau_t, > 0 (paper: 0.225).
        beta: The trade-off, in [0, 1) (paper: 2/3).
        n_iters: The number of fixed-point iterations, >= 1 (paper: 30).
        backend: ``"auto"`` (the captured CUDA graph on one GPU, else torch ops), ``"torch"`` or
            ``"graph"`` (see :func:`mira_targets`).

    Raises:
        ConfigError: If an argument is out of its range or ``backend`` is unknown.
    """

    temperature = Checked(check_positive)
    beta = Checked(check_unit_interval)

    def __init__(
        self, temperature: float = 0.225, beta: float = 2 / 3, n_iters: int = 30, backend: str = "auto"
    ) -> None:
        super().__init__()
        self.temperature = temperature
        self.beta = beta
        self.n_iters = check_int_at_least("n_iters", n_iters, 1)
        self.backend = check_choice("backend", backend, BACKENDS)

    def assign(self, logits: torch.Tensor) -> torch.Tensor:
        """MIRA's targets W* of ``logits`` (:func:`mira_targets`).

        Args:
            logits: Teacher logits, shape ``(B, K)``.

        Returns:
            W*, shape ``(B, K)``, rows on the simplex.
        """
        return mira_targets(logits, self.temperature, self.beta, self.n_iters, backend=self.backend)

    def extra_repr(self) -> str:
        return f"temperature={self.temperature}, beta={self.beta:.4g}, n_iters={self.n_iters}, backend={self.backend}"
