"""edgecpm: export hybrid LLMs to int4/int8 ONNX and run them on-device."""

__version__ = "0.1.0"
