"""Instance labels from the decoder's three maps, and merging plane labels across a stack.

The maps (float32, one image ``(H, W)`` each; low values of the two distances mark object cores):
``foreground`` (probability), ``center_distances`` (normalised distance to the object centre),
``boundary_distances`` (normalised distance to the object boundary, inverted: 0 deep inside).
micro-sam's post-processing, which :func:`labels_from_maps` reproduces exactly:

1. Gaussian smoothing of the foreground (``foreground_smoothing``) and of both distances
   (``distance_smoothing``); a sigma of 0 skips it;
2. foreground mask: ``foreground > foreground_threshold``;
3. seeds: pixels of the mask where ``center < center_distance_threshold`` and
   ``boundary < boundary_distance_threshold``, numbered as connected components (8-connected,
   in row-major order of their first pixel);
4. seeded watershed on the smoothed boundary distances, restricted to the mask;
5. objects smaller than ``min_size`` pixels removed, the others renumbered 1..n in order.

The watershed is bioimage-cpp's (the library micro-sam calls), where it is installed (its wheels
cover Linux x86-64, Windows and macOS); elsewhere scikit-image's, whose labels can differ from
micro-sam's only at pixels where two objects meet at exactly equal heights.
"""

from __future__ import annotations

import heapq
import math

import numpy as np
from scipy import ndimage

try:
    from bioimage_cpp.segmentation import watershed as _bic_watershed
except ImportError:  # pragma: no cover - platforms without a bioimage-cpp wheel
    _bic_watershed = None


def gaussian_kernel(sigma: float) -> np.ndarray:
    """Normalised sampled Gaussian (float32) of radius ``ceil(3 sigma)`` (at least 1)."""
    radius = max(1, math.ceil(3.0 * sigma))
    x = np.arange(-radius, radius + 1, dtype=np.float64)
    g = np.exp(-0.5 * x * x / (sigma * sigma))
    return (g / g.sum()).astype(np.float32)


def smooth(image: np.ndarray, sigma: float) -> np.ndarray:
    """Separable Gaussian smoothing of a 2D or 3D float32 image, mirrored at the borders
    (``scipy`` mode ``"mirror"``: the edge pixel is not repeated)."""
    out = np.asarray(image, dtype=np.float32)
    kernel = gaussian_kernel(sigma)
    for axis in range(out.ndim):
        out = ndimage.correlate1d(out, kernel, axis=axis, mode="mirror")
    return out


def seeded_watershed(heights: np.ndarray, seeds: np.ndarray, mask: np.ndarray) -> np.ndarray:
    """Flood ``heights`` from the labelled ``seeds`` (int) inside ``mask`` (bool); 0 outside."""
    heights = np.ascontiguousarray(heights, dtype=np.float32)
    if _bic_watershed is not None:
        return _bic_watershed(heights, np.ascontiguousarray(seeds, dtype=np.uint32), mask=np.ascontiguousarray(mask))
    from skimage.segmentation import watershed

    return watershed(heights, markers=seeds, mask=mask).astype(np.uint32)


def remove_small(labels: np.ndarray, min_size: int) -> np.ndarray:
    """Drop objects of fewer than ``min_size`` pixels and number the rest 1..n, in order."""
    if min_size <= 0 or not labels.size:
        return labels
    counts = np.bincount(labels.ravel())
    keep = counts >= min_size
    keep[0] = False
    mapping = np.zeros(len(counts), dtype=np.uint32)
    mapping[keep] = np.arange(1, int(keep.sum()) + 1, dtype=np.uint32)
    return mapping[labels]


def labels_from_maps(foreground: np.ndarray, center_distances: np.ndarray, boundary_distances: np.ndarray, *,
                     center_distance_threshold: float, boundary_distance_threshold: float,
                     foreground_threshold: float, foreground_smoothing: float, distance_smoothing: float,
                     min_size: int) -> np.ndarray:
    """Instance labels (uint32, the maps' shape; 0 background) from the three maps (see module
    docstring)."""
    if foreground_smoothing > 0:
        foreground = smooth(foreground, foreground_smoothing)
    if distance_smoothing > 0:
        center_distances = smooth(center_distances, distance_smoothing)
        boundary_distances = smooth(boundary_distances, distance_smoothing)
    mask = foreground > foreground_threshold
    cores = (center_distances < center_distance_threshold) & (boundary_distances < boundary_distance_threshold) & mask
    seeds, _ = ndimage.label(cores, structure=np.ones((3,) * cores.ndim, bool))
    labels = seeded_watershed(boundary_distances, seeds, mask).astype(np.uint32, copy=False)
    return remove_small(labels, int(min_size))


