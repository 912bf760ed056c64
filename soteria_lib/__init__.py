"""soteria_lib: gradient-inversion attacks and the Soteria defense, for teaching and reproduction.

The library of the soteria-book Jupyter Book; each module names the chapter that teaches it.
Start with :func:`soteria_lib.pipeline.run_reconstruction` (chapter 1). The command lines
``python -m soteria_lib.reconstruct``, ``python -m soteria_lib.fedavg`` and
``python -m soteria_lib.experiments`` sit on top; no library module imports them.

Importing the package turns Flower's telemetry and Ray's usage statistics off for this process
and every process it starts (:mod:`soteria_lib.telemetry`), before either is imported.
"""
from .telemetry import quiet_by_default

quiet_by_default()

__version__ = "0.1.0"
