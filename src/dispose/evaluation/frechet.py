"""Fréchet distance between Gaussians fitted to two feature sets (FID / FVD, Heusel et al. 2017).

``d^2 = |mu1 - mu2|^2 + Tr(S1 + S2 - 2 (S1 S2)^{1/2})`` with ``S`` the sample covariance, computed
in float64: unbiased (``N - 1``, ``numpy.cov``) by default, as the original FVD (TF-GAN) and FID code
compute it; ``ddof=0`` (divide by ``N``) reproduces StyleGAN-V's and the ``cd-fvd`` package's
statistics, which CD-FVD uses.  The matrix square root is ``scipy.linalg.sqrtm``;
when ``S1 S2`` is (near) singular -- always the case with fewer samples than feature dimensions,
e.g. six TikTok test videos against 400 I3D logits -- ``1e-6`` is added to both diagonals first,
as the reference FID code does, and a tiny imaginary part from round-off is dropped.  The result is
clipped at 0 (round-off can make identical sets come out at ``-1e-10``).

From features, with fewer samples than dimensions (the usual case here: a few test videos against
400-2048-d features), :func:`frechet_distance_features` takes an exact shortcut instead of the
``D x D`` square root: with centred feature matrices ``A`` (n x D) and ``B`` (m x D),
``Tr((S1 S2)^{1/2}) = ||A B^T||_* / sqrt((n - ddof)(m - ddof))`` (the nuclear norm, i.e. the sum of
the singular values of the small n x m matrix), because the non-zero eigenvalues of ``S1 S2`` are
those of ``(A B^T)(A B^T)^T / ((n - ddof)(m - ddof))``.  It equals the ``sqrtm`` value up to
round-off (no ``eps`` needed) and costs an n x m SVD instead of a D x D matrix square root.
"""

from __future__ import annotations

import warnings

import numpy as np
from scipy import linalg


def feature_statistics(features: np.ndarray, ddof: int = 1) -> tuple[np.ndarray, np.ndarray]:
    """Mean and covariance (``N - ddof`` normalisation) of ``(N, D)`` features; needs ``N >= 2``."""
    features = np.asarray(features, dtype=np.float64)
    if features.ndim != 2 or features.shape[0] < 2:
        raise ValueError(f"need at least 2 feature vectors of shape (N, D), got {features.shape}")
    return features.mean(axis=0), np.atleast_2d(np.cov(features, rowvar=False, ddof=ddof))


def frechet_distance(mu1: np.ndarray, sigma1: np.ndarray, mu2: np.ndarray, sigma2: np.ndarray,
                     eps: float = 1e-6) -> float:
    """Fréchet distance between N(mu1, sigma1) and N(mu2, sigma2)."""
    mu1, mu2 = np.atleast_1d(mu1).astype(np.float64), np.atleast_1d(mu2).astype(np.float64)
    sigma1, sigma2 = np.atleast_2d(sigma1).astype(np.float64), np.atleast_2d(sigma2).astype(np.float64)
    if mu1.shape != mu2.shape or sigma1.shape != sigma2.shape:
        raise ValueError(f"statistics differ in shape: {mu1.shape}/{sigma1.shape} "
                         f"vs {mu2.shape}/{sigma2.shape}")
    with warnings.catch_warnings():  # singular products are expected and handled just below
        warnings.simplefilter("ignore", linalg.LinAlgWarning)
        covmean = linalg.sqrtm(sigma1 @ sigma2)
        if not np.isfinite(covmean).all() or _sqrtm_error(covmean, sigma1 @ sigma2) > 1e-3:
            offset = np.eye(sigma1.shape[0]) * eps
            covmean = linalg.sqrtm((sigma1 + offset) @ (sigma2 + offset))
    covmean = np.real(covmean)
    diff = mu1 - mu2
    value = diff @ diff + np.trace(sigma1) + np.trace(sigma2) - 2.0 * np.trace(covmean)
    return float(max(value, 0.0))


def _sqrtm_error(root: np.ndarray, target: np.ndarray) -> float:
    scale = max(float(np.abs(target).max()), 1e-12)
    return float(np.abs(root @ root - target).max()) / scale


def frechet_distance_features(a: np.ndarray, b: np.ndarray, ddof: int = 1) -> float:
    """Fréchet distance between Gaussians fitted to feature sets ``a`` (N, D) and ``b`` (M, D)."""
    a, b = np.asarray(a, dtype=np.float64), np.asarray(b, dtype=np.float64)
    for features in (a, b):
        if features.ndim != 2 or features.shape[0] < 2:
            raise ValueError(f"need at least 2 feature vectors of shape (N, D), got {features.shape}")
    if a.shape[1] != b.shape[1]:
        raise ValueError(f"feature sets differ in dimension: {a.shape[1]} vs {b.shape[1]}")
    if min(len(a), len(b)) >= a.shape[1]:
        return frechet_distance(*feature_statistics(a, ddof), *feature_statistics(b, ddof))
    centred_a, centred_b = a - a.mean(axis=0), b - b.mean(axis=0)
    scale_a, scale_b = len(a) - ddof, len(b) - ddof
    cross = np.linalg.svd(centred_a @ centred_b.T, compute_uv=False).sum() / np.sqrt(scale_a * scale_b)
    diff = a.mean(axis=0) - b.mean(axis=0)
    value = diff @ diff + (centred_a ** 2).sum() / scale_a + (centred_b ** 2).sum() / scale_b - 2.0 * cross
    return float(max(value, 0.0))
