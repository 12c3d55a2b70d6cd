"""Builds the optional native ray caster (neurodrive/raycast/embree_caster.cpp) over Embree 3.

Everything else is in pyproject.toml. Without Embree's headers (Debian: libembree-dev, which
install.sh provides) the extension is skipped and neurodrive casts rays with open3d instead.
"""

from setuptools import Extension, setup

setup(
    ext_modules=[
        Extension(
            "neurodrive._embree_caster",
            sources=["neurodrive/raycast/embree_caster.cpp"],
            libraries=["embree3"],
            extra_compile_args=["-O3", "-std=c++17"],
            language="c++",
            optional=True,
        )
    ]
)
