"""2-D projections of penultimate features for the embedding view."""

from __future__ import annotations

import numpy as np

# ARPACK's relative accuracy of the two eigenvalues (its default, 0, is the machine's): the
# axes then lie within about 1e-6 rad of the exact ones (a thousandth of a pixel in the
# view), and a flat spectrum (2,000 x 2,048 noise) takes 0.11 s, not 0.29
LANCZOS_TOLERANCE = 1e-6


def pca_2d(features: np.ndarray, gram: np.ndarray | None = None) -> np.ndarray:
    """The first two principal components (M x 2), signs fixed so that epochs line up:
    each axis points the way its largest-magnitude loading is positive. ``gram``: the
    features' Gram matrix about their mean (M x M), where one is at hand (the
    unfamiliar-input fit's): with fewer images than features, its top two eigenvectors
    give the components without a product of the features in each Lanczos step."""
    x = np.asarray(features, dtype=np.float64)
    if len(x) < 2:
        return np.zeros((len(x), 2))
    x = x - x.mean(axis=0)
    axes = _top_axes(x, gram)
    signs = np.sign(axes[np.arange(len(axes)), np.abs(axes).argmax(axis=1)])
    coords = x @ (axes * signs[:, None]).T
    if coords.shape[1] < 2:
        coords = np.pad(coords, ((0, 0), (0, 2 - coords.shape[1])))
    return coords


def _top_axes(x: np.ndarray, gram: np.ndarray | None = None) -> np.ndarray:
    """The two leading right singular vectors (rows). A full SVD of a 2000 x 2048
    embedding sample takes 2.5 s; Lanczos (ARPACK, from a fixed start so that epochs
    repeat) finds the two in a few dozen products with x, or with ``gram`` = x x' (0.11
    s against 0.37 at 2000 x 2048). Small or low-rank input: the full SVD."""
    if min(x.shape) > 16:
        from scipy.sparse.linalg import eigsh, svds

        start = np.random.default_rng(0).standard_normal(min(x.shape))
        try:
            if gram is not None and len(x) <= x.shape[1]:
                values, vectors = eigsh(gram, k=2, v0=start, tol=LANCZOS_TOLERANCE)  # sigma^2
                sigma = np.sqrt(np.maximum(values, 0.0))
                with np.errstate(invalid="ignore", divide="ignore"):  # sigma 0: refused below
                    vt = (x.T @ (vectors / sigma)).T  # v = x' u / sigma
            else:
                _, sigma, vt = svds(x, k=2, v0=start, solver="arpack", tol=LANCZOS_TOLERANCE)
            if sigma.min() > 1e-9 * sigma.max():  # two directions of variance
                return vt[np.argsort(sigma)[::-1]]
        except Exception:  # ARPACK did not converge: the exact route below
            pass
    return np.linalg.svd(x, full_matrices=False)[2][:2]


def tsne_2d(features: np.ndarray, seed: int = 0, perplexity: float = 30.0) -> np.ndarray:
    """t-SNE (scikit-learn) on PCA-reduced features; seconds for a couple of thousand points."""
    from sklearn.decomposition import PCA
    from sklearn.manifold import TSNE

    x = np.asarray(features, dtype=np.float64)
    if len(x) < 5:
        return pca_2d(x)
    components = min(50, len(x), x.shape[1])
    if x.shape[1] > components:
        x = PCA(components, random_state=seed).fit_transform(x)
    perplexity = min(perplexity, (len(x) - 1) / 3)
    return TSNE(2, perplexity=perplexity, init="pca", random_state=seed).fit_transform(x)
