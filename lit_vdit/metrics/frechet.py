"""Distances between two sets of features: Frechet distance (FID/FVD), KID/KVD and Inception Score.

All arithmetic is float64 numpy. On the same features the values equal torch-fidelity's
(``fid_statistics_to_metric``, ``kid_features_to_metric`` with its defaults, ``isc_features_to_metric``)
and torchmetrics' FID to round-off (about 1e-8 relative when a covariance is singular); tests check this.
"""

from __future__ import annotations

import numpy as np
import torch

ArrayLike = np.ndarray | torch.Tensor


def _as_features(x: ArrayLike, name: str, min_samples: int) -> np.ndarray:
    x = x.detach().cpu().numpy() if isinstance(x, torch.Tensor) else np.asarray(x)
    if x.ndim != 2:
        raise ValueError(f"{name} must be a 2-D (samples, dim) array, got shape {x.shape}")
    if len(x) < min_samples:
        raise ValueError(f"{name} has {len(x)} samples; this needs at least {min_samples}")
    return x.astype(np.float64)


def feature_stats(features: ArrayLike) -> tuple[np.ndarray, np.ndarray]:
    """Mean and unbiased covariance (float64) of (N, D) features; needs N >= 2."""
    x = _as_features(features, "features", 2)
    return x.mean(axis=0), np.cov(x, rowvar=False)


def _sqrt_psd(a: np.ndarray) -> np.ndarray:
    w, v = np.linalg.eigh(a)
    return (v * np.sqrt(np.clip(w, 0.0, None))) @ v.T


def frechet_distance(mu1: np.ndarray, sigma1: np.ndarray, mu2: np.ndarray, sigma2: np.ndarray) -> float:
    """||mu1 - mu2||^2 + tr(S1 + S2 - 2 (S1 S2)^1/2) between two Gaussians.

    tr (S1 S2)^1/2 is computed as the sum of square roots of the eigenvalues of the symmetric PSD
    matrix S1^1/2 S2 S1^1/2 (same eigenvalues as S1 S2), which stays real for singular covariances.
    """
    mu1, mu2 = np.asarray(mu1, np.float64), np.asarray(mu2, np.float64)
    sigma1, sigma2 = np.asarray(sigma1, np.float64), np.asarray(sigma2, np.float64)
    if mu1.shape != mu2.shape or sigma1.shape != sigma2.shape or sigma1.shape != mu1.shape * 2:
        raise ValueError(
            f"statistics do not match: mu {mu1.shape} vs {mu2.shape}, sigma {sigma1.shape} vs {sigma2.shape}"
        )
    root1 = _sqrt_psd(sigma1)
    eig = np.linalg.eigvalsh(root1 @ sigma2 @ root1)
    tr_covmean = np.sqrt(np.clip(eig, 0.0, None)).sum()
    diff = mu1 - mu2
    return float(diff @ diff + np.trace(sigma1) + np.trace(sigma2) - 2.0 * tr_covmean)


def frechet_distance_from_features(real: ArrayLike, fake: ArrayLike) -> float:
    """Frechet distance between the Gaussians fitted to two (N, D) feature sets (N >= 2 each).

    With fewer samples than dimensions it avoids the D x D eigenproblems: for centred data A1, A2 the
    nonzero eigenvalues of S1 S2 are the squared singular values of A1 A2^T / sqrt((n1 - 1)(n2 - 1)).
    """
    x, y = _as_features(real, "real features", 2), _as_features(fake, "generated features", 2)
    if x.shape[1] != y.shape[1] or min(len(x), len(y)) >= x.shape[1]:
        return frechet_distance(*feature_stats(x), *feature_stats(y))
    a, b = x - x.mean(axis=0), y - y.mean(axis=0)
    tr_covmean = np.linalg.svd(a @ b.T, compute_uv=False).sum() / np.sqrt((len(x) - 1) * (len(y) - 1))
    diff = x.mean(axis=0) - y.mean(axis=0)
    traces = (a * a).sum() / (len(x) - 1) + (b * b).sum() / (len(y) - 1)
    return float(diff @ diff + traces - 2.0 * tr_covmean)


def _mmd2_unbiased(x: np.ndarray, y: np.ndarray) -> float:
    """Unbiased MMD^2 with the cubic polynomial kernel k(a, b) = (a.b / D + 1)^3."""
    m, d = x.shape
    k_xx, k_yy, k_xy = ((a @ b.T / d + 1.0) ** 3 for a, b in ((x, x), (y, y), (x, y)))
    within = (k_xx.sum() - np.trace(k_xx) + k_yy.sum() - np.trace(k_yy)) / (m * (m - 1))
    return float(within - 2.0 * k_xy.sum() / (m * m))


def kernel_distance(
    real: ArrayLike, fake: ArrayLike, subset_size: int = 1000, subsets: int = 100, seed: int = 2020
) -> tuple[float, float]:
    """KID: mean and std of the unbiased polynomial-kernel MMD^2 over random subsets (no replacement).

    Subsets are drawn exactly as torch-fidelity draws them (``np.random.RandomState(seed).choice``).
    """
    x = _as_features(real, "real features", subset_size)
    y = _as_features(fake, "generated features", subset_size)
    if subset_size < 2:
        raise ValueError(f"KID subset_size must be >= 2, got {subset_size}")
    rng = np.random.RandomState(seed)
    mmds = []
    for _ in range(subsets):
        xs = x[rng.choice(len(x), subset_size, replace=False)]
        ys = y[rng.choice(len(y), subset_size, replace=False)]
        mmds.append(_mmd2_unbiased(xs, ys))
    return float(np.mean(mmds)), float(np.std(mmds))


def inception_score(logits: ArrayLike, splits: int = 10, seed: int | None = 2020) -> tuple[float, float]:
    """Inception Score: mean and std over ``splits`` of exp(E_x KL(p(y|x) || p(y))).

    Samples are permuted with ``np.random.RandomState(seed)`` first, as torch-fidelity does; ``seed=None``
    keeps the given order.
    """
    z = _as_features(logits, "logits", splits)
    if seed is not None:
        z = z[np.random.RandomState(seed).permutation(len(z))]
    log_p = z - z.max(axis=1, keepdims=True)
    log_p -= np.log(np.exp(log_p).sum(axis=1, keepdims=True))
    scores = []
    for i in range(splits):
        chunk = log_p[i * len(z) // splits : (i + 1) * len(z) // splits]
        log_q = np.log(np.exp(chunk).mean(axis=0))
        scores.append(np.exp((np.exp(chunk) * (chunk - log_q)).sum(axis=1).mean()))
    return float(np.mean(scores)), float(np.std(scores))
