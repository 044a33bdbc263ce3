"""Calibration math of the forecast evaluator: ellipse coverage, NLL and the fitted scale,
checked on samples from known Gaussians."""

from __future__ import annotations

import math

import numpy as np
import pytest

from tapetum.eval.forecast import (
    EXPECTED_COVERAGE_1SIGMA,
    EXPECTED_COVERAGE_2SIGMA,
    ellipse_coverage,
    fit_covariance_scale,
    gaussian_nll,
    mahalanobis_sq,
    scaled_calibration,
)

N = 200_000


def correlated_cov() -> np.ndarray:
    """A tilted, elongated covariance (px²): the ellipse is not axis-aligned."""
    return np.array([[90.0, -40.0], [-40.0, 30.0]])


def samples(cov: np.ndarray, n: int = N, seed: int = 0) -> np.ndarray:
    return np.random.default_rng(seed).multivariate_normal([0.0, 0.0], cov, size=n)


def test_expected_coverages_are_the_2d_gaussian_values() -> None:
    assert abs(EXPECTED_COVERAGE_1SIGMA - 0.3935) < 1e-4
    assert abs(EXPECTED_COVERAGE_2SIGMA - 0.8647) < 1e-4


def test_samples_of_the_forecast_gaussian_fill_its_ellipses_as_expected() -> None:
    cov = correlated_cov()
    d2 = mahalanobis_sq(samples(cov), np.broadcast_to(cov, (N, 2, 2)))
    assert ellipse_coverage(d2, 1.0) == pytest.approx(EXPECTED_COVERAGE_1SIGMA, abs=0.005)
    assert ellipse_coverage(d2, 2.0) == pytest.approx(EXPECTED_COVERAGE_2SIGMA, abs=0.005)


def test_an_overconfident_forecast_covers_less_and_the_fit_recovers_the_scale() -> None:
    cov = correlated_cov()
    errors = samples(2.5**2 * cov)  # reality is 2.5x wider than the forecast says
    d2 = mahalanobis_sq(errors, np.broadcast_to(cov, (N, 2, 2)))
    assert ellipse_coverage(d2, 2.0) < 0.5
    scale = fit_covariance_scale(d2)
    assert scale == pytest.approx(2.5, rel=0.01)
    assert ellipse_coverage(d2 / scale**2, 1.0) == pytest.approx(0.393, abs=0.005)
    assert ellipse_coverage(d2 / scale**2, 2.0) == pytest.approx(0.865, abs=0.005)


def test_nll_is_the_closed_form_density_and_lowest_for_the_true_covariance() -> None:
    eye = np.eye(2)
    assert gaussian_nll(np.zeros(2), eye) == pytest.approx(math.log(2 * math.pi))
    e = np.array([3.0, 4.0])
    assert gaussian_nll(e, 4.0 * eye) == pytest.approx(
        0.5 * 25 / 4 + math.log(2 * math.pi) + 0.5 * math.log(16.0)
    )
    cov = correlated_cov()
    errors = samples(cov, 50_000)
    nll = {
        s: float(gaussian_nll(errors, np.broadcast_to(s * s * cov, (50_000, 2, 2))).mean())
        for s in (0.5, 1.0, 2.0)
    }
    assert nll[1.0] < nll[0.5] and nll[1.0] < nll[2.0]


def test_a_singular_covariance_covers_nothing_and_costs_infinite_nll() -> None:
    zero = np.zeros((2, 2, 2))
    errors = np.array([[1.0, 0.0], [0.0, 2.0]])
    assert np.isinf(mahalanobis_sq(errors, zero)).all()
    assert ellipse_coverage(mahalanobis_sq(errors, zero), 2.0) == 0.0
    assert np.isinf(gaussian_nll(errors, zero)).all()


def test_fit_of_nothing_is_no_change() -> None:
    assert fit_covariance_scale(np.array([])) == 1.0


def test_rescaling_recorded_evidence_equals_scoring_the_scaled_covariance() -> None:
    cov = correlated_cov()
    errors = samples(3.0**2 * cov, 20_000)
    covs = np.broadcast_to(cov, (20_000, 2, 2))
    evidence = np.stack((mahalanobis_sq(errors, covs), gaussian_nll(errors, covs)), axis=1)
    scale = fit_covariance_scale(evidence[:, 0])
    cover_1, cover_2, nll = scaled_calibration(evidence, scale)
    direct = gaussian_nll(errors, scale**2 * covs).mean()
    assert nll == pytest.approx(direct, rel=1e-9)
    assert cover_1 == pytest.approx(EXPECTED_COVERAGE_1SIGMA, abs=0.01)
    assert cover_2 == pytest.approx(EXPECTED_COVERAGE_2SIGMA, abs=0.01)
    assert nll < evidence[:, 1].mean()  # the overconfident forecast was less likely
