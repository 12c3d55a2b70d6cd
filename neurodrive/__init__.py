"""neurodrive: a neural closed-loop driving simulator that runs on the CPU.

Data flows one way: log -> reconstruct -> scene model -> renderers -> simulator -> env / CLI / viewer.
"""

__version__ = "0.1.0"
