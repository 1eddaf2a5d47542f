"""The evidence bucket as a pyarrow filesystem: the local SQL engine (freezeframe.investigate.query) reads the Parquet
views through pyarrow's own S3 client (C++), with the credentials and the endpoint boto3 would use."""

from __future__ import annotations

from typing import Any

from pyarrow import fs as pafs

from freezeframe.adapters import s3 as s3io
from freezeframe.contracts.config import Settings


def arrow_filesystem(settings: Settings) -> pafs.FileSystem:
    """An S3 filesystem for the settings' region and endpoint (a local S3's scheme and host when one is set)."""
    kwargs: dict[str, Any] = {"region": settings.region}
    resolved = s3io.credentials(settings)
    if resolved is not None:
        kwargs.update(access_key=resolved[0], secret_key=resolved[1], session_token=resolved[2])
    if settings.s3_endpoint:
        scheme, _, host = settings.s3_endpoint.partition("://")
        kwargs.update(endpoint_override=host, scheme=scheme)
    return pafs.S3FileSystem(**kwargs)
