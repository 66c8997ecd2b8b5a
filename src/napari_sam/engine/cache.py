"""In-memory LRU cache of embeddings, bounded in MiB (thread-safe)."""

from __future__ import annotations

import threading
from collections import OrderedDict
from collections.abc import Hashable

from .predictor import Embedding


def embedding_nbytes(embedding: Embedding) -> int:
    return sum(t.numel() * t.element_size() for t in embedding.tensors)


class EmbeddingCache:
    """Least-recently-used embeddings up to ``max_mib`` MiB (one vit embedding is 4 MiB in fp32,
    a SAM 2 one 16 MiB with its high-resolution features).

    Keys are any hashable, e.g. ``(image_id, model_name, slice_index)``.
    """

    def __init__(self, max_mib: float = 512) -> None:
        self.max_bytes = int(max_mib * 2**20)
        self._items: OrderedDict[Hashable, Embedding] = OrderedDict()
        self._lock = threading.Lock()

    @property
    def nbytes(self) -> int:
        with self._lock:
            return sum(embedding_nbytes(e) for e in self._items.values())

    def __len__(self) -> int:
        return len(self._items)

    def __contains__(self, key: Hashable) -> bool:
        with self._lock:
            return key in self._items

    def get(self, key: Hashable) -> Embedding | None:
        with self._lock:
            emb = self._items.get(key)
            if emb is not None:
                self._items.move_to_end(key)
            return emb

    def put(self, key: Hashable, embedding: Embedding) -> None:
        with self._lock:
            self._items[key] = embedding
            self._items.move_to_end(key)
            total = sum(embedding_nbytes(e) for e in self._items.values())
            while total > self.max_bytes and len(self._items) > 1:
                _, dropped = self._items.popitem(last=False)
                total -= embedding_nbytes(dropped)

    def clear(self) -> None:
        with self._lock:
            self._items.clear()

    def keys(self) -> list[Hashable]:
        with self._lock:
            return list(self._items)
