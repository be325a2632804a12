"""Reading and writing: images in every mode, RLE and label CSVs, training datasets and
synthetic cut-out composites. The bottom layer: it imports nothing else of seglab's
but errors and recipes."""
