"""Pareto fronts: the points no other point beats on every objective."""

from __future__ import annotations

import numpy as np
import pandas as pd


def pareto_front(table: pd.DataFrame, minimize: list[str], maximize: list[str] = ()) -> list[bool]:
    """For each row of ``table``: True unless another row is at least as good on every objective and strictly
    better on one. Rows with equal objectives are both on the front."""
    costs = np.column_stack([table[c].to_numpy(float) for c in minimize]
                            + [-table[c].to_numpy(float) for c in maximize])
    front = []
    for point in costs:
        dominated = np.any(np.all(costs <= point, axis=1) & np.any(costs < point, axis=1))
        front.append(not bool(dominated))
    return front
