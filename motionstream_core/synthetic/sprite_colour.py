"""How far a sprite's pixels in a video are from its true colours: a colour error in RGB.

At a given centre on each frame, a sprite's *interior pixels* are those whose
centres lie at least 1 px inside its outline and at least 1 px outside the
outline of every given sprite in front of it (at that sprite's centre on that
frame), so that neither anti-aliasing nor a cover enters. A pixel's true
colour is what :mod:`.rendering` paints there: the sprite's colour darkened by
its texture at the pixel's offset from the centre. A frame's error is the
mean, over the interior pixels, of the Euclidean RGB distance (channels in
``[0, 1]``, so at most ``sqrt(3)``) between the video's pixel and that true
colour; nan on a frame without interior pixels. A rendered clip scored at its
true centres has error 0 up to float rounding.
"""

from __future__ import annotations

from collections.abc import Sequence

import torch

from .sprites import SpriteAppearance

INTERIOR_MARGIN_PX = 1.0


def sprite_colour_error(
    frames: torch.Tensor,
    sprite: SpriteAppearance,
    centres: torch.Tensor,
    in_front: Sequence[tuple[SpriteAppearance, torch.Tensor]] = (),
) -> torch.Tensor:
    """Float64 ``[T]`` colour error of ``sprite`` centred at ``centres`` ``[T, 2]`` in ``[T, 3, H, W]`` ``frames``.

    ``in_front`` lists the sprites painted over it with their centres ``[T, 2]``;
    see the module docstring.
    """
    num_frames, _, height, width = frames.shape
    if tuple(centres.shape) != (num_frames, 2):
        raise ValueError(f"centres must have shape [{num_frames}, 2], got {list(centres.shape)}")
    ys, xs = torch.meshgrid(torch.arange(height, dtype=torch.float32) + 0.5,
                            torch.arange(width, dtype=torch.float32) + 0.5, indexing="ij")
    pixels = torch.stack([xs, ys], dim=-1)  # [H, W, 2] pixel centres (x, y)
    colour = torch.tensor(sprite.colour, dtype=torch.float32)
    errors = torch.full((num_frames,), float("nan"), dtype=torch.float64)
    for frame in range(num_frames):
        offsets = pixels - centres[frame].to(torch.float32)
        interior = sprite.signed_distance(offsets) <= -INTERIOR_MARGIN_PX
        for front, front_centres in in_front:
            interior &= front.signed_distance(pixels - front_centres[frame].to(torch.float32)) >= INTERIOR_MARGIN_PX
        if not bool(interior.any()):
            continue
        truth = colour - sprite.darkening(offsets[interior]).unsqueeze(-1)  # [K, 3]
        seen = frames[frame].to(torch.float32).permute(1, 2, 0)[interior]  # [K, 3]
        errors[frame] = float((seen - truth).norm(dim=-1).mean())
    return errors
