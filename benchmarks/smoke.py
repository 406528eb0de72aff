"""The tiny CPU configuration of the GPU benchmarks' `--smoke` modes (pretrain_speed.py, gpu_sweep.py).

Same code path as a GPU run, a few seconds a training: a stock-stem ResNet-18 (an
8x8 map after the stem instead of 32x32), a small projector and subset. What a
test runs, and what to run before spending minutes of a GPU window.
"""

SMOKE_CONFIG = {"device": "cpu", "small_stem": False, "max_images": 128, "batch_size": 32, "proj_hidden_dim": 128,
                "proj_dim": 64, "num_negatives": 128, "eval_max_train": 128, "threads": 1, "amp": False}
SMOKE_EPOCHS = 2
