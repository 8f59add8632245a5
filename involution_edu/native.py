r"""A native (C++) involution kernel, compiled on first use and called through ``ctypes``.

Why a native kernel? The eager op in :mod:`involution_edu.functional` launches one PyTorch
operation per kernel tap, so every one of the ``K^2`` taps reads and writes the whole output
again (``K^2 = 49`` passes over memory for ``K = 7``). A compiled loop can do what the
paper's CUDA kernel does: visit each output element once and loop over its ``K x K``
taps while the data sit in registers and cache.

Layout trick. Inside one group, the ``C/G`` channels share every kernel value. So the
kernel works "channels last": the innermost operation multiplies one kernel value by the
vector of the group's channels at one pixel (16 floats = one AVX-512 register for the
default ``group_channels=16``)::

    for each (b, g)                                  # in parallel (OpenMP), one task each
        xs = x[b, group g] as (H, W, C/G)            # a transposing copy, with a zero border
        for each output pixel (i, j)
            acc[0:C/G] = 0                           # in registers
            for each tap (u, v)
                acc += kernels[b, g, u, v, i, j] * xs[i*s + u*d - p, j*s + v*d - p, :]
            out[b, group g, i, j] = acc              # transposed back to the caller's layout

The zero border means no tap needs a bounds check. For the RedNet case (stride 1,
dilation 1, 16 channels per group, K = 3 or 7) specialised loops fix K at compile time,
work on 8 neighbouring pixels at once (8 independent accumulators that share the x vectors
they read) and prefetch the kernel rows. The backward pass has the same shape:

* ``grad_kernels[b, g, u, v, i, j] = sum_{c in g} grad_out[b, c, i, j] * x[b, c, i*s+u*d-p, j*s+v*d-p]``:
  a dot product over the group's channels per tap (8 pixels' dot products are summed
  together with a shuffle tree);
* ``grad_x[b, c, h, w]`` gathers over the taps whose output pixel ``i = (h + p - u*d) / s``
  is an integer inside the output (or, in the general case, each output pixel adds its
  contributions into the task's private scratch: no atomics, each task owns its group).

Memory: forward + backward allocate the output, ``grad_x``, ``grad_kernels`` and, per
thread, one group's padded planes (allocated as torch tensors so that
:func:`involution_edu.memory.peak_extra_memory` counts them), nothing else. Any strides
are accepted, ``grad_out`` included; channels-last inputs give channels-last outputs.

The source is compiled with the system C++ compiler (``$CXX``, else ``g++``, else ``c++``;
flags ``-O3 -march=native -fopenmp``, retried without the last two) into a cache directory (``$INVOLUTION_EDU_CACHE``, else
``$XDG_CACHE_HOME/involution_edu`` or ``~/.cache/involution_edu``), keyed by a hash of the
source, the flags and the CPU, so later processes load it in milliseconds (a first build
takes a few seconds). If there is no compiler or the build fails (the source uses GCC's
vector extensions), :func:`native_available` returns ``False``, :func:`native_error` says
why, and :func:`involution_edu.functional.involution` with ``backend="auto"`` uses the eager
op instead. ``INVOLUTION_EDU_NATIVE=0`` turns the native kernel off. Calls with less than
:data:`PARALLEL_MIN_WORK` multiply-adds run on one thread.
"""

from __future__ import annotations

import ctypes
import hashlib
import os
import platform
import shutil
import subprocess
import sys
import tempfile
import threading
import time
from pathlib import Path
from typing import Optional, Tuple

import torch

__all__ = [
    "KERNEL_SOURCE",
    "native_available",
    "native_error",
    "native_compile_seconds",
    "native_supports",
    "load_native",
    "native_forward",
    "native_backward",
]

