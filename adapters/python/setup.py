"""Build hook: generate the gRPC stubs (and ship a copy of the proto) when the package is built."""

import shutil
import sys
from pathlib import Path

from setuptools import setup
from setuptools.command.build_py import build_py

HERE = Path(__file__).resolve().parent


class BuildPyWithStubs(build_py):
    def run(self):
        sys.path.insert(0, str(HERE))
        from build_stubs import load_stubs_module

        _stubs = load_stubs_module()

        root = _stubs.find_proto_root()
        if root is not None and root != _stubs.PKG_DIR / "_proto":
            dest = _stubs.PKG_DIR / "_proto" / _stubs.PROTO_REL
            dest.parent.mkdir(parents=True, exist_ok=True)
            shutil.copyfile(root / _stubs.PROTO_REL, dest)
        _stubs.generate()
        if self.packages is not None and "idem_client._gen" not in self.packages:
            self.packages.append("idem_client._gen")
        super().run()


setup(cmdclass={"build_py": BuildPyWithStubs})
