"""The augmentation lift's classifiers: the same figure wherever they train."""

import numpy as np
import ray
import torch

from jobs.gate.lift import _accuracy, _accuracy_remote


def test_a_classifier_trained_in_a_task_of_its_own_scores_as_one_trained_in_process(ray_local):
    """The gate trains the real-only classifier in a Ray task beside the mixed one: the figure must not depend
    on where it trained (the task has one thread, so the comparison runs at one thread too)."""
    rng = np.random.default_rng(0)
    pixels = rng.integers(0, 256, (60, 8, 8, 1), dtype=np.uint8)
    y = rng.integers(0, 3, 60)
    val, val_y = pixels[:30], (y[:30] + rng.integers(0, 2, 30)) % 3  # noisy labels: an accuracy strictly inside (0, 1)
    arm = (pixels, y, val, val_y, 3, 7, "cpu", 12)
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    try:
        here = _accuracy(*arm)
    finally:
        torch.set_num_threads(threads)
    assert 0 < here < 1 and ray.get(_accuracy_remote.remote(*arm)) == here