KERNEL_SOURCE = r"""
// Involution on the CPU, forward and backward, float and double.   (see involution_edu/native.py)
//
//   out[b, c, i, j] = sum_{u, v} k[b, g(c), u, v, i, j] * x[b, c, i*s + u*d - p, j*s + v*d - p]
//
// Work is split over (sample b, group g) pairs, one OpenMP task each. A task copies its group's
// channels of x into a scratch plane laid out "channels last" (the C/G channels of one pixel are
// adjacent, so one kernel value multiplies a whole vector of channels) with zero borders (so no
// tap needs a bounds check), computes, and copies the result back to the caller's layout.
#include <cstdint>
#include <cstring>
#include <vector>
#ifdef _OPENMP
#include <omp.h>
#endif

typedef int64_t i64;

// ---------------------------------------------------------------------------------------------
// Geometry of one call; dims = {B, C, H, W, G, K, Ho, Wo, s, p, d}.
// The x scratch holds logical rows [-p, hx - p) and columns [-p, wx - p), zero outside x.
struct Geo {
    i64 B, C, H, W, G, K, Ho, Wo, s, p, d, cg;
    i64 cgp;      // channels per group rounded up to whole vectors: the scratch's channel stride
    i64 hx, wx;   // rows and columns of the padded x scratch
    std::vector<i64> ulo, uhi;  // kernel rows u in [ulo[i], uhi[i]) land inside x for output row i
    Geo(const i64* dims, i64 width) {
        B = dims[0]; C = dims[1]; H = dims[2]; W = dims[3]; G = dims[4]; K = dims[5];
        Ho = dims[6]; Wo = dims[7]; s = dims[8]; p = dims[9]; d = dims[10]; cg = C / G;
        cgp = (cg + width - 1) / width * width;
        const i64 last_row = (Ho - 1) * s + (K - 1) * d - p, last_col = (Wo - 1) * s + (K - 1) * d - p;
        hx = p + (H > last_row + 1 ? H : last_row + 1);
        wx = p + (W > last_col + 1 ? W : last_col + 1);
        ulo.assign(Ho, 0); uhi.assign(Ho, 0);
        for (i64 i = 0; i < Ho; ++i) {
            i64 first = K, last = -1;
            for (i64 u = 0; u < K; ++u) {
                const i64 r = i * s + u * d - p;
                if (r >= 0 && r < H) { if (first == K) first = u; last = u; }
            }
            ulo[i] = first; uhi[i] = (last < 0) ? first : last + 1;
        }
    }
    i64 x_plane() const { return hx * wx * cgp; }
    i64 out_plane() const { return Ho * Wo * cgp; }
    i64 x_origin() const { return (p * wx + p) * cgp; }  // offset of logical pixel (0, 0)
};

// ---------------------------------------------------------------------------------------------
// Vectors of W elements (GCC/Clang vector extensions: the compiler picks the instructions).
template <typename T, int W> struct Vec { typedef T type __attribute__((vector_size(sizeof(T) * W))); };

template <typename T, int W>
static inline typename Vec<T, W>::type load(const T* p) {
    typename Vec<T, W>::type v;
    std::memcpy(&v, p, sizeof(v));
    return v;
}

template <typename T, int W>
static inline void store(T* p, const typename Vec<T, W>::type& v) { std::memcpy(p, &v, sizeof(v)); }

typedef float f16v __attribute__((vector_size(64)));
typedef int32_t i16v __attribute__((vector_size(64)));

// Shuffle masks: 16 x 16 transposes, and the "reduce-transpose" that sums 8 vectors at once.
struct Masks {
    i16v lo[4], hi[4];          // transpose round t swaps bit t of the row and column index
    i16v ra[3], rb[3], swap, even;
    Masks() {
        for (int t = 0; t < 4; ++t) {
            const int b = 1 << t;
            for (int c = 0; c < 16; ++c) {
                lo[t][c] = (c & b) == 0 ? c : 16 + (c ^ b);
                hi[t][c] = (c & b) == 0 ? (c | b) : 16 + c;
            }
        }
        for (int t = 0; t < 3; ++t) {
            const int h = 8 >> t;
            for (int c = 0; c < 16; ++c) {
                ra[t][c] = (c & h) ? 16 + (c - h) : c;
                rb[t][c] = (c & h) ? 16 + c : c + h;
            }
        }
        for (int c = 0; c < 16; ++c) { swap[c] = c ^ 1; even[c] = (2 * c) % 16; }
    }
};
static const Masks kMasks;

// r[a][b] -> r[b][a] for 16 vectors of 16 floats.
static inline __attribute__((always_inline)) void transpose16(f16v* r) {
#pragma GCC unroll 4
    for (int t = 0; t < 4; ++t) {
        const int b = 1 << t;
#pragma GCC unroll 16
        for (int i = 0; i < 16; ++i)
            if (!(i & b)) {
                const f16v a = r[i], c = r[i | b];
                r[i] = __builtin_shuffle(a, c, kMasks.lo[t]);
                r[i | b] = __builtin_shuffle(a, c, kMasks.hi[t]);
            }
    }
}

// Lane l (l < 8) of the result = the sum of the 16 lanes of p[l]. Each round adds pairs of lanes
// and packs two vectors into one, so 8 sums cost 7 vector adds instead of 8 horizontal sums.
static inline __attribute__((always_inline)) f16v reduce8(const f16v* p) {
    f16v q[4], r[2];
#pragma GCC unroll 4
    for (int l = 0; l < 4; ++l)
        q[l] = __builtin_shuffle(p[l], p[l + 4], kMasks.ra[0]) + __builtin_shuffle(p[l], p[l + 4], kMasks.rb[0]);
#pragma GCC unroll 2
    for (int l = 0; l < 2; ++l)
        r[l] = __builtin_shuffle(q[l], q[l + 2], kMasks.ra[1]) + __builtin_shuffle(q[l], q[l + 2], kMasks.rb[1]);
    f16v t = __builtin_shuffle(r[0], r[1], kMasks.ra[2]) + __builtin_shuffle(r[0], r[1], kMasks.rb[2]);
    t += __builtin_shuffle(t, t, kMasks.swap);  // lane 2l now holds the sum of p[l]
    return __builtin_shuffle(t, t, kMasks.even);
}

// ---------------------------------------------------------------------------------------------
// Layout changes. A (B, C, rows, cols) tensor with element strides st = {b, c, h, w}; the scratch
// holds pixel (r, q) of the group at dst[((r + off) * pitch + q + off) * cgp + channel].

static void gather16(const float* src, i64 cs, i64 rows, i64 cols, float* dst, i64 pitch, i64 off) {
    const i64 n_all = rows * cols;
    i64 n0 = 0, r0 = 0, q0 = 0;  // pixel n0 = r0 * cols + q0
    f16v v[16];
    for (; n0 + 16 <= n_all; n0 += 16) {
#pragma GCC unroll 16
        for (int c = 0; c < 16; ++c) std::memcpy(&v[c], src + c * cs + n0, sizeof(f16v));
        transpose16(v);
#pragma GCC unroll 16
        for (int l = 0; l < 16; ++l) {
            std::memcpy(dst + ((r0 + off) * pitch + q0 + off) * 16, &v[l], sizeof(f16v));
            if (++q0 == cols) { q0 = 0; ++r0; }
        }
    }
    for (; n0 < n_all; ++n0) {
        for (int c = 0; c < 16; ++c) dst[((r0 + off) * pitch + q0 + off) * 16 + c] = src[c * cs + n0];
        if (++q0 == cols) { q0 = 0; ++r0; }
    }
}

static void scatter16(const float* src, i64 pitch, i64 off, i64 rows, i64 cols, float* dst, i64 cs) {
    const i64 n_all = rows * cols;
    i64 n0 = 0, r0 = 0, q0 = 0;
    f16v v[16];
    for (; n0 + 16 <= n_all; n0 += 16) {
#pragma GCC unroll 16
        for (int l = 0; l < 16; ++l) {
            std::memcpy(&v[l], src + ((r0 + off) * pitch + q0 + off) * 16, sizeof(f16v));
            if (++q0 == cols) { q0 = 0; ++r0; }
        }
        transpose16(v);
#pragma GCC unroll 16
        for (int c = 0; c < 16; ++c) std::memcpy(dst + c * cs + n0, &v[c], sizeof(f16v));
    }
    for (; n0 < n_all; ++n0) {
        for (int c = 0; c < 16; ++c) dst[c * cs + n0] = src[((r0 + off) * pitch + q0 + off) * 16 + c];
        if (++q0 == cols) { q0 = 0; ++r0; }
    }
}

static inline bool plane_contiguous(const i64* st, i64 cols) { return st[3] == 1 && st[2] == cols; }

// Channels [c0, c0 + cg) of sample b -> zero-bordered channels-last scratch of prows x pitch pixels.
template <typename T>
static void gather(const T* base, const i64* st, i64 b, i64 c0, i64 cg, i64 rows, i64 cols, T* dst,
                   i64 prows, i64 pitch, i64 off, i64 cgp) {
    const T* src = base + b * st[0] + c0 * st[1];
    if constexpr (sizeof(T) == sizeof(float)) {
        if (cg == 16 && cgp == 16 && plane_contiguous(st, cols)) {  // zero the border only, then transpose
            std::memset(dst, 0, sizeof(T) * off * pitch * cgp);
            std::memset(dst + (off + rows) * pitch * cgp, 0, sizeof(T) * (prows - off - rows) * pitch * cgp);
            for (i64 r = off; r < off + rows; ++r) {
                std::memset(dst + r * pitch * cgp, 0, sizeof(T) * off * cgp);
                std::memset(dst + (r * pitch + off + cols) * cgp, 0, sizeof(T) * (pitch - off - cols) * cgp);
            }
            gather16(reinterpret_cast<const float*>(src), st[1], rows, cols, reinterpret_cast<float*>(dst), pitch, off);
            return;
        }
    }
    std::memset(dst, 0, sizeof(T) * prows * pitch * cgp);
    for (i64 c = 0; c < cg; ++c)
        for (i64 r = 0; r < rows; ++r) {
            const T* s_row = src + c * st[1] + r * st[2];
            T* d_row = dst + ((r + off) * pitch + off) * cgp + c;
            for (i64 q = 0; q < cols; ++q) d_row[q * cgp] = s_row[q * st[3]];
        }
}

// The inverse of gather (without the border): scratch -> channels [c0, c0 + cg) of sample b.
template <typename T>
static void scatter(const T* src, i64 pitch, i64 off, i64 cgp, T* base, const i64* st, i64 b, i64 c0,
                    i64 cg, i64 rows, i64 cols) {
    T* dst = base + b * st[0] + c0 * st[1];
    if constexpr (sizeof(T) == sizeof(float)) {
        if (cg == 16 && cgp == 16 && plane_contiguous(st, cols)) {
            scatter16(reinterpret_cast<const float*>(src), pitch, off, rows, cols, reinterpret_cast<float*>(dst), st[1]);
            return;
        }
    }
    for (i64 c = 0; c < cg; ++c)
        for (i64 r = 0; r < rows; ++r) {
            const T* s_row = src + ((r + off) * pitch + off) * cgp + c;
            T* d_row = dst + c * st[1] + r * st[2];
            for (i64 q = 0; q < cols; ++q) d_row[q * st[3]] = s_row[q * cgp];
        }
}

// ---------------------------------------------------------------------------------------------
// General kernels: any stride, dilation, padding, K and group size (vectors of W channels).
// xs points at logical pixel (0, 0) of the zero-bordered x scratch; k at kernels[b, g] with
// strides ks = {u, v, i, j}; os / gos are compact (Ho, Wo, cgp) scratch planes.

// out(i, j) = sum_{u, v} k(u, v, i, j) * x(i*s + u*d - p, j*s + v*d - p)
template <typename T, int W>
static void forward_group(const Geo& g, const T* xs, const T* k, const i64* ks, T* os) {
    typedef typename Vec<T, W>::type V;
    const i64 cgp = g.cgp, row_pitch = g.wx * cgp;
    for (i64 ch = 0; ch < cgp; ch += W)
        for (i64 i = 0; i < g.Ho; ++i)
            for (i64 j = 0; j < g.Wo; ++j) {
                V acc = V{};
                for (i64 u = g.ulo[i]; u < g.uhi[i]; ++u) {
                    const T* xr = xs + (i * g.s + u * g.d - g.p) * row_pitch + (j * g.s - g.p) * cgp + ch;
                    const T* kp = k + u * ks[0] + i * ks[2] + j * ks[3];
                    for (i64 v = 0; v < g.K; ++v) acc += kp[v * ks[1]] * load<T, W>(xr + v * g.d * cgp);
                }
                store<T, W>(os + (i * g.Wo + j) * cgp + ch, acc);
            }
}

// grad_k(u, v, i, j) = sum_c grad_out(i, j, c) * x(i*s + u*d - p, j*s + v*d - p, c)
template <typename T, int W>
static void grad_kernels_group(const Geo& g, const T* xs, const T* gos, T* gk, const i64* gks) {
    typedef typename Vec<T, W>::type V;
    const i64 cgp = g.cgp, row_pitch = g.wx * cgp;
    for (i64 i = 0; i < g.Ho; ++i)
        for (i64 j = 0; j < g.Wo; ++j) {
            const T* gv = gos + (i * g.Wo + j) * cgp;
            T* dst = gk + i * gks[2] + j * gks[3];
            for (i64 u = 0; u < g.K; ++u) {
                const T* xr = xs + (i * g.s + u * g.d - g.p) * row_pitch + (j * g.s - g.p) * cgp;
                for (i64 v = 0; v < g.K; ++v) {
                    const T* xv = xr + v * g.d * cgp;
                    V prod = load<T, W>(gv) * load<T, W>(xv);
                    for (i64 ch = W; ch < cgp; ch += W) prod += load<T, W>(gv + ch) * load<T, W>(xv + ch);
                    T lanes[W];
                    std::memcpy(lanes, &prod, sizeof(prod));
                    for (int width = W / 2; width > 0; width /= 2)  // fixed pairwise order
                        for (int c = 0; c < width; ++c) lanes[c] += lanes[c + width];
                    dst[u * gks[0] + v * gks[1]] = lanes[0];
                }
            }
        }
}

// grad_x: each output pixel adds k(u, v, i, j) * grad_out(i, j) to the pixels it read, in the
// zero-bordered scratch gxs (the border is discarded). One task owns the scratch: no races.
template <typename T, int W>
static void grad_x_group(const Geo& g, const T* gos, const T* k, const i64* ks, T* gxs) {
    typedef typename Vec<T, W>::type V;
    const i64 cgp = g.cgp, row_pitch = g.wx * cgp;
    for (i64 ch = 0; ch < cgp; ch += W)
        for (i64 i = 0; i < g.Ho; ++i)
            for (i64 j = 0; j < g.Wo; ++j) {
                const V gv = load<T, W>(gos + (i * g.Wo + j) * cgp + ch);
                const T* kp = k + i * ks[2] + j * ks[3];
                for (i64 u = g.ulo[i]; u < g.uhi[i]; ++u) {
                    T* xr = gxs + (i * g.s + u * g.d - g.p) * row_pitch + (j * g.s - g.p) * cgp + ch;
                    for (i64 v = 0; v < g.K; ++v) {
                        T* cell = xr + v * g.d * cgp;
                        store<T, W>(cell, load<T, W>(cell) + kp[u * ks[0] + v * ks[1]] * gv);
                    }
                }
            }
}

// ---------------------------------------------------------------------------------------------
// Specialised kernels for the common case: stride 1, dilation 1, one vector of W channels per
// pixel (16 floats = 512 bits for the default 16 channels per group), K fixed at compile time and
// kernels with unit stride along j. Blocks of NB neighbouring output pixels share the x vectors
// they read and keep NB independent accumulators in registers.

template <typename T, int W, int K, int NB>
static inline __attribute__((always_inline)) void forward_block(const Geo& g, const T* xs, const T* k,
                                                               const i64* ks, i64 i, i64 j, T* os) {
    typedef typename Vec<T, W>::type V;
    V acc[NB];
#pragma GCC unroll 8
    for (int q = 0; q < NB; ++q) acc[q] = V{};
    for (i64 u = g.ulo[i]; u < g.uhi[i]; ++u) {
        const T* xv = xs + ((i + u - g.p) * g.wx + j - g.p) * W;
        const T* kp = k + u * ks[0] + i * ks[2] + j;
#pragma GCC unroll 8
        for (int v = 0; v < K; ++v) {
            __builtin_prefetch(kp + 32);  // this kernel row, two cache lines ahead
#pragma GCC unroll 8
            for (int q = 0; q < NB; ++q) acc[q] += kp[q] * load<T, W>(xv + (v + q) * W);
            kp += ks[1];
        }
    }
#pragma GCC unroll 8
    for (int q = 0; q < NB; ++q) store<T, W>(os + (i * g.Wo + j + q) * W, acc[q]);
}

template <typename T, int W, int K>
static void forward_group_unit(const Geo& g, const T* xs, const T* k, const i64* ks, T* os) {
    constexpr int NB = sizeof(T) == 4 ? 8 : 4;
    for (i64 i = 0; i < g.Ho; ++i) {
        i64 j = 0;
        for (; j + NB <= g.Wo; j += NB) forward_block<T, W, K, NB>(g, xs, k, ks, i, j, os);
        if (NB > 4 && j + 4 <= g.Wo) { forward_block<T, W, K, 4>(g, xs, k, ks, i, j, os); j += 4; }
        for (; j + 2 <= g.Wo; j += 2) forward_block<T, W, K, 2>(g, xs, k, ks, i, j, os);
        for (; j < g.Wo; ++j) forward_block<T, W, K, 1>(g, xs, k, ks, i, j, os);
    }
}

// grad_k for 8 output pixels at a time (consecutive in memory, possibly across rows): 8 products
// of 16-channel vectors, one reduce8, one store of 8 floats. Kernels plane must be contiguous.
template <int K>
static void grad_kernels_unit(const Geo& g, const float* xs, const float* gos, float* gk, const i64* gks) {
    const i64 n_all = g.Ho * g.Wo;
    i64 n0 = 0, i0 = 0, j0 = 0;  // pixel n0 = i0 * Wo + j0
    for (; n0 + 8 <= n_all; n0 += 8) {
        f16v go[8], prod[8];
        const float* xq[8];  // x(i - p, j - p) for each of the 8 pixels
#pragma GCC unroll 8
        for (int q = 0; q < 8; ++q) {
            go[q] = load<float, 16>(gos + (n0 + q) * 16);
            xq[q] = xs + ((i0 - g.p) * g.wx + j0 - g.p) * 16;
            if (++j0 == g.Wo) { j0 = 0; ++i0; }
        }
        for (int u = 0; u < K; ++u) {
#pragma GCC unroll 8
            for (int v = 0; v < K; ++v) {
                const i64 tap = (u * g.wx + v) * 16;
#pragma GCC unroll 8
                for (int q = 0; q < 8; ++q) prod[q] = go[q] * load<float, 16>(xq[q] + tap);
                const f16v sums = reduce8(prod);
                std::memcpy(gk + u * gks[0] + v * gks[1] + n0, &sums, 8 * sizeof(float));
            }
        }
    }
    for (; n0 < n_all; ++n0) {  // the last few pixels, one at a time
        const f16v go = load<float, 16>(gos + n0 * 16);
        const float* x0 = xs + ((i0 - g.p) * g.wx + j0 - g.p) * 16;
        for (int u = 0; u < K; ++u)
            for (int v = 0; v < K; ++v) {
                float lanes[16];
                const f16v prod = go * load<float, 16>(x0 + (u * g.wx + v) * 16);
                std::memcpy(lanes, &prod, sizeof(prod));
                for (int width = 8; width > 0; width /= 2)
                    for (int c = 0; c < width; ++c) lanes[c] += lanes[c + width];
                gk[u * gks[0] + v * gks[1] + n0] = lanes[0];
            }
        if (++j0 == g.Wo) { j0 = 0; ++i0; }
    }
}

// grad_x(h, w) = sum_{u, v} k(u, v, i, j) * grad_out(i, j) over i = h + p - u, j = w + p - v inside
// the output: a gather shaped like the forward pass, registers accumulate, no scatter.
template <int K, int NB>
static inline __attribute__((always_inline)) void grad_x_block(const Geo& g, const float* gos, const float* k,
                                                               const i64* ks, i64 h, i64 w, float* gxs) {
    f16v acc[NB];
#pragma GCC unroll 8
    for (int q = 0; q < NB; ++q) acc[q] = f16v{};
    const i64 u0 = h + g.p - (g.Ho - 1) > 0 ? h + g.p - (g.Ho - 1) : 0;
    const i64 u1 = h + g.p + 1 < K ? h + g.p + 1 : K;
    for (i64 u = u0; u < u1; ++u) {
        const i64 i = h + g.p - u;
        const float* kp = k + u * ks[0] + i * ks[2] + w + g.p;  // k(u, 0, i, w + p)
        const float* gv = gos + (i * g.Wo + w + g.p) * 16;      // grad_out(i, w + p)
#pragma GCC unroll 8
        for (int v = 0; v < K; ++v) {
            __builtin_prefetch(kp + 32);
#pragma GCC unroll 8
            for (int q = 0; q < NB; ++q) acc[q] += kp[q] * load<float, 16>(gv + q * 16);
            kp += ks[1] - 1;  // next tap reads one column to the left
            gv -= 16;
        }
    }
#pragma GCC unroll 8
    for (int q = 0; q < NB; ++q) store<float, 16>(gxs + (h * g.W + w + q) * 16, acc[q]);
}

template <int K>
static void grad_x_unit(const Geo& g, const float* gos, const float* k, const i64* ks, float* gxs) {
    // Columns w whose K taps all land inside the output: K - 1 - p <= w <= Wo - 1 - p.
    const i64 w_first = K - 1 - g.p > 0 ? K - 1 - g.p : 0;
    const i64 w_end = g.Wo - g.p < g.W ? g.Wo - g.p : g.W;  // exclusive
    for (i64 h = 0; h < g.H; ++h) {
        auto border = [&](i64 w) {  // a column near the edge: only the taps that land inside
            f16v acc = f16v{};
            for (i64 u = 0; u < K; ++u) {
                const i64 i = h + g.p - u;
                if (i < 0 || i >= g.Ho) continue;
                for (i64 v = 0; v < K; ++v) {
                    const i64 j = w + g.p - v;
                    if (j < 0 || j >= g.Wo) continue;
                    acc += k[u * ks[0] + v * ks[1] + i * ks[2] + j] * load<float, 16>(gos + (i * g.Wo + j) * 16);
                }
            }
            store<float, 16>(gxs + (h * g.W + w) * 16, acc);
        };
        i64 w = 0;
        for (; w < g.W && w < w_first; ++w) border(w);
        for (; w + 8 <= w_end; w += 8) grad_x_block<K, 8>(g, gos, k, ks, h, w, gxs);
        for (; w + 2 <= w_end; w += 2) grad_x_block<K, 2>(g, gos, k, ks, h, w, gxs);
        for (; w < w_end; ++w) grad_x_block<K, 1>(g, gos, k, ks, h, w, gxs);
        for (; w < g.W; ++w) border(w);
    }
}

// ---------------------------------------------------------------------------------------------
// Drivers: one task per (b, g); each thread has its own scratch (per_thread elements).

static inline int thread_id() {
#ifdef _OPENMP
    return omp_get_thread_num();
#else
    return 0;
#endif
}

template <typename T, int W, int KT>
static void forward_all(const i64* dims, const T* x, const i64* xst, const T* k, const i64* kst, T* out,
                        const i64* ost, T* scratch, i64 per_thread, int threads) {
    const Geo g(dims, W);
    const bool unit = KT > 0 && g.s == 1 && g.d == 1 && g.cgp == W && kst[5] == 1;
    const i64 tasks = g.B * g.G;
#pragma omp parallel for schedule(dynamic, 1) num_threads(threads)
    for (i64 t = 0; t < tasks; ++t) {
        T* xs = scratch + thread_id() * per_thread;
        T* os = xs + g.x_plane();
        const i64 b = t / g.G, grp = t % g.G, c0 = grp * g.cg;
        const T* kg = k + b * kst[0] + grp * kst[1];
        gather(x, xst, b, c0, g.cg, g.H, g.W, xs, g.hx, g.wx, g.p, g.cgp);
        if (unit)
            forward_group_unit<T, W, (KT > 0 ? KT : 1)>(g, xs + g.x_origin(), kg, kst + 2, os);
        else
            forward_group<T, W>(g, xs + g.x_origin(), kg, kst + 2, os);
        scatter(os, g.Wo, 0, g.cgp, out, ost, b, c0, g.cg, g.Ho, g.Wo);
    }
}

template <typename T, int W, int KT>
static void backward_all(const i64* dims, const T* x, const i64* xst, const T* k, const i64* kst, const T* go,
                         const i64* gost, T* gx, const i64* gxst, T* gk, const i64* gkst, T* scratch,
                         i64 per_thread, int threads) {
    const Geo g(dims, W);
    const bool unit = sizeof(T) == sizeof(float) && W == 16 && KT > 0 && g.s == 1 && g.d == 1 && g.cgp == 16 &&
                      kst[5] == 1 && (!gk || (gkst[5] == 1 && gkst[4] == g.Wo));
    const i64 tasks = g.B * g.G;
#pragma omp parallel for schedule(dynamic, 1) num_threads(threads)
    for (i64 t = 0; t < tasks; ++t) {
        T* gos = scratch + thread_id() * per_thread;
        T* xs = gos + g.out_plane();  // x for grad_k, then reused for grad_x
        const i64 b = t / g.G, grp = t % g.G, c0 = grp * g.cg;
        const T* kg = k + b * kst[0] + grp * kst[1];
        gather(go, gost, b, c0, g.cg, g.Ho, g.Wo, gos, g.Ho, g.Wo, 0, g.cgp);
        if constexpr (sizeof(T) == sizeof(float) && W == 16 && KT > 0) {
            if (unit) {
                const float* gof = reinterpret_cast<const float*>(gos);
                float* xsf = reinterpret_cast<float*>(xs);
                if (gk) {
                    gather(x, xst, b, c0, g.cg, g.H, g.W, xs, g.hx, g.wx, g.p, g.cgp);
                    grad_kernels_unit<KT>(g, xsf + g.x_origin(), gof,
                                          reinterpret_cast<float*>(gk + b * gkst[0] + grp * gkst[1]), gkst + 2);
                }
                if (gx) {
                    grad_x_unit<KT>(g, gof, reinterpret_cast<const float*>(kg), kst + 2, xsf);
                    scatter(xs, g.W, 0, g.cgp, gx, gxst, b, c0, g.cg, g.H, g.W);
                }
                continue;
            }
        }
        if (gk) {
            gather(x, xst, b, c0, g.cg, g.H, g.W, xs, g.hx, g.wx, g.p, g.cgp);
            grad_kernels_group<T, W>(g, xs + g.x_origin(), gos, gk + b * gkst[0] + grp * gkst[1], gkst + 2);
        }
        if (gx) {
            std::memset(xs, 0, sizeof(T) * g.x_plane());
            grad_x_group<T, W>(g, gos, kg, kst + 2, xs + g.x_origin());
            scatter(xs, g.wx, g.p, g.cgp, gx, gxst, b, c0, g.cg, g.H, g.W);
        }
    }
}

// Vector width for a group of cg channels: the smallest of 4, 8, 16 that holds it, else 16 (larger
// groups are processed as several vectors).
static inline int width_for(i64 cg) { return cg <= 4 ? 4 : cg <= 8 ? 8 : 16; }

template <typename T>
static void forward_dispatch(const i64* dims, const T* x, const i64* xs, const T* k, const i64* ks, T* out,
                             const i64* os, T* scratch, i64 per_thread, int threads) {
    const int width = width_for(dims[1] / dims[4]);
    const i64 K = dims[5];
    if (width == 16 && K == 7) forward_all<T, 16, 7>(dims, x, xs, k, ks, out, os, scratch, per_thread, threads);
    else if (width == 16 && K == 3) forward_all<T, 16, 3>(dims, x, xs, k, ks, out, os, scratch, per_thread, threads);
    else if (width == 16) forward_all<T, 16, 0>(dims, x, xs, k, ks, out, os, scratch, per_thread, threads);
    else if (width == 8) forward_all<T, 8, 0>(dims, x, xs, k, ks, out, os, scratch, per_thread, threads);
    else forward_all<T, 4, 0>(dims, x, xs, k, ks, out, os, scratch, per_thread, threads);
}

template <typename T>
static void backward_dispatch(const i64* dims, const T* x, const i64* xs, const T* k, const i64* ks, const T* go,
                              const i64* gos, T* gx, const i64* gxs, T* gk, const i64* gks, T* scratch,
                              i64 per_thread, int threads) {
    const int width = width_for(dims[1] / dims[4]);
    const i64 K = dims[5];
    if (width == 16 && K == 7)
        backward_all<T, 16, 7>(dims, x, xs, k, ks, go, gos, gx, gxs, gk, gks, scratch, per_thread, threads);
    else if (width == 16 && K == 3)
        backward_all<T, 16, 3>(dims, x, xs, k, ks, go, gos, gx, gxs, gk, gks, scratch, per_thread, threads);
    else if (width == 16)
        backward_all<T, 16, 0>(dims, x, xs, k, ks, go, gos, gx, gxs, gk, gks, scratch, per_thread, threads);
    else if (width == 8)
        backward_all<T, 8, 0>(dims, x, xs, k, ks, go, gos, gx, gxs, gk, gks, scratch, per_thread, threads);
    else
        backward_all<T, 4, 0>(dims, x, xs, k, ks, go, gos, gx, gxs, gk, gks, scratch, per_thread, threads);
}

extern "C" {
int involution_abi_version() { return 3; }

// Scratch elements each thread needs (the same for forward and backward): x plane + output plane.
i64 involution_scratch_per_thread(const i64* dims) {
    const Geo g(dims, width_for(dims[1] / dims[4]));
    return g.x_plane() + g.out_plane();
}

void involution_forward_f32(const i64* dims, const float* x, const i64* xs, const float* k, const i64* ks,
                            float* out, const i64* os, float* scratch, i64 per_thread, int threads) {
    forward_dispatch<float>(dims, x, xs, k, ks, out, os, scratch, per_thread, threads);
}
void involution_forward_f64(const i64* dims, const double* x, const i64* xs, const double* k, const i64* ks,
                            double* out, const i64* os, double* scratch, i64 per_thread, int threads) {
    forward_dispatch<double>(dims, x, xs, k, ks, out, os, scratch, per_thread, threads);
}
void involution_backward_f32(const i64* dims, const float* x, const i64* xs, const float* k, const i64* ks,
                             const float* go, const i64* gos, float* gx, const i64* gxs, float* gk,
                             const i64* gks, float* scratch, i64 per_thread, int threads) {
    backward_dispatch<float>(dims, x, xs, k, ks, go, gos, gx, gxs, gk, gks, scratch, per_thread, threads);
}
void involution_backward_f64(const i64* dims, const double* x, const i64* xs, const double* k, const i64* ks,
                             const double* go, const i64* gos, double* gx, const i64* gxs, double* gk,
                             const i64* gks, double* scratch, i64 per_thread, int threads) {
    backward_dispatch<double>(dims, x, xs, k, ks, go, gos, gx, gxs, gk, gks, scratch, per_thread, threads);
}
}
"""

