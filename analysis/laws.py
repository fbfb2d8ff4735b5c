"""Scaling-law forms, each written as a log-sum-exp of terms that are linear in its parameters.

A law predicts ``log y = logsumexp_j t_j`` where each term is ``t_j = log_coef_j + exponent_j * s_j
log x_j`` (or just ``log_coef_j`` for a constant). One objective and one gradient (fitting.py) then
serve every law, and the form is the numerically safe one of Hoffmann et al. 2022: coefficients are
fitted as logs and never overflow.
"""

from __future__ import annotations

import functools
import itertools
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field

import numpy as np

Derived = Callable[[Mapping[str, np.ndarray]], dict[str, np.ndarray]]


@dataclass(frozen=True)
class Param:
    """One fitted parameter: internal name, reported label, bounds and initialisation grid.

    ``log_scale`` parameters are fitted as logs and reported as ``exp(value)``. ``anchor`` makes the
    grid relative to the data: ``"min_y"`` adds ``log(min y)``, ``"max_y"`` adds ``log(max y)``.
    """

    name: str
    label: str
    bounds: tuple[float, float]
    grid: tuple[float, ...]
    log_scale: bool = False
    anchor: str | None = None


@dataclass(frozen=True)
class Term:
    """``exp(coef) * x ** (sign * exponent)``; a term without ``exponent`` is the constant ``exp(coef)``."""

    coef: str
    exponent: str | None = None
    input: str | None = None
    sign: float = -1.0


@dataclass(frozen=True)
class Features:
    """Per term: index of its log-coefficient, of its exponent (-1: none) and the signed log input."""

    coef: tuple[int, ...]
    exponent: tuple[int, ...]
    log_x: tuple[np.ndarray | None, ...]

    def terms(self, theta: np.ndarray) -> list[np.ndarray]:
        """Each term's log value for parameters ``theta`` (..., P): arrays broadcastable to (..., n)."""
        out = []
        for c, e, lx in zip(self.coef, self.exponent, self.log_x, strict=True):
            t = theta[..., c, None]
            out.append(t if e < 0 else t + theta[..., e, None] * lx)
        return out


@dataclass(frozen=True)
class Law:
    """A scaling law: inputs it reads, parameters it fits, and the terms summed to predict y."""

    name: str
    formula: str
    inputs: tuple[str, ...]
    params: tuple[Param, ...]
    terms: tuple[Term, ...]
    derived: Derived | None = field(default=None, compare=False)

    @property
    def names(self) -> tuple[str, ...]:
        return tuple(p.name for p in self.params)

    @property
    def labels(self) -> tuple[str, ...]:
        return tuple(p.label for p in self.params)

    @property
    def lower(self) -> np.ndarray:
        return np.array([p.bounds[0] for p in self.params])

    @property
    def upper(self) -> np.ndarray:
        return np.array([p.bounds[1] for p in self.params])

    def features(self, inputs: Mapping[str, np.ndarray]) -> Features:
        """The law's terms at the input points, ready for :meth:`Features.terms`."""
        index = {name: i for i, name in enumerate(self.names)}
        return Features(
            coef=tuple(index[t.coef] for t in self.terms),
            exponent=tuple(-1 if t.exponent is None else index[t.exponent] for t in self.terms),
            log_x=tuple(
                None if t.exponent is None else t.sign * np.log(np.asarray(inputs[t.input], float))
                for t in self.terms
            ),
        )

    def log_predict(self, theta: np.ndarray, inputs: Mapping[str, np.ndarray]) -> np.ndarray:
        """log y for parameters ``theta`` (..., P) at the input points: shape (..., n)."""
        terms = self.features(inputs).terms(np.asarray(theta, float))
        top = functools.reduce(np.maximum, terms)
        return top + np.log(sum(np.exp(t - top) for t in terms))

    def predict(self, theta: np.ndarray, inputs: Mapping[str, np.ndarray]) -> np.ndarray:
        return np.exp(self.log_predict(theta, inputs))

    def starts(self, y: np.ndarray) -> np.ndarray:
        """All combinations of the parameters' grid values (S, P), anchored to the data where asked."""
        anchors = {None: 0.0, "min_y": float(np.log(np.min(y))), "max_y": float(np.log(np.max(y)))}
        axes = [np.asarray(p.grid) + anchors[p.anchor] for p in self.params]
        return np.array(list(itertools.product(*axes)), dtype=float)

    def reported(self, theta: np.ndarray) -> dict[str, np.ndarray]:
        """Reported parameters (log-scale ones exponentiated) and derived quantities, by label."""
        theta = np.asarray(theta, float)
        values = {p.label: theta[..., i] for i, p in enumerate(self.params)}
        values.update({p.label: np.exp(values[p.label]) for p in self.params if p.log_scale})
        if self.derived is not None:
            values.update(self.derived(values))
        return values


