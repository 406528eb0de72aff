"""`edgezoo demo`: a Gradio app for embedding and retrieval over a folder of your own images.

Serving uses onnxruntime by default (a RUN_DIR's validated ``export/model.onnx``
through ``zoo.edge.EdgeEmbedder``, or ``zoo.from_pretrained(..., backend="onnx")``),
so a serving machine needs no torch.

- `app.demo.model`: loading a model (RUN_DIR, export folder, model file or published
  version), the model picker's list, the default gallery;
- `app.demo.view`: the Gradio app (`DemoApp`: state, handlers, page) and `start`;
- `app.demo.cli`: the flags of `edgezoo demo`, `create_app` and `run_demo`.

The names below are what the pipeline and the tests use.
"""

from app.demo.cli import create_app
from app.demo.model import default_gallery
from app.demo.view import DEFAULT_HOST, DEFAULT_PORT, start

__all__ = ["DEFAULT_HOST", "DEFAULT_PORT", "create_app", "default_gallery", "start"]
