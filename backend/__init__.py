"""LayerBridge: decompose a flat image into editable RGBA layers with Qwen-Image-Layered."""

__version__ = "0.1.0"
PROTOCOL_VERSION = 1
MIN_PROTOCOL_VERSION = 1