_FLAGS = ["-O3", "-march=native", "-fopenmp", "-shared", "-fPIC", "-std=c++17"]
_FALLBACK_FLAGS = ["-O3", "-shared", "-fPIC", "-std=c++17"]  # no OpenMP / no -march=native

_lock = threading.Lock()
_library: Optional[ctypes.CDLL] = None
_error: Optional[str] = None
_compile_seconds: Optional[float] = None
_tried = False


def _cache_dir() -> Path:
    explicit = os.environ.get("INVOLUTION_EDU_CACHE")
    if explicit:
        return Path(explicit)
    base = os.environ.get("XDG_CACHE_HOME") or os.path.join(os.path.expanduser("~"), ".cache")
    return Path(base) / "involution_edu"


def _cpu_signature() -> str:
    """The CPU model and flags, so that a cache shared between machines never loads a foreign build."""
    try:
        with open("/proc/cpuinfo", encoding="utf-8", errors="replace") as handle:
            lines = [line for line in handle if line.startswith(("model name", "flags"))]
        return "".join(sorted(set(lines)))
    except OSError:
        return platform.processor() or platform.machine()


def _build(compiler: str, flags: list, source: Path, target: Path) -> Optional[str]:
    """Compile ``source`` into ``target``; return an error message or ``None``."""
    tmp = target.with_name(f"{target.stem}.{os.getpid()}.{threading.get_ident()}.tmp.so")
    command = [compiler, *flags, str(source), "-o", str(tmp)]
    try:
        result = subprocess.run(command, capture_output=True, text=True, timeout=300)
    except (OSError, subprocess.SubprocessError) as error:
        return f"{' '.join(command)} failed to run: {error}"
    if result.returncode != 0:
        tmp.unlink(missing_ok=True)
        return f"{' '.join(command)} failed:\n{result.stderr.strip()[-2000:]}"
    os.replace(tmp, target)  # atomic: a concurrent process sees either nothing or the whole file
    return None


