"""Reasons for scored accounts: the combined model's contributions, made readable.

In: the account and combined boosters, their input matrices, scores and account scores, the
group's sentences per row (:mod:`jobs.features.anomaly`) and :class:`ReasonSettings`. Out: per
row the reasons (an Arrow ``list<string>`` array) and whether the account has evidence of its
own. :class:`ScoringPlan` says where each model's features sit in the scored matrix. Called by
:mod:`jobs.scoring.score` (inside the executors) and the tests.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

import lightgbm as lgb
import numpy as np
import pyarrow as pa

from jobs.core.columns import ACCOUNT_SCORE
from jobs.core.sections import BanSettings
from jobs.scoring.reasons import is_unusual, reason_text

OWN_REASONS_PER_ACCOUNT_SCORE = 2  # own reasons cited where the account score ranks


GROUP_REASONS_PER_ANOMALY = 2  # the group's sentences cited where its anomaly ranks


@dataclass(frozen=True)
class ScoringPlan:
    """Where each model's features sit in the scored matrix (one column per input feature)."""

    inputs: tuple[str, ...]
    account_columns: tuple[int, ...]
    combined_columns: tuple[int, ...]  # -1: the account score

    @classmethod
    def of(cls, account: lgb.Booster, combined: lgb.Booster) -> ScoringPlan:
        """The plan for a model pair (:class:`models.farm_model.FarmModel`'s two boosters)."""
        inputs = list(account.feature_name())
        inputs += [c for c in combined.feature_name() if c != ACCOUNT_SCORE and c not in inputs]
        position = {name: i for i, name in enumerate(inputs)}
        return cls(
            tuple(inputs),
            tuple(position[c] for c in account.feature_name()),
            tuple(-1 if c == ACCOUNT_SCORE else position[c] for c in combined.feature_name()),
        )

    def account_matrix(self, x: np.ndarray) -> np.ndarray:
        """The account model's input (C order, as the compiled forest reads it)."""
        return np.ascontiguousarray(x[:, list(self.account_columns)])

    def combined_matrix(self, x: np.ndarray, account_score: np.ndarray) -> np.ndarray:
        """The combined model's input, the account score in its column."""
        out = np.empty((len(x), len(self.combined_columns)), dtype=np.float64)
        for j, column in enumerate(self.combined_columns):
            out[:, j] = account_score if column < 0 else x[:, column]
        return out


@dataclass(frozen=True)
class ReasonSettings:
    """What the reasons need: how many, from which score, own-evidence bar, the reference."""

    top_n: int = 3
    min_score: float = 0.0
    own_min_score: float = BanSettings.model_fields["own_evidence_min_score"].default
    reference: dict[str, Any] = field(default_factory=dict)


def explain(
    account: lgb.Booster,
    combined: lgb.Booster,
    x_account: np.ndarray,
    x_combined: np.ndarray,
    scores: np.ndarray,
    account_scores: np.ndarray,
    settings: ReasonSettings,
    evidence: list[list[str] | None] | None = None,
    threads: int = 0,
) -> tuple[pa.ListArray, np.ndarray]:
    """Reasons for the rows scoring ``settings.min_score`` or more, and own evidence for all.

    ``pred_contrib`` of the combined model ranks the reasons. Where the account score ranks, the
    account model's own strongest contributions are cited instead (up to
    :data:`OWN_REASONS_PER_ACCOUNT_SCORE`), each against what ordinary accounts show; where the
    group anomaly ranks, the group's own sentences from :mod:`jobs.features.anomaly` (``evidence``,
    the row's sentences strongest first) say what its accounts do. An account has evidence of its
    own when its account score reaches ``settings.own_min_score``; its strongest own reason is then
    always among its reasons. Rows below ``min_score`` get no reasons (``pred_contrib`` costs about
    twenty plain predictions). The reasons come as an Arrow ``list<string>`` array.
    """
    own = account_scores >= settings.own_min_score
    counts = np.zeros(len(scores), dtype=np.int32)
    texts: list[str] = []
    rows = np.flatnonzero(scores >= settings.min_score)
    if len(rows):
        combined_names = list(combined.feature_name())
        account_names = list(account.feature_name())
        by_group = combined.predict(x_combined[rows], pred_contrib=True, num_threads=threads)
        by_own = account.predict(x_account[rows], pred_contrib=True, num_threads=threads)
        for i, row in enumerate(rows):
            own_texts = _own_reasons(
                account_names, x_account[row], by_own[i, : len(account_names)], settings
            )
            picked = _reasons(
                combined_names,
                x_combined[row],
                by_group[i, : len(combined_names)],
                own_texts,
                (evidence[row] if evidence is not None else None) or [],
                settings,
            )
            if own[row] and own_texts and not set(own_texts) & set(picked):
                picked.append(own_texts[0])
            counts[row] = len(picked)
            texts.extend(picked)
    # built from offsets: a Python list per row (most rows have none) costs more than the scoring
    offsets = np.concatenate([[0], np.cumsum(counts, dtype=np.int64)]).astype(np.int32)
    reasons = pa.ListArray.from_arrays(pa.array(offsets), pa.array(texts, pa.string()))
    return reasons, own


def _own_reasons(
    names: list[str], values: np.ndarray, contrib: np.ndarray, settings: ReasonSettings
) -> list[str]:
    """The account model's positive contributions as sentences, distinct.

    Values beyond what 99% of ordinary accounts show come first (strongest first), then the
    others: a reason that quotes a normal value tells the analyst less.
    """
    positive = [int(c) for c in np.argsort(-contrib, kind="stable") if contrib[c] > 0]
    unusual = [c for c in positive if is_unusual(names[c], float(values[c]), settings.reference)]
    out: list[str] = []
    for c in unusual + [c for c in positive if c not in unusual]:
        if len(out) == settings.top_n:
            break
        text = reason_text(names[c], float(values[c]), settings.reference)
        if text not in out:
            out.append(text)
    return out


def _reasons(
    names: list[str],
    values: np.ndarray,
    contrib: np.ndarray,
    own_texts: list[str],
    evidence: list[str],
    settings: ReasonSettings,
) -> list[str]:
    """The first ``top_n`` distinct sentences of the combined model's positive contributions."""
    row = dict(zip(names, values.tolist(), strict=True))
    picked: list[str] = []
    for c in np.argsort(-contrib, kind="stable"):
        if contrib[c] <= 0 or len(picked) >= settings.top_n:
            break
        if names[c] == ACCOUNT_SCORE:
            candidates = own_texts[:OWN_REASONS_PER_ACCOUNT_SCORE]
        elif names[c] == "group_anomaly":
            candidates = evidence[:GROUP_REASONS_PER_ANOMALY]
        else:
            candidates = [
                reason_text(names[c], float(values[c]), settings.reference, row, evidence)
            ]
        for text in candidates:
            if text and text not in picked and len(picked) < settings.top_n:
                picked.append(text)
    return picked
