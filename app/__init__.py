"""The face of edgezoo: the `edgezoo` command that chains the stages, and the Gradio demo."""
