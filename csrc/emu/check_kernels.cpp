// Runs convkit's CUDA kernels on the CPU (sources translated by translate.py, executed under
// cuda_emulation.h) and compares every output with the reference loops (ops/reference.h), which
// the Python tests check against PyTorch in float64.
//
//   check_kernels [--seed S] [--conv N] [--pool N] [--depthwise N] [--batch-norm N]
//                 [--only conv|pool|depthwise|batch_norm] [--case I] [--tf32] [--verbose]
//
// Fixed cases come first, then N random conv, pool, depthwise and batch-norm cases. Case I draws its shape,
// data and thread order from (seed, I) alone, so --case I replays it; --tf32 runs every conv
// case in TF32. Conv and depthwise outputs must agree within 1e-5 (fp32) or 2e-3 (TF32) of the sum of
// |terms| of each output, batch normalisation within 1e-5 of a bound of the same kind; pooling must
// agree bit for bit, argmax and the count of argmax entries outside their windows included. Outputs are
// poisoned before every call, so an element a kernel does not write is a mismatch. Prints
// one summary line and exits 1 on any mismatch or error. (ASan's warning that it does not
// fully support swapcontext is expected: cuda_emulation.h annotates every fiber switch.)
#include <algorithm>
#include <cmath>
#include <csignal>
#include <cstdint>
#include <cstdio>
#include <cstdlib>
#include <cstring>
#include <exception>
#include <random>
#include <string>
#include <tuple>
#include <vector>

#include "cuda_emulation.h"
#include "ops/batch_norm.h"
#include "ops/conv2d.h"
#include "ops/depthwise2d.h"
#include "ops/pool2d.h"
#include "ops/reference.h"

using namespace convkit;

// Sanitizer reports end in abort(), as emulation errors do, so the SIGABRT handler can say
// which case was running.
extern "C" const char* __asan_default_options() { return "abort_on_error=1"; }
extern "C" const char* __ubsan_default_options() { return "abort_on_error=1:print_stacktrace=1"; }

namespace {

constexpr double kTolFp32 = 1e-5, kTolTf32 = 2e-3;

std::string current_case;  // named if the process aborts

struct Stats {
  long cases = 0, values = 0, mismatches = 0;
  bool fp32 = false, tf32 = false;        // conv outputs compared
  double worst_fp32 = 0, worst_tf32 = 0;  // largest error / tolerance seen
};

// An exact-size heap block (ASan catches the first element past either end), optionally one
// element past a 16-byte boundary so the kernels take their unaligned paths.
template <class T>
class Buffer {
 public:
  Buffer(i64 n, bool misaligned) : n_(n) {
    const i64 off = misaligned ? 1 : 0;
    const std::size_t bytes = sizeof(T) * static_cast<std::size_t>(n + off);
    if (posix_memalign(&raw_, 16, std::max<std::size_t>(bytes, 1))) std::abort();
    p_ = static_cast<T*>(raw_) + off;
  }
  Buffer(const Buffer&) = delete;
  Buffer& operator=(const Buffer&) = delete;
  ~Buffer() { std::free(raw_); }
  T* get() { return p_; }
  T& operator[](i64 i) { return p_[i]; }
  i64 size() const { return n_; }
  void poison() { std::memset(static_cast<void*>(p_), 0xff, sizeof(T) * static_cast<std::size_t>(n_)); }

 private:
  void* raw_ = nullptr;
  T* p_ = nullptr;
  i64 n_;
};

using Rng = std::mt19937_64;

float uniform(Rng& rng) { return std::uniform_real_distribution<float>(-1.f, 1.f)(rng); }
template <class T>
T pick(Rng& rng, std::initializer_list<T> l) {
  return l.begin()[rng() % l.size()];
}
bool chance(Rng& rng, int one_in) { return rng() % static_cast<unsigned>(one_in) == 0; }

std::vector<float> abs_of(Buffer<float>& b) {
  std::vector<float> a(static_cast<std::size_t>(b.size()));
  for (i64 i = 0; i < b.size(); ++i) a[i] = std::fabs(b[i]);
  return a;
}

class Case {
 public:
  Case(long index, std::string tag, Stats& st) : index_(index), tag_(std::move(tag)), st_(st) {
    current_case = "case " + std::to_string(index_) + " (" + tag_ + ")";
    ++st_.cases;
  }
  // Prints a problem under the case's name; the caller counts it.
  void note(const std::string& what) {
    if (!failed_) std::printf("FAIL case %ld (%s)\n", index_, tag_.c_str());
    failed_ = true;
    std::printf("  %s\n", what.c_str());
  }

  // Runs one emulated call; a thrown error (a rejected launch, say) is a failure.
  template <class F>
  bool call(const char* op, F f) {
    try {
      f();
      return true;
    } catch (const std::exception& e) {
      note(std::string(op) + " threw: " + e.what());
      ++st_.mismatches;
      return false;
    }
  }

  void near(const char* op, const float* got, const std::vector<float>& want, const std::vector<float>& bound,
            double tol, bool tf32) {
    long bad = 0;
    for (std::size_t i = 0; i < want.size(); ++i) {
      ++st_.values;
      if (std::isnan(want[i])) {
        if (!identical(got[i], want[i]) && ++bad <= 3) report(op, i, got[i], want[i], "");
        continue;
      }
      const double err = std::fabs(static_cast<double>(got[i]) - want[i]), allowed = tol * bound[i];
      if (!(err <= allowed) && ++bad <= 3) report(op, i, got[i], want[i], " (allowed " + std::to_string(allowed) + ")");
      (tf32 ? st_.tf32 : st_.fp32) = true;
      double& worst = tf32 ? st_.worst_tf32 : st_.worst_fp32;
      if (err > 0) worst = std::max(worst, std::isnan(err) ? INFINITY : err / allowed);
    }
    summarise(op, bad, static_cast<long>(want.size()));
  }

