"""`edgezoo eval` / the evaluate stage: the random-init baseline, and no second embedding of the run's own protocol."""

import json
import logging

from pretrain.config import build_config
from pretrain.evaluate import evaluate_run
from pretrain.trainer import Trainer

TINY = dict(data="cifar10", model="resnet18", small_stem=False, img_size=32, max_images=128, batch_size=32, epochs=1,
            proj_hidden_dim=64, proj_dim=32, num_negatives=64, threads=1, eval_max_train=128, proj_out_bn=True)


def test_eval_reuses_the_end_of_training_kNN_and_adds_random_init(tmp_path, cifar_test_200, caplog):
    run = tmp_path / "run"
    metrics = Trainer(build_config(None, eval_data=str(cifar_test_200), **TINY), run, progress=False).fit()
    with caplog.at_level(logging.INFO, logger="pretrain.evaluate"):
        result = evaluate_run(run, device="cpu")
    assert "not embedded again" in caplog.text
    assert result["knn_top1"] == metrics["knn_top1"] and result["rankme"] == metrics["rankme"]
    assert 0.0 < result["random_init_knn_top1"] < 1.0 and result["random_init_rankme"] > 0
    assert json.loads((run / "eval.json").read_text()) == result
    caplog.clear()
    with caplog.at_level(logging.INFO, logger="pretrain.evaluate"):
        other = evaluate_run(run, max_train=64, device="cpu")  # another protocol: embedded anew
    assert "not embedded again" not in caplog.text and other["num_train"] == 64