def _declare(library: ctypes.CDLL) -> None:
    p, i64, c_int = ctypes.c_void_p, ctypes.c_int64, ctypes.c_int
    for name in ("involution_forward_f32", "involution_forward_f64"):
        function = getattr(library, name)
        function.argtypes = [p, p, p, p, p, p, p, p, i64, c_int]
        function.restype = None
    for name in ("involution_backward_f32", "involution_backward_f64"):
        function = getattr(library, name)
        function.argtypes = [p, p, p, p, p, p, p, p, p, p, p, p, i64, c_int]
        function.restype = None
    library.involution_scratch_per_thread.argtypes = [p]
    library.involution_scratch_per_thread.restype = i64


def load_native() -> Optional[ctypes.CDLL]:
    """Compile (first time) and load the kernel library; ``None`` if that is impossible here.

    Thread-safe and tried once per process; the reason for a failure is kept in
    :func:`native_error`. Set ``INVOLUTION_EDU_NATIVE=0`` to disable the native kernel.
    """
    global _library, _error, _compile_seconds, _tried
    if _tried:
        return _library
    with _lock:
        if _tried:
            return _library
        try:
            _library, _error, _compile_seconds = _load()
        except Exception as error:  # never let a broken toolchain break the library
            _library, _error = None, f"{type(error).__name__}: {error}"
        _tried = True
    return _library


