"""--rare_frames: frames with rare expressions are drawn more often, the sampler stays seeded
and resumable, and training runs with it."""

import torch

from tests.helpers import write_tiny_dataset
from training.run_control import CameraSampler, rare_expression_weights


def _blinking(n=200, e=12, blinks=8, seed=0):
    g = torch.Generator().manual_seed(seed)
    exps = torch.randn(n, e, generator=g, dtype=torch.float64) * 0.1
    exps[:, 0] = 0.0  # the blink coefficient rests at 0 ...
    exps[:blinks, 0] = 1.0  # ... and closes in a few frames
    exps[:, 1] = 0.3  # a coefficient that never moves
    return exps


def test_rare_frames_get_the_boost_and_the_rest_one():
    exps = _blinking()
    w = rare_expression_weights(exps, 3.0)
    assert w.shape == (200,)
    assert torch.allclose(w[:8], torch.full((8,), 4.0, dtype=torch.float64))
    assert float(w.min()) == 1.0 and float(w.max()) == 4.0
    assert float((w[8:] > 1.0).double().mean()) < 0.5  # the median frame and below get 1
    assert torch.equal(rare_expression_weights(exps, 0.0), torch.ones(200, dtype=torch.float64))
    # nothing moves: every frame alike
    assert torch.equal(rare_expression_weights(torch.ones(5, 3), 2.0),
                       torch.ones(5, dtype=torch.float64))


def test_rarity_does_not_grow_with_the_number_of_coefficients():
    g = torch.Generator().manual_seed(1)
    for e in (4, 64):
        w = rare_expression_weights(torch.randn(400, e, generator=g), 1.0)
        assert 0.4 < float((w == 1.0).double().mean()) < 0.6


def test_weighted_sampler_draws_in_proportion_and_resumes():
    w = torch.ones(10, dtype=torch.float64)
    w[3] = 10.0
    s = CameraSampler(10, seed=5, weights=w)
    draws = [s.next() for _ in range(1900)]
    share = draws.count(3) / len(draws)
    assert 0.45 < share < 0.60  # 10 / 19
    state = s.state_dict()
    ahead = [s.next() for _ in range(25)]
    again = CameraSampler(10, seed=99, weights=w)
    again.load_state_dict(state)
    assert [again.next() for _ in range(25)] == ahead
    # without weights: every camera once per epoch
    u = CameraSampler(7, seed=0)
    assert sorted(u.next() for _ in range(7)) == list(range(7))


def test_training_with_rare_frames(tmp_path):
    import train

    data = write_tiny_dataset(tmp_path / "d", n=8, size=24)
    trainer = train.train(["-s", str(data), "-m", str(tmp_path / "run"), "--rare_frames", "2",
                           "--iterations", "6", "--test_frames", "2", "--init_points", "300",
                           "--body", "false", "--device", "cpu", "--quiet",
                           "--save_iterations", "6"])
    n = len(trainer.scene.train_cameras)
    assert trainer.sampler.weights is not None and trainer.sampler.weights.shape == (n,)
    assert float(trainer.sampler.weights.min()) >= 1.0
