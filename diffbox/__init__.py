"""diffbox: Wan 2.2 image-to-video, SVI 2.0 Pro and Qwen-Image-Edit in one Gradio app."""

__version__ = "0.1.0"
