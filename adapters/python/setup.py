"""Build hook: the gRPC stubs, their type stubs, the version and the runtime requirements all
come from ``build_stubs.py`` when the package is built (never when it is imported)."""

import sys
from pathlib import Path

from setuptools import setup
from setuptools.command.build_py import build_py

sys.path.insert(0, str(Path(__file__).resolve().parent))
import build_stubs  # noqa: E402

# Generated now, not only in build_py: the version and the grpcio/protobuf floors the generated
# code checks at import are package metadata, which setuptools reads before it builds.
build_stubs.generate()


class BuildPyWithStubs(build_py):
    """build_py that regenerates first (an editable install runs only this step again)."""

    def run(self):
        build_stubs.generate()
        super().run()


setup(
    version=build_stubs.project_version(),
    install_requires=build_stubs.runtime_requirements(),
    cmdclass={"build_py": BuildPyWithStubs},
)
