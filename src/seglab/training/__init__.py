"""Training: the Lightning module and loop (``trainer``) and ``fit``, which trains a
recipe, tunes or gate-reports it, documents it and returns the model folder."""
