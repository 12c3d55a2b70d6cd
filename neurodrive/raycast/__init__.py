"""Ray casting: one protocol (``base.RayCaster``, ``base.CasterBackend``), one hit record
(``base.RayHits``), two implementations (``embree``: native Embree 3 with ray packets;
``open3d_caster``: open3d's RaycastingScene). ``select_backend`` picks one.
"""

from __future__ import annotations

import os

from neurodrive.raycast.base import CasterBackend, RayCaster, RayHits, bounding_radius_m, check_rays

ENV_VAR = "NEURODRIVE_RAYCASTER"
CHOICES = ("auto", "embree", "open3d")


class NativeCasterUnavailable(RuntimeError):
    """The native caster was asked for but is not built."""


def select_backend(choice: str = "auto") -> CasterBackend:
    """The caster backend for ``choice``: ``embree`` (native; an error when not built), ``open3d``,
    or ``auto`` (native when built). The ``NEURODRIVE_RAYCASTER`` environment variable, when set,
    overrides the argument (to compare casters without changing code)."""
    from neurodrive.raycast.embree import EmbreeBackend, native_built
    from neurodrive.raycast.open3d_caster import Open3dBackend

    override = os.environ.get(ENV_VAR)
    chosen = (override or choice).lower()
    if chosen not in CHOICES:
        source = f"{ENV_VAR}={override!r}" if override else f"caster={choice!r}"
        raise ValueError(f"{source}: expected one of {', '.join(CHOICES)}")
    if chosen == "open3d":
        return Open3dBackend()
    if not native_built():
        if chosen == "embree":
            raise NativeCasterUnavailable(
                "the native Embree caster is not built: install libembree-dev, then reinstall "
                "neurodrive (bash install.sh)"
            )
        return Open3dBackend()
    return EmbreeBackend()


__all__ = [
    "CasterBackend",
    "RayCaster",
    "RayHits",
    "bounding_radius_m",
    "check_rays",
    "select_backend",
    "NativeCasterUnavailable",
    "ENV_VAR",
]