def _load() -> Tuple[Optional[ctypes.CDLL], Optional[str], Optional[float]]:
    if os.environ.get("INVOLUTION_EDU_NATIVE", "1").strip().lower() in ("0", "false", "no", "off"):
        return None, "disabled by INVOLUTION_EDU_NATIVE=0", None
    if not sys.platform.startswith(("linux", "darwin")):
        return None, f"the native kernel is only built on Linux and macOS, not {sys.platform}", None
    requested = os.environ.get("CXX")
    compiler = (shutil.which(requested) if requested else None) or shutil.which("g++") or shutil.which("c++")
    if compiler is None:
        return None, "no C++ compiler found (set $CXX or install g++)", None
    errors = []
    for flags in (_FLAGS, _FALLBACK_FLAGS):
        key = hashlib.sha256("\0".join([KERNEL_SOURCE, compiler, *flags, _cpu_signature()]).encode()).hexdigest()[:16]
        for directory in (_cache_dir(), Path(tempfile.gettempdir()) / f"involution_edu_{os.getuid()}"):
            target = directory / f"involution_kernels_{key}.so"
            seconds = None
            try:
                directory.mkdir(parents=True, exist_ok=True)
                if not target.exists():
                    source = directory / f"involution_kernels_{key}.{os.getpid()}.{threading.get_ident()}.cpp"
                    source.write_text(KERNEL_SOURCE, encoding="utf-8")
                    start = time.perf_counter()
                    try:
                        problem = _build(compiler, flags, source, target)
                    finally:
                        source.unlink(missing_ok=True)
                    seconds = time.perf_counter() - start
                    if problem is not None:
                        errors.append(problem)
                        break  # the same flags fail in any directory: try the fallback flags
                library = ctypes.CDLL(str(target))
                if library.involution_abi_version() != 3:
                    raise OSError(f"{target} has an unexpected ABI version")
                _declare(library)
                return library, None, seconds
            except OSError as error:
                errors.append(f"{target}: {error}")
    return None, "could not build the native kernel: " + " | ".join(errors), None


