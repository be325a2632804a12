"""The networks (any segmentation_models_pytorch architecture and encoder, with an
optional image-level head), the model folder they are saved in, and the zoo of
ready models shipped inside the package."""
