"""Whether the Hugging Face Hub can be reached, decided in about a second instead of after retries.

Offline, huggingface_hub retries each request for tens of seconds before failing with a message about
the network; gmseg checks once and goes straight to the local cache, or to an error that names the flag
to pass.
"""

from __future__ import annotations

import socket
import warnings
from collections.abc import Iterator
from contextlib import contextmanager
from functools import lru_cache
from urllib.parse import urlparse

__all__ = ["hub_reachable", "quiet_hub_deprecations", "unavailable_reason"]


@lru_cache(maxsize=1)
def hub_reachable(timeout: float = 2.0) -> bool:
    """False under HF_HUB_OFFLINE or when the Hub's host does not accept a connection within ``timeout``."""
    from huggingface_hub import constants

    if constants.HF_HUB_OFFLINE:
        return False
    url = urlparse(constants.ENDPOINT)
    port = url.port or (443 if url.scheme == "https" else 80)
    try:
        socket.create_connection((url.hostname, port), timeout=timeout).close()
    except OSError:
        return False
    return True


def unavailable_reason(repo_id: str) -> str | None:
    """Why the Hub cannot give ``repo_id`` now (unreachable or offline, and not cached), or None when the Hub
    answers: the true cause, where huggingface_hub's own message ("does not appear to have a file named
    config.json") suggests a wrong repository."""
    if hub_reachable():
        return None
    from huggingface_hub import constants

    host = urlparse(constants.ENDPOINT).hostname
    why = "HF_HUB_OFFLINE is set" if constants.HF_HUB_OFFLINE else f"{host} does not answer: no network?"
    return (
        f"the Hugging Face Hub is unreachable ({why}) and {repo_id} is not in the local cache "
        f"({constants.HF_HUB_CACHE})"
    )


@contextmanager
def quiet_hub_deprecations() -> Iterator[None]:
    """Hide huggingface_hub's deprecation warning about ``local_dir_use_symlinks``, which diffusers passes
    on every download: a user can do nothing about it, and it buries gmseg's own message."""
    with warnings.catch_warnings():
        warnings.filterwarnings("ignore", message=".*local_dir_use_symlinks.*")
        yield