  template <class T>
  void same(const char* op, const T* got, const std::vector<T>& want) {
    long bad = 0;
    for (std::size_t i = 0; i < want.size(); ++i) {
      ++st_.values;
      if (!identical(got[i], want[i]) && ++bad <= 3) report(op, i, got[i], want[i], "");
    }
    summarise(op, bad, static_cast<long>(want.size()));
  }

 private:
  // Bit for bit, except that any NaN matches a NaN, unless it is the poison pattern.
  static bool identical(float a, float b) {
    std::uint32_t ua, ub;
    std::memcpy(&ua, &a, 4);
    std::memcpy(&ub, &b, 4);
    return ua == ub || (std::isnan(a) && std::isnan(b) && ua != 0xffffffffu);
  }
  static bool identical(std::int32_t a, std::int32_t b) { return a == b; }
  static bool identical(i64 a, i64 b) { return a == b; }

  void report(const char* op, std::size_t i, double got, double want, const std::string& extra) {
    char line[240];
    std::snprintf(line, sizeof line, "%s[%zu]: got %.9g, want %.9g%s", op, i, got, want, extra.c_str());
    note(line);
  }
  void summarise(const char* op, long bad, long n) {
    if (!bad) return;
    ++st_.mismatches;
    std::printf("  %s: %ld of %ld values differ\n", op, bad, n);
  }

