"""PCA and t-SNE projections of embeddings."""

import numpy as np

from olsdesk.core.projection import pca_2d, tsne_2d


def test_pca_matches_svd_up_to_sign_and_fixes_signs():
    rng = np.random.default_rng(0)
    x = rng.normal(size=(200, 10)) * np.array([5, 3, 1, 1, 1, 1, 1, 1, 1, 1])
    coords = pca_2d(x)
    centred = x - x.mean(axis=0)
    _, _, vt = np.linalg.svd(centred, full_matrices=False)
    for axis in range(2):
        ref = centred @ vt[axis]
        assert np.allclose(np.abs(coords[:, axis]), np.abs(ref))
    assert coords.shape == (200, 2)
    # the axis signs are a function of the data, not of the SVD's arbitrary choice:
    # shuffling the rows gives the same picture, shuffled
    order = rng.permutation(200)
    np.testing.assert_allclose(pca_2d(x[order]), coords[order], atol=1e-9)


def test_pca_from_the_gram_matrix_is_pca_from_the_features():
    rng = np.random.default_rng(2)
    x = rng.normal(size=(60, 80)) * np.linspace(4, 1, 80) + 3.0  # fewer images than features
    centred = x - x.mean(axis=0)
    np.testing.assert_allclose(pca_2d(x, centred @ centred.T), pca_2d(x), atol=1e-9)


def test_pca_of_tiny_inputs():
    assert pca_2d(np.zeros((1, 4))).shape == (1, 2)
    assert pca_2d(np.random.default_rng(0).normal(size=(5, 1))).shape == (5, 2)


def test_tsne_separates_clusters_and_handles_few_points():
    rng = np.random.default_rng(1)
    a = rng.normal(0, 1, (30, 256))
    b = rng.normal(8, 1, (30, 256))
    coords = tsne_2d(np.vstack([a, b]))
    assert coords.shape == (60, 2)
    ca, cb = coords[:30].mean(axis=0), coords[30:].mean(axis=0)
    spread = max(coords[:30].std(), coords[30:].std())
    assert np.linalg.norm(ca - cb) > 2 * spread
    assert tsne_2d(rng.normal(size=(24, 256))).shape == (24, 2)  # fewer points than 50 PCs
