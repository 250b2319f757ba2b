"""Streaming files and directories in and out without holding them in memory:
a file goes as 1 MiB chunks; a directory as a tar archive made (or unpacked)
on the fly, which is what Files.Upload with ``tar`` and Files.Download of a
directory speak."""

from __future__ import annotations

import io
import os
import queue
import tarfile
import threading
from pathlib import Path
from typing import BinaryIO, Iterable, Iterator, Optional

from ._connect import CHUNK

_END = object()


def file_chunks(f: BinaryIO) -> Iterator[bytes]:
    while True:
        b = f.read(CHUNK)
        if not b:
            return
        yield b


class _QueueWriter(io.RawIOBase):
    """A write-only file whose writes come out of a queue in CHUNK pieces."""

    def __init__(self, q: "queue.Queue[object]") -> None:
        self._q = q
        self._buf = bytearray()

    def writable(self) -> bool:
        return True

    def write(self, b) -> int:  # type: ignore[override]
        self._buf += b
        while len(self._buf) >= CHUNK:
            self._q.put(bytes(self._buf[:CHUNK]))
            del self._buf[:CHUNK]
        return len(b)

    def flush_rest(self) -> None:
        if self._buf:
            self._q.put(bytes(self._buf))
            self._buf.clear()


def _add_tree(tar: tarfile.TarFile, root: Path) -> None:
    # Entries relative to the directory, so they unpack into the target path.
    for dirpath, dirnames, filenames in os.walk(root):
        dirnames.sort()
        for name in sorted(dirnames) + sorted(filenames):
            full = Path(dirpath) / name
            tar.add(str(full), arcname=str(full.relative_to(root)), recursive=False)


class TarProducer:
    """Tars a local directory on a thread; iterate for the archive's chunks.
    Bounded, so a large tree is never all in memory."""

    def __init__(self, root: Path) -> None:
        self._q: "queue.Queue[object]" = queue.Queue(maxsize=8)
        self._error: Optional[BaseException] = None
        self._thread = threading.Thread(target=self._run, args=(root,), daemon=True)
        self._thread.start()

    def _run(self, root: Path) -> None:
        w = _QueueWriter(self._q)
        try:
            with tarfile.open(fileobj=w, mode="w|", format=tarfile.PAX_FORMAT) as tar:
                _add_tree(tar, root)
            w.flush_rest()
        except BaseException as e:  # handed to the consumer
            self._error = e
        finally:
            self._q.put(_END)

    def get(self) -> object:
        """The next chunk, or _END (then check `error`)."""
        return self._q.get()

    @property
    def error(self) -> Optional[BaseException]:
        """Why tarring failed (set once `get` has returned _END)."""
        return self._error

    def __iter__(self) -> Iterator[bytes]:
        while True:
            item = self.get()
            if item is _END:
                if self._error:
                    raise self._error
                return
            yield item  # type: ignore[misc]


class _ChunkReader(io.RawIOBase):
    """A read-only file over an iterator of byte chunks."""

    def __init__(self, chunks: Iterable[bytes]) -> None:
        self._it = iter(chunks)
        self._buf = b""

    def readable(self) -> bool:
        return True

    def readinto(self, b) -> int:  # type: ignore[override]
        while not self._buf:
            try:
                self._buf = next(self._it)
            except StopIteration:
                return 0
        n = min(len(b), len(self._buf))
        b[:n] = self._buf[:n]
        self._buf = self._buf[n:]
        return n


def untar(chunks: Iterable[bytes], dest: Path) -> None:
    """Unpacks a streamed tar into `dest` (made if missing). Members that would
    land outside it, device files and the like are refused (tarfile's "data"
    filter where this Python has it)."""
    dest.mkdir(parents=True, exist_ok=True)
    with tarfile.open(fileobj=io.BufferedReader(_ChunkReader(chunks), CHUNK), mode="r|") as tar:
        if hasattr(tarfile, "data_filter"):
            tar.extractall(dest, filter="data")
        else:  # Python < 3.8.17 / 3.9.17 etc.: check by hand
            root = dest.resolve()
            for m in tar:
                target = (root / m.name).resolve()
                if not (target == root or root in target.parents) or m.isdev():
                    raise ValueError(f"refusing tar member {m.name!r}")
                tar.extract(m, root)


class ThreadQueueIter:
    """Feeds chunks from another thread (or an event loop) into a blocking
    iterator: `put` chunks, then `close` (optionally with an error)."""

    def __init__(self, maxsize: int = 8) -> None:
        self._q: "queue.Queue[object]" = queue.Queue(maxsize=maxsize)
        self._error: Optional[BaseException] = None

    def put(self, b: bytes) -> None:
        self._q.put(b)

    def close(self, error: Optional[BaseException] = None) -> None:
        self._error = error
        self._q.put(_END)

    def __iter__(self) -> Iterator[bytes]:
        while True:
            item = self._q.get()
            if item is _END:
                if self._error:
                    raise self._error
                return
            yield item  # type: ignore[misc]
