"""The local gateway's Invoke API key pair, client side: the per-stack secret that the core's Lambda client
(freezeframe.adapters.invoke) signs its invocations with when FREEZEFRAME_LAMBDA_ENDPOINT names a local gateway. The
gateway's check of the signature is local tooling (freezeframe_local.invoke_auth)."""

from __future__ import annotations

import contextlib
import os
import secrets
from pathlib import Path

from freezeframe.contracts.config import Settings

ACCESS_KEY_ID = "FFLOCALINVOKE"  # not a secret: the name the stack's key goes by
KEY_FILE_NAME = "invoke.key"


def key_file(settings: Settings) -> Path:
    return settings.state_dir / KEY_FILE_NAME


def credentials(settings: Settings) -> tuple[str, str]:
    """(access key id, secret key) of the local stack whose state is settings.state_dir; made on first use."""
    path = key_file(settings)
    with contextlib.suppress(FileNotFoundError):
        return ACCESS_KEY_ID, _read(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(f".{path.name}.{os.getpid()}.{secrets.token_hex(4)}")
    fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
    with os.fdopen(fd, "w", encoding="utf-8") as handle:
        handle.write(secrets.token_urlsafe(32))
    try:
        os.link(tmp, path)  # atomic and never replaces: of two racing first users, both read the winner's key
    except FileExistsError:
        pass
    finally:
        tmp.unlink()
    return ACCESS_KEY_ID, _read(path)


def _read(path: Path) -> str:
    secret = path.read_text(encoding="utf-8").strip()
    if not secret:
        raise FileNotFoundError(path)
    return secret
