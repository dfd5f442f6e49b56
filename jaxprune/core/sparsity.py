"""Sparsity targets as tiny value types.

``Unstructured(0.5)`` prunes half of the weights (how they are grouped — per row, per layer,
globally — is the caller's choice); ``NM(2, 4)`` keeps at most 2 non-zeros in every 4 consecutive
weights along a kernel's input axis (the hardware "2:4" pattern); ``Channel(0.5)`` removes half
of a kernel's output channels (whole filters), the pattern training-time and filter pruning share.
"""

from __future__ import annotations

import dataclasses
import re


@dataclasses.dataclass(frozen=True)
class Unstructured:
    """A fraction of weights to remove, in [0, 1)."""

    sparsity: float

    def __post_init__(self):
        if not 0.0 <= self.sparsity < 1.0:
            raise ValueError(f"sparsity must be in [0, 1), got {self.sparsity}")

    def __str__(self) -> str:
        return f"{self.sparsity:g}"


@dataclasses.dataclass(frozen=True)
class NM:
    """Keep at most ``n`` non-zeros in every group of ``m`` consecutive inputs."""

    n: int
    m: int

    def __post_init__(self):
        if not (isinstance(self.n, int) and isinstance(self.m, int) and 0 < self.n < self.m):
            raise ValueError(f"an N:M pattern needs integers 0 < N < M, got {self.n}:{self.m}")

    @property
    def sparsity(self) -> float:
        return 1.0 - self.n / self.m

    def __str__(self) -> str:
        return f"{self.n}:{self.m}"


@dataclasses.dataclass(frozen=True)
class Channel:
    """A fraction of whole output channels (the last axis of a kernel) to remove, in [0, 1)."""

    sparsity: float

    def __post_init__(self):
        if not 0.0 <= self.sparsity < 1.0:
            raise ValueError(f"channel sparsity must be in [0, 1), got {self.sparsity}")

    def __str__(self) -> str:
        return f"channel:{self.sparsity:g}"


Target = Unstructured | NM
# What a training-time mask may be: the one-shot targets and whole channels.
Pattern = Unstructured | NM | Channel


def parse_target(text: str | float) -> Target:
    """``"0.5"`` / ``0.5`` → ``Unstructured(0.5)``; ``"2:4"`` → ``NM(2, 4)``."""
    if isinstance(text, int | float):
        return Unstructured(float(text))
    match = re.fullmatch(r"\s*(\d+)\s*:\s*(\d+)\s*", text)
    if match:
        return NM(int(match.group(1)), int(match.group(2)))
    try:
        return Unstructured(float(text))
    except ValueError as err:
        if "could not convert" in str(err):
            raise ValueError(
                f"cannot read sparsity target {text!r}: use a fraction such as 0.5 or a pattern "
                "such as 2:4"
            ) from None
        raise
