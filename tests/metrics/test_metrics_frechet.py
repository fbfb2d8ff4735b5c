"""Frechet distance, KID and IS equal the reference implementations on the same features."""

import numpy as np
import pytest
import torch
from torch_fidelity.metric_fid import fid_features_to_statistics, fid_statistics_to_metric
from torch_fidelity.metric_isc import isc_features_to_metric
from torch_fidelity.metric_kid import kid_features_to_metric
from torchmetrics.image.fid import _compute_fid

from lit_vdit.metrics import (
    feature_stats,
    frechet_distance,
    frechet_distance_from_features,
    inception_score,
    kernel_distance,
)

KID_KWARGS = dict(
    kid_kernel="poly", kid_kernel_poly_degree=3, kid_kernel_poly_gamma=None, kid_kernel_poly_coef0=1
)
KID_KWARGS |= dict(kid_subsets=10, kid_subset_size=40, rng_seed=2020, verbose=False)


def features(n: int, d: int = 32, shift: float = 0.0, seed: int = 0) -> torch.Tensor:
    g = np.random.default_rng(seed)
    return torch.from_numpy(g.normal(size=(n, d)) * (1 + shift) + shift)


# Full-rank covariances, then singular ones (N < D), where the references' eigenvalues of the
# non-symmetric S1 S2 carry round-off of ~1e-8 relative.
@pytest.mark.parametrize("n_real, n_fake, rel", [(200, 150, 1e-9), (20, 25, 1e-6), (3, 2, 1e-6)])
def test_frechet_distance_equals_torch_fidelity_and_torchmetrics(n_real, n_fake, rel):
    real, fake = features(n_real), features(n_fake, shift=0.3, seed=1)
    stats = fid_features_to_statistics(real), fid_features_to_statistics(fake)
    reference = fid_statistics_to_metric(*stats, verbose=False)["frechet_inception_distance"]
    ours = frechet_distance_from_features(real, fake)
    assert ours == pytest.approx(reference, rel=rel)
    stats = (*feature_stats(real), *feature_stats(fake))
    assert frechet_distance(*stats) == pytest.approx(reference, rel=rel)  # the path for cached statistics
    assert ours == pytest.approx(_compute_fid(*(torch.from_numpy(x) for x in stats)).item(), rel=rel)


def test_frechet_distance_float32_features_match_float64_reference():
    real, fake = features(100), features(100, shift=0.2, seed=1)
    stats = fid_features_to_statistics(real), fid_features_to_statistics(fake)
    reference = fid_statistics_to_metric(*stats, verbose=False)["frechet_inception_distance"]
    assert frechet_distance_from_features(real.float(), fake.float()) == pytest.approx(reference, rel=1e-5)


def test_frechet_distance_of_a_set_with_itself_is_zero():
    x = features(64)
    assert frechet_distance_from_features(x, x) == pytest.approx(0.0, abs=1e-8)


def test_kid_equals_torch_fidelity():
    real, fake = features(60), features(50, shift=0.2, seed=1)
    reference = kid_features_to_metric(real, fake, **KID_KWARGS)
    mean, std = kernel_distance(real, fake, subset_size=40, subsets=10)
    assert mean == pytest.approx(reference["kernel_inception_distance_mean"], rel=1e-9)
    assert std == pytest.approx(reference["kernel_inception_distance_std"], rel=1e-9)


def test_inception_score_equals_torch_fidelity():
    logits = features(100, d=20) * 3
    reference = isc_features_to_metric(logits, splits=5)
    mean, std = inception_score(logits, splits=5)
    assert mean == pytest.approx(reference["inception_score_mean"], rel=1e-10)
    assert std == pytest.approx(reference["inception_score_std"], rel=1e-8)


def test_too_few_samples_are_refused_clearly():
    with pytest.raises(ValueError, match="has 1 samples; this needs at least 2"):
        frechet_distance_from_features(features(1), features(10))
    with pytest.raises(ValueError, match="generated features has 30 samples; this needs at least 40"):
        kernel_distance(features(50), features(30), subset_size=40)
    with pytest.raises(ValueError, match="statistics do not match"):
        frechet_distance(np.zeros(3), np.eye(3), np.zeros(4), np.eye(4))