def native_available() -> bool:
    """Whether the native kernel can be used in this process (compiles it on the first call)."""
    return load_native() is not None


def native_error() -> Optional[str]:
    """Why the native kernel is unavailable (``None`` when it is available or not tried yet)."""
    load_native()
    return _error


def native_compile_seconds() -> Optional[float]:
    """Seconds this process spent compiling the kernel (``None`` if it was loaded from the cache)."""
    load_native()
    return _compile_seconds


def native_supports(*tensors: torch.Tensor) -> bool:
    """Whether the native kernel handles these tensors: plain strided CPU tensors of dtype float32 or
    float64, outside ``torch.compile`` tracing (whose fake tensors have no data to hand to C++)."""
    if torch.compiler.is_compiling():
        return False
    return all(
        type(t) in (torch.Tensor, torch.nn.Parameter)
        and t.device.type == "cpu"
        and t.dtype in (torch.float32, torch.float64)
        and t.layout == torch.strided
        for t in tensors
    )


def _longs(values) -> "ctypes.Array":
    return (ctypes.c_int64 * len(values))(*[int(v) for v in values])


def _suffix(dtype: torch.dtype) -> str:
    return "f32" if dtype == torch.float32 else "f64"


PARALLEL_MIN_WORK = 1 << 20
"""Below this many multiply-adds (about 50 microseconds on one core) a call runs on one thread:
waking a second thread would cost more than it saves, and far more on a busy machine."""


