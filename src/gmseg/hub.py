"""Whether the Hugging Face Hub can be reached, decided in about a second instead of after retries.

Offline, huggingface_hub retries each request for tens of seconds before failing with a message about
the network; gmseg checks once and goes straight to the local cache, or to an error that names the flag
to pass.
"""

from __future__ import annotations

import socket
from functools import lru_cache
from urllib.parse import urlparse

__all__ = ["hub_reachable"]


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
