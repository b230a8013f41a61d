"""The one compiled part: nvrag.model._widemm, the widened product's AVX2 kernel (nvrag/model/_widemm.c).

Everything else is in pyproject.toml. The extension is optional: without a C compiler (or off x86-64) pip still
installs nvrag, and model/widened.py computes the same product through PyTorch, slower at few rows.
"""

from setuptools import Extension, setup

setup(
    ext_modules=[
        Extension(
            "nvrag.model._widemm",
            sources=["nvrag/model/_widemm.c"],
            extra_compile_args=["-O3", "-std=c11", "-fno-wrapv"],  # Python's -fwrapv slows the index arithmetic ~7%
            optional=True,
        )
    ]
)
