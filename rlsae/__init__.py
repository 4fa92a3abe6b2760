"""rlsae: sparse autoencoders for models trained with reward."""

__version__ = "0.1.0"
