"""Small random Wan models shared by tests."""

import torch

from motionstream_core import WanConfig, WanDiT


def tiny_config(**overrides) -> WanConfig:
    values = dict(
        dim=64, ffn_dim=96, num_heads=2, num_layers=2, in_channels=8, out_channels=8,
        text_dim=24, freq_dim=32, text_len=16,
    )
    values.update(overrides)
    return WanConfig(**values)


def random_dit(config: WanConfig, seed: int = 0, scale: float = 0.1, dtype=torch.float32) -> WanDiT:
    torch.manual_seed(seed)
    model = WanDiT(config).to(dtype)
    with torch.no_grad():
        for parameter in model.parameters():
            parameter.normal_(0.0, scale)
    return model.eval()
