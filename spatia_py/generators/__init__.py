"""Video generators (the ``VideoGenerator`` protocol of :mod:`spatia_py.types`).

- ``procedural``: the embedded procedural stand-in world model (ray-cast scene, no weights, CPU),
  :class:`spatia_py.generators.procedural.ProceduralGenerator`.

Backends are built by :func:`spatia_py.pipeline.make_generator` from ``generator.backend``.
"""
