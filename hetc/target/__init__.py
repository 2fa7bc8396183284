"""hetc.target: target descriptions (TOML presets or files), capability checks and the roofline cost model."""
from hetc.target.capability import supports, working_set_bytes
from hetc.target.describe import describe_target, target_to_json
from hetc.target.cost import node_bytes, node_class, node_cost_ns, node_flops, op_class
from hetc.target.loader import DEFAULT_PRESET, list_presets, load_target, parse_size, target_from_toml_text
from hetc.target.model import Device, DmaEngine, Memory, Ok, Reason
from hetc.target.ops import KERNEL_SET, OP_CLASSES
from hetc.target.target import Target

__all__ = ["Target", "Memory", "Device", "DmaEngine", "Ok", "Reason", "load_target", "list_presets",
           "target_from_toml_text", "parse_size", "DEFAULT_PRESET", "supports", "working_set_bytes",
           "node_cost_ns", "node_flops", "node_bytes", "node_class", "op_class", "KERNEL_SET", "OP_CLASSES",
           "target_to_json", "describe_target"]
