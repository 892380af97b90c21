"""Where positions lie relative to each other: a 1-D sequence or a 2-D grid.

Position smoothing (soft targets over neighbouring positions) and the position-error metric
both need the distance between two position indices. A :class:`PositionLayout` gives it:
``|i - j|`` on a sequence, the Euclidean distance between (row, column) cells on a grid whose
indices are flattened row-major.

Example
-------
>>> import torch
>>> PositionLayout().distance(torch.tensor([0, 5]), torch.tensor([3, 5])).tolist()
[3.0, 0.0]
>>> PositionLayout(grid=(4, 4)).distance(torch.tensor([0]), torch.tensor([5])).tolist()
[1.4142135381698608]
"""

from __future__ import annotations

import torch


class PositionLayout:
    """Geometry of the positions a head predicts.

    Arguments
    ---------
    grid : tuple of int, optional
        (H, W) for patches on a grid, indices flattened row-major; None for a 1-D sequence.
    """

    def __init__(self, grid: tuple[int, int] | None = None):
        if grid is not None:
            grid = tuple(int(g) for g in grid)
            if len(grid) != 2 or min(grid) < 1:
                raise ValueError(f"grid must be (height, width) with both >= 1, got {grid}")
        self.grid = grid

    @property
    def num_positions(self) -> int | None:
        """H * W on a grid; None on a sequence (its length varies)."""
        return None if self.grid is None else self.grid[0] * self.grid[1]

    def coordinates(self, index: torch.Tensor) -> torch.Tensor:
        """(..., D) float coordinates of position indices: D = 1 on a sequence, 2 on a grid."""
        if self.grid is None:
            return index.float().unsqueeze(-1)
        width = self.grid[1]
        return torch.stack([torch.div(index, width, rounding_mode="floor"), index % width], -1).float()

    def distance(self, a: torch.Tensor, b: torch.Tensor) -> torch.Tensor:
        """Distance between position indices ``a`` and ``b`` (broadcast)."""
        return torch.linalg.vector_norm(self.coordinates(a) - self.coordinates(b), dim=-1)

    def distances_to_all(self, true: torch.Tensor, num_positions: int) -> torch.Tensor:
        """(..., P) distance from each true position to every candidate position 0..P-1."""
        candidates = torch.arange(num_positions, device=true.device)
        return self.distance(true.unsqueeze(-1), candidates)

    def __repr__(self) -> str:
        return f"PositionLayout(grid={self.grid})"


def coarse_grid_layout(grid: tuple[int, int], coarse: int = 1) -> PositionLayout:
    """The layout of the classes of coarse targets on a grid: ``coarse`` x ``coarse`` squares
    of cells (the last row and column of squares may be cut).

    >>> coarse_grid_layout((14, 14), 4).grid
    (4, 4)
    """
    if coarse < 1:
        raise ValueError(f"coarse must be >= 1, got {coarse}")
    return PositionLayout(grid=tuple(-(-int(g) // coarse) for g in grid))
