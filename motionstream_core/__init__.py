"""MotionStream core: a plain PyTorch library (no ComfyUI imports) for motion-conditioned streaming video diffusion.

The runtime packages: `model` (the Wan DiT and its weights), `sampling` (schedule, noise, guidance),
`streaming` (session and KV cache), `motion` (tracks and the track head), `codecs` (latent codecs).
Beside them, never imported by the runtime: `synthetic` (the sprite benchmark), `demo` (the embedded
model), `training` and `testing`. The public API is the runtime packages' `__all__`, re-exported here.
"""

# Each runtime package declares its public names once, in its own __all__; this package re-exports them.
from . import codecs, model, motion, sampling, streaming
from .codecs import *  # noqa: F401,F403
from .model import *  # noqa: F401,F403
from .motion import *  # noqa: F401,F403
from .sampling import *  # noqa: F401,F403
from .streaming import *  # noqa: F401,F403

__all__ = [*codecs.__all__, *model.__all__, *motion.__all__, *sampling.__all__, *streaming.__all__]
