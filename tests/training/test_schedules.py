import pytest

from whaleutils.training import schedules


def test_corners_of_the_schedule():
    kwargs = {"epochs": 30, "lr_max": 1e-3, "warmup_epochs": 5, "sustain_epochs": 2}
    assert schedules.lr_at_epoch(0, **kwargs) == pytest.approx(1e-6)  # starts at lr_start
    assert schedules.lr_at_epoch(5, **kwargs) == pytest.approx(1e-3)  # end of warm-up
    assert schedules.lr_at_epoch(6, **kwargs) == pytest.approx(1e-3)  # sustain
    assert schedules.lr_at_epoch(7, **kwargs) == pytest.approx(1e-3)  # first decay epoch
    assert schedules.lr_at_epoch(29, **kwargs) == pytest.approx(1e-6)  # reaches lr_min at the end
    # Half-way through the warm-up: linear. (1e-6 + (1e-3 - 1e-6) * 2.5 / 5)
    assert schedules.lr_at_epoch(2, **kwargs) == pytest.approx(1e-6 + 0.999e-3 * 2 / 5)


def test_decay_is_exponential_and_monotone():
    lrs = [schedules.lr_at_epoch(e, 20, 1e-3, warmup_epochs=0, lr_min=1e-5) for e in range(20)]
    ratios = [b / a for a, b in zip(lrs, lrs[1:], strict=False)]
    assert all(r == pytest.approx(ratios[0]) for r in ratios)  # constant ratio: geometric
    assert ratios[0] == pytest.approx((1e-5 / 1e-3) ** (1 / 19))


def test_short_runs():
    assert schedules.lr_at_epoch(0, 1, 1e-3, warmup_epochs=0) == 1e-3
    assert [schedules.lr_at_epoch(e, 3, 1e-3, warmup_epochs=5) for e in range(3)][-1] < 1e-3


def test_lr_max_scales_with_the_global_batch():
    assert schedules.scaled_lr_max(5e-6, 16 * 8) == pytest.approx(6.4e-4)
    with pytest.raises(ValueError, match="global_batch_size=0"):
        schedules.scaled_lr_max(5e-6, 0)


@pytest.mark.parametrize(
    ("epoch", "epochs", "kwargs", "message"),
    [
        (3, 3, {}, r"epoch must be in \[0, 3\), got epoch=3"),
        (0, 0, {}, "epochs=0"),
        (0, 5, {"warmup_epochs": -1}, "warmup_epochs and sustain_epochs must be >= 0"),
        (0, 5, {"lr_min": 0.0}, "lr_min=0.0"),
    ],
)
def test_bad_arguments(epoch, epochs, kwargs, message):
    with pytest.raises(ValueError, match=message):
        schedules.lr_at_epoch(epoch, epochs, 1e-3, **kwargs)
