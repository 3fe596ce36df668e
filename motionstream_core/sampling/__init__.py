"""Diffusion sampling shared by the streaming and offline samplers: flow-matching schedule, noise, joint guidance."""

from .guidance import DEFAULT_MOTION_SCALE, DEFAULT_TEXT_SCALE, Branch, branch_weights, guided_velocity
from .noise import NoiseSource, SeededNoise
from .schedule import DEFAULT_DENOISING_STEPS, FlowMatchSchedule
from .teacher_sampler import SOLVERS, TeacherConditions, TeacherSampler

__all__ = [
    "DEFAULT_MOTION_SCALE", "DEFAULT_TEXT_SCALE", "Branch", "branch_weights", "guided_velocity",
    "NoiseSource", "SeededNoise", "DEFAULT_DENOISING_STEPS", "FlowMatchSchedule",
    "SOLVERS", "TeacherConditions", "TeacherSampler",
]
