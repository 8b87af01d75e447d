"""Build script for the Cython extensions: the HMM kernels (with OpenMP) and the folder walker."""

import os
import sys
import tempfile
from pathlib import Path

import numpy as np
from Cython.Build import cythonize
from setuptools import Extension, setup
from setuptools.command.build_ext import build_ext


def compiler_supports_openmp(compiler) -> bool:
    """Return True when the C compiler compiles and links a tiny OpenMP program."""
    if os.environ.get("WATCHKEEPER_NO_OPENMP"):
        return False
    with tempfile.TemporaryDirectory() as tmp:
        source = Path(tmp) / "omp_check.c"
        source.write_text("#include <omp.h>\nint main(void){return omp_get_max_threads() < 1;}\n")
        try:
            objects = compiler.compile([str(source)], output_dir=tmp, extra_postargs=["-fopenmp"])
            compiler.link_executable(
                objects, str(Path(tmp) / "omp_check"), extra_postargs=["-fopenmp"]
            )
        except Exception:
            return False
    return True


class BuildExtWithOpenMP(build_ext):
    """Adds -fopenmp to every extension when the compiler accepts it."""

    def build_extensions(self) -> None:
        use_openmp = sys.platform != "win32" and compiler_supports_openmp(self.compiler)
        for ext in self.extensions:
            ext.extra_compile_args = ["-O3", "-ffp-contract=off"]
            if use_openmp:
                ext.extra_compile_args.append("-fopenmp")
                ext.extra_link_args = ["-fopenmp"]
        super().build_extensions()


extensions = [
    Extension(
        "hmm_core._kernels",
        ["hmm_core/_kernels.pyx"],
        include_dirs=[np.get_include()],
        define_macros=[("NPY_NO_DEPRECATED_API", "NPY_1_7_API_VERSION")],
    ),
    Extension(
        "agent.data._scan",
        ["agent/data/_scan.pyx"],
        include_dirs=[np.get_include()],
        define_macros=[("NPY_NO_DEPRECATED_API", "NPY_1_7_API_VERSION")],
    ),
    Extension(
        "agent.ledger._clone",
        ["agent/ledger/_clone.pyx"],
        include_dirs=[np.get_include()],
        define_macros=[("NPY_NO_DEPRECATED_API", "NPY_1_7_API_VERSION")],
    ),
]

setup(
    ext_modules=cythonize(
        extensions,
        compiler_directives={
            "language_level": "3",
            "boundscheck": False,
            "wraparound": False,
            "cdivision": True,
            "initializedcheck": False,
        },
    ),
    cmdclass={"build_ext": BuildExtWithOpenMP},
)