# --- across planes ------------------------------------------------------------------------


def overlap_edges(labels: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Links between objects of consecutive planes of ``labels (Z, H, W)`` (ids unique across
    the stack): ``pairs (E, 2)`` ``(id in plane z, id in plane z+1)`` and ``fractions (E,)``, the
    share of the first object's pixels covered by the second."""
    pairs, fractions = [], []
    for z in range(labels.shape[0] - 1):
        a, b = labels[z].ravel(), labels[z + 1].ravel()
        both = (a > 0) & (b > 0)
        if not both.any():
            continue
        key = a[both].astype(np.uint64) << np.uint64(32) | b[both].astype(np.uint64)
        uniq, counts = np.unique(key, return_counts=True)
        src = (uniq >> np.uint64(32)).astype(np.int64)
        dst = (uniq & np.uint64(0xFFFFFFFF)).astype(np.int64)
        sizes = np.bincount(a, minlength=int(src.max()) + 1)
        pairs.append(np.stack([src, dst], axis=1))
        fractions.append(counts / sizes[src])
    if not pairs:
        return np.zeros((0, 2), np.int64), np.zeros(0)
    return np.concatenate(pairs), np.concatenate(fractions)


def link_weights(fractions: np.ndarray) -> np.ndarray:
    """Merge weights of overlap fractions as micro-sam's 3D merging computes them: the negative
    log-odds of the fraction (clipped to 0.001-0.999), subtracted from 1. Positive weights pull
    two objects together; the break-even overlap is about 27 %."""
    p = 0.998 * fractions + 0.001
    return 1.0 - np.log((1.0 - p) / p)


def greedy_merge(n_nodes: int, pairs: np.ndarray, weights: np.ndarray) -> np.ndarray:
    """Cluster nodes ``0..n-1`` linked by weighted edges: repeatedly join the two clusters with
    the largest positive total weight between them (greedy additive edge contraction, the usual
    start of a multicut solver). Returns each node's cluster representative (its smallest node)."""
    parent = np.arange(n_nodes)
    adjacency: dict[int, dict[int, float]] = {}
    for (u, v), w in zip(pairs.tolist(), weights.tolist()):
        if u == v:
            continue
        adjacency.setdefault(u, {})[v] = adjacency.get(u, {}).get(v, 0.0) + w
        adjacency.setdefault(v, {})[u] = adjacency[u][v]
    heap = [(-w, u, v) for u, nbrs in adjacency.items() for v, w in nbrs.items() if u < v and w > 0]
    heapq.heapify(heap)
    alive = set(adjacency)
    while heap:
        neg, u, v = heapq.heappop(heap)
        if u not in alive or v not in alive or adjacency[u].get(v) != -neg:
            continue  # stale entry
        keep, gone = (u, v) if u < v else (v, u)
        alive.discard(gone)
        parent[gone] = keep
        for x, w in adjacency.pop(gone).items():
            del adjacency[x][gone]
            if x == keep:
                continue
            total = adjacency[keep].get(x, 0.0) + w
            adjacency[keep][x] = adjacency[x][keep] = total
            if total > 0:
                heapq.heappush(heap, (-total, min(keep, x), max(keep, x)))
    while True:  # follow merges to the root
        grand = parent[parent]
        if np.array_equal(grand, parent):
            return parent
        parent = grand


def merge_planes(labels: np.ndarray) -> np.ndarray:
    """Join objects of consecutive planes of ``labels (Z, H, W)`` (ids unique across the stack)
    that overlap enough (see :func:`link_weights`, :func:`greedy_merge`), as micro-sam's automatic
    3D segmentation merges its per-plane results. Returns uint32 labels numbered 1..n in order of
    each object's smallest original id."""
    pairs, fractions = overlap_edges(labels)
    n = int(labels.max()) + 1
    root = greedy_merge(n, pairs, link_weights(fractions)) if len(pairs) else np.arange(n)
    present = np.zeros(n, bool)
    present[root[np.unique(labels)]] = True
    present[0] = False
    mapping = np.zeros(n, np.uint32)
    mapping[present] = np.arange(1, int(present.sum()) + 1, dtype=np.uint32)
    return mapping[root][labels]