def _threads(tasks: int, work: int) -> int:
    if work < PARALLEL_MIN_WORK:
        return 1
    return max(1, min(torch.get_num_threads(), tasks))


def _output_like(x: torch.Tensor, shape) -> torch.Tensor:
    """An empty tensor of ``shape`` in ``x``'s memory format (channels last if ``x`` is)."""
    channels_last = x.is_contiguous(memory_format=torch.channels_last) and not x.is_contiguous()
    memory_format = torch.channels_last if channels_last else torch.contiguous_format
    return torch.empty(shape, dtype=x.dtype, device=x.device, memory_format=memory_format)


def native_forward(
    x: torch.Tensor, kernels: torch.Tensor, stride: int, padding: int, dilation: int, out_h: int, out_w: int
) -> torch.Tensor:
    """Forward pass with the native kernel; arguments already validated.

    ``x``: ``(B, C, H, W)``, any strides; ``kernels``: ``(B, G, K, K, H', W')``, any strides.
    Returns ``(B, C, H', W')`` (channels last when ``x`` is).
    """
    library = load_native()
    if library is None:
        raise RuntimeError(f"the native involution kernel is unavailable: {_error}")
    batch, channels, height, width = x.shape
    groups, kernel_size = kernels.shape[1], kernels.shape[2]
    dims = _longs([batch, channels, height, width, groups, kernel_size, out_h, out_w, stride, padding, dilation])
    out = _output_like(x, (batch, channels, out_h, out_w))
    threads = _threads(batch * groups, out.numel() * kernel_size * kernel_size)
    per_thread = library.involution_scratch_per_thread(dims)
    scratch = x.new_empty(threads * per_thread)  # one group's channels-last planes per thread
    getattr(library, f"involution_forward_{_suffix(x.dtype)}")(
        dims, x.data_ptr(), _longs(x.stride()), kernels.data_ptr(), _longs(kernels.stride()),
        out.data_ptr(), _longs(out.stride()), scratch.data_ptr(), per_thread, threads,
    )
    return out


