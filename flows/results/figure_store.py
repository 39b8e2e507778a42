"""Where a flow's figures go, a folder or an fsspec URL (``s3://``, ``file://``...), and where a UI user sees them.

A ``figures_dir`` that is a URL is written through fsspec like weights (:func:`flows.weights.weight_store.upload`):
each figure is drawn into a local temporary file and uploaded whole, so no folder named ``s3:`` appears on the
worker. :func:`show_figures` then puts a Prefect link artifact per figure on the flow run: the object's address
on the store's HTTP endpoint (``AWS_ENDPOINT_URL`` for ``s3://``, the public S3 or GCS address otherwise), which
the store's console or a browser opens for a user allowed to read it; never a credential. A local folder is
named with the worker's host, since only that machine has the file.

Examples
--------
>>> browser_url("s3://figures/run-1/focus.png", {"AWS_ENDPOINT_URL": "http://minio:9000"})
'http://minio:9000/figures/run-1/focus.png'
>>> browser_url("gs://figures/focus.png", {})
'https://storage.googleapis.com/figures/focus.png'
"""

from __future__ import annotations

import os
import socket
import tempfile
from collections.abc import Callable, Mapping
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit

from prefect.artifacts import create_link_artifact, create_markdown_artifact

from flows.results.artifacts import best_effort
from flows.weights import weight_store

__all__ = ["browser_url", "save_figure", "show_figures"]


def save_figure(folder: str, name: str, draw: Callable[[Path], Any]) -> str:
    """Draw a figure (``draw(path)`` writes a file) into ``folder/name``: a local folder (made when missing) or an
    fsspec URL (drawn locally, then uploaded whole). Returns where the figure is.

    Raises
    ------
    FocusError
        When the URL's filesystem package is missing or the store refuses the write (one sentence).
    OSError
        When the object store cannot be reached.
    """
    if not weight_store.is_url(folder):
        path = Path(folder) / name
        path.parent.mkdir(parents=True, exist_ok=True)
        draw(path)
        return str(path)
    target = weight_store.join(folder, name)
    with tempfile.TemporaryDirectory(prefix="focus-figure-") as staging:
        local = Path(staging) / name
        draw(local)
        weight_store.upload(local, target, cache=False)
    return target


def browser_url(location: str, environ: Mapping[str, str] | None = None) -> str:
    """The address a browser opens for the figure at ``location`` (a URL; no user-info, no query)."""
    env = os.environ if environ is None else environ
    parts = urlsplit(weight_store.redact(location))
    key = parts.path.lstrip("/")
    if parts.scheme in ("s3", "s3a"):
        endpoint = env.get("FSSPEC_S3_ENDPOINT_URL") or env.get("AWS_ENDPOINT_URL_S3") or env.get("AWS_ENDPOINT_URL")
        if endpoint:
            return f"{weight_store.redact(endpoint).rstrip('/')}/{parts.netloc}/{key}"
        return f"https://{parts.netloc}.s3.amazonaws.com/{key}"
    if parts.scheme in ("gs", "gcs"):
        return f"https://storage.googleapis.com/{parts.netloc}/{key}"
    return weight_store.redact(location).split("?")[0]


def show_figures(locations: list[str], description: str) -> None:
    """A link artifact per figure at a URL, and one markdown artifact naming the figures on this worker's disk."""
    for location in locations:
        if weight_store.is_url(location):
            best_effort(create_link_artifact, link=browser_url(location), link_text=weight_store.redact(location),
                        description=description)
    local = [location for location in locations if not weight_store.is_url(location)]
    if local:
        best_effort(create_markdown_artifact, f"{description}, on worker host `{socket.gethostname()}`:\n\n"
                    + "\n".join(f"- `{path}`" for path in local), description=description)
