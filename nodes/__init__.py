"""ComfyUI nodes of MotionStream: thin glue over motionstream_core, one node family per module."""

from . import lora_nodes, model_loaders, prompt_schedule, streaming_sampler, teacher_sampler, track_nodes

_NODE_MODULES = (model_loaders, lora_nodes, track_nodes, prompt_schedule, streaming_sampler, teacher_sampler)

NODE_CLASS_MAPPINGS = {}
NODE_DISPLAY_NAME_MAPPINGS = {}
for _module in _NODE_MODULES:
    NODE_CLASS_MAPPINGS.update(_module.NODE_CLASS_MAPPINGS)
    NODE_DISPLAY_NAME_MAPPINGS.update(_module.NODE_DISPLAY_NAME_MAPPINGS)
