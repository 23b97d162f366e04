"""clipbridge: CLIP image embedding -> MLP bridge -> generator latent -> face, measured."""

__version__ = "0.1.0"
