"""Closed-form solvers, in float64.

Zero residual:  Δ = argmin λ‖Δ C_p‖² + α‖Δ‖²  s.t.  Δ X = R   ⇒   Δ = R (Xᵀ M⁻¹ X)⁺ Xᵀ M⁻¹,  M = αI + λ C_p C_pᵀ.
Over n ≤ d columns (width d) the n × n Gram XᵀM⁻¹X is solved; past n = d the same Δ comes from the d × d moments
X Xᵀ and R Xᵀ (:func:`dspace_map`): cost linear in n, memory free of it.
Soft residual (``gram_ridge`` τ > 0):  Δ = argmin ‖Δ‖²_M + ‖Δ X − R‖²/ε  ⇒  Δ = R (Xᵀ M⁻¹ X + εI)⁻¹ Xᵀ M⁻¹,
ε = τ · tr(XᵀM⁻¹X)/n: least squares that no longer forces ill-conditioned columns exactly (τ → 0: zero residual).
(UCE's closed form lives with its method, :mod:`erasepro_core.methods.uce`.)
"""

from __future__ import annotations

from dataclasses import dataclass

import torch

# Eigenvalues of XᵀM⁻¹X below this fraction of the largest are treated as zero (rank deficiency).
RCOND = 1e-10


@dataclass(frozen=True)
class Metric:
    """The Cholesky factor of ``M = αI + λ C`` for one site, reusable for any X."""

    chol: torch.Tensor  # lower-triangular, float64

    @classmethod
    def build(cls, d_in: int, cov: torch.Tensor | None, preserve_weight: float, ridge: float,
              device: torch.device | str | None = None) -> Metric:
        """``cov`` is the mean preserve covariance C̄; α is taken relative to tr(C̄)/d so it is scale-free.
        Built on ``cov``'s device (or ``device`` without one): the solve stays where the model is."""
        if cov is None:
            m = torch.eye(d_in, dtype=torch.float64, device=device)
        else:
            cov = cov.to(torch.float64)
            scale = float(torch.trace(cov)) / d_in or 1.0
            m = preserve_weight * cov
            m.diagonal().add_(ridge * scale)
        return cls(torch.linalg.cholesky(m))

    def solve(self, x: torch.Tensor) -> torch.Tensor:
        """M⁻¹ x."""
        return torch.cholesky_solve(x.to(torch.float64), self.chol)


def gram_shift(gram_trace: float, n: int, gram_ridge: float) -> float:
    """ε = τ · tr(XᵀM⁻¹X)/n: the soft residual's ridge, relative to a column's mean squared M⁻¹-norm."""
    return gram_ridge * gram_trace / max(n, 1) if gram_ridge > 0 else 0.0


def _soften(gram: torch.Tensor, n: int, gram_ridge: float, rcond: float) -> int | None:
    """The soft residual in place: ``gram`` += εI (:func:`gram_shift`); returns the unshifted Gram's rank by the
    exact solve's cut (eigenvalues above ``rcond``·λmax), or None when τ = 0 leaves the solve exact."""
    if gram_ridge <= 0:
        return None
    rank = int(torch.linalg.matrix_rank(gram, hermitian=True, rtol=rcond))
    gram.diagonal().add_(gram_shift(float(gram.trace()), n, gram_ridge))
    return rank


def constraint_map(x: torch.Tensor, metric: Metric, rcond: float = RCOND, gram_ridge: float = 0.0
                   ) -> tuple[torch.Tensor, int]:
    """G = (Xᵀ M⁻¹ X + εI)⁺ Xᵀ M⁻¹ (n × d_in) and the numerical rank of X, so that Δ = R G.

    With ε = 0 and full column rank, Δ X = R G X = R exactly; otherwise R G X is R projected onto
    X's row space: the least-norm least-squares solution. ε > 0: see :func:`gram_shift`.
    """
    x = x.to(torch.float64)
    z = metric.solve(x)  # M⁻¹X, d_in × n
    gram = x.T @ z
    gram = 0.5 * (gram + gram.T)
    rank = _soften(gram, x.shape[1], gram_ridge, rcond)
    # Full column rank is the common case: a Cholesky factor is ~10x cheaper than an eigendecomposition.
    chol, info = torch.linalg.cholesky_ex(gram)
    if int(info) == 0:
        pivots = chol.diagonal() ** 2
        if float(pivots.min()) > rcond * float(gram.diagonal().max()) * 1e3:
            return torch.cholesky_solve(z.T, chol), x.shape[1] if rank is None else rank
    evals, evecs = torch.linalg.eigh(gram)
    keep = evals > rcond * max(float(evals[-1]), 0.0)
    inv = torch.where(keep, 1.0 / evals.clamp_min(torch.finfo(torch.float64).tiny), torch.zeros_like(evals))
    g = (evecs * inv) @ (evecs.T @ z.T)
    return g, int(keep.sum()) if rank is None else rank


