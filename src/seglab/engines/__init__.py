"""Engines that run a predictor over many images past one process.

The local, single-process path (:func:`seglab.defects.batch.predict_files`,
:func:`seglab.cutout.batch.cutout_files`) is the default; :mod:`seglab.engines.raydata`
runs the same predictor, writing the same files and rows, on a Ray cluster
(``seglab predict ... --engine ray``; ``pip install 'seglab[ray]'``).
"""
