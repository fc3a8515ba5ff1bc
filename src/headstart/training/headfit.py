"""Fit a linear head on cached frozen features: L2-regularised multinomial logistic regression
on standardised features, solved to convergence with full-batch L-BFGS (scipy's L-BFGS-B:
deterministic, no learning rate to tune), then folded back into a plain linear layer on raw
features."""
from __future__ import annotations

import contextlib
from concurrent.futures import ThreadPoolExecutor

import numpy as np
import torch
from scipy.optimize import minimize
from threadpoolctl import threadpool_limits

# floor of a feature's spread, relative to the median feature's (see robust_scale). Measured on
# animal-mnist pool images (never the test split): 5- to 10-point gains in probe accuracy at
# 10 per class over an absolute 1e-6 floor, flat from 0.3x to 1x; neutral on text embeddings.
STD_FLOOR = 0.3


def fit_linear_head(features: np.ndarray, y: np.ndarray, num_classes: int, *, C: float = 1.0,
                    max_iter: int = 300, seed: int = 0) -> tuple[torch.Tensor, torch.Tensor]:
    """(weight (k, dim), bias (k,)) acting on raw features; see fit_standardized_head."""
    W, b, mean, std = fit_standardized_head(features, y, num_classes, C=C, max_iter=max_iter,
                                            seed=seed)
    W_raw = W / std
    return W_raw, b - W_raw @ mean


def fit_standardized_head(features: np.ndarray, y: np.ndarray, num_classes: int, *,
                          C: float = 1.0, max_iter: int = 300, seed: int = 0,
                          standardize: bool = True):
    """features: (n, views, dim), or a list of such arrays (the training and validation
    splits), joined as one sample; every view is a training sample with the same label.
    Returns (weight, bias, mean, std): the head acts on (features - mean) / std. C is the
    inverse regularisation strength as in scikit-learn (penalty ||W||^2 / (2 C n)).

    The fit holds no copy of the features: it optimises the head on standardised features,
    W (x - mean) / std + b, written as the same linear map of the raw features,
    (W / std) x + (b - (W / std) mean), so that its peak memory is the caller's features plus
    a constant. The rows are taken in fixed blocks of the joined sample (row_blocks), so the
    head is the same bit for bit however the sample is split into parts.

    standardize=False fits the head on the features as they are (mean 0, std 1 returned):
    scikit-learn's LogisticRegression(C) on raw features, the head SetFit fits on embeddings
    trained for cosine similarity, whose geometry standardising would change. The fit starts
    from the same small random head whatever came before, so the head depends on the sample
    alone (the head of `--refit head` is the one `--refit full` fits when it keeps the
    probe)."""
    with one_thread():
        return _fit(features, y, num_classes, C=C, max_iter=max_iter, seed=seed,
                    standardize=standardize)


def fit_heads(*jobs: dict) -> list[tuple]:
    """Several independent fit_standardized_head fits (each job its keyword arguments) at once,
    one per thread up to the process's torch threads: each fit runs on one thread (see
    one_thread), so two fits on two cores take the time of the longer one. The same heads, bit
    for bit, as fitted one after another (each depends on its own sample and seed alone)."""
    workers = min(len(jobs), torch.get_num_threads())
    with one_thread():
        if workers < 2:
            return [_fit(**job) for job in jobs]
        with ThreadPoolExecutor(workers, thread_name_prefix="headstart-head") as pool:
            return list(pool.map(lambda job: _fit(**job), jobs))


@contextlib.contextmanager
def one_thread():
    """torch and the BLAS at one thread while heads are fitted, restored after: a small
    problem, where one thread is as fast idle and far faster when loaded, for torch's products
    and for the BLAS under L-BFGS-B's own steps alike (measured, on a loaded 2-core machine:
    89 ms per L-BFGS-B step on two BLAS threads). Set once around all the fits that run
    together: both settings are the process's, not a thread's."""
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    try:
        with threadpool_limits(1, user_api="blas"):
            yield
    finally:
        torch.set_num_threads(threads)


def _fit(features, y, num_classes: int, *, C: float = 1.0, max_iter: int = 300,
         seed: int = 0, standardize: bool = True):
    parts = list(features) if isinstance(features, (list, tuple)) else [features]
    views, dim = parts[0].shape[1:]
    X = row_blocks([torch.from_numpy(np.ascontiguousarray(p, np.float32).reshape(-1, dim))
                    for p in parts])
    t = torch.from_numpy(np.repeat(np.asarray(y, np.int64), views))
    if standardize:
        mean, spread = moments(X, dim)
        std = robust_scale(spread)
    else:
        mean, std = torch.zeros(dim), torch.ones(dim)
    g = torch.Generator().manual_seed(seed)
    W0 = torch.randn(num_classes, dim, generator=g).double() * 1e-3
    theta0 = np.concatenate([W0.numpy().ravel(), np.zeros(num_classes)])
    objective = _Objective(X, t, mean, std, num_classes, l2=1.0 / (2.0 * C * len(t)))
    found = minimize(objective, theta0, jac=True, method="L-BFGS-B",
                     options={"maxiter": max_iter, "maxfun": int(max_iter * 1.25),
                              "maxcor": 20, "gtol": 1e-6, "ftol": 1e-9})
    W, b = objective.unpack(found.x)
    return torch.from_numpy(W).float(), torch.from_numpy(b).float(), mean, std