def native_backward(
    x: torch.Tensor,
    kernels: torch.Tensor,
    grad_out: torch.Tensor,
    stride: int,
    padding: int,
    dilation: int,
    need_x: bool = True,
    need_kernels: bool = True,
) -> Tuple[Optional[torch.Tensor], Optional[torch.Tensor]]:
    """Gradients ``(grad_x, grad_kernels)`` with the native kernel (``None`` where not needed).

    ``grad_out``: ``(B, C, H', W')`` with any strides (no ``.contiguous()`` needed).
    """
    library = load_native()
    if library is None:
        raise RuntimeError(f"the native involution kernel is unavailable: {_error}")
    batch, channels, height, width = x.shape
    groups, kernel_size, out_h, out_w = kernels.shape[1], kernels.shape[2], kernels.shape[4], kernels.shape[5]
    dims = _longs([batch, channels, height, width, groups, kernel_size, out_h, out_w, stride, padding, dilation])
    grad_x = _output_like(x, x.shape) if need_x else None
    grad_kernels = torch.empty_like(kernels) if need_kernels else None  # keeps kernels' strides
    threads = _threads(batch * groups, 2 * grad_out.numel() * kernel_size * kernel_size)
    per_thread = library.involution_scratch_per_thread(dims)
    scratch = x.new_empty(threads * per_thread)
    null = ctypes.c_void_p(None)
    getattr(library, f"involution_backward_{_suffix(x.dtype)}")(
        dims, x.data_ptr(), _longs(x.stride()), kernels.data_ptr(), _longs(kernels.stride()),
        grad_out.data_ptr(), _longs(grad_out.stride()),
        grad_x.data_ptr() if need_x else null, _longs(grad_x.stride() if need_x else (0, 0, 0, 0)),
        grad_kernels.data_ptr() if need_kernels else null,
        _longs(grad_kernels.stride() if need_kernels else (0,) * 6),
        scratch.data_ptr(), per_thread, threads,
    )
    return grad_x, grad_kernels