# Fractions of the smallest observed y tried as the irreducible term E: it must lie below every point.
_ASYMPTOTE_GRID = tuple(float(np.log(f)) for f in (0.2, 0.4, 0.6, 0.8, 0.95))
_LOG_COEF_GRID = (0.0, 5.0, 10.0, 15.0, 20.0, 25.0)
_EXPONENT_GRID = (0.0, 0.5, 1.0, 1.5, 2.0)
_LOG_COEF_BOUNDS = (-50.0, 100.0)
_EXPONENT_BOUNDS = (0.0, 5.0)


def _asymptote() -> Param:
    return Param("log_E", "E", (-30.0, 30.0), _ASYMPTOTE_GRID, log_scale=True, anchor="min_y")


def saturating_power_law(x: str = "x") -> Law:
    """``y = E + A * x^-alpha`` in one input (N, D, C or any positive column)."""
    return Law(
        name=f"saturating power law in {x}",
        formula=f"y = E + A * {x}^-alpha",
        inputs=(x,),
        params=(
            _asymptote(),
            Param("log_A", "A", _LOG_COEF_BOUNDS, _LOG_COEF_GRID, log_scale=True),
            Param("alpha", "alpha", _EXPONENT_BOUNDS, _EXPONENT_GRID),
        ),
        terms=(Term("log_E"), Term("log_A", "alpha", x)),
    )


def power_law(x: str = "x") -> Law:
    """``y = A * x^-alpha`` (alpha may be negative: y growing with x). Convex in log space."""
    return Law(
        name=f"power law in {x}",
        formula=f"y = A * {x}^-alpha",
        inputs=(x,),
        params=(
            Param("log_A", "A", _LOG_COEF_BOUNDS, (0.0, 10.0, 20.0), log_scale=True),
            Param("alpha", "alpha", (-10.0, 10.0), (-1.0, 0.0, 1.0)),
        ),
        terms=(Term("log_A", "alpha", x),),
    )


def chinchilla_law() -> Law:
    """Hoffmann et al. 2022 approach 3: ``L(N, D) = E + A / N^alpha + B / D^beta``.

    Derived: the compute-optimal exponents ``a = beta / (alpha + beta)`` (N_opt ~ C^a) and
    ``b = alpha / (alpha + beta)`` (D_opt ~ C^b), and ``G = (alpha A / (beta B))^(1 / (alpha + beta))``
    with ``N_opt = G (C / k)^a`` when ``C = k N D``.
    """
    return Law(
        name="Chinchilla L(N, D)",
        formula="L = E + A / N^alpha + B / D^beta",
        inputs=("N", "D"),
        params=(
            _asymptote(),
            Param("log_A", "A", _LOG_COEF_BOUNDS, _LOG_COEF_GRID, log_scale=True),
            Param("log_B", "B", _LOG_COEF_BOUNDS, _LOG_COEF_GRID, log_scale=True),
            Param("alpha", "alpha", _EXPONENT_BOUNDS, _EXPONENT_GRID),
            Param("beta", "beta", _EXPONENT_BOUNDS, _EXPONENT_GRID),
        ),
        terms=(Term("log_E"), Term("log_A", "alpha", "N"), Term("log_B", "beta", "D")),
        derived=_chinchilla_derived,
    )


def _chinchilla_derived(v: Mapping[str, np.ndarray]) -> dict[str, np.ndarray]:
    total = v["alpha"] + v["beta"]
    with np.errstate(divide="ignore", invalid="ignore", over="ignore"):
        log_g = (np.log(v["alpha"] * v["A"]) - np.log(v["beta"] * v["B"])) / total
        return {"a": v["beta"] / total, "b": v["alpha"] / total, "G": np.exp(log_g)}


def hoffmann_grid() -> np.ndarray:
    """The 4,500 starts of Hoffmann et al. 2022 for :func:`chinchilla_law`, in its parameter order.

    ``log_E`` in -1..1 by 0.5, ``log_A`` and ``log_B`` in 0..25 by 5, ``alpha`` and ``beta`` in 0..2
    by 0.5 (data-independent; :meth:`Law.starts` anchors ``log_E`` to the data instead).
    """
    axes = (np.arange(-1.0, 1.01, 0.5), _LOG_COEF_GRID, _LOG_COEF_GRID, _EXPONENT_GRID, _EXPONENT_GRID)
    return np.array(list(itertools.product(*axes)), dtype=float)


def metric_vs_loss(loss: str = "loss") -> Law:
    """A sample-quality metric (FVD, FID) against validation loss: ``y = E + A * loss^k``."""
    return Law(
        name=f"metric vs {loss}",
        formula=f"y = E + A * {loss}^k",
        inputs=(loss,),
        params=(
            _asymptote(),
            Param("log_A", "A", _LOG_COEF_BOUNDS, (-4.0, -2.0, 0.0, 2.0, 4.0), True, anchor="max_y"),
            Param("k", "k", (0.0, 50.0), (0.5, 1.0, 2.0, 4.0, 8.0)),
        ),
        terms=(Term("log_E"), Term("log_A", "k", loss, sign=1.0)),
    )


LAWS: dict[str, Callable[..., Law]] = {
    "power": saturating_power_law,
    "pure-power": power_law,
    "chinchilla": chinchilla_law,
    "metric": metric_vs_loss,
}
