"""The ``seglab`` command line: verbs mirror the library's functions.

A user mistake (bad file, bad recipe, broken model folder) prints one clear
``error:`` line and exits with status 2, never a traceback. One module per use:
``training`` (recipes, train, demo), ``defects`` (evaluate, predict), ``cutout``
(synth, cutout, gate-report), ``deploy`` (export, serve, models, pack).
"""

# Imported for their @app.command() registrations, in the order `seglab --help` lists them.
from seglab.cli import training, defects, cutout, deploy, access, database  # noqa: F401, I001
from seglab.cli.app import app, main

__all__ = ["app", "main"]