# Columns converted to float64 at once while accumulating d × d moments: 4096 × 768 × 8 B = 25 MB (SD), 67 MB
# at SDXL's 2048: the n × d columns stay in whatever dtype they came in, never all in float64.
COLUMN_BATCH = 4096


def in_dspace(n: int, d: int) -> bool:
    """Whether a solve over n constrained columns of width d runs on d × d moments: past n = d the n × n Gram is
    rank-deficient anyway (rank ≤ d), and its cost grows with n² (memory) and n³ (time)."""
    return n > d


def _accumulate(s: torch.Tensor, t: torch.Tensor, x: torch.Tensor, r: torch.Tensor, subtract_x: bool, batch: int
                ) -> None:
    """S += X Xᵀ and T += R Xᵀ in place (R = r − X when ``subtract_x``), ``batch`` columns at a time."""
    for j in range(0, x.shape[1], batch):
        xb = x[:, j : j + batch].to(torch.float64)
        rb = r[:, j : j + batch].to(device=x.device, dtype=torch.float64)
        if subtract_x:
            rb = rb - xb
        s.addmm_(xb, xb.T)
        t.addmm_(rb, xb.T)


def moments(x: torch.Tensor, r: torch.Tensor, *, subtract_x: bool = False, batch: int = COLUMN_BATCH
            ) -> tuple[torch.Tensor, torch.Tensor]:
    """S = X Xᵀ and T = R Xᵀ (d × d and d_r × d, float64), ``batch`` columns at a time; R = r − X when
    ``subtract_x`` (ErasePro's Y − X, never formed whole)."""
    d = x.shape[0]
    s = torch.zeros(d, d, dtype=torch.float64, device=x.device)
    t = torch.zeros(r.shape[0], d, dtype=torch.float64, device=x.device)
    _accumulate(s, t, x, r, subtract_x, batch)
    return 0.5 * (s + s.T), t


@dataclass
class Moments:
    """S = X Xᵀ and T = (Y − X) Xᵀ of columns that only ever grow (hardening adds a batch each round), kept
    summed: each column is added once, O(m·d²) for m new columns, instead of summing all n again every round.
    Equal to :func:`moments` ``(x, y, subtract_x=True)`` of every column added, up to float64 summation order."""

    s: torch.Tensor
    t: torch.Tensor
    n: int = 0

    @classmethod
    def of(cls, x: torch.Tensor, y: torch.Tensor) -> Moments:
        d = x.shape[0]
        out = cls(torch.zeros(d, d, dtype=torch.float64, device=x.device),
                  torch.zeros(y.shape[0], d, dtype=torch.float64, device=x.device))
        out.add(x, y)
        return out

    def add(self, x: torch.Tensor, y: torch.Tensor) -> None:
        """Columns ``x`` → ``y`` (d × m each) join the sums."""
        _accumulate(self.s, self.t, x, y, True, COLUMN_BATCH)
        self.n += x.shape[1]

    def pair(self) -> tuple[torch.Tensor, torch.Tensor]:
        """(S, T) as :func:`moments` returns them (S symmetrised)."""
        return 0.5 * (self.s + self.s.T), self.t


