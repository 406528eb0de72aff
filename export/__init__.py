"""Export stage: a RUN_DIR's backbone to validated ONNX (fp32 + static int8) and ORT format.

Talks to pretraining only through the RUN_DIR on disk (never imports ``pretrain``);
what it writes is read on the edge by ``zoo.edge`` without torch.
"""
