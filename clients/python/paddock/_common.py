"""Helpers shared by the sync and async clients."""

from __future__ import annotations

import json
import os
import tempfile
from pathlib import Path
from typing import Any, Dict, Iterable, Iterator, List, Mapping, Optional, Sequence

from paddock.v1 import files_pb2


def given(**kw: Any) -> Dict[str, Any]:
    """The keyword arguments that were given (not None): a tool's input as the model would write it."""
    return {k: v for k, v in kw.items() if v is not None}


def to_list(v: Optional[Sequence[int]]) -> Optional[List[int]]:
    return None if v is None else list(v)


def to_json(v: Mapping[str, Any]) -> str:
    return json.dumps(v, ensure_ascii=False, separators=(",", ":"))


def upload_requests(session_id: str, path: str, chunks: Iterable[bytes], tar: bool, mode: int) -> Iterator[files_pb2.UploadRequest]:
    yield files_pb2.UploadRequest(header=files_pb2.UploadHeader(session_id=session_id, path=path, tar=tar, mode=mode))
    for c in chunks:
        yield files_pb2.UploadRequest(data=c)
    # Only an upload that ends with `finish` is kept (a broken one leaves nothing).
    yield files_pb2.UploadRequest(finish=True)


def write_atomically(local: Path, chunks: Iterable[bytes]) -> None:
    """Writes to a temporary name next to `local`, renamed into place when complete."""
    local.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(dir=local.parent, prefix=f".{local.name}.")
    try:
        with os.fdopen(fd, "wb") as f:
            for c in chunks:
                f.write(c)
        os.replace(tmp, local)
    except BaseException:
        os.unlink(tmp)
        raise
