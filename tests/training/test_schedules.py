"""Schedules: Zhu & Gupta's polynomial in closed form, update grids, validation."""

from __future__ import annotations

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from jaxprune.training.schedules import Fixed, OneShot, Periodic, Polynomial, gmp


def test_gmp_scale_is_zhu_and_gupta_cubic_in_closed_form():
    schedule = gmp(start=10, end=110, every=10, initial=0.2)
    steps = np.arange(0, 130)
    got = np.asarray(jax.jit(jax.vmap(schedule.scale))(jnp.asarray(steps)))
    # s_t = s_f + (s_i - s_f)(1 - (t - t0)/(n·Δt))^3 as a fraction of s_f, before t0 dense.
    progress = np.clip((steps - 10) / 100.0, 0.0, 1.0)
    expected = np.where(steps >= 10, 1.0 + (0.2 - 1.0) * (1.0 - progress) ** 3, 0.0)
    np.testing.assert_allclose(got, expected, atol=1e-6)
    assert np.all(np.diff(got[10:]) >= 0) and got[110] == 1.0 and got[129] == 1.0


def test_polynomial_updates_on_its_grid_only():
    schedule = Polynomial(start=4, end=16, every=4, power=2.0)
    updates = [int(t) for t in range(30) if bool(schedule.is_update(jnp.int32(t)))]
    assert updates == [4, 8, 12, 16]


def test_one_shot_prunes_once_at_its_step():
    schedule = OneShot(5)
    assert [float(schedule.scale(t)) for t in (0, 4, 5, 9)] == [0.0, 0.0, 1.0, 1.0]
    assert [bool(schedule.is_update(t)) for t in (4, 5, 6)] == [False, True, False]


def test_periodic_and_fixed_hold_the_full_target():
    periodic, fixed = Periodic(every=3, start=2, end=11), Fixed()
    assert [t for t in range(15) if bool(periodic.is_update(t))] == [2, 5, 8, 11]
    assert float(periodic.scale(0)) == 1.0 and float(fixed.scale(100)) == 1.0
    assert not any(bool(fixed.is_update(t)) for t in range(5))


@pytest.mark.parametrize(
    "make, message",
    [
        (lambda: Polynomial(0, 10, every=3), "multiple of every"),
        (lambda: Polynomial(5, 2), "must not come before"),
        (lambda: Polynomial(0, 10, initial=1.5), "initial"),
        (lambda: Periodic(every=0), "positive number"),
        (lambda: OneShot(-1), "start must be"),
    ],
)
def test_bad_schedules_are_refused_when_made(make, message):
    with pytest.raises(ValueError, match=message):
        make()
