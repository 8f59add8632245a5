// Involution on the CPU, forward and backward, float and double.   (see involution_edu/native.py)
//
//   out[b, c, i, j] = sum_{u, v} k[b, g(c), u, v, i, j] * x[b, c, i*s + u*d - p, j*s + v*d - p]
//
// Work is split over (sample b, group g) pairs, one OpenMP task each. A task copies its group's
// channels of x into a scratch plane laid out "channels last" (the C/G channels of one pixel are
// adjacent, so one kernel value multiplies a whole vector of channels) with zero borders (so no
// tap needs a bounds check), computes, and copies the result back to the caller's layout.
//
// Padded taps. The forward pass multiplies every one of the K x K kernel values by its pixel,
// zeros of the padding included, exactly as the paper's unfold code and the eager op do: an
// infinite or NaN kernel value on a padded tap gives NaN (inf * 0), never a silently skipped
// term. (Only grad_x skips padded taps: their contributions land in the discarded border.)
//
// Safety. The extern "C" entry points check every size (positive, bounded, consistent, scratch
// size without int64 overflow) and return a non-zero error code instead of touching memory when
// a size is nonsense; the Python side (involution_edu/native.py) checks them first as well.
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
    std::vector<i64> ulo, uhi;  // kernel rows u in [ulo[i], uhi[i]) land inside x for output row i (grad_x)
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

// Shuffles with compile-time lane indices (a run-time mask would make the compiler emit a slow
// generic permutation, especially where 16 floats span two AVX2 registers). pick<L>(a, b) returns
// the vector whose lane c is lane L::at(c) of the 32 lanes of a and b (a first).
template <class L>
static inline __attribute__((always_inline)) f16v pick(const f16v& a, const f16v& b) {
    return __builtin_shufflevector(a, b, L::at(0), L::at(1), L::at(2), L::at(3), L::at(4), L::at(5), L::at(6),
                                   L::at(7), L::at(8), L::at(9), L::at(10), L::at(11), L::at(12), L::at(13),
                                   L::at(14), L::at(15));
}
// Transpose round with bit b: swap bit b of the row and column index.
template <int B> struct TLo { static constexpr int at(int c) { return (c & B) == 0 ? c : 16 + (c ^ B); } };
template <int B> struct THi { static constexpr int at(int c) { return (c & B) == 0 ? (c | B) : 16 + c; } };
// Reduce round with half width H: lanes with bit H clear fold a, lanes with bit H set fold b.
template <int H> struct RA { static constexpr int at(int c) { return (c & H) ? 16 + (c - H) : c; } };
template <int H> struct RB { static constexpr int at(int c) { return (c & H) ? 16 + c : c + H; } };
struct Even { static constexpr int at(int c) { return (2 * c) % 16; } };
struct Odd { static constexpr int at(int c) { return (2 * c + 1) % 16; } };

template <int B>
static inline __attribute__((always_inline)) void transpose_round(f16v* r) {
#pragma GCC unroll 16
    for (int i = 0; i < 16; ++i)
        if (!(i & B)) {
            const f16v a = r[i], c = r[i | B];
            r[i] = pick<TLo<B>>(a, c);
            r[i | B] = pick<THi<B>>(a, c);
        }
}

// r[a][b] -> r[b][a] for 16 vectors of 16 floats.
static inline __attribute__((always_inline)) void transpose16(f16v* r) {
    transpose_round<1>(r);
    transpose_round<2>(r);
    transpose_round<4>(r);
    transpose_round<8>(r);
}

