"""Hugging Face hub helpers shared by the commands that fetch Kyutai's files."""

from __future__ import annotations


def hub_unreachable(timeout: float = 5.0) -> str | None:
    """Why the hub cannot be reached (None when it can).

    A quick TCP check that spares the hub client's minute of retries when there is no network: callers then
    look in the local cache alone and, failing that, say how to provide the files.
    """
    import socket
    from urllib.parse import urlparse

    from huggingface_hub import constants

    if constants.HF_HUB_OFFLINE:
        return "HF_HUB_OFFLINE is set"
    host = urlparse(constants.ENDPOINT).hostname or "huggingface.co"
    try:
        socket.create_connection((host, 443), timeout=timeout).close()
    except OSError as err:
        return f"cannot reach {host} ({err})"
    return None