class _Objective:
    """The penalised mean cross-entropy of the head W (x - mean) / std + b over the rows of
    the blocks X, and its gradient, for scipy's L-BFGS-B (one flat float64 vector of W and b).
    Products with the features in float32, block by block, as the features are stored; sums
    in float64. Written out in NumPy (no autograd, no torch optimiser: fitting a probe imports
    none of torch's optimiser machinery, whose first use costs a second of start-up); NumPy's
    float32 products with ten-odd classes run about twice as fast as torch's here."""

    def __init__(self, X, t, mean, std, k: int, *, l2: float) -> None:
        self.X = [x.numpy() for x in X]
        self.t, self.k, self.l2 = t.numpy(), k, l2
        self.mean = mean.double().numpy()
        self.std = std.double().numpy()
        self.dim = len(self.mean)
        self.rows = np.arange(len(self.t))

    def unpack(self, theta: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        return theta[:self.k * self.dim].reshape(self.k, self.dim), theta[self.k * self.dim:]

    def __call__(self, theta: np.ndarray) -> tuple[float, np.ndarray]:
        W, b = self.unpack(theta)
        w = W / self.std  # the same map on raw features
        w32 = np.ascontiguousarray(w.T, np.float32)
        logits = np.concatenate([x @ w32 for x in self.X]).astype(np.float64)
        logits += b - w @ self.mean
        logits -= logits.max(1, keepdims=True)
        logp = logits - np.log(np.exp(logits).sum(1, keepdims=True))
        n, rows = len(self.t), self.rows
        loss = -logp[rows, self.t].mean() + self.l2 * float((W * W).sum())
        G = np.exp(logp)
        G[rows, self.t] -= 1.0
        G /= n
        G32, gw, at = G.astype(np.float32), np.zeros_like(W), 0
        for x in self.X:
            gw += G32[at:at + len(x)].T @ x
            at += len(x)
        gsum = G.sum(0)
        gW = (gw - np.outer(gsum, self.mean)) / self.std + 2.0 * self.l2 * W
        return float(loss), np.concatenate([gW.ravel(), gsum])


BLOCK = 256  # rows of the joined sample per block of the head fit


def row_blocks(parts: list[torch.Tensor], block: int = BLOCK) -> list[torch.Tensor]:
    """The rows of several (rows, dim) tensors, taken as one sample, cut into consecutive
    blocks of `block` rows: views of the parts, except a block that spans two parts (copied:
    at most block rows per boundary). The same sample gives the same blocks however it is
    split into parts."""
    bounds = np.cumsum([0, *map(len, parts)]).tolist()
    out = []
    for s in range(0, bounds[-1], block):
        e = min(s + block, bounds[-1])
        pieces = [x[max(s - a, 0):e - a] for x, a, z in zip(parts, bounds, bounds[1:])
                  if a < e and z > s]
        out.append(pieces[0] if len(pieces) == 1 else torch.cat(pieces))
    return out


def moments(X: list[torch.Tensor], dim: int) -> tuple[torch.Tensor, ...]:
    """(mean, standard deviation) per feature of the rows of the blocks X (row_blocks) taken
    as one sample, accumulated in float64 block by block (no copy of the rows)."""
    n = sum(len(x) for x in X)
    total = torch.zeros(dim, dtype=torch.float64)
    for x in X:
        total += x.double().sum(0)
    mean = total / max(n, 1)
    squares = torch.zeros(dim, dtype=torch.float64)
    for x in X:
        squares += ((x.double() - mean) ** 2).sum(0)
    std = (squares / max(n - 1, 1)).sqrt()  # unbiased, as torch.std
    return mean.float(), std.float()


def robust_scale(std: torch.Tensor) -> torch.Tensor:
    """Per-feature spread for standardising, floored at STD_FLOOR x the median spread.

    A feature that barely varies on a small training set (a channel the target data hardly
    excite) would otherwise be scaled up by up to 1/eps: the fit then leans on noise, and a
    fine-tuned body that moves it the slightest bit sends the logits, and the gradients, off
    by orders of magnitude (measured: gradient norms of 1e4 in the first epoch). The floor is
    relative, so features of any overall scale (a random-init network's ~1e-8 included) are
    standardised alike."""
    floor = float(std.median()) * STD_FLOOR
    return std.clamp_min(floor if floor > 0 else 1e-12)


def head_logits(features: np.ndarray, weight: torch.Tensor, bias: torch.Tensor) -> np.ndarray:
    """Logits averaged over views (test-time augmentation) for (n, views, dim) features."""
    f = torch.from_numpy(np.ascontiguousarray(features, np.float32))
    return (f @ weight.T + bias).mean(1).numpy()
