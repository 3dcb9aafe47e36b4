"""Bounded LRU cache of image-encoder outputs keyed by frame id.

The DINOv2 features of an image depend on the image alone, so a sliding window only needs
to encode the frames that are new to it. Each entry remembers a fingerprint of its image
(shape, a strided pixel sample and the float64 pixel sum); looking up an id with a different
image raises ValueError instead of returning stale features. Entries made under a different
device or autocast setting count as misses and are replaced.
"""

from collections import OrderedDict
from collections.abc import Callable, Hashable, Sequence
from dataclasses import dataclass

import torch

SAMPLE_STRIDE = 8


@dataclass
class _Entry:
    features: torch.Tensor
    tokens: torch.Tensor
    shape: tuple[int, ...]
    sample: torch.Tensor
    total: torch.Tensor
    context: tuple


def _context(img: torch.Tensor) -> tuple:
    kind = img.device.type
    return img.device, img.dtype, torch.is_autocast_enabled(kind), torch.get_autocast_dtype(kind)


def _sample(img: torch.Tensor) -> torch.Tensor:
    return img[:, ::SAMPLE_STRIDE, ::SAMPLE_STRIDE].clone()


class FeatureCache:
    """LRU map frame id -> (patch features (C, h, w), tokens (C, T)) of one image (3, H, W)."""

    def __init__(self, max_items: int = 0):
        self._entries: OrderedDict[Hashable, _Entry] = OrderedDict()
        self.max_items = max_items

    @property
    def max_items(self) -> int:
        """Capacity in images; 0 disables the cache."""
        return self._max_items

    @max_items.setter
    def max_items(self, n: int) -> None:
        if n < 0:
            raise ValueError(f"cache size must be >= 0, got {n}")
        self._max_items = int(n)
        while len(self._entries) > self._max_items:
            self._entries.popitem(last=False)

    def __len__(self) -> int:
        return len(self._entries)

    def clear(self) -> None:
        """Drop every entry."""
        self._entries.clear()

    def get(self, key: Hashable, img: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor] | None:
        """Cached outputs for `key` if it was stored with this image, else None.

        Raises ValueError if `key` was stored with a different image."""
        entry = self._entries.get(key)
        if entry is None or entry.context != _context(img):
            return None
        same = (entry.shape == tuple(img.shape) and torch.equal(entry.sample, _sample(img))
                and torch.equal(entry.total, img.sum(dtype=torch.float64)))
        if not same:
            raise ValueError(f"frame_id {key!r} was cached for a different image; "
                             "frame ids must be unique per image (or clear the cache)")
        self._entries.move_to_end(key)
        return entry.features, entry.tokens

    def put(self, key: Hashable, img: torch.Tensor, features: torch.Tensor,
            tokens: torch.Tensor) -> None:
        """Store detached outputs for `key`, evicting the least recently used entries."""
        if self._max_items == 0:
            return
        self._entries[key] = _Entry(features.detach(), tokens.detach(), tuple(img.shape),
                                    _sample(img), img.sum(dtype=torch.float64), _context(img))
        self._entries.move_to_end(key)
        while len(self._entries) > self._max_items:
            self._entries.popitem(last=False)


def encode_cached(cache: FeatureCache, imgs: torch.Tensor, keys: Sequence[Hashable | None],
                  encode: Callable[[torch.Tensor], tuple[torch.Tensor, torch.Tensor]]
                  ) -> tuple[torch.Tensor, torch.Tensor]:
    """Encoder outputs (N, C, h, w) and (N, C, T) of images (N, 3, H, W) with cache keys (None:
    not cached); `encode` runs once on the images that miss. An id repeated within the call
    must name the same image (else ValueError) and is encoded once."""
    rows: list[tuple[torch.Tensor, torch.Tensor] | None] = [None] * len(keys)
    todo: list[int] = []
    first_row: dict[Hashable, int] = {}
    for r, key in enumerate(keys):
        if key is not None:
            if key in first_row:  # repeated id within this call: same image required
                if not torch.equal(imgs[r], imgs[first_row[key]]):
                    raise ValueError(f"frame_id {key!r} is used for two different images")
                continue
            rows[r] = cache.get(key, imgs[r])
            first_row[key] = r
        if rows[r] is None:
            todo.append(r)
    if todo:
        feats, toks = encode(imgs[todo])
        for j, r in enumerate(todo):
            rows[r] = (feats[j], toks[j])
            if keys[r] is not None:
                cache.put(keys[r], imgs[r], feats[j], toks[j])
    for r, key in enumerate(keys):
        if rows[r] is None:
            rows[r] = rows[first_row[key]]
    return torch.stack([f for f, _ in rows]), torch.stack([t for _, t in rows])
