"""What envd 0.6.x adds to files, which the SDK turns on for the version the
sandboxes claim: metadata kept in user.e2b.* xattrs, owner and group names,
gzip both ways, symlinks followed by get_info, entries in watch events."""

import time

from e2b import FileType
from e2b.sandbox.filesystem.watch_handle import FilesystemEventType


def test_metadata_is_kept_in_xattrs(sandbox):
    info = sandbox.files.write("meta/a.txt", "x", metadata={"author": "ann", "stage": "draft"})
    assert info.metadata == {"author": "ann", "stage": "draft"}
    assert sandbox.files.get_info("meta/a.txt").metadata == {"author": "ann", "stage": "draft"}
    listed = {e.name: e for e in sandbox.files.list("meta")}
    assert listed["a.txt"].metadata == {"author": "ann", "stage": "draft"}
    # The attribute is a real one: the sandbox's own tools see it.
    got = sandbox.commands.run("python3 -c \"import os; print(os.getxattr('/home/user/meta/a.txt', 'user.e2b.author').decode())\"")
    assert got.stdout == "ann\n"
    # One set in the sandbox shows, a rename keeps them, an overwrite without clears them.
    sandbox.commands.run("python3 -c \"import os; os.setxattr('/home/user/meta/a.txt', 'user.e2b.by', b'shell')\"")
    assert sandbox.files.rename("meta/a.txt", "meta/b.txt").metadata == {"author": "ann", "stage": "draft", "by": "shell"}
    assert sandbox.files.write("meta/b.txt", "y").metadata is None
    assert sandbox.files.get_info("meta/b.txt").metadata is None


def test_owner_and_group_names(sandbox):
    sandbox.files.write("owned.txt", "x")
    assert (sandbox.files.get_info("owned.txt").owner, sandbox.files.get_info("owned.txt").group) == ("user", "user")
    root = sandbox.files.get_info("/etc/passwd")
    assert (root.owner, root.group) == ("root", "root")
    # An id the sandbox has no name for is given by number.
    sandbox.commands.run("sudo install -o 4242 -g 4243 /dev/null /tmp/numeric")
    n = sandbox.files.get_info("/tmp/numeric")
    assert (n.owner, n.group) == ("4242", "4243")


def test_gzip_both_ways(sandbox):
    text = "compressible " * 10_000
    sandbox.files.write("z.txt", text, gzip=True)
    assert sandbox.commands.run("wc -c < /home/user/z.txt").stdout.strip() == str(len(text))
    assert sandbox.files.read("z.txt", gzip=True) == text
    assert sandbox.files.read("z.txt", format="bytes", gzip=True) == text.encode()


def test_symlinks_are_followed_by_get_info(sandbox):
    sandbox.files.write("links/target.txt", "12345")
    sandbox.commands.run("ln -s target.txt links/rel && ln -s /home/user/links/rel links/chain && ln -s nowhere links/dangling")
    for name in ("rel", "chain"):
        info = sandbox.files.get_info(f"links/{name}")
        assert (info.name, info.type, info.size) == (name, FileType.FILE, 5)
        assert info.symlink_target == "/home/user/links/target.txt"
    assert sandbox.files.get_info("links/dangling").symlink_target == "nowhere"


def test_remove_of_a_missing_path_succeeds(sandbox):
    sandbox.files.remove("never-was.txt")
    assert not sandbox.files.exists("never-was.txt")


def test_watch_events_carry_entries(sandbox):
    sandbox.files.make_dir("watched")
    handle = sandbox.files.watch_dir("watched", include_entry=True)
    sandbox.files.write("watched/new.txt", "hello")
    deadline, events = time.time() + 10, []
    while time.time() < deadline and not any(e.type == FilesystemEventType.WRITE for e in events):
        events += handle.get_new_events()
        time.sleep(0.1)
    handle.stop()
    # An upload lands as envd's create, chmod (its owner), write.
    assert [e.type for e in events] == [FilesystemEventType.CREATE, FilesystemEventType.CHMOD, FilesystemEventType.WRITE], events
    entry = events[-1].entry
    assert (entry.name, entry.path, entry.size, entry.owner) == ("new.txt", "/home/user/watched/new.txt", 5, "user")