// Lane l (l < 8) of the result = the sum of the 16 lanes of p[l]. Each round adds pairs of lanes
// and packs two vectors into one, so 8 sums cost 7 vector adds instead of 8 horizontal sums.
static inline __attribute__((always_inline)) f16v reduce8(const f16v* p) {
    f16v q[4], r[2];
#pragma GCC unroll 4
    for (int l = 0; l < 4; ++l) q[l] = pick<RA<8>>(p[l], p[l + 4]) + pick<RB<8>>(p[l], p[l + 4]);
#pragma GCC unroll 2
    for (int l = 0; l < 2; ++l) r[l] = pick<RA<4>>(q[l], q[l + 2]) + pick<RB<4>>(q[l], q[l + 2]);
    const f16v t = pick<RA<2>>(r[0], r[1]) + pick<RB<2>>(r[0], r[1]);
    return pick<Even>(t, t) + pick<Odd>(t, t);  // lane l: lanes 2l and 2l + 1, the sum of p[l]
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

// cols pixels of cg adjacent channels each, from src (pixel stride ss) to dst (pixel stride ds).
template <typename T>
static inline void copy_pixels(const T* src, i64 ss, T* dst, i64 ds, i64 cols, i64 cg) {
    if constexpr (sizeof(T) == sizeof(float)) {
        if (cg == 16) {  // one 64-byte vector per pixel (RedNet's 16 channels per group)
            for (i64 q = 0; q < cols; ++q) store<T, 16>(dst + q * ds, load<T, 16>(src + q * ss));
            return;
        }
    }
    for (i64 q = 0; q < cols; ++q)
        for (i64 c = 0; c < cg; ++c) dst[q * ds + c] = src[q * ss + c];
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
    if (st[1] == 1 && cg == cgp) {  // channels last: the group's channels of one pixel are adjacent
        std::memset(dst, 0, sizeof(T) * off * pitch * cgp);
        std::memset(dst + (off + rows) * pitch * cgp, 0, sizeof(T) * (prows - off - rows) * pitch * cgp);
        for (i64 r = 0; r < rows; ++r) {
            T* d_row = dst + (r + off) * pitch * cgp;
            std::memset(d_row, 0, sizeof(T) * off * cgp);
            std::memset(d_row + (off + cols) * cgp, 0, sizeof(T) * (pitch - off - cols) * cgp);
            const T* s_row = src + r * st[2];
            copy_pixels(s_row, st[3], d_row + off * cgp, cgp, cols, cg);
        }
        return;
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
    if (st[1] == 1) {  // channels last: copy each pixel's cg channels at once
        for (i64 r = 0; r < rows; ++r) {
            const T* s_row = src + ((r + off) * pitch + off) * cgp;
            T* d_row = dst + r * st[2];
            copy_pixels(s_row, cgp, d_row, st[3], cols, cg);
        }
        return;
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
                for (i64 u = 0; u < g.K; ++u) {  // every row, padded ones included (see the top)
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
#pragma GCC unroll 1
    for (i64 u = 0; u < K; ++u) {  // every row, padded ones included (see the top)
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
                      (!gx || kst[5] == 1) &&  // kernels are read only for grad_x (may be a dummy otherwise)
                      (!gk || (gkst[5] == 1 && gkst[4] == g.Wo));
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

// Float gets the specialised K = 7 and K = 3 paths (RedNet); double (gradcheck, tests) runs the
// general kernels only, which keeps the build short.
template <typename T>
static void forward_dispatch(const i64* dims, const T* x, const i64* xs, const T* k, const i64* ks, T* out,
                             const i64* os, T* scratch, i64 per_thread, int threads) {
    const int width = width_for(dims[1] / dims[4]);
    const i64 K = dims[5];
    if constexpr (sizeof(T) == sizeof(float)) {
        if (width == 16 && K == 7) return forward_all<T, 16, 7>(dims, x, xs, k, ks, out, os, scratch, per_thread, threads);
        if (width == 16 && K == 3) return forward_all<T, 16, 3>(dims, x, xs, k, ks, out, os, scratch, per_thread, threads);
    }
    if (width == 16) forward_all<T, 16, 0>(dims, x, xs, k, ks, out, os, scratch, per_thread, threads);
    else if (width == 8) forward_all<T, 8, 0>(dims, x, xs, k, ks, out, os, scratch, per_thread, threads);
    else forward_all<T, 4, 0>(dims, x, xs, k, ks, out, os, scratch, per_thread, threads);
}

template <typename T>
static void backward_dispatch(const i64* dims, const T* x, const i64* xs, const T* k, const i64* ks, const T* go,
                              const i64* gos, T* gx, const i64* gxs, T* gk, const i64* gks, T* scratch,
                              i64 per_thread, int threads) {
    const int width = width_for(dims[1] / dims[4]);
    const i64 K = dims[5];
    if constexpr (sizeof(T) == sizeof(float)) {
        if (width == 16 && K == 7)
            return backward_all<T, 16, 7>(dims, x, xs, k, ks, go, gos, gx, gxs, gk, gks, scratch, per_thread, threads);
        if (width == 16 && K == 3)
            return backward_all<T, 16, 3>(dims, x, xs, k, ks, go, gos, gx, gxs, gk, gks, scratch, per_thread, threads);
    }
    if (width == 16)
        backward_all<T, 16, 0>(dims, x, xs, k, ks, go, gos, gx, gxs, gk, gks, scratch, per_thread, threads);
    else if (width == 8)
        backward_all<T, 8, 0>(dims, x, xs, k, ks, go, gos, gx, gxs, gk, gks, scratch, per_thread, threads);
    else
        backward_all<T, 4, 0>(dims, x, xs, k, ks, go, gos, gx, gxs, gk, gks, scratch, per_thread, threads);
}

// ---------------------------------------------------------------------------------------------
// Argument checks of the entry points (the Python side checks first; this is the last line).

static const i64 kMaxDim = (i64(1) << 31) - 1;    // any single size, stride, padding or dilation
static const i64 kMaxElements = i64(1) << 40;     // any plane or tensor, in elements

static bool mul_ok(i64 a, i64 b, i64* r) { return !__builtin_mul_overflow(a, b, r) && *r <= kMaxElements; }

// 0 when dims = {B, C, H, W, G, K, Ho, Wo, s, p, d} describe a valid involution, else an error code.
static int check_dims(const i64* dims) {
    if (!dims) return 1;
    for (int n = 0; n < 11; ++n)
        if (dims[n] < 0 || dims[n] > kMaxDim) return 2;                      // negative or huge
    const i64 B = dims[0], C = dims[1], H = dims[2], W = dims[3], G = dims[4], K = dims[5];
    const i64 Ho = dims[6], Wo = dims[7], s = dims[8], p = dims[9], d = dims[10];
    if (G < 1 || K < 1 || H < 1 || W < 1 || Ho < 1 || Wo < 1 || s < 1 || d < 1) return 3;
    if (C % G != 0) return 4;
    const i64 span = d * (K - 1) + 1;                                       // < 2^62: no overflow
    if (span > kMaxDim || H + 2 * p > kMaxDim || W + 2 * p > kMaxDim) return 5;
    if (Ho != (H + 2 * p - span) / s + 1 || Wo != (W + 2 * p - span) / s + 1 || H + 2 * p < span ||
        W + 2 * p < span)
        return 6;                                                            // inconsistent output size
    const i64 cgp = (C / G + 15) / 16 * 16;
    i64 plane, tmp;
    if (!mul_ok(H + 2 * p, W + 2 * p, &plane) || !mul_ok(plane, cgp, &tmp)) return 7;  // x scratch
    if (!mul_ok(Ho, Wo, &plane) || !mul_ok(plane, cgp, &tmp)) return 7;                  // output scratch
    if (!mul_ok(K * K, plane, &tmp) || !mul_ok(tmp, B * G > 0 ? B * G : 1, &tmp)) return 7;  // kernels
    (void)B;
    return 0;
}

static int check_call(const i64* dims, const void* scratch, i64 per_thread, int threads);

extern "C" {
int involution_abi_version() { return 6; }

// Scratch elements each thread needs (the same for forward and backward): x plane + output plane;
// -1 when dims are invalid.
i64 involution_scratch_per_thread(const i64* dims) {
    if (check_dims(dims) != 0) return -1;
    const Geo g(dims, width_for(dims[1] / dims[4]));
    return g.x_plane() + g.out_plane();
}

// The entry points return 0 on success and a non-zero error code (nothing computed) otherwise.
int involution_forward_f32(const i64* dims, const float* x, const i64* xs, const float* k, const i64* ks,
                           float* out, const i64* os, float* scratch, i64 per_thread, int threads) {
    if (const int e = check_call(dims, scratch, per_thread, threads)) return e;
    if (!x || !k || !out || !xs || !ks || !os) return 9;
    forward_dispatch<float>(dims, x, xs, k, ks, out, os, scratch, per_thread, threads);
    return 0;
}
int involution_forward_f64(const i64* dims, const double* x, const i64* xs, const double* k, const i64* ks,
                           double* out, const i64* os, double* scratch, i64 per_thread, int threads) {
    if (const int e = check_call(dims, scratch, per_thread, threads)) return e;
    if (!x || !k || !out || !xs || !ks || !os) return 9;
    forward_dispatch<double>(dims, x, xs, k, ks, out, os, scratch, per_thread, threads);
    return 0;
}
int involution_backward_f32(const i64* dims, const float* x, const i64* xs, const float* k, const i64* ks,
                            const float* go, const i64* gos, float* gx, const i64* gxs, float* gk,
                            const i64* gks, float* scratch, i64 per_thread, int threads) {
    if (const int e = check_call(dims, scratch, per_thread, threads)) return e;
    if (!x || !k || !go || !xs || !ks || !gos || !gxs || !gks) return 9;
    backward_dispatch<float>(dims, x, xs, k, ks, go, gos, gx, gxs, gk, gks, scratch, per_thread, threads);
    return 0;
}
int involution_backward_f64(const i64* dims, const double* x, const i64* xs, const double* k, const i64* ks,
                            const double* go, const i64* gos, double* gx, const i64* gxs, double* gk,
                            const i64* gks, double* scratch, i64 per_thread, int threads) {
    if (const int e = check_call(dims, scratch, per_thread, threads)) return e;
    if (!x || !k || !go || !xs || !ks || !gos || !gxs || !gks) return 9;
    backward_dispatch<double>(dims, x, xs, k, ks, go, gos, gx, gxs, gk, gks, scratch, per_thread, threads);
    return 0;
}
}

static int check_call(const i64* dims, const void* scratch, i64 per_thread, int threads) {
    if (const int e = check_dims(dims)) return e;
    if (threads < 1 || threads > 4096) return 8;
    const i64 need = involution_scratch_per_thread(dims);
    i64 total;
    if (per_thread < need || __builtin_mul_overflow(per_thread, i64(threads), &total)) return 8;
    if (need > 0 && !scratch) return 9;
    return 0;
}

// =============================================================================================
// The fused kernel-generating involution (involution_edu/fused.py): kernels never stored.
//
//   k[t, n] = bias[g*KK + t] + sum_r w[g, r, t] * h[b, r, n]     t = u*K + v, n = output pixel
//   out[b, c, n] = sum_t k[t, n] * x[b, c, tap t of n]
//
// dims = {B, C, H, W, G, K, Ho, Wo, s, p, d, Cr}; w is (G, Cr, KK) contiguous (the span weights,
// transposed so that the taps of one r are adjacent), bias (G * KK). Output pixels are processed in
// tiles of TP = 16 consecutive flat pixels (across rows: small 7x7 maps fill the vectors too). A
// tile's kernel values, TP x KK of them (3 KiB for K = 7), are computed into a buffer that stays in
// L1 and used at once. Forward: one task per (b, g). Backward: one task per sample b (h's gradient
// sums over the groups, so a task owns it for its sample), the kernels recomputed per tile:
//   dk[t, n] = sum_{c in g} go[c, n] * x[c, tap t of n]      (in the tile buffer only)
//   gx[c, tap t of n] += k[t, n] * go[c, n]                  (the task's private padded planes)
//   gh[r, n] += sum_t w[g, r, t] dk[t, n];   gw[g, t, r] += sum_n dk[t, n] h[r, n];   gb += sum_n dk
// gw and gb are per-thread partial sums (added up by the caller).
// =============================================================================================

static const int TP = 16;  // pixels per tile

struct FGeo : Geo {
    i64 Cr, KK, crp, nout;
    FGeo(const i64* dims, i64 width) : Geo(dims, width) {
        Cr = dims[11]; KK = K * K; crp = (Cr + TP - 1) / TP * TP; nout = Ho * Wo;
    }
    i64 tile_elems() const { return KK * TP * 2 + Cr * TP * 2 + crp * TP; }  // k, dk, h, dh, h^T
};

template <typename T> struct P16 { typedef typename Vec<T, TP>::type type; };

// h tile: ht[r][q] = h[b, r, n0 + q] (zero beyond the last pixel); optionally htt[q][r] (transposed).
template <typename T>
static void load_h_tile(const FGeo& g, const T* h, const i64* hs, i64 b, i64 n0, i64 nq, T* ht, T* htt) {
    const T* hb = h + b * hs[0];
    if (hs[3] == 1 && hs[2] == g.Wo) {  // contiguous planes: the tile's pixels are adjacent
        if (nq == TP) {
            for (i64 r = 0; r < g.Cr; ++r) store<T, TP>(ht + r * TP, load<T, TP>(hb + r * hs[1] + n0));
        } else {
            for (i64 r = 0; r < g.Cr; ++r) {
                for (i64 q = 0; q < nq; ++q) ht[r * TP + q] = hb[r * hs[1] + n0 + q];
                for (i64 q = nq; q < TP; ++q) ht[r * TP + q] = T(0);
            }
        }
    } else if (hs[1] == 1) {  // channels last: each pixel's Cr values are adjacent
        i64 i = n0 / g.Wo, j = n0 % g.Wo;
        for (i64 q = 0; q < TP; ++q) {
            if (q < nq) {
                const T* px = hb + i * hs[2] + j * hs[3];
                for (i64 r = 0; r < g.Cr; ++r) ht[r * TP + q] = px[r];
            } else {
                for (i64 r = 0; r < g.Cr; ++r) ht[r * TP + q] = T(0);
            }
            if (++j == g.Wo) { j = 0; ++i; }
        }
    } else
    for (i64 r = 0; r < g.Cr; ++r) {
        T* row = ht + r * TP;
        i64 i = n0 / g.Wo, j = n0 % g.Wo;
        for (i64 q = 0; q < TP; ++q) {
            row[q] = q < nq ? hb[r * hs[1] + i * hs[2] + j * hs[3]] : T(0);
            if (++j == g.Wo) { j = 0; ++i; }
        }
    }
    if (htt) {
        for (i64 q = 0; q < TP; ++q) {
            for (i64 r = 0; r < g.Cr; ++r) htt[q * g.crp + r] = ht[r * TP + q];
            for (i64 r = g.Cr; r < g.crp; ++r) htt[q * g.crp + r] = T(0);
        }
    }
}

// kt[t][q] = bias[t] + sum_r w[r][t] * ht[r * hp + q]   (w, bias at this group's rows; hp: ht's row
// pitch, TP for a tile buffer, or h's channel stride when a full tile is read straight from h)
template <typename T>
static void tile_kernels(const FGeo& g, const T* w, const T* bias, const T* ht, i64 hp, T* kt) {
    typedef typename P16<T>::type V;
    i64 t0 = 0;
    for (; t0 + 8 <= g.KK; t0 += 8) {
        V acc[8];
#pragma GCC unroll 8
        for (int a = 0; a < 8; ++a) acc[a] = V{} + bias[t0 + a];
        for (i64 r = 0; r < g.Cr; ++r) {
            const V hv = load<T, TP>(ht + r * hp);
            const T* wr = w + r * g.KK + t0;
#pragma GCC unroll 8
            for (int a = 0; a < 8; ++a) acc[a] += wr[a] * hv;
        }
#pragma GCC unroll 8
        for (int a = 0; a < 8; ++a) store<T, TP>(kt + (t0 + a) * TP, acc[a]);
    }
    for (; t0 < g.KK; ++t0) {
        V acc = V{} + bias[t0];
        for (i64 r = 0; r < g.Cr; ++r) acc += w[r * g.KK + t0] * load<T, TP>(ht + r * hp);
        store<T, TP>(kt + t0 * TP, acc);
    }
}

// Aggregation of one tile, any stride/dilation: os[n] = sum_t kt[t][q] * x(tap t of n).
template <typename T, int W>
static void tile_apply(const FGeo& g, const T* xs, const T* kt, i64 n0, i64 nq, T* os) {
    typedef typename Vec<T, W>::type V;
    const i64 cgp = g.cgp, row_pitch = g.wx * cgp;
    i64 i = n0 / g.Wo, j = n0 % g.Wo;
    for (i64 q = 0; q < nq; ++q) {
        for (i64 ch = 0; ch < cgp; ch += W) {
            V acc = V{};
            for (i64 u = 0; u < g.K; ++u) {
                const T* xr = xs + (i * g.s + u * g.d - g.p) * row_pitch + (j * g.s - g.p) * cgp + ch;
                const T* kp = kt + u * g.K * TP + q;
                for (i64 v = 0; v < g.K; ++v) acc += kp[v * TP] * load<T, W>(xr + v * g.d * cgp);
            }
            store<T, W>(os + (n0 + q) * cgp + ch, acc);
        }
        if (++j == g.Wo) { j = 0; ++i; }
    }
}

// Stride 1, dilation 1, 16 channels (one vector), K fixed: NB neighbouring pixels of one row share
// the x vectors they read (as forward_block). kq = kt + q (the first pixel's column of the tile).
template <typename T, int K, int NB>
static inline __attribute__((always_inline)) void tile_apply_block(const FGeo& g, const T* xs, const T* kq, i64 i,
                                                                  i64 j, T* on) {
    typedef typename Vec<T, 16>::type V;
    V acc[NB];
#pragma GCC unroll 8
    for (int q = 0; q < NB; ++q) acc[q] = V{};
#pragma GCC unroll 1
    for (int u = 0; u < K; ++u) {
        const T* xv = xs + ((i + u - g.p) * g.wx + j - g.p) * 16;
        const T* kp = kq + u * K * TP;
#pragma GCC unroll 8
        for (int v = 0; v < K; ++v) {
#pragma GCC unroll 8
            for (int q = 0; q < NB; ++q) acc[q] += kp[q] * load<T, 16>(xv + (v + q) * 16);
            kp += TP;
        }
    }
#pragma GCC unroll 8
    for (int q = 0; q < NB; ++q) store<T, 16>(on + q * 16, acc[q]);
}

template <typename T, int K>
static void tile_apply_unit(const FGeo& g, const T* xs, const T* kt, i64 n0, i64 nq, T* os) {
    i64 q = 0;
    while (q < nq) {
        const i64 n = n0 + q, i = n / g.Wo, j = n % g.Wo;
        const i64 run = (g.Wo - j < nq - q) ? g.Wo - j : nq - q;  // pixels left in this row and tile
        i64 a = 0;
        for (; a + 8 <= run; a += 8) tile_apply_block<T, K, 8>(g, xs, kt + q + a, i, j + a, os + (n + a) * 16);
        if (a + 4 <= run) { tile_apply_block<T, K, 4>(g, xs, kt + q + a, i, j + a, os + (n + a) * 16); a += 4; }
        for (; a + 2 <= run; a += 2) tile_apply_block<T, K, 2>(g, xs, kt + q + a, i, j + a, os + (n + a) * 16);
        for (; a < run; ++a) tile_apply_block<T, K, 1>(g, xs, kt + q + a, i, j + a, os + (n + a) * 16);
        q += run;
    }
}

// dk[t][q] = sum_c go(n, c) * x(tap t of n, c), any stride/dilation (a fixed pairwise lane order).
template <typename T, int W>
static void tile_grad_kernels(const FGeo& g, const T* xs, const T* gos, i64 n0, i64 nq, T* dk) {
    typedef typename Vec<T, W>::type V;
    const i64 cgp = g.cgp, row_pitch = g.wx * cgp;
    i64 i = n0 / g.Wo, j = n0 % g.Wo;
    for (i64 q = 0; q < TP; ++q) {
        if (q >= nq) {
            for (i64 t = 0; t < g.KK; ++t) dk[t * TP + q] = T(0);
            continue;
        }
        const T* gv = gos + (n0 + q) * cgp;
        for (i64 u = 0; u < g.K; ++u) {
            const T* xr = xs + (i * g.s + u * g.d - g.p) * row_pitch + (j * g.s - g.p) * cgp;
            for (i64 v = 0; v < g.K; ++v) {
                const T* xv = xr + v * g.d * cgp;
                V prod = load<T, W>(gv) * load<T, W>(xv);
                for (i64 ch = W; ch < cgp; ch += W) prod += load<T, W>(gv + ch) * load<T, W>(xv + ch);
                T lanes[W];
                std::memcpy(lanes, &prod, sizeof(prod));
                for (int width = W / 2; width > 0; width /= 2)
                    for (int c = 0; c < width; ++c) lanes[c] += lanes[c + width];
                dk[(u * g.K + v) * TP + q] = lanes[0];
            }
        }
        if (++j == g.Wo) { j = 0; ++i; }
    }
}

// The same for float, 16 channels, any stride/dilation: 8 pixels' dot products reduced together.
static void tile_grad_kernels16(const FGeo& g, const float* xs, const float* gos, i64 n0, i64 nq, float* dk) {
    for (i64 q0 = 0; q0 < TP; q0 += 8) {
        f16v go[8], prod[8];
        const float* xq[8];
        i64 i = (n0 + q0) / g.Wo, j = (n0 + q0) % g.Wo;
#pragma GCC unroll 8
        for (int q = 0; q < 8; ++q) {
            const bool real = q0 + q < nq;
            go[q] = real ? load<float, 16>(gos + (n0 + q0 + q) * 16) : f16v{};
            xq[q] = real ? xs + ((i * g.s - g.p) * g.wx + j * g.s - g.p) * 16
                         : xs - (g.p * g.wx + g.p) * 16;  // beyond the tile: pixel (0, 0)'s taps, zeroed below
            if (++j == g.Wo) { j = 0; ++i; }
        }
        for (i64 u = 0; u < g.K; ++u)
            for (i64 v = 0; v < g.K; ++v) {
                const i64 tap = (u * g.d * g.wx + v * g.d) * 16;
#pragma GCC unroll 8
                for (int q = 0; q < 8; ++q) prod[q] = go[q] * load<float, 16>(xq[q] + tap);
                const f16v sums = reduce8(prod);
                std::memcpy(dk + (u * g.K + v) * TP + q0, &sums, 8 * sizeof(float));
            }
    }
    for (i64 t = 0; t < g.KK; ++t)
        for (i64 q = nq; q < TP; ++q) dk[t * TP + q] = 0.0f;  // (0 * inf would be NaN)
}

// gx(tap t of n) += k[t][q] * go(n) into the zero-bordered private planes, any stride/dilation.
template <typename T, int W>
static void tile_grad_x(const FGeo& g, const T* gos, const T* kt, i64 n0, i64 nq, T* gxs) {
    typedef typename Vec<T, W>::type V;
    const i64 cgp = g.cgp, row_pitch = g.wx * cgp;
    i64 i = n0 / g.Wo, j = n0 % g.Wo;
    for (i64 q = 0; q < nq; ++q) {
        for (i64 ch = 0; ch < cgp; ch += W) {
            const V gv = load<T, W>(gos + (n0 + q) * cgp + ch);
            for (i64 u = 0; u < g.K; ++u) {
                T* xr = gxs + (i * g.s + u * g.d - g.p) * row_pitch + (j * g.s - g.p) * cgp + ch;
                const T* kp = kt + u * g.K * TP + q;
                for (i64 v = 0; v < g.K; ++v) {
                    T* cell = xr + v * g.d * cgp;
                    store<T, W>(cell, load<T, W>(cell) + kp[v * TP] * gv);
                }
            }
        }
        if (++j == g.Wo) { j = 0; ++i; }
    }
}

// Stride 1, dilation 1, 16 channels, K fixed: NB pixels of one row scatter into the NB + K - 1
// neighbouring cells of each kernel row, held in registers (one load and one store per cell).
template <typename T, int K, int NB>
static inline __attribute__((always_inline)) void tile_grad_x_block(const FGeo& g, const T* gon, const T* kq, i64 i,
                                                                   i64 j, T* gxs) {
    typedef typename Vec<T, 16>::type V;
    V gv[NB];
#pragma GCC unroll 8
    for (int q = 0; q < NB; ++q) gv[q] = load<T, 16>(gon + q * 16);
#pragma GCC unroll 1
    for (int u = 0; u < K; ++u) {
        T* row = gxs + ((i + u - g.p) * g.wx + j - g.p) * 16;
        V cell[NB + K - 1];
#pragma GCC unroll 16
        for (int m = 0; m < NB + K - 1; ++m) cell[m] = load<T, 16>(row + m * 16);
        const T* kp = kq + u * K * TP;
#pragma GCC unroll 8
        for (int v = 0; v < K; ++v) {
#pragma GCC unroll 8
            for (int q = 0; q < NB; ++q) cell[q + v] += kp[v * TP + q] * gv[q];
        }
#pragma GCC unroll 16
        for (int m = 0; m < NB + K - 1; ++m) store<T, 16>(row + m * 16, cell[m]);
    }
}

template <typename T, int K>
static void tile_grad_x_unit(const FGeo& g, const T* gos, const T* kt, i64 n0, i64 nq, T* gxs) {
    i64 q = 0;
    while (q < nq) {
        const i64 n = n0 + q, i = n / g.Wo, j = n % g.Wo;
        const i64 run = (g.Wo - j < nq - q) ? g.Wo - j : nq - q;
        i64 a = 0;
        for (; a + 8 <= run; a += 8) tile_grad_x_block<T, K, 8>(g, gos + (n + a) * 16, kt + q + a, i, j + a, gxs);
        if (a + 4 <= run) { tile_grad_x_block<T, K, 4>(g, gos + (n + a) * 16, kt + q + a, i, j + a, gxs); a += 4; }
        for (; a < run; ++a) tile_grad_x_block<T, K, 1>(g, gos + (n + a) * 16, kt + q + a, i, j + a, gxs);
        q += run;
    }
}

// dh[r][q] += sum_t w[r][t] dk[t][q];  gw[t][r] += sum_q dk[t][q] htt[q][r];  gb[t] += sum_q dk[t][q].
template <typename T>
static void tile_span_grads(const FGeo& g, const T* w, const T* dk, const T* htt, T* dh, T* gw, T* gb) {
    typedef typename P16<T>::type V;
    i64 r0 = 0;
    for (; r0 + 8 <= g.Cr; r0 += 8) {
        V acc[8];
#pragma GCC unroll 8
        for (int a = 0; a < 8; ++a) acc[a] = load<T, TP>(dh + (r0 + a) * TP);
        for (i64 t = 0; t < g.KK; ++t) {
            const V dv = load<T, TP>(dk + t * TP);
#pragma GCC unroll 8
            for (int a = 0; a < 8; ++a) acc[a] += w[(r0 + a) * g.KK + t] * dv;
        }
#pragma GCC unroll 8
        for (int a = 0; a < 8; ++a) store<T, TP>(dh + (r0 + a) * TP, acc[a]);
    }
    for (; r0 < g.Cr; ++r0) {
        V acc = load<T, TP>(dh + r0 * TP);
        for (i64 t = 0; t < g.KK; ++t) acc += w[r0 * g.KK + t] * load<T, TP>(dk + t * TP);
        store<T, TP>(dh + r0 * TP, acc);
    }
    // gw: 8 taps at a time, so that 8 independent sums (not one chain of 16 dependent
    // multiply-adds) are in flight and each vector of htt, loaded once, serves 8 taps.
    i64 t0 = 0;
    for (; t0 + 8 <= g.KK; t0 += 8)
        for (i64 rv = 0; rv < g.crp; rv += TP) {
            V acc[8];
#pragma GCC unroll 8
            for (int a = 0; a < 8; ++a) acc[a] = load<T, TP>(gw + (t0 + a) * g.crp + rv);
#pragma GCC unroll 4
            for (int q = 0; q < TP; ++q) {
                const V hv = load<T, TP>(htt + q * g.crp + rv);
#pragma GCC unroll 8
                for (int a = 0; a < 8; ++a) acc[a] += dk[(t0 + a) * TP + q] * hv;
            }
#pragma GCC unroll 8
            for (int a = 0; a < 8; ++a) store<T, TP>(gw + (t0 + a) * g.crp + rv, acc[a]);
        }
    for (i64 t = t0; t < g.KK; ++t) {
        const T* dt = dk + t * TP;
        T* gwt = gw + t * g.crp;
        for (i64 rv = 0; rv < g.crp; rv += TP) {
            V acc = load<T, TP>(gwt + rv);
#pragma GCC unroll 16
            for (int q = 0; q < TP; ++q) acc += dt[q] * load<T, TP>(htt + q * g.crp + rv);
            store<T, TP>(gwt + rv, acc);
        }
    }
    for (i64 t = 0; t < g.KK; ++t) {
        const T* dt = dk + t * TP;
        T total = T(0);
        for (int q = 0; q < TP; ++q) total += dt[q];
        gb[t] += total;
    }
}

static inline i64 fused_forward_scratch(const FGeo& g) { return g.x_plane() + g.out_plane() + g.tile_elems(); }
static inline i64 fused_backward_scratch(const FGeo& g) {
    return g.G * (2 * g.x_plane() + g.out_plane()) + g.tile_elems();
}

template <typename T, int W, int KT>
static void fused_forward_all(const i64* dims, const T* x, const i64* xst, const T* h, const i64* hst, const T* w,
                              const T* bias, const T* scale, const T* shift, T* out, const i64* ost, T* scratch,
                              i64 per_thread, int threads) {
    const FGeo g(dims, W);
    const bool unit = KT > 0 && W == 16 && g.s == 1 && g.d == 1 && g.cgp == 16;
    const bool direct_h = hst[3] == 1 && hst[2] == g.Wo;
    const i64 tasks = g.B * g.G;
#pragma omp parallel for schedule(dynamic, 1) num_threads(threads)
    for (i64 t = 0; t < tasks; ++t) {
        T* xs = scratch + thread_id() * per_thread;
        T* os = xs + g.x_plane();
        T* kt = os + g.out_plane();
        T* ht = kt + 2 * g.KK * TP;
        const i64 b = t / g.G, grp = t % g.G, c0 = grp * g.cg;
        gather(x, xst, b, c0, g.cg, g.H, g.W, xs, g.hx, g.wx, g.p, g.cgp);
        const T* xo = xs + g.x_origin();
        for (i64 n0 = 0; n0 < g.nout; n0 += TP) {
            const i64 nq = g.nout - n0 < TP ? g.nout - n0 : TP;
            if (direct_h && nq == TP) {  // a full tile of contiguous h planes: read it in place
                tile_kernels<T>(g, w + grp * g.Cr * g.KK, bias + grp * g.KK, h + b * hst[0] + n0, hst[1], kt);
            } else {
                load_h_tile<T>(g, h, hst, b, n0, nq, ht, nullptr);
                tile_kernels<T>(g, w + grp * g.Cr * g.KK, bias + grp * g.KK, ht, TP, kt);
            }
            if constexpr (KT > 0 && W == 16) {
                if (unit) { tile_apply_unit<T, KT>(g, xo, kt, n0, nq, os); continue; }
            }
            tile_apply<T, W>(g, xo, kt, n0, nq, os);
        }
        if (scale) {  // a folded BatchNorm: out[c] = scale[c] * out[c] + shift[c]
            for (i64 n = 0; n < g.nout; ++n)
                for (i64 ch = 0; ch < g.cg; ++ch) os[n * g.cgp + ch] = os[n * g.cgp + ch] * scale[c0 + ch] + shift[c0 + ch];
        }
        scatter(os, g.Wo, 0, g.cgp, out, ost, b, c0, g.cg, g.Ho, g.Wo);
    }
}

template <typename T, int W, int KT>
static void fused_backward_all(const i64* dims, const T* x, const i64* xst, const T* h, const i64* hst, const T* w,
                               const T* bias, const T* go, const i64* gost, T* gx, const i64* gxst, T* gh,
                               const i64* ghst, T* gw, T* gb, T* scratch, i64 per_thread, int threads) {
    const FGeo g(dims, W);
    const bool unit = KT > 0 && W == 16 && g.s == 1 && g.d == 1 && g.cgp == 16;
    const bool dot16 = sizeof(T) == sizeof(float) && W == 16 && g.cgp == 16;
    const i64 gw_size = g.G * g.KK * g.crp, gb_size = g.G * g.KK;
#pragma omp parallel num_threads(threads)
    {
        const int me = thread_id();
        T* my_gw = gw + me * gw_size;
        T* my_gb = gb + me * gb_size;
        std::memset(my_gw, 0, sizeof(T) * gw_size);
        std::memset(my_gb, 0, sizeof(T) * gb_size);
#pragma omp for schedule(dynamic, 1)
        for (i64 b = 0; b < g.B; ++b) {
            T* base = scratch + me * per_thread;
            T* xs_all = base;                               // G padded x planes
            T* gxs_all = xs_all + g.G * g.x_plane();        // G padded grad_x planes
            T* gos_all = gxs_all + g.G * g.x_plane();       // G compact grad_out planes
            T* kt = gos_all + g.G * g.out_plane();
            T* dk = kt + g.KK * TP;
            T* ht = dk + g.KK * TP;
            T* dh = ht + g.Cr * TP;
            T* htt = dh + g.Cr * TP;
            for (i64 grp = 0; grp < g.G; ++grp) {
                gather(x, xst, b, grp * g.cg, g.cg, g.H, g.W, xs_all + grp * g.x_plane(), g.hx, g.wx, g.p, g.cgp);
                gather(go, gost, b, grp * g.cg, g.cg, g.Ho, g.Wo, gos_all + grp * g.out_plane(), g.Ho, g.Wo, 0, g.cgp);
            }
            std::memset(gxs_all, 0, sizeof(T) * g.G * g.x_plane());
            for (i64 n0 = 0; n0 < g.nout; n0 += TP) {
                const i64 nq = g.nout - n0 < TP ? g.nout - n0 : TP;
                load_h_tile<T>(g, h, hst, b, n0, nq, ht, htt);
                std::memset(dh, 0, sizeof(T) * g.Cr * TP);
                for (i64 grp = 0; grp < g.G; ++grp) {
                    const T* xo = xs_all + grp * g.x_plane() + g.x_origin();
                    T* gxo = gxs_all + grp * g.x_plane() + g.x_origin();
                    const T* gos = gos_all + grp * g.out_plane();
                    const T* wg = w + grp * g.Cr * g.KK;
                    tile_kernels<T>(g, wg, bias + grp * g.KK, ht, TP, kt);
                    if constexpr (sizeof(T) == sizeof(float) && W == 16) {
                        if (dot16)
                            tile_grad_kernels16(g, reinterpret_cast<const float*>(xo),
                                                reinterpret_cast<const float*>(gos), n0, nq,
                                                reinterpret_cast<float*>(dk));
                        else
                            tile_grad_kernels<T, W>(g, xo, gos, n0, nq, dk);
                    } else {
                        tile_grad_kernels<T, W>(g, xo, gos, n0, nq, dk);
                    }
                    bool done = false;
                    if constexpr (KT > 0 && W == 16) {
                        if (unit) { tile_grad_x_unit<T, KT>(g, gos, kt, n0, nq, gxo); done = true; }
                    }
                    if (!done) tile_grad_x<T, W>(g, gos, kt, n0, nq, gxo);
                    tile_span_grads<T>(g, wg, dk, htt, dh, my_gw + grp * g.KK * g.crp, my_gb + grp * g.KK);
                }
                T* ghb = gh + b * ghst[0];
                i64 i = n0 / g.Wo, j = n0 % g.Wo;
                if (ghst[3] == 1 && ghst[2] == g.Wo) {
                    for (i64 r = 0; r < g.Cr; ++r) std::memcpy(ghb + r * ghst[1] + n0, dh + r * TP, sizeof(T) * nq);
                } else
                for (i64 q = 0; q < nq; ++q) {
                    for (i64 r = 0; r < g.Cr; ++r) ghb[r * ghst[1] + i * ghst[2] + j * ghst[3]] = dh[r * TP + q];
                    if (++j == g.Wo) { j = 0; ++i; }
                }
            }
            for (i64 grp = 0; grp < g.G; ++grp)
                scatter(gxs_all + grp * g.x_plane(), g.wx, g.p, g.cgp, gx, gxst, b, grp * g.cg, g.cg, g.H, g.W);
        }
    }
}

template <typename T>
static void fused_forward_dispatch(const i64* dims, const T* x, const i64* xs, const T* h, const i64* hs, const T* w,
                                   const T* bias, const T* scale, const T* shift, T* out, const i64* os, T* scratch,
                                   i64 per_thread, int threads) {
    const int width = width_for(dims[1] / dims[4]);
    const i64 K = dims[5];
    if constexpr (sizeof(T) == sizeof(float)) {
        if (width == 16 && K == 7)
            return fused_forward_all<T, 16, 7>(dims, x, xs, h, hs, w, bias, scale, shift, out, os, scratch, per_thread, threads);
        if (width == 16 && K == 3)
            return fused_forward_all<T, 16, 3>(dims, x, xs, h, hs, w, bias, scale, shift, out, os, scratch, per_thread, threads);
    }
    if (width == 16) fused_forward_all<T, 16, 0>(dims, x, xs, h, hs, w, bias, scale, shift, out, os, scratch, per_thread, threads);
    else if (width == 8) fused_forward_all<T, 8, 0>(dims, x, xs, h, hs, w, bias, scale, shift, out, os, scratch, per_thread, threads);
    else fused_forward_all<T, 4, 0>(dims, x, xs, h, hs, w, bias, scale, shift, out, os, scratch, per_thread, threads);
}

template <typename T>
static void fused_backward_dispatch(const i64* dims, const T* x, const i64* xs, const T* h, const i64* hs, const T* w,
                                    const T* bias, const T* go, const i64* gos, T* gx, const i64* gxs, T* gh,
                                    const i64* ghs, T* gw, T* gb, T* scratch, i64 per_thread, int threads) {
    const int width = width_for(dims[1] / dims[4]);
    const i64 K = dims[5];
#define INVOLUTION_FUSED_BACKWARD(WIDTH, KT) \
    return fused_backward_all<T, WIDTH, KT>(dims, x, xs, h, hs, w, bias, go, gos, gx, gxs, gh, ghs, gw, gb, scratch, \
                                            per_thread, threads)
    if constexpr (sizeof(T) == sizeof(float)) {
        if (width == 16 && K == 7) INVOLUTION_FUSED_BACKWARD(16, 7);
        if (width == 16 && K == 3) INVOLUTION_FUSED_BACKWARD(16, 3);
    }
    if (width == 16) INVOLUTION_FUSED_BACKWARD(16, 0);
    if (width == 8) INVOLUTION_FUSED_BACKWARD(8, 0);
    INVOLUTION_FUSED_BACKWARD(4, 0);
#undef INVOLUTION_FUSED_BACKWARD
}

// 0 when dims = {B, C, H, W, G, K, Ho, Wo, s, p, d, Cr} are valid for the fused kernels.
static int check_fused_dims(const i64* dims) {
    if (const int e = check_dims(dims)) return e;
    const i64 Cr = dims[11];
    if (Cr < 1) return 3;
    if (Cr > kMaxDim) return 2;
    const i64 KK = dims[5] * dims[5];
    i64 tmp;
    if (!mul_ok(dims[4] * KK, Cr + TP, &tmp)) return 7;                                  // weights, gw
    if (!mul_ok(dims[6] * dims[7], Cr, &tmp) || !mul_ok(tmp, dims[0], &tmp)) return 7;    // h
    const FGeo g(dims, width_for(dims[1] / dims[4]));
    if (!mul_ok(g.G, 2 * g.x_plane() + g.out_plane(), &tmp) || !mul_ok(tmp + g.tile_elems(), 1, &tmp)) return 7;
    return 0;
}

static int check_fused_call(const i64* dims, const void* scratch, i64 per_thread, int threads, bool backward) {
    if (const int e = check_fused_dims(dims)) return e;
    if (threads < 1 || threads > 4096) return 8;
    const FGeo g(dims, width_for(dims[1] / dims[4]));
    const i64 need = backward ? fused_backward_scratch(g) : fused_forward_scratch(g);
    i64 total;
    if (per_thread < need || __builtin_mul_overflow(per_thread, i64(threads), &total)) return 8;
    if (!scratch) return 9;
    return 0;
}

extern "C" {
// Scratch elements per thread of the fused forward (backward = 0) or backward (backward = 1), and the
// padded rank crp of the per-thread weight-gradient partial sums (G, KK, crp); -1 when dims are invalid.
i64 involution_fused_scratch_per_thread(const i64* dims, int backward) {
    if (check_fused_dims(dims) != 0) return -1;
    const FGeo g(dims, width_for(dims[1] / dims[4]));
    return backward ? fused_backward_scratch(g) : fused_forward_scratch(g);
}
i64 involution_fused_padded_rank(const i64* dims) {
    if (check_fused_dims(dims) != 0) return -1;
    return (dims[11] + TP - 1) / TP * TP;
}

#define INVOLUTION_FUSED_ENTRY(SUFFIX, T)                                                                            \
    int involution_fused_forward_##SUFFIX(const i64* dims, const T* x, const i64* xs, const T* h, const i64* hs,     \
                                          const T* w, const T* bias, T* out, const i64* os, T* scratch,             \
                                          i64 per_thread, int threads) {                                            \
        if (const int e = check_fused_call(dims, scratch, per_thread, threads, false)) return e;                    \
        if (!x || !xs || !h || !hs || !w || !bias || !out || !os) return 9;                                         \
        fused_forward_dispatch<T>(dims, x, xs, h, hs, w, bias, nullptr, nullptr, out, os, scratch, per_thread,      \
                                  threads);                                                                         \
        return 0;                                                                                                   \
    }                                                                                                               \
    /* the same, then out[c] = scale[c] * out[c] + shift[c] (a folded eval-mode BatchNorm; C values each) */        \
    int involution_fused_forward_affine_##SUFFIX(const i64* dims, const T* x, const i64* xs, const T* h,            \
                                                 const i64* hs, const T* w, const T* bias, const T* scale,          \
                                                 const T* shift, T* out, const i64* os, T* scratch, i64 per_thread, \
                                                 int threads) {                                                     \
        if (const int e = check_fused_call(dims, scratch, per_thread, threads, false)) return e;                    \
        if (!x || !xs || !h || !hs || !w || !bias || !scale || !shift || !out || !os) return 9;                     \
        fused_forward_dispatch<T>(dims, x, xs, h, hs, w, bias, scale, shift, out, os, scratch, per_thread,          \
                                  threads);                                                                         \
        return 0;                                                                                                   \
    }                                                                                                               \
    int involution_fused_backward_##SUFFIX(const i64* dims, const T* x, const i64* xs, const T* h, const i64* hs,    \
                                           const T* w, const T* bias, const T* go, const i64* gos, T* gx,           \
                                           const i64* gxs, T* gh, const i64* ghs, T* gw, T* gb, T* scratch,          \
                                           i64 per_thread, int threads) {                                           \
        if (const int e = check_fused_call(dims, scratch, per_thread, threads, true)) return e;                     \
        if (!x || !xs || !h || !hs || !w || !bias || !go || !gos || !gx || !gxs || !gh || !ghs || !gw || !gb)       \
            return 9;                                                                                               \
        fused_backward_dispatch<T>(dims, x, xs, h, hs, w, bias, go, gos, gx, gxs, gh, ghs, gw, gb, scratch,         \
                                   per_thread, threads);                                                            \
        return 0;                                                                                                   \
    }
INVOLUTION_FUSED_ENTRY(f32, float)
INVOLUTION_FUSED_ENTRY(f64, double)
#undef INVOLUTION_FUSED_ENTRY
}