def dspace_map(s: torch.Tensor, t: torch.Tensor, metric: Metric, rcond: float = RCOND, gram_ridge: float = 0.0,
               n: int = 0) -> tuple[torch.Tensor, torch.Tensor, int]:
    """Factors ``A`` (d_r × k), ``B`` (k × d) of the same P = R G as :func:`constraint_map`, from S = X Xᵀ and
    T = R Xᵀ alone:  P = T L⁻ᵀ K⁺ L⁻¹,  K = L⁻¹ S L⁻ᵀ,  M = L Lᵀ.

    With X̃ = L⁻¹X, G = (X̃ᵀX̃)⁺X̃ᵀL⁻¹ = X̃⁺L⁻¹ = X̃ᵀ(X̃X̃ᵀ)⁺L⁻¹; K = X̃X̃ᵀ has the nonzero eigenvalues of the
    n-space Gram XᵀM⁻¹X, so the same ``rcond`` cut gives the same rank. O(d³) whatever n.
    Soft residual: K + εI in place of K (the same ε from tr K = tr XᵀM⁻¹X over the ``n`` columns).
    """
    chol_m = metric.chol
    s, t = s.to(torch.float64), t.to(torch.float64)
    tri = torch.linalg.solve_triangular
    k = tri(chol_m, tri(chol_m, s, upper=False).T, upper=False)  # L⁻¹ (L⁻¹ S)ᵀ = L⁻¹ S L⁻ᵀ (S symmetric)
    k = 0.5 * (k + k.T)
    a = tri(chol_m, t.T, upper=False).T  # T L⁻ᵀ
    rank = _soften(k, n, gram_ridge, rcond)
    chol, info = torch.linalg.cholesky_ex(k)
    if int(info) == 0:  # full rank d: the same cheap test as the n-space solve
        pivots = chol.diagonal() ** 2
        if float(pivots.min()) > rcond * float(k.diagonal().max()) * 1e3:
            eye = torch.eye(k.shape[0], dtype=torch.float64, device=k.device)
            b = torch.cholesky_solve(tri(chol_m, eye, upper=False), chol)  # K⁻¹ L⁻¹
            return a, b, k.shape[0] if rank is None else rank
    evals, evecs = torch.linalg.eigh(k)
    keep = evals > rcond * max(float(evals[-1]), 0.0)
    v = evecs[:, keep]
    # B = Λ⁻¹ Vᵀ L⁻¹ = (L⁻ᵀ V Λ⁻¹)ᵀ
    b = (tri(chol_m.T, v, upper=True) / evals[keep]).T
    return a @ v, b, int(keep.sum()) if rank is None else rank


def gram_rank(s: torch.Tensor, n: int) -> int:
    """Numerical rank of X from S = X Xᵀ: eigenvalues (σ²) above σ²_max·max(d, n)·eps, the rounding floor of a
    Gram summed over n columns (torch.linalg.matrix_rank's cut is on σ, which the Gram cannot resolve)."""
    evals = torch.linalg.eigvalsh(s.to(torch.float64))
    top = max(float(evals[-1]), 0.0)
    return int((evals > top * max(s.shape[0], n) * torch.finfo(torch.float64).eps).sum()) if top > 0 else 0


def zero_residual_factors(x: torch.Tensor, r: torch.Tensor, metric: Metric, *, subtract_x: bool = False,
                          rcond: float = RCOND, gram_ridge: float = 0.0, summed: Moments | None = None
                          ) -> tuple[torch.Tensor, torch.Tensor, int]:
    """P = R G (R = r, or r − X when ``subtract_x``) as factors A, B and the constraint rank: A = R, B = G in
    n-space while n ≤ d; from the d × d moments past it (:func:`dspace_map`), ``summed`` ones when the caller
    keeps them for exactly these columns (``subtract_x`` only). ``gram_ridge`` τ > 0: the soft residual (module
    docstring)."""
    d, n = x.shape
    if not in_dspace(n, d):
        g, rank = constraint_map(x, metric, rcond, gram_ridge)
        r = r.to(torch.float64)
        return (r - x.to(torch.float64) if subtract_x else r), g, rank
    s, t = summed.pair() if summed_for(summed, n, subtract_x) else moments(x, r, subtract_x=subtract_x)
    return dspace_map(s, t, metric, rcond, gram_ridge, n)


def summed_for(summed: Moments | None, n: int, subtract_x: bool = True) -> bool:
    """Whether kept moments stand for the n columns of a solve (of Y − X)."""
    if summed is not None and subtract_x and summed.n != n:
        raise ValueError(f"kept moments cover {summed.n} columns, the solve has {n}")
    return summed is not None and subtract_x


def relative(num: torch.Tensor, den: torch.Tensor) -> float:
    """‖num‖/‖den‖ (0 when both vanish)."""
    d = float(torch.linalg.norm(den.to(torch.float64)))
    n = float(torch.linalg.norm(num.to(torch.float64)))
    return n / d if d > 0 else (0.0 if n == 0 else float("inf"))
