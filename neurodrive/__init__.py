"""neurodrive: a neural closed-loop driving simulator that runs on the CPU.

Data flows one way: log -> reconstruct -> scene model -> renderers -> simulator -> env / CLI / viewer.
Importing the package registers the Gymnasium environment ``neurodrive/ClosedLoop-v0``.
"""

__version__ = "0.1.0"

from neurodrive.envs import register as _register_envs

_register_envs()