  long index_;
  std::string tag_;
  Stats& st_;
  bool failed_ = false;
};

// ------------------------------------------------------------------------------------- conv

struct ConvCase {
  i64 N, H, W, C, R, S, K, sh, sw, dh, dw;
  Padding pad;
  bool tf32, relu, bias;
  unsigned misaligned;    // bit per buffer: x, w, bias, y, dy, dx, dw, dbias
  bool wide = false;      // the 64-bit fallback kernels
  bool no_pool = false;   // cudaMallocAsync fails: split-K falls back to one split
  bool nan = false;       // x holds a NaN, which every output it reaches must keep, ReLU or not
};

std::string describe(const ConvCase& c) {
  char s[300];
  std::snprintf(s, sizeof s,
                "conv N=%lld H=%lld W=%lld C=%lld R=%lld S=%lld K=%lld stride=%lld,%lld dilation=%lld,%lld %s %s%s%s"
                " misaligned=0x%x%s%s%s",
                (long long)c.N, (long long)c.H, (long long)c.W, (long long)c.C, (long long)c.R, (long long)c.S,
                (long long)c.K, (long long)c.sh, (long long)c.sw, (long long)c.dh, (long long)c.dw,
                c.pad == Padding::Same ? "same" : "valid", c.tf32 ? "tf32" : "fp32", c.relu ? " relu" : "",
                c.bias ? " bias" : "", c.misaligned, c.wide ? " wide" : "", c.no_pool ? " no-pool" : "",
                c.nan ? " nan" : "");
  return s;
}

void run_conv(long index, const ConvCase& c, Rng& rng, Stats& st) {
  const Conv2dDesc d = make_conv2d_desc(c.N, c.H, c.W, c.C, c.R, c.S, c.K, c.sh, c.sw, c.dh, c.dw, c.pad);
  Case k(index, describe(c), st);
  const i64 nx = d.N * d.H * d.W * d.C, nw = d.R * d.S * d.C * d.K, ny = d.N * d.OH * d.OW * d.K;
  auto mis = [&](int bit) { return (c.misaligned >> bit & 1) != 0; };
  Buffer<float> x(nx, mis(0)), w(nw, mis(1)), b(d.K, mis(2)), y(ny, mis(3)), dy(ny, mis(4)), dx(nx, mis(5)),
      dw(nw, mis(6)), db(d.K, mis(7));
  for (auto* buf : {&x, &w, &b, &dy})
    for (i64 i = 0; i < buf->size(); ++i) (*buf)[i] = uniform(rng);
  if (c.nan && nx) x[static_cast<i64>(rng() % static_cast<std::uint64_t>(nx))] = NAN;
  std::vector<float> ax = abs_of(x), aw = abs_of(w), ab = abs_of(b), ady = abs_of(dy);
  const float* bias = c.bias ? b.get() : nullptr;
  const Activation act = c.relu ? Activation::Relu : Activation::None;
  const double tol = c.tf32 ? kTolTf32 : kTolFp32;
  // The reference loops give the expected values and, run on |operands|, each output's sum of |terms|.
  std::vector<float> want(ny), bound(ny);
  reference::conv2d_fwd(d, x.get(), w.get(), bias, want.data(), act);
  reference::conv2d_fwd(d, ax.data(), aw.data(), c.bias ? ab.data() : nullptr, bound.data(), Activation::None);
  emu::force_wide_indices = c.wide;
  emu::fail_malloc_async = c.no_pool;
  y.poison();
  if (k.call("forward", [&] { conv2d_fwd_cuda(d, x.get(), w.get(), bias, y.get(), act, c.tf32, nullptr); }))
    k.near("forward", y.get(), want, bound, tol, c.tf32);
  // With a batch normalisation folded in: each output channel's sums times scale[k] before the bias.
  Buffer<float> scale(d.K, mis(2));
  for (i64 i = 0; i < d.K; ++i) scale[i] = uniform(rng);
  const std::vector<float> ascale = abs_of(scale);
  reference::conv2d_fwd(d, x.get(), w.get(), bias, want.data(), act, {}, scale.get());
  reference::conv2d_fwd(d, ax.data(), aw.data(), c.bias ? ab.data() : nullptr, bound.data(), Activation::None, {},
                        ascale.data());
  y.poison();
  if (k.call("scaled forward",
             [&] { conv2d_fwd_cuda(d, x.get(), w.get(), bias, y.get(), act, c.tf32, nullptr, scale.get()); }))
    k.near("scaled forward", y.get(), want, bound, tol, c.tf32);
  // A residual block's shortcut added in the store, after the bias, before the ReLU.
  Buffer<float> res(ny, mis(4));
  for (i64 i = 0; i < ny; ++i) res[i] = uniform(rng);
  const std::vector<float> ares = abs_of(res);
  reference::conv2d_fwd(d, x.get(), w.get(), bias, want.data(), act, {}, scale.get(), res.get());
  reference::conv2d_fwd(d, ax.data(), aw.data(), c.bias ? ab.data() : nullptr, bound.data(), Activation::None, {},
                        ascale.data(), ares.data());
  y.poison();
  if (k.call("residual forward", [&] {
        conv2d_fwd_cuda(d, x.get(), w.get(), bias, y.get(), act, c.tf32, nullptr, scale.get(), res.get());
      }))
    k.near("residual forward", y.get(), want, bound, tol, c.tf32);

  want.assign(nx, 0.f);
  bound.assign(nx, 0.f);
  reference::conv2d_bwd_data(d, dy.get(), w.get(), want.data());
  reference::conv2d_bwd_data(d, ady.data(), aw.data(), bound.data());
  dx.poison();
  if (k.call("backward-data", [&] { conv2d_bwd_data_cuda(d, dy.get(), w.get(), dx.get(), c.tf32, nullptr); }))
    k.near("backward-data", dx.get(), want, bound, tol, c.tf32);

  want.assign(nw, 0.f);
  bound.assign(nw, 0.f);
  std::vector<float> want_db(d.K), bound_db(d.K);
  reference::conv2d_bwd_filter(d, x.get(), dy.get(), want.data(), c.bias ? want_db.data() : nullptr);
  reference::conv2d_bwd_filter(d, ax.data(), ady.data(), bound.data(), c.bias ? bound_db.data() : nullptr);
  dw.poison();
  db.poison();
  if (k.call("backward-filter", [&] {
        conv2d_bwd_filter_cuda(d, x.get(), dy.get(), dw.get(), c.bias ? db.get() : nullptr, c.tf32, nullptr);
      })) {
    k.near("backward-filter", dw.get(), want, bound, tol, c.tf32);
    if (c.bias) k.near("bias gradient", db.get(), want_db, bound_db, kTolFp32, false);
  }
  emu::force_wide_indices = false;
  emu::fail_malloc_async = false;
}

ConvCase random_conv(Rng& rng) {
  for (;;) {
    ConvCase c{};
    c.N = pick<i64>(rng, {1, 1, 2, 3});
    c.H = 1 + static_cast<i64>(rng() % 10);
    c.W = 1 + static_cast<i64>(rng() % 10);
    c.C = pick<i64>(rng, {1, 2, 3, 4, 5, 8, 12, 16, 17, 20});
    c.K = pick<i64>(rng, {1, 3, 4, 8, 31, 32, 33, 64, 65, 72});
    c.R = pick<i64>(rng, {1, 2, 3, 4, 5});
    c.S = pick<i64>(rng, {1, 2, 3, 4});
    c.sh = pick<i64>(rng, {1, 1, 2, 3});
    c.sw = pick<i64>(rng, {1, 1, 2, 3});
    c.dh = pick<i64>(rng, {1, 1, 2, 3});
    c.dw = pick<i64>(rng, {1, 1, 2});
    c.pad = chance(rng, 2) ? Padding::Same : Padding::Valid;
    c.tf32 = chance(rng, 2);
    c.relu = chance(rng, 2);
    c.bias = chance(rng, 2);
    for (int bit = 0; bit < 8; ++bit) c.misaligned |= chance(rng, 4) ? 1u << bit : 0u;
    c.no_pool = chance(rng, 8);
    // The 64-bit kernels run a block per weight: only small filters.
    c.wide = c.R * c.S * c.C * c.K <= 256 && chance(rng, 6);
    try {
      make_conv2d_desc(c.N, c.H, c.W, c.C, c.R, c.S, c.K, c.sh, c.sw, c.dh, c.dw, c.pad);
      return c;
    } catch (const ShapeError&) {
    }
  }
}

// Tile edges and paths the random draw reaches rarely.
std::vector<ConvCase> fixed_conv() {
  const Padding same = Padding::Same, valid = Padding::Valid;
  return {
      {1, 5, 5, 4, 3, 3, 8, 1, 1, 1, 1, same, false, false, true, 0},
      {1, 5, 5, 4, 3, 3, 8, 1, 1, 1, 1, same, true, false, true, 0},
      // 70 filters: two 64-wide column tiles, the second ragged.
      {2, 9, 8, 8, 3, 3, 70, 2, 1, 1, 2, same, false, true, true, 0},
      {2, 9, 8, 8, 3, 3, 70, 2, 1, 1, 2, same, true, true, true, 0},
      // Q = 144 and K = 64: the large backward-filter tile, split three ways over 264 pixels.
      {2, 12, 11, 16, 3, 3, 64, 1, 1, 1, 1, same, false, false, true, 0},
      {2, 12, 11, 16, 3, 3, 64, 1, 1, 1, 1, same, true, false, true, 0},
      // Stride larger than the kernel: input pixels no tap reaches get zero gradients.
      {1, 7, 7, 3, 2, 2, 5, 3, 3, 1, 1, same, false, false, true, 0},
      // Everything misaligned: with C and K multiples of 4 only the alignment rules out float4.
      {2, 6, 7, 8, 3, 3, 32, 1, 1, 1, 1, same, false, true, true, 0xff},
      {2, 6, 7, 5, 3, 3, 33, 1, 2, 2, 1, valid, true, true, true, 0xff},
      // An empty batch: nothing to compute, zero filter and bias gradients.
      {0, 5, 5, 3, 3, 3, 4, 1, 1, 1, 1, same, false, false, true, 0},
      // Two splits wanted, but no stream-ordered pool: one split straight into dw and dbias.
      {3, 8, 8, 3, 3, 3, 8, 1, 1, 1, 1, same, false, false, true, 0, false, true},
      {2, 5, 4, 3, 3, 2, 5, 2, 1, 1, 2, same, false, true, true, 0x29, true},  // 64-bit kernels
      {1, 6, 5, 4, 3, 3, 8, 1, 1, 1, 1, same, false, true, true, 0, false, false, true},
      {1, 6, 5, 4, 3, 3, 8, 1, 1, 1, 1, same, true, true, true, 0, false, false, true},
      {1, 6, 5, 4, 3, 3, 8, 1, 1, 1, 1, same, false, true, true, 0, true, false, true},
  };
}

// ------------------------------------------------------------------------------------- pool

struct PoolCase {
  i64 N, H, W, C, R, S, sh, sw;
  Padding pad;
  bool ties;            // small integers, so windows hold equal maxima
  unsigned misaligned;  // bit per buffer: x, y, argmax, dy, dx
  bool wide = false;
};

std::string describe(const PoolCase& c) {
  char s[240];
  std::snprintf(s, sizeof s,
                "pool N=%lld H=%lld W=%lld C=%lld window=%lldx%lld stride=%lld,%lld %s%s misaligned=0x%x%s",
                (long long)c.N, (long long)c.H, (long long)c.W, (long long)c.C, (long long)c.R, (long long)c.S,
                (long long)c.sh, (long long)c.sw, c.pad == Padding::Same ? "same" : "valid", c.ties ? " ties" : "",
                c.misaligned, c.wide ? " wide" : "");
  return s;
}

void run_pool(long index, const PoolCase& c, Rng& rng, Stats& st) {
  const Pool2dDesc d = make_pool2d_desc(c.N, c.H, c.W, c.C, c.R, c.S, c.sh, c.sw, c.pad);
  Case k(index, describe(c), st);
  const i64 nx = d.N * d.H * d.W * d.C, ny = d.N * d.OH * d.OW * d.C;
  auto mis = [&](int bit) { return (c.misaligned >> bit & 1) != 0; };
  Buffer<float> x(nx, mis(0)), y(ny, mis(1)), dy(ny, mis(3)), dx(nx, mis(4));
  Buffer<std::int32_t> am(ny, mis(2)), am_in(ny, mis(2));
  for (i64 i = 0; i < nx; ++i) {
    x[i] = c.ties ? static_cast<float>(rng() % 3) : uniform(rng);
    if (chance(rng, 16)) x[i] = NAN;
  }
  for (i64 i = 0; i < ny; ++i) dy[i] = uniform(rng);
  emu::force_wide_indices = c.wide;

  std::vector<float> want(ny);
  std::vector<std::int32_t> want_am(ny);
  reference::max_pool2d_fwd(d, x.get(), want.data(), want_am.data());
  y.poison();
  am.poison();
  if (k.call("max forward", [&] { max_pool2d_fwd_cuda(d, x.get(), y.get(), am.get(), nullptr); })) {
    k.same("max forward", y.get(), want);
    k.same("argmax", am.get(), want_am);
  }
  y.poison();
  if (k.call("max forward without argmax", [&] { max_pool2d_fwd_cuda(d, x.get(), y.get(), nullptr, nullptr); }))
    k.same("max forward without argmax", y.get(), want);

  want.assign(nx, 0.f);
  reference::max_pool2d_bwd(d, dy.get(), want_am.data(), want.data());
  for (i64 i = 0; i < ny; ++i) am_in[i] = want_am[i];
  dx.poison();
  if (k.call("max backward", [&] { max_pool2d_bwd_cuda(d, dy.get(), am_in.get(), dx.get(), nullptr); }))
    k.same("max backward", dx.get(), want);

  // The window check: the true argmax passes; entries moved elsewhere (off the input, into a
  // neighbouring window or left in place) are counted as the reference loops count them.
  for (i64 i = 0; i < ny; ++i)
    if (chance(rng, 3)) am_in[i] = static_cast<std::int32_t>(static_cast<i64>(rng() % (d.H * d.W + 4)) - 2);
  const std::int32_t* true_argmax = want_am.data();
  for (const std::int32_t* a : {true_argmax, static_cast<const std::int32_t*>(am_in.get())}) {
    i64 got = -1;
    const i64 outside = reference::max_pool2d_argmax_outside(d, a);
    if (k.call("argmax window check", [&] { got = max_pool2d_argmax_outside_cuda(d, a, nullptr); }))
      k.same("argmax window check", &got, std::vector<i64>{outside});
  }

  want.assign(ny, 0.f);
  reference::avg_pool2d_fwd(d, x.get(), want.data());
  y.poison();
  if (k.call("average forward", [&] { avg_pool2d_fwd_cuda(d, x.get(), y.get(), nullptr); }))
    k.same("average forward", y.get(), want);

  want.assign(nx, 0.f);
  reference::avg_pool2d_bwd(d, dy.get(), want.data());
  dx.poison();
  if (k.call("average backward", [&] { avg_pool2d_bwd_cuda(d, dy.get(), dx.get(), nullptr); }))
    k.same("average backward", dx.get(), want);
  emu::force_wide_indices = false;
}

PoolCase random_pool(Rng& rng) {
  for (;;) {
    PoolCase c{};
    c.N = pick<i64>(rng, {1, 2});
    c.H = 1 + static_cast<i64>(rng() % 9);
    c.W = 1 + static_cast<i64>(rng() % 9);
    c.C = pick<i64>(rng, {1, 3, 4, 5, 8});
    c.R = 1 + static_cast<i64>(rng() % 4);
    c.S = 1 + static_cast<i64>(rng() % 4);
    c.sh = 1 + static_cast<i64>(rng() % 3);
    c.sw = 1 + static_cast<i64>(rng() % 3);
    c.pad = chance(rng, 2) ? Padding::Same : Padding::Valid;
    c.ties = chance(rng, 2);
    for (int bit = 0; bit < 5; ++bit) c.misaligned |= chance(rng, 8) ? 1u << bit : 0u;
    c.wide = chance(rng, 4);
    try {
      make_pool2d_desc(c.N, c.H, c.W, c.C, c.R, c.S, c.sh, c.sw, c.pad);
      return c;
    } catch (const ShapeError&) {
    }
  }
}

std::vector<PoolCase> fixed_pool() {
  const Padding same = Padding::Same, valid = Padding::Valid;
  return {
      {2, 6, 6, 8, 2, 2, 2, 2, valid, true, 0},       // float4 / int4 path
      {1, 7, 5, 4, 3, 3, 1, 1, same, false, 0},       // overlapping windows
      {2, 5, 6, 8, 3, 2, 2, 3, same, true, 0x1f},     // C % 4 == 0 but everything misaligned
      {2, 5, 6, 3, 3, 2, 2, 3, same, false, 0},       // C % 4 != 0
      {0, 4, 4, 4, 2, 2, 2, 2, same, false, 0},       // an empty batch
      {1, 9, 9, 8, 4, 4, 3, 3, same, true, 0, true},  // 64-bit indices
      // A window past 2^32 over a tiny input: small tensors, yet only 64-bit indices hold it.
      {1, 4, 4, 1, (i64{1} << 32) + 1, (i64{1} << 32) + 1, 1, 1, same, false, 0},
  };
}

// -------------------------------------------------------------------------------- depthwise

struct DepthwiseCase {
  i64 N, H, W, C, R, S, M, sh, sw, dh, dw;
  Padding pad;
  Activation act;
  bool bias;
  bool wide = false;     // the 64-bit kernels
  bool no_pool = false;  // cudaMallocAsync fails: backward-filter runs as one split
  bool nan = false;      // x holds a NaN, which every output it reaches must keep
};

std::string describe(const DepthwiseCase& c) {
  char s[300];
  std::snprintf(s, sizeof s,
                "depthwise N=%lld H=%lld W=%lld C=%lld R=%lld S=%lld M=%lld stride=%lld,%lld dilation=%lld,%lld %s"
                " act=%d%s%s%s%s",
                (long long)c.N, (long long)c.H, (long long)c.W, (long long)c.C, (long long)c.R, (long long)c.S,
                (long long)c.M, (long long)c.sh, (long long)c.sw, (long long)c.dh, (long long)c.dw,
                c.pad == Padding::Same ? "same" : "valid", static_cast<int>(c.act), c.bias ? " bias" : "",
                c.wide ? " wide" : "", c.no_pool ? " no-pool" : "", c.nan ? " nan" : "");
  return s;
}

void run_depthwise(long index, const DepthwiseCase& c, Rng& rng, Stats& st) {
  const Depthwise2dDesc d = make_depthwise2d_desc(c.N, c.H, c.W, c.C, c.R, c.S, c.M, c.sh, c.sw, c.dh, c.dw, c.pad);
  Case k(index, describe(c), st);
  const i64 nx = d.N * d.H * d.W * d.C, nw = d.R * d.S * d.K, ny = d.N * d.OH * d.OW * d.K;
  Buffer<float> x(nx, false), w(nw, false), b(d.K, false), y(ny, false), dy(ny, false), dx(nx, false),
      dw(nw, false), db(d.K, false);
  for (auto* buf : {&x, &w, &b, &dy})
    for (i64 i = 0; i < buf->size(); ++i) (*buf)[i] = 4 * uniform(rng);  // ReLU6 clips some sums
  if (c.nan && nx) x[static_cast<i64>(rng() % static_cast<std::uint64_t>(nx))] = NAN;
  std::vector<float> ax = abs_of(x), aw = abs_of(w), ab = abs_of(b), ady = abs_of(dy);
  const float* bias = c.bias ? b.get() : nullptr;
  std::vector<float> want(ny), bound(ny);
  reference::depthwise2d_fwd(d, x.get(), w.get(), bias, want.data(), c.act);
  reference::depthwise2d_fwd(d, ax.data(), aw.data(), c.bias ? ab.data() : nullptr, bound.data(), Activation::None);
  emu::force_wide_indices = c.wide;
  emu::fail_malloc_async = c.no_pool;
  y.poison();
  if (k.call("depthwise forward", [&] { depthwise2d_fwd_cuda(d, x.get(), w.get(), bias, y.get(), c.act, nullptr); }))
    k.near("depthwise forward", y.get(), want, bound, kTolFp32, false);

  want.assign(nx, 0.f);
  bound.assign(nx, 0.f);
  reference::depthwise2d_bwd_data(d, dy.get(), w.get(), want.data());
  reference::depthwise2d_bwd_data(d, ady.data(), aw.data(), bound.data());
  dx.poison();
  if (k.call("depthwise backward-data", [&] { depthwise2d_bwd_data_cuda(d, dy.get(), w.get(), dx.get(), nullptr); }))
    k.near("depthwise backward-data", dx.get(), want, bound, kTolFp32, false);

  want.assign(nw, 0.f);
  bound.assign(nw, 0.f);
  std::vector<float> want_db(d.K), bound_db(d.K);
  reference::depthwise2d_bwd_filter(d, x.get(), dy.get(), want.data(), c.bias ? want_db.data() : nullptr);
  reference::depthwise2d_bwd_filter(d, ax.data(), ady.data(), bound.data(), c.bias ? bound_db.data() : nullptr);
  dw.poison();
  db.poison();
  if (k.call("depthwise backward-filter", [&] {
        depthwise2d_bwd_filter_cuda(d, x.get(), dy.get(), dw.get(), c.bias ? db.get() : nullptr, nullptr);
      })) {
    k.near("depthwise backward-filter", dw.get(), want, bound, kTolFp32, false);
    if (c.bias) k.near("depthwise bias gradient", db.get(), want_db, bound_db, kTolFp32, false);
  }
  emu::force_wide_indices = false;
  emu::fail_malloc_async = false;
}

DepthwiseCase random_depthwise(Rng& rng) {
  for (;;) {
    DepthwiseCase c{};
    c.N = pick<i64>(rng, {1, 1, 2, 3});
    c.H = 1 + static_cast<i64>(rng() % 10);
    c.W = 1 + static_cast<i64>(rng() % 10);
    c.C = pick<i64>(rng, {1, 2, 3, 8, 16, 31, 32, 33, 40});
    c.M = pick<i64>(rng, {1, 1, 1, 2, 3});
    c.R = pick<i64>(rng, {1, 2, 3, 4, 5});
    c.S = pick<i64>(rng, {1, 2, 3, 5});
    c.sh = pick<i64>(rng, {1, 1, 2, 3});
    c.sw = pick<i64>(rng, {1, 1, 2});
    c.dh = pick<i64>(rng, {1, 1, 2, 3});
    c.dw = pick<i64>(rng, {1, 1, 2});
    c.pad = chance(rng, 2) ? Padding::Same : Padding::Valid;
    c.act = pick<Activation>(rng, {Activation::None, Activation::Relu, Activation::Relu6});
    c.bias = chance(rng, 2);
    c.wide = chance(rng, 5);
    c.no_pool = chance(rng, 8);
    c.nan = chance(rng, 8);
    try {
      make_depthwise2d_desc(c.N, c.H, c.W, c.C, c.R, c.S, c.M, c.sh, c.sw, c.dh, c.dw, c.pad);
      return c;
    } catch (const ShapeError&) {
    }
  }
}

std::vector<DepthwiseCase> fixed_depthwise() {
  const Padding same = Padding::Same, valid = Padding::Valid;
  const Activation none = Activation::None, relu6 = Activation::Relu6;
  return {
      // Many pixels: backward-filter splits them (and falls back to one split without a pool).
      {4, 12, 12, 8, 3, 3, 1, 1, 1, 1, 1, same, relu6, true},
      {4, 12, 12, 8, 3, 3, 1, 1, 1, 1, 1, same, relu6, true, false, true},
      // 70 channels: three blocks of 32, the last ragged; stride 2 with an even kernel.
      {2, 9, 8, 35, 4, 4, 2, 2, 2, 1, 1, same, none, true},
      // Stride larger than the kernel: input pixels no tap reaches get zero gradients.
      {1, 7, 7, 3, 2, 2, 1, 3, 3, 1, 1, same, none, false},
      {0, 5, 5, 3, 3, 3, 2, 1, 1, 1, 1, same, none, true},  // an empty batch
      {2, 6, 5, 5, 3, 2, 3, 2, 1, 2, 1, valid, relu6, true, true},  // 64-bit kernels
  };
}

// ------------------------------------------------------------------------------- batch norm

struct BatchNormCase {
  i64 M, C;
  bool gamma, beta;
  bool far = false;      // data at 100 +- 0.01: the mean must not cost the spread its digits
  bool wide = false;     // the 64-bit kernels
  bool no_pool = false;  // cudaMallocAsync fails: one block per 32 channels does each whole pass
};

std::string describe(const BatchNormCase& c) {
  char s[200];
  std::snprintf(s, sizeof s, "batch_norm M=%lld C=%lld%s%s%s%s%s", (long long)c.M, (long long)c.C,
                c.gamma ? " gamma" : "", c.beta ? " beta" : "", c.far ? " far" : "", c.wide ? " wide" : "",
                c.no_pool ? " no-pool" : "");
  return s;
}

// Bounds for near(): |want| plus a floor.
std::vector<float> around(const std::vector<float>& want, float floor) {
  std::vector<float> b(want.size());
  for (std::size_t i = 0; i < want.size(); ++i) b[i] = std::fabs(want[i]) + floor;
  return b;
}

void run_batch_norm(long index, const BatchNormCase& c, Rng& rng, Stats& st) {
  Case k(index, describe(c), st);
  const i64 M = c.M, C = c.C, n = M * C;
  Buffer<float> x(n, false), g(C, false), b(C, false), y(n, false), xh(n, false), mean(C, false), var(C, false),
      inv(C, false), dy(n, false), dx(n, false), dg(C, false), db(C, false);
  for (i64 i = 0; i < n; ++i) x[i] = c.far ? 100.f + 0.01f * uniform(rng) : 3 * uniform(rng) + 1;
  for (i64 i = 0; i < C; ++i) g[i] = uniform(rng), b[i] = uniform(rng);
  for (i64 i = 0; i < n; ++i) dy[i] = uniform(rng);
  const float eps = 1e-3f;
  const float* pg = c.gamma ? g.get() : nullptr;
  const float* pb = c.beta ? b.get() : nullptr;
  std::vector<float> wy(n), wxh(n), wmean(C), wvar(C), winv(C);
  reference::batch_norm_fwd(M, C, x.get(), pg, pb, eps, wy.data(), wxh.data(), wmean.data(), wvar.data(),
                            winv.data());
  emu::force_wide_indices = c.wide;
  emu::fail_malloc_async = c.no_pool;
  for (auto* out : {&y, &xh, &mean, &var, &inv}) out->poison();
  if (k.call("batch_norm forward", [&] {
        batch_norm_fwd_cuda(M, C, x.get(), pg, pb, eps, y.get(), xh.get(), mean.get(), var.get(), inv.get(), nullptr);
      })) {
    std::vector<float> ybound(n);
    for (i64 i = 0; i < n; ++i) ybound[i] = (std::fabs(wxh[i]) + 1) * (pg ? std::fabs(pg[i % C]) : 1.f) + 1;
    std::vector<float> mbound(C, 0.f);  // the mean of |x|
    for (i64 i = 0; i < n; ++i) mbound[i % C] += std::fabs(x[i]) / M;
    k.near("batch_norm mean", mean.get(), wmean, mbound, kTolFp32, false);
    k.near("batch_norm var", var.get(), wvar, around(wvar, 0.f), kTolFp32, false);
    k.near("batch_norm inv", inv.get(), winv, around(winv, 0.f), kTolFp32, false);
    k.near("batch_norm xhat", xh.get(), wxh, around(wxh, 1.f), kTolFp32, false);
    k.near("batch_norm y", y.get(), wy, ybound, kTolFp32, false);
  }

  // The backward from the reference's xhat and inv, with and without dx.
  std::vector<float> wdx(n), wdg(C), wdb(C), bdx(n), bdg(C, 0.f), bdb(C, 0.f);
  reference::batch_norm_bwd(M, C, dy.get(), wxh.data(), winv.data(), pg, wdx.data(), wdg.data(), wdb.data());
  for (i64 i = 0; i < n; ++i) bdb[i % C] += std::fabs(dy[i]), bdg[i % C] += std::fabs(dy[i] * wxh[i]);
  for (i64 i = 0; i < n; ++i) {
    const i64 ch = i % C;
    const float scale = winv[ch] * (pg ? std::fabs(pg[ch]) : 1.f);
    bdx[i] = scale * (std::fabs(dy[i]) + (bdb[ch] + std::fabs(wxh[i]) * bdg[ch]) / M);
  }
  for (bool with_dx : {true, false}) {
    for (auto* out : {&dx, &dg, &db}) out->poison();
    const char* op = with_dx ? "batch_norm backward" : "batch_norm backward without dx";
    if (k.call(op, [&] {
          batch_norm_bwd_cuda(M, C, dy.get(), wxh.data(), winv.data(), pg, with_dx ? dx.get() : nullptr, dg.get(),
                              db.get(), nullptr);
        })) {
      k.near("batch_norm dbeta", db.get(), wdb, bdb, kTolFp32, false);
      k.near("batch_norm dgamma", dg.get(), wdg, bdg, kTolFp32, false);
      if (with_dx) k.near("batch_norm dx", dx.get(), wdx, bdx, kTolFp32, false);
    }
  }

  // Inference with the batch's statistics as the moving ones.
  std::vector<float> iy(n), ibound(n);
  reference::batch_norm_infer(M, C, x.get(), wmean.data(), wvar.data(), pg, pb, eps, iy.data());
  for (i64 i = 0; i < n; ++i) {
    const i64 ch = i % C;
    const float s = winv[ch] * (pg ? std::fabs(pg[ch]) : 1.f);
    ibound[i] = (std::fabs(x[i]) + std::fabs(wmean[ch])) * s + (pb ? std::fabs(pb[ch]) : 0.f) + 1;
  }
  y.poison();
  if (k.call("batch_norm inference", [&] {
        batch_norm_infer_cuda(M, C, x.get(), wmean.data(), wvar.data(), pg, pb, eps, y.get(), {}, nullptr);
      }))
    k.near("batch_norm inference", y.get(), iy, ibound, kTolFp32, false);
  // With each fused activation (none grows an error by more than 1.1x).
  for (const PointwiseAct act : {PointwiseAct{true, Pointwise::Clamp, 0.f, 6.f}, PointwiseAct{true, Pointwise::Sigmoid},
                                 PointwiseAct{true, Pointwise::Silu}}) {
    std::vector<float> ay(n), abound(n);
    reference::batch_norm_infer(M, C, x.get(), wmean.data(), wvar.data(), pg, pb, eps, ay.data(), act);
    for (i64 i = 0; i < n; ++i) abound[i] = 1.1f * ibound[i];
    y.poison();
    if (k.call("batch_norm inference with an activation", [&] {
          batch_norm_infer_cuda(M, C, x.get(), wmean.data(), wvar.data(), pg, pb, eps, y.get(), act, nullptr);
        }))
      k.near("batch_norm inference with an activation", y.get(), ay, abound, kTolFp32, false);
    // The same activation as a pass of its own (the convolutions' `post` on the GPU).
    reference::pointwise(act.f, n, iy.data(), ay.data(), act.lo, act.hi);
    std::copy(iy.begin(), iy.end(), y.get());
    if (k.call("pointwise", [&] { pointwise_cuda(act, n, y.get(), nullptr); }))
      k.near("pointwise", y.get(), ay, abound, kTolFp32, false);
  }
  emu::force_wide_indices = false;
  emu::fail_malloc_async = false;
}

BatchNormCase random_batch_norm(Rng& rng) {
  BatchNormCase c{};
  c.M = chance(rng, 3) ? 300 + static_cast<i64>(rng() % 1500) : 1 + static_cast<i64>(rng() % 40);
  c.C = pick<i64>(rng, {1, 3, 4, 16, 31, 32, 33, 70});
  c.gamma = !chance(rng, 4);
  c.beta = !chance(rng, 4);
  c.far = chance(rng, 6);
  c.wide = chance(rng, 5);
  c.no_pool = chance(rng, 6);
  return c;
}

std::vector<BatchNormCase> fixed_batch_norm() {
  return {
      {6, 5, true, true},                          // one block, a partial channel tile
      {2000, 40, true, true},                      // splits: partial sums in a workspace
      {2000, 40, true, true, false, false, true},  // the same rows, no pool: one block per 32 channels
      {1500, 3, false, false, true},               // far from zero, split
      {1500, 3, true, false, true, false, true},   // far from zero, whole
      {700, 33, true, true, false, true},          // 64-bit kernels
      {1, 8, true, true},                          // one row: variance 0
      {0, 4, true, true},                          // no rows
  };
}

void name_the_case(int) {
  if (!current_case.empty()) std::fprintf(stderr, "check_kernels: aborted in %s\n", current_case.c_str());
  std::signal(SIGABRT, SIG_DFL);
  std::raise(SIGABRT);
}

long arg(int argc, char** argv, const char* name, long fallback) {
  for (int i = 1; i + 1 < argc; ++i)
    if (std::strcmp(argv[i], name) == 0) return std::atol(argv[i + 1]);
  return fallback;
}
const char* arg(int argc, char** argv, const char* name, const char* fallback) {
  for (int i = 1; i + 1 < argc; ++i)
    if (std::strcmp(argv[i], name) == 0) return argv[i + 1];
  return fallback;
}

}  // namespace

