"""The trait probe's arithmetic against values worked out by hand: class_f1, macro_f1 and the
class-balanced, masked logistic regression fit_linear."""

from __future__ import annotations

import math

import numpy as np
import pytest

torch = pytest.importorskip("torch")
pytest.importorskip("open_clip")
pytest.importorskip("transformers")

from biovita_model.probe import class_f1, fit_linear, macro_f1, positive_f1  # noqa: E402


def test_class_f1_by_hand() -> None:
    y = np.array([1, 1, 0, 0, 1])
    pred = np.array([1, 0, 0, 1, 1])
    # label 1: tp = 2 (items 0, 4), fp = 1 (item 3), fn = 1 (item 1): 2*2 / (2*2 + 1 + 1)
    assert class_f1(y, pred, 1) == pytest.approx(4 / 6)
    # label 0: tp = 1 (item 2), fp = 1 (item 1), fn = 1 (item 3): 2 / (2 + 1 + 1)
    assert class_f1(y, pred, 0) == pytest.approx(2 / 4)
    assert macro_f1(y, pred) == pytest.approx((4 / 6 + 2 / 4) / 2)
    assert positive_f1(y, pred) == class_f1(y, pred, 1)
    # a label absent from both truth and prediction scores 1; present in one only, 0
    ones = np.ones(3, dtype=np.int64)
    assert class_f1(ones, ones, 0) == 1.0
    assert class_f1(ones, 1 - ones, 0) == 0.0 and class_f1(ones, 1 - ones, 1) == 0.0
    # the majority baseline on 3 positives of 4: label 1 F1 = 6/7, label 0 F1 = 0
    y4, base = np.array([1, 1, 1, 0]), np.ones(4, dtype=np.int64)
    assert macro_f1(y4, base) == pytest.approx((6 / 7 + 0) / 2)


def test_fit_linear_by_hand() -> None:
    """Two trait columns on x = -1, +1 (+ masked rows) whose optimum is w = ln 3, b = 0.

    Column 0: one negative at x=-1 and one positive at x=+1, each weighted n / (2 n_class) / n
    = 1/2. Column 1: one negative at -1 and three positives at +1: class balance gives the
    negative 4/2/4 = 1/2 and each positive 4/6/4 = 1/6 (1/2 in all), the same loss as column 0.
    The row at x=5 is unknown in both columns, so its label must not count. By symmetry b = 0;
    the objective is (L_0 + L_1) / 2 + l2 (w_0^2 + w_1^2) with L(w) = log(1 + e^-w), so each
    column's optimum solves sigmoid(-w) / 2 = 2 l2 w: with l2 = 1 / (16 ln 3), w = ln 3
    (sigmoid(-ln 3) = 1/4).
    """
    x = torch.tensor([[-1.0], [1.0], [1.0], [1.0], [5.0]])
    y = torch.tensor([[0, 1, 0, 0, 0], [0, 1, 1, 1, 0]], dtype=torch.float32).T
    known = torch.tensor([[1, 1, 0, 0, 0], [1, 1, 1, 1, 0]], dtype=torch.float32).T
    w, b = fit_linear(x, y, known, l2=1 / (16 * math.log(3)))
    assert w.shape == (1, 2) and b.shape == (2,)
    assert w[0].tolist() == pytest.approx([math.log(3)] * 2, abs=1e-4)
    assert b.tolist() == pytest.approx([0.0, 0.0], abs=1e-4)
    # mirrored inputs: mirrored weights, still no bias (unbalanced, column 1 would get b > 0)
    flipped, _ = fit_linear(-x, y, known, l2=1 / (16 * math.log(3)))
    assert flipped[0].tolist() == pytest.approx([-math.log(3)] * 2, abs=1e-4)
