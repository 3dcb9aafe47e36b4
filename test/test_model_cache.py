"""Image-encoder feature cache: same outputs, fewer encodings, no stale reuse."""

import pytest
import torch

from model_fixtures import case_views, needs_fixtures, norm_err, tiny_model, to_numpy

pytestmark = needs_fixtures


@pytest.fixture(scope="module")
def plain():
    return tiny_model()


@pytest.fixture
def cached():
    return tiny_model(feature_cache_size=8)


def frames(n: int, batch: int = 1) -> list[torch.Tensor]:
    gen = torch.Generator().manual_seed(7)
    return [torch.randn(batch, 3, 70, 98, generator=gen) for _ in range(n)]


def assert_same(a: list[dict], b: list[dict]) -> None:
    for va, vb in zip(a, b):
        for key in va:
            if va[key].dtype == torch.bool:
                assert torch.equal(va[key], vb[key]) or key == "non_ambiguous_mask"
            else:
                assert norm_err(to_numpy(va[key]), to_numpy(vb[key])) < 1e-5, key


def test_cached_outputs_equal_uncached(plain, cached):
    views = case_views("c5_mixed_5v")
    tagged = [dict(v, frame_id=f"f{i}") for i, v in enumerate(views)]
    with torch.no_grad():
        ref = plain(views)
        first = cached(tagged)
        assert cached.images_encoded == 5 and cached.encoder_calls == 1
        second = cached(tagged)
    assert cached.images_encoded == 5 and cached.encoder_calls == 1
    assert_same(first, ref)
    assert_same(second, ref)


def test_sliding_window_encodes_one_new_image_per_step(plain, cached):
    imgs = frames(8)
    window = 4
    for step in range(len(imgs) - window + 1):
        ids = range(step, step + window)
        views = [{"img": imgs[i], "frame_id": i} for i in ids]
        before = cached.images_encoded
        with torch.no_grad():
            out = cached(views)
        assert cached.images_encoded - before == (window if step == 0 else 1)
        if step == 2:
            with torch.no_grad():
                assert_same(out, plain([{"img": imgs[i]} for i in ids]))
    assert cached.encoder_calls == len(imgs) - window + 1
    assert len(cached.feature_cache) == len(imgs)


def test_capacity_bounds_the_cache(cached):
    cached.feature_cache.max_items = 3
    imgs = frames(5)
    with torch.no_grad():
        cached([{"img": im, "frame_id": i} for i, im in enumerate(imgs)])
        assert len(cached.feature_cache) == 3
        cached([{"img": imgs[4], "frame_id": 4}, {"img": imgs[0], "frame_id": 0}])
    assert cached.images_encoded == 6  # frame 4 was kept (recent), frame 0 was evicted


def test_reused_id_with_other_image_raises(cached):
    a, b = frames(2)
    with torch.no_grad():
        cached([{"img": a, "frame_id": "x"}])
        with pytest.raises(ValueError, match="'x'"):
            cached([{"img": b, "frame_id": "x"}])
        with pytest.raises(ValueError, match="'y'"):
            cached([{"img": a, "frame_id": "y"}, {"img": b, "frame_id": "y"}])
        cached([{"img": a, "frame_id": "z"}, {"img": a, "frame_id": "z"}])
    assert cached.images_encoded == 2  # "x" once, "z" once for both views


def test_batched_ids_and_clear(plain, cached):
    imgs = frames(3, batch=2)
    views = [{"img": im, "frame_id": [f"{i}a", f"{i}b"]} for i, im in enumerate(imgs)]
    with torch.no_grad():
        out = cached(views)
        assert cached.images_encoded == 6
        views[2] = {"img": imgs[2], "frame_id": ["new0", "2b"]}
        cached(views)
        assert cached.images_encoded == 7
        assert_same(out, plain([{"img": im} for im in imgs]))
        cached.clear_feature_cache()
        cached(views)
    assert cached.images_encoded == 13


def test_loading_weights_clears_cache(cached):
    with torch.no_grad():
        cached([{"img": frames(1)[0], "frame_id": 0}])
    assert len(cached.feature_cache) == 1
    cached.load_state_dict(cached.state_dict())
    assert len(cached.feature_cache) == 0


def test_cache_off_by_default(plain):
    before = plain.images_encoded
    views = [{"img": im, "frame_id": i} for i, im in enumerate(frames(2))]
    with torch.no_grad():
        plain(views)
        plain(views)
    assert plain.images_encoded - before == 4 and len(plain.feature_cache) == 0
