"""The filesystem: text and bytes, listing with depth, exists, make_dir,
rename, remove, watching, and a 100 MB round trip."""

import hashlib
import io
import os
import time

import pytest
from e2b import FileType
from e2b.exceptions import NotFoundException
from e2b.sandbox.filesystem.watch_handle import FilesystemEventType


def test_write_read_text_and_bytes(sandbox):
    info = sandbox.files.write("notes/a.txt", "hello\n")
    assert info.path == "/home/user/notes/a.txt"
    assert sandbox.files.read("notes/a.txt") == "hello\n"
    blob = bytes(range(256)) * 4
    sandbox.files.write("/tmp/blob.bin", blob)
    assert sandbox.files.read("/tmp/blob.bin", format="bytes") == blob
    # The sandbox's own tools see the same file.
    assert sandbox.commands.run("cat /home/user/notes/a.txt").stdout == "hello\n"
    with pytest.raises(NotFoundException):
        sandbox.files.read("/no/such/file")


def test_write_several_files(sandbox):
    from e2b.sandbox.filesystem.filesystem import WriteEntry

    infos = sandbox.files.write_files(
        [WriteEntry(path="/tmp/m/one", data="1"), WriteEntry(path="/tmp/m/two", data=b"2")]
    )
    assert sorted(i.path for i in infos) == ["/tmp/m/one", "/tmp/m/two"]
    assert sandbox.files.read("/tmp/m/two") == "2"


def test_list_with_depth(sandbox):
    sandbox.commands.run("mkdir -p /tmp/tree/a/b && touch /tmp/tree/top /tmp/tree/a/mid /tmp/tree/a/b/deep")
    names = lambda entries: sorted(e.path for e in entries)
    assert names(sandbox.files.list("/tmp/tree")) == ["/tmp/tree/a", "/tmp/tree/top"]
    assert names(sandbox.files.list("/tmp/tree", depth=2)) == [
        "/tmp/tree/a",
        "/tmp/tree/a/b",
        "/tmp/tree/a/mid",
        "/tmp/tree/top",
    ]
    entries = {e.name: e for e in sandbox.files.list("/tmp/tree")}
    assert entries["a"].type == FileType.DIR
    assert entries["top"].type == FileType.FILE
    assert entries["top"].size == 0


def test_exists_make_dir_rename_remove(sandbox):
    assert not sandbox.files.exists("/tmp/d")
    assert sandbox.files.make_dir("/tmp/d/e") is True
    assert sandbox.files.make_dir("/tmp/d/e") is False
    assert sandbox.files.exists("/tmp/d/e")
    sandbox.files.write("/tmp/d/e/f", "x")
    moved = sandbox.files.rename("/tmp/d/e/f", "/tmp/d/g")
    assert moved.path == "/tmp/d/g"
    assert not sandbox.files.exists("/tmp/d/e/f")
    assert sandbox.files.get_info("/tmp/d/g").size == 1
    sandbox.files.remove("/tmp/d")
    assert not sandbox.files.exists("/tmp/d")


def test_watch(sandbox):
    sandbox.files.make_dir("/tmp/w")
    handle = sandbox.files.watch_dir("/tmp/w")
    sandbox.files.write("/tmp/w/new.txt", "hi")
    sandbox.commands.run("rm /tmp/w/new.txt")
    seen = []
    deadline = time.time() + 5
    while time.time() < deadline:
        seen += [(e.name, e.type) for e in handle.get_new_events()]
        if ("new.txt", FilesystemEventType.REMOVE) in seen:
            break
        time.sleep(0.1)
    handle.stop()
    assert ("new.txt", FilesystemEventType.CREATE) in seen, seen
    assert ("new.txt", FilesystemEventType.REMOVE) in seen, seen


def test_100_mb_round_trip(sandbox):
    data = os.urandom(100 << 20)
    digest = hashlib.sha256(data).hexdigest()
    sandbox.files.write("/tmp/big.bin", data)
    r = sandbox.commands.run("sha256sum /tmp/big.bin")
    assert r.stdout.split()[0] == digest
    # A file object goes as one octet-stream body.
    sandbox.files.write("/tmp/big2.bin", io.BytesIO(data))
    back = sandbox.files.read("/tmp/big2.bin", format="bytes")
    assert hashlib.sha256(back).hexdigest() == digest
    streamed = hashlib.sha256()
    for chunk in sandbox.files.read("/tmp/big.bin", format="stream"):
        streamed.update(chunk)
    assert streamed.hexdigest() == digest
