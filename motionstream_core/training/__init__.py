"""Training of MotionStream models: teacher (stage 1), ODE initialisation (stage 2), Self Forcing + DMD (stage 3).

Self Forcing can also regress the student's rollouts on the clips themselves
(`SelfForcingRegressionTrainer`), for data that its conditions determine, such as the synthetic sprites.

    python -m motionstream_core.training {teacher,ode_init,dmd} --config run.json
    torchrun --nproc_per_node 8 -m motionstream_core.training dmd --config run.json
"""

from .checkpoints import load_training_state, load_weights, save_training_state, save_weights
from .conditioned_model import TrackConditionedDiT
from .data import ClipAugmentation, ClipBatch, drop_conditions, mask_track_spans, subsample_tracks, subsample_tracks_per_group
from .ema import ExponentialMovingAverage
from .flow_matching import SigmaSampler, flow_matching_loss
from .ode_init import OdeInitConfig, OdeInitTrainer, block_causal_mask, ode_regression_loss, teacher_ode_trajectory
from .self_forcing_dmd import SelfForcingDMDConfig, SelfForcingDMDTrainer, dmd_loss, plan_rollout, self_forcing_rollout
from .self_forcing_regression import SelfForcingRegressionConfig, SelfForcingRegressionTrainer, weighted_regression_loss
from .teacher import TeacherTrainer, TeacherTrainingConfig, add_input_channels, add_track_channels, build_teacher, teacher_loss

__all__ = [
    "ClipAugmentation",
    "ClipBatch",
    "ExponentialMovingAverage",
    "OdeInitConfig",
    "OdeInitTrainer",
    "SelfForcingDMDConfig",
    "SelfForcingDMDTrainer",
    "SelfForcingRegressionConfig",
    "SelfForcingRegressionTrainer",
    "SigmaSampler",
    "TeacherTrainer",
    "TeacherTrainingConfig",
    "TrackConditionedDiT",
    "add_input_channels",
    "add_track_channels",
    "block_causal_mask",
    "build_teacher",
    "dmd_loss",
    "drop_conditions",
    "flow_matching_loss",
    "load_training_state",
    "load_weights",
    "mask_track_spans",
    "ode_regression_loss",
    "plan_rollout",
    "save_training_state",
    "save_weights",
    "self_forcing_rollout",
    "subsample_tracks",
    "subsample_tracks_per_group",
    "teacher_loss",
    "teacher_ode_trajectory",
    "weighted_regression_loss",
]
