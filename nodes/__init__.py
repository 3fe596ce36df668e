"""ComfyUI nodes of MotionStream: thin glue over motionstream_core, one node family per module."""

from . import model_loaders, streaming_sampler, teacher_sampler, track_nodes

_NODE_MODULES = (model_loaders, track_nodes, streaming_sampler, teacher_sampler)

NODE_CLASS_MAPPINGS = {}
NODE_DISPLAY_NAME_MAPPINGS = {}
for _module in _NODE_MODULES:
    NODE_CLASS_MAPPINGS.update(_module.NODE_CLASS_MAPPINGS)
    NODE_DISPLAY_NAME_MAPPINGS.update(_module.NODE_DISPLAY_NAME_MAPPINGS)
