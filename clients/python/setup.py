"""Build hook: generates the gRPC stubs of paddock.v1 from the repository's
proto/ into the built package (paddock/v1/*_pb2.py, *_pb2_grpc.py).

The .proto files are named paddock/v1/x.proto, so protoc's Python modules are
paddock.v1.x_pb2 and import each other as `from paddock.v1 import ...`: they
land inside this package's own `paddock` namespace with no rewriting.

Where the protos are: $PADDOCK_PROTO_DIR, else ./proto (an sdist carries a
copy), else ../../proto (the repository checkout, what `pip install
clients/python` builds from).
"""

import atexit
import functools
import os
import re
import shutil
import tempfile
from pathlib import Path

from setuptools import setup
from setuptools.command.build_py import build_py
from setuptools.command.sdist import sdist

HERE = Path(__file__).resolve().parent


def proto_root() -> Path:
    candidates = [os.environ.get("PADDOCK_PROTO_DIR"), HERE / "proto", HERE.parent.parent / "proto"]
    for c in candidates:
        if c and (Path(c) / "paddock" / "v1").is_dir():
            return Path(c).resolve()
    raise SystemExit(
        "paddock: cannot find the .proto files (looked in $PADDOCK_PROTO_DIR, ./proto and ../../proto); "
        "build from a checkout of the repository: pip install clients/python"
    )


@functools.lru_cache(maxsize=None)
def generated() -> Path:
    """The stubs, generated once per build into a temporary tree."""
    from grpc_tools import protoc  # a build requirement (pyproject.toml)
    import grpc_tools

    out_dir = Path(tempfile.mkdtemp(prefix="paddock-stubs-"))
    atexit.register(shutil.rmtree, out_dir, True)
    root = proto_root()
    protos = sorted(str(p.relative_to(root)) for p in (root / "paddock" / "v1").glob("*.proto"))
    well_known = Path(grpc_tools.__file__).parent / "_proto"
    args = [
        "grpc_tools.protoc",
        f"-I{root}",
        f"-I{well_known}",
        f"--python_out={out_dir}",
        f"--pyi_out={out_dir}",
        f"--grpc_python_out={out_dir}",
        *protos,
    ]
    if protoc.main(args) != 0:
        raise SystemExit(f"paddock: protoc failed on {root}")
    # protoc writes modules, not packages: make paddock/v1 importable.
    (out_dir / "paddock" / "v1" / "__init__.py").write_text('"""Generated from proto/paddock/v1 at build time."""\n')
    (out_dir / "paddock" / "v1" / "py.typed").write_text("")
    return out_dir


def runtime_requirements() -> list:
    """The generated code refuses to import under a grpcio older than the
    grpcio-tools that made it, or a protobuf older than its protoc: require
    exactly those floors, whichever grpcio-tools the build got."""
    import grpc_tools.grpc_version

    code = (generated() / "paddock" / "v1" / "tools_pb2.py").read_text()
    m = re.search(r"ValidateProtobufRuntimeVersion\(\s*_runtime_version\.Domain\.PUBLIC,\s*(\d+),\s*(\d+),\s*(\d+)", code)
    protobuf = f"protobuf>={m.group(1)}.{m.group(2)}.{m.group(3)}" if m else "protobuf"
    return [f"grpcio>={grpc_tools.grpc_version.VERSION}", protobuf]


class BuildPyWithStubs(build_py):
    def run(self):
        super().run()
        shutil.copytree(generated() / "paddock" / "v1", Path(self.build_lib) / "paddock" / "v1", dirs_exist_ok=True)


class SdistWithProtos(sdist):
    """Carries the protos inside the sdist, which is built away from the checkout."""

    def make_release_tree(self, base_dir, files):
        super().make_release_tree(base_dir, files)
        src = proto_root() / "paddock" / "v1"
        dst = Path(base_dir) / "proto" / "paddock" / "v1"
        dst.mkdir(parents=True, exist_ok=True)
        for p in src.glob("*.proto"):
            shutil.copy2(p, dst / p.name)


setup(
    install_requires=runtime_requirements(),
    cmdclass={"build_py": BuildPyWithStubs, "sdist": SdistWithProtos},
)
