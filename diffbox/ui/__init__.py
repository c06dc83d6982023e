"""Gradio only: the app, its tabs and the API. Never imports torch; talks to diffbox.services."""