int main(int argc, char** argv) {
  const long seed = arg(argc, argv, "--seed", 1L), n_conv = arg(argc, argv, "--conv", 20L),
             n_pool = arg(argc, argv, "--pool", 60L), n_depthwise = arg(argc, argv, "--depthwise", 30L),
             n_batch_norm = arg(argc, argv, "--batch-norm", 20L),
             only_case = arg(argc, argv, "--case", -1L);
  const std::string only = arg(argc, argv, "--only", "");
  if (only != "" && only != "conv" && only != "pool" && only != "depthwise" && only != "batch_norm") {
    std::fprintf(stderr, "check_kernels: --only takes conv, pool, depthwise or batch_norm\n");
    return 2;
  }
  bool verbose = false, all_tf32 = false;
  for (int i = 1; i < argc; ++i) {
    verbose |= std::strcmp(argv[i], "--verbose") == 0;
    all_tf32 |= std::strcmp(argv[i], "--tf32") == 0;
  }
  std::signal(SIGABRT, name_the_case);

  Stats st;
  long index = 0;
  // Case i's generator depends on (seed, i) only.
  auto next = [&](auto run) {
    const long i = index++;
    if (only_case >= 0 && i != only_case) return;
    Rng rng(static_cast<std::uint64_t>(seed) * 1000003u + static_cast<std::uint64_t>(i));
    emu::seed(rng());
    run(i, rng);
  };
  auto conv = [&](long i, ConvCase c, Rng& rng) {
    c.tf32 |= all_tf32;
    if (verbose) std::printf("case %ld: %s\n", i, describe(c).c_str());
    run_conv(i, c, rng, st);
  };
  auto pool = [&](long i, const PoolCase& c, Rng& rng) {
    if (verbose) std::printf("case %ld: %s\n", i, describe(c).c_str());
    run_pool(i, c, rng, st);
  };
  auto depthwise = [&](long i, const DepthwiseCase& c, Rng& rng) {
    if (verbose) std::printf("case %ld: %s\n", i, describe(c).c_str());
    run_depthwise(i, c, rng, st);
  };
  auto batch_norm = [&](long i, const BatchNormCase& c, Rng& rng) {
    if (verbose) std::printf("case %ld: %s\n", i, describe(c).c_str());
    run_batch_norm(i, c, rng, st);
  };
  const bool do_conv = only.empty() || only == "conv", do_pool = only.empty() || only == "pool",
             do_depthwise = only.empty() || only == "depthwise", do_batch_norm = only.empty() || only == "batch_norm";
  for (const ConvCase& c : fixed_conv())
    next([&](long i, Rng& rng) { if (do_conv) conv(i, c, rng); });
  for (long n = 0; n < n_conv; ++n)
    next([&](long i, Rng& rng) { if (do_conv) conv(i, random_conv(rng), rng); });
  for (const PoolCase& c : fixed_pool())
    next([&](long i, Rng& rng) { if (do_pool) pool(i, c, rng); });
  for (long n = 0; n < n_pool; ++n)
    next([&](long i, Rng& rng) { if (do_pool) pool(i, random_pool(rng), rng); });
  for (const DepthwiseCase& c : fixed_depthwise())
    next([&](long i, Rng& rng) { if (do_depthwise) depthwise(i, c, rng); });
  for (long n = 0; n < n_depthwise; ++n)
    next([&](long i, Rng& rng) { if (do_depthwise) depthwise(i, random_depthwise(rng), rng); });
  for (const BatchNormCase& c : fixed_batch_norm())
    next([&](long i, Rng& rng) { if (do_batch_norm) batch_norm(i, c, rng); });
  for (long n = 0; n < n_batch_norm; ++n)
    next([&](long i, Rng& rng) { if (do_batch_norm) batch_norm(i, random_batch_norm(rng), rng); });
  current_case.clear();

  std::string errors;
  char part[80];
  for (auto [used, worst, mode] : {std::tuple{st.fp32, st.worst_fp32, "fp32"}, std::tuple{st.tf32, st.worst_tf32, "tf32"}})
    if (used) {
      std::snprintf(part, sizeof part, "%s%.2f in %s", errors.empty() ? "; largest error / tolerance " : ", ",
                    worst, mode);
      errors += part;
    }
  std::printf("check_kernels --seed %ld: %ld cases, %ld values, %ld emulated launches: %s%s\n", seed, st.cases,
              st.values, emu::launches,
              st.mismatches ? (std::to_string(st.mismatches) + " OUTPUTS DIFFER").c_str() : "all match",
              errors.c_str());
  return st.mismatches ? 1 : 0;
}
