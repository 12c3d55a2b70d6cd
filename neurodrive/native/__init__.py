"""Native code: the optional Embree ray caster (embree_caster.cpp, wrapped by ``caster``)."""
