"""jaxprune's messages go to the ``jaxprune`` logger; the command line shows its INFO messages.

One-time long operations (downloads) are logged at WARNING, which Python prints to stderr even
when the application configured no logging, so a notebook user is not left waiting in silence.
"""

from __future__ import annotations

import logging

logger = logging.getLogger("jaxprune")


def info(message: str, *args: object) -> None:
    logger.info(message, *args)


def notice(message: str, *args: object) -> None:
    """A message worth seeing without any logging configuration (long one-time work)."""
    logger.warning(message, *args)
