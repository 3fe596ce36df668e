"""Latent codecs: the Tiny VAE (TAEHV), the demo model's patch codec, and Wan VAE latent normalisation."""

from .latent_space import to_model_space, to_vae_space
from .patch_codec import PatchCodec
from .taehv import TinyVAE

__all__ = ["PatchCodec", "TinyVAE", "to_model_space", "to_vae_space"]
