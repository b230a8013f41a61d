"""What an ANN recall probe searches with (store/lance_ann.py): query-like vectors made outside the store."""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np
import numpy.typing as npt


@dataclass(frozen=True)
class ProbeQueries:
    """Query-like vectors, each made from a stored chunk (``sources``: its chunk id, or "" for none). The
    probe leaves that chunk out of the query's exact neighbours and its hits, as it leaves an own vector out:
    a real query is not a piece of a stored text, and the chunk it was cut from would be the easiest hit."""

    vectors: npt.NDArray[np.float32]
    sources: Sequence[str]

    def __post_init__(self) -> None:
        if len(self.sources) != len(self.vectors):
            raise ValueError(f"{len(self.vectors)} probe vectors but {len(self.sources)} sources")
