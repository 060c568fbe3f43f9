"""The order in which llama.cpp's std::unordered_map<std::string, id> walks a vocabulary.

llama.cpp guesses the EOT and FIM tokens by scanning `token_to_id` (an unordered_map)
for known texts and keeps the first hit, so with two candidates (SmolLM2 has both
<|endoftext|> and <|im_end|>) the winner depends on libstdc++'s hash table layout. We
replay it: std::hash<std::string> is _Hash_bytes (a MurmurHash2 variant, seed
0xc70f6907), buckets are hash % bucket_count, the bucket count grows through
libstdc++'s prime list, and the node list is rebuilt on every rehash exactly as
_Hashtable::_M_rehash_aux does. Each stretch between rehashes is resolved with one
NumPy sort, so even a 262k vocabulary takes a fraction of a second.
"""

from __future__ import annotations

import bisect
import itertools

import numpy as np

_SEED = 0xC70F6907
_MUL = 0xC6A4A7935BD1E995
_FAST_BKT = (2, 2, 2, 3, 5, 5, 7, 7, 11, 11, 11, 11, 13, 13)
# std::__detail::__prime_list of libstdc++ (GCC 12), the entries below 2**32
_PRIMES = (
    2, 3, 5, 7, 11, 13, 17, 19, 23, 29, 31, 37, 41, 43, 47, 53, 59, 61, 67, 71, 73, 79, 83, 89, 97, 103,
    109, 113, 127, 137, 139, 149, 157, 167, 179, 193, 199, 211, 227, 241, 257, 277, 293, 313, 337, 359,
    383, 409, 439, 467, 503, 541, 577, 619, 661, 709, 761, 823, 887, 953, 1031, 1109, 1193, 1289, 1381,
    1493, 1613, 1741, 1879, 2029, 2179, 2357, 2549, 2753, 2971, 3209, 3469, 3739, 4027, 4349, 4703,
    5087, 5503, 5953, 6427, 6949, 7517, 8123, 8783, 9497, 10273, 11113, 12011, 12983, 14033, 15173,
    16411, 17749, 19183, 20753, 22447, 24281, 26267, 28411, 30727, 33223, 35933, 38873, 42043, 45481,
    49201, 53201, 57557, 62233, 67307, 72817, 78779, 85229, 92203, 99733, 107897, 116731, 126271,
    136607, 147793, 159871, 172933, 187091, 202409, 218971, 236897, 256279, 277261, 299951, 324503,
    351061, 379787, 410857, 444487, 480881, 520241, 562841, 608903, 658753, 712697, 771049, 834181,
    902483, 976369, 1056323, 1142821, 1236397, 1337629, 1447153, 1565659, 1693859, 1832561, 1982627,
    2144977, 2320627, 2510653, 2716249, 2938679, 3179303, 3439651, 3721303, 4026031, 4355707, 4712381,
    5098259, 5515729, 5967347, 6456007, 6984629, 7556579, 8175383, 8844859, 9569143, 10352717, 11200489,
    12117689, 13109983, 14183539, 15345007, 16601593, 17961079, 19431899, 21023161, 22744717, 24607243,
    26622317, 28802401, 31160981, 33712729, 36473443, 39460231, 42691603, 46187573, 49969847, 54061849,
    58488943, 63278561, 68460391, 74066549, 80131819, 86693767, 93793069, 101473717, 109783337,
    118773397, 128499677, 139022417, 150406843, 162723577, 176048909, 190465427, 206062531, 222936881,
    241193053, 260944219, 282312799, 305431229, 330442829, 357502601, 386778277, 418451333, 452718089,
    489790921, 529899637, 573292817, 620239453, 671030513, 725980837, 785430967, 849749479, 919334987,
    994618837, 1076067617, 1164186217, 1259520799, 1362662261, 1474249943, 1594975441, 1725587117,
    1866894511, 2019773507, 2185171673, 2364114217, 2557710269, 2767159799, 2993761039, 3238918481,
    3504151727, 3791104843, 4101556399, 4294967291
)  # fmt: skip


