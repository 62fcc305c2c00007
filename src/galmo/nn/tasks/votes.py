"""The vote head's objectives: Galaxy Zoo votes of any campaign schema (:mod:`galmo.core.schema`).

``mse`` (Dieleman, Willett & Dambre 2015): the outputs, per question rectified and normalised and
multiplied by the parent weight (:meth:`~galmo.core.schema.Schema.normalise_votes`), against the
cumulative vote fractions; the loss is the mean squared error per answer.

``dirichlet`` (Walmsley et al. 2022, zoobot's loss): the outputs are Dirichlet concentrations
``1 + 100·sigmoid(x)`` (:func:`concentrations`), one per answer, and the loss is the negative log
likelihood of the observed vote *counts* under a Dirichlet-multinomial per question, summed over the
questions (:func:`dirichlet_multinomial_nll`; a question nobody answered adds 0). The expected vote
fractions are the concentrations' per-question shares; their spread (:func:`dirichlet_std`) is the
model's uncertainty about them.
"""

from __future__ import annotations

import torch

from galmo.core.errors import GalmoError
from galmo.core.schema import get_schema

VOTE_LOSSES = ("mse", "dirichlet")
CONCENTRATION_FLOOR, CONCENTRATION_SPAN = 1.0, 100.0  # zoobot's range: 1 .. 101


def concentrations(out: torch.Tensor) -> torch.Tensor:
    """Raw outputs → Dirichlet concentrations in (1, 101)."""
    return CONCENTRATION_FLOOR + CONCENTRATION_SPAN * torch.sigmoid(out)


def dirichlet_multinomial_nll(counts: torch.Tensor, conc: torch.Tensor, slices) -> torch.Tensor:
    """(N,) negative log likelihood of the vote ``counts`` (N, answers) under Dirichlet-multinomials with
    concentrations ``conc``, one per question (``slices``: (start, stop) of each), summed over questions.

    Per question with n = N votes over answers k, A = Σ a_k:
    log p = log N! + log Γ(A) − log Γ(N + A) + Σ_k [log Γ(n_k + a_k) − log Γ(a_k) − log n_k!].
    """
    nll = counts.new_zeros(counts.shape[0])
    for a, b in slices:
        n, c = counts[:, a:b], conc[:, a:b]
        total, alpha = n.sum(1), c.sum(1)
        logp = (torch.lgamma(total + 1) + torch.lgamma(alpha) - torch.lgamma(total + alpha)
                + (torch.lgamma(n + c) - torch.lgamma(c) - torch.lgamma(n + 1)).sum(1))
        nll = nll - logp
    return nll


def dirichlet_std(conc, slices):
    """Standard deviation of each answer's fraction under its question's Dirichlet (numpy or torch):
    sqrt(a_k (A − a_k) / (A² (A + 1)))."""
    out = conc * 0
    for a, b in slices:
        c = conc[:, a:b]
        alpha = c.sum(1, keepdims=True) if not isinstance(c, torch.Tensor) else c.sum(1, keepdim=True)
        out[:, a:b] = (c * (alpha - c) / (alpha ** 2 * (alpha + 1))) ** 0.5
    return out


class VoteObjective:
    """The loss and the predictions of a vote head for ``schema`` trained with ``loss`` (see the module
    docstring). Targets: cumulative fractions for ``mse``, vote counts for ``dirichlet``."""

    def __init__(self, schema="gz2-kaggle", loss: str = "mse"):
        if loss not in VOTE_LOSSES:
            raise GalmoError(f"--vote-loss must be one of {', '.join(VOTE_LOSSES)} (got {loss!r})")
        self.schema, self.kind = get_schema(schema), loss

    def loss_sum(self, out: torch.Tensor, y: torch.Tensor) -> torch.Tensor:
        """The loss summed over the batch (mse: per answer, so its mean is the challenge's MSE)."""
        if self.kind == "mse":
            return (self.schema.normalise_votes(out) - y).pow(2).sum() / y.shape[1]
        return dirichlet_multinomial_nll(y, concentrations(out), self.schema.slices).sum()

    def loss(self, out: torch.Tensor, y: torch.Tensor) -> torch.Tensor:
        return self.loss_sum(out, y) / len(y)

    def fractions(self, out: torch.Tensor) -> torch.Tensor:
        """Raw outputs → cumulative vote fractions obeying the tree."""
        return self.fractions_of(self.outputs(out))

    def fractions_of(self, p):
        """Cumulative vote fractions of :meth:`outputs` ``p`` (numpy or torch): ``p`` itself for mse; the
        concentrations' per-question shares, weighted down the tree, for dirichlet."""
        return p if self.kind == "mse" else self.schema.cumulative_from_counts(p)

    def outputs(self, out: torch.Tensor) -> torch.Tensor:
        """What inference averages over transforms and members: cumulative fractions (mse) or the
        concentrations (dirichlet; :meth:`fractions_of` turns them into fractions)."""
        return self.schema.normalise_votes(out) if self.kind == "mse" else concentrations(out)

    def squared_error_sum(self, out: torch.Tensor, y: torch.Tensor) -> torch.Tensor:
        """Σ over the batch and the answers of (predicted − true cumulative fraction)²."""
        true = y if self.kind == "mse" else self.schema.cumulative_from_counts(y)
        return (self.fractions(out) - true).pow(2).sum()
