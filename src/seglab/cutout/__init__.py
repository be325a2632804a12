"""Background removal: ``remove(image)`` for one photo, ``cutout_files`` for folders,
the gate report, the review sheet and the cut-out model card."""

from seglab.cutout.remove import Cutout, parse_colour, remove, remove_batch

__all__ = ["Cutout", "parse_colour", "remove", "remove_batch"]