def hash_bytes(keys: list[bytes]) -> np.ndarray:
    """std::_Hash_bytes(key, len, 0xc70f6907) of every key, vectorized (uint64)."""
    n = len(keys)
    lengths = np.fromiter((len(k) for k in keys), dtype=np.intp, count=n)  # intp: wasm32 has 32-bit
    width = int(lengths.max(initial=0) // 8 + 1) * 8
    buf = np.zeros((n, width), dtype=np.uint8)
    flat = np.frombuffer(b"".join(keys), dtype=np.uint8)
    rows = np.repeat(np.arange(n), lengths)
    cols = np.arange(len(flat)) - np.repeat(np.cumsum(lengths) - lengths, lengths)
    buf[rows, cols] = flat
    words = buf.view("<u8")
    mul = np.uint64(_MUL)
    s47 = np.uint64(47)
    with np.errstate(over="ignore"):
        h = np.uint64(_SEED) ^ (lengths.astype(np.uint64) * mul)
        n_words = lengths // 8
        for w in range(words.shape[1]):
            full = n_words > w
            if not full.any():
                break
            d = words[full, w] * mul
            d = (d ^ (d >> s47)) * mul
            h[full] = (h[full] ^ d) * mul
        tail = (lengths % 8) != 0
        if tail.any():
            d = words[np.flatnonzero(tail), n_words[tail]]
            h[tail] = (h[tail] ^ d) * mul
        h = (h ^ (h >> s47)) * mul
        h = h ^ (h >> s47)
    return h


def _next_bkt(n: int) -> tuple[int, int]:
    """_Prime_rehash_policy::_M_next_bkt: (bucket count, next resize threshold)."""
    if n < len(_FAST_BKT):
        return _FAST_BKT[n], _FAST_BKT[n]
    p = _PRIMES[bisect.bisect_left(_PRIMES, n, 6)]
    return p, p


def _rehash_points(n: int) -> list[tuple[int, int]]:
    """(element count before the insert that triggers it, new bucket count) for n inserts."""
    points: list[tuple[int, int]] = []
    buckets, next_resize = 1, 0
    count = 0
    while count < n:
        if count + 1 > next_resize:
            min_bkts = max(count + 1, 0 if next_resize else 11)
            if min_bkts >= buckets:
                buckets, next_resize = _next_bkt(max(min_bkts + 1, buckets * 2))
                points.append((count, buckets))
            else:
                next_resize = buckets
        # no rehash until the element count passes next_resize
        count = max(count + 1, min(n, next_resize))
    return points


def iteration_order(keys: list[bytes]) -> np.ndarray:
    """Indices of `keys` (inserted in this order, all distinct) in unordered_map walk order."""
    n = len(keys)
    if n == 0:
        return np.zeros(0, dtype=np.int64)
    h = hash_bytes(keys)
    order = np.zeros(0, dtype=np.int64)
    points = [*_rehash_points(n), (n, 0)]
    for (start, buckets), (stop, _) in itertools.pairwise(points):
        b = np.uint64(buckets)
        # rehash: groups by bucket, the bucket met last in the old list comes first; inside
        # a group, nodes in reverse old order
        if len(order):
            bk = (h[order] % b).astype(np.int64)
            _, first, inv = np.unique(bk, return_index=True, return_inverse=True)
            pos = np.arange(len(order))
            order = order[np.lexsort((-pos, -first[inv]))]
        # inserts until the next rehash: a node joins the front of its bucket's group, or
        # starts a new group at the front of the list
        new = np.arange(start, stop, dtype=np.int64)
        if len(new) == 0:
            continue
        old_bk = (h[order] % b).astype(np.int64)
        new_bk = (h[new] % b).astype(np.int64)
        uo, ofirst, oinv = np.unique(old_bk, return_index=True, return_inverse=True)
        un, nfirst, ninv = np.unique(new_bk, return_index=True, return_inverse=True)
        if len(uo):
            idx = np.minimum(np.searchsorted(uo, un), len(uo) - 1)
            rank_new = np.where(uo[idx] == un, ofirst[idx], -1 - nfirst)
        else:
            rank_new = -1 - nfirst
        g = np.concatenate([ofirst[oinv], rank_new[ninv]])
        within = np.concatenate([np.arange(len(order)), -1 - np.arange(len(new))])
        order = np.concatenate([order, new])[np.lexsort((within, g))]
    return order


def first_in_walk(texts: list[str], candidates: list[str]) -> str:
    """The candidate text llama.cpp's walk over token_to_id meets first.

    token_to_id gets one node per distinct text, inserted in id order (a repeated text
    only updates the value), so the walk is over the distinct texts in first-seen order.
    """
    if len(candidates) == 1:
        return candidates[0]
    keys = list(dict.fromkeys(texts))
    order = iteration_order([k.encode("utf-8") for k in keys])
    rank = np.empty(len(order), dtype=np.int64)
    rank[order] = np.arange(len(order))
    node = {k: i for i, k in enumerate(keys) if k in set(candidates)}
    return min(candidates, key=lambda c: int(rank[node[c]]))
