// Just enough of CUDA to run convkit's kernels on the CPU, for tests. translate.py turns
// csrc/ops/*_cuda.cu into C++ against this header; check_kernels.cpp runs the result.
//
// Emulated:
//  * Launches: every block of the grid in turn, synchronously. A block's threads are fibers
//    on the calling thread; between two synchronisation points each runs uninterrupted, in
//    an order drawn from emu::seed(), so a run is reproducible and the seed varies it.
//  * __syncthreads. A block that deadlocks (some threads at a barrier, others exited or at
//    another one) is a fatal error, never a hang.
//  * __shared__ variables (registered by translate.py): garbage at the start of every block;
//    being static storage, ASan sees any access past their ends.
//  * cp.async (4 and 16 bytes, zero-fill), commit_group and wait_group. Alignment, src-size
//    and a shared destination are checked; the destination holds garbage from the issue
//    until the copy lands in wait_group.
//  * cvt.rna.tf32.f32, and mma.sync.aligned.m16n8k8.row.col.f32.tf32.tf32.f32 as a warp
//    collective with the PTX ISA's fragment layout.
//  * Launch limits: a grid or block out of range is reported through cudaGetLastError, a
//    block larger than the kernel's __launch_bounds__ is fatal.
//  * cudaMallocAsync (garbage-filled; emu::fail_malloc_async makes it fail), cudaFreeAsync,
//    cudaMalloc and cudaFree, cudaMemsetAsync, cudaMemcpyAsync, cudaStreamSynchronize, the
//    memory-pool attribute calls, 64-bit atomicAdd, and 132 SMs (an H100's).
//
// Not emulated, so bugs of these kinds pass unseen:
//  * Concurrency between blocks: blocks never overlap, so inter-block races and missing
//    grid-level synchronisation are invisible. Within a block a race shows only when the
//    drawn order exposes it, and memory-ordering and visibility bugs never show.
//  * Warps do not run in lockstep and there are no shuffles, votes or __syncwarp.
//  * Timing, occupancy, registers, bank conflicts, the 48 KB static shared-memory limit.
//  * Streams (everything is synchronous) and the host/device split: device memory is host
//    memory, so a host pointer passed to a kernel goes unnoticed.
//  * Device arithmetic beyond IEEE float: fmaf and the basic operations round as on the GPU,
//    but nvcc's contraction of a * b + c into one FMA (so a missing __fmul_rn goes unseen),
//    the tensor cores' accumulation order and rounding, denormal flushing and fast-math
//    intrinsics are not reproduced.
//  * Any PTX or intrinsic not listed above (it does not compile here).
#pragma once

#include <math.h>
#include <signal.h>
#include <sys/mman.h>
#include <ucontext.h>
#include <unistd.h>

#include <algorithm>
#include <cstdint>
#include <cstdio>
#include <cstdlib>
#include <cstring>
#include <functional>
#include <memory>
#include <random>
#include <tuple>
#include <utility>
#include <vector>

#if defined(__SANITIZE_ADDRESS__)
#define CONVKIT_EMU_ASAN 1
#elif defined(__has_feature)
#if __has_feature(address_sanitizer)
#define CONVKIT_EMU_ASAN 1
#endif
#endif
#ifdef CONVKIT_EMU_ASAN
#include <sanitizer/asan_interface.h>
#include <sanitizer/common_interface_defs.h>
#endif

#define __global__
#define __device__
#define __host__
#define __forceinline__ inline
#define __launch_bounds__(...)
#define __shared__ static
#define __align__(n) __attribute__((aligned(n)))

struct dim3 {
  unsigned x, y, z;
  dim3(unsigned x_ = 1, unsigned y_ = 1, unsigned z_ = 1) : x(x_), y(y_), z(z_) {}
};
struct alignas(16) float4 {
  float x, y, z, w;
};
struct alignas(16) int4 {
  int x, y, z, w;
};
inline float4 make_float4(float x, float y, float z, float w) { return {x, y, z, w}; }
inline int4 make_int4(int x, int y, int z, int w) { return {x, y, z, w}; }

using cudaError_t = int;
enum : int {
  cudaSuccess = 0,
  cudaErrorMemoryAllocation = 2,
  cudaErrorInvalidConfiguration = 9,
  cudaErrorNotSupported = 801,
};
struct CUstream_st;
using cudaStream_t = CUstream_st*;
struct CUmemPool_st;
using cudaMemPool_t = CUmemPool_st*;
enum cudaDeviceAttr { cudaDevAttrMultiProcessorCount = 16 };
enum cudaMemPoolAttr { cudaMemPoolAttrReleaseThreshold = 4 };

namespace emu {

// Knobs for the test harness.
inline bool fail_malloc_async = false;  // cudaMallocAsync reports that no pool is available
inline bool force_wide_indices = false;  // translate.py makes the host code pick the 64-bit kernels
inline long launches = 0;

[[noreturn]] inline void fatal(const char* what) {
  std::fflush(stdout);
  std::fprintf(stderr, "CUDA emulation: fatal: %s\n", what);
  std::abort();
}

namespace detail {

inline std::mt19937_64& order_rng() {
  static std::mt19937_64 r(1);
  return r;
}

inline dim3 thread_idx, block_idx, block_dim, grid_dim;
inline int last_error = cudaSuccess;
inline std::uint64_t block_serial = 0;  // counts blocks run, for shared-memory freshness

struct Copy {
  void* dst;
  const void* src;
  int bytes, src_bytes;
};

struct Fiber {
  enum State { Ready, Waiting, Done } state = Ready;
  ucontext_t ctx;
  dim3 idx;
  unsigned lane = 0, warp = 0;
  char* stack = nullptr;
  std::vector<std::vector<Copy>> groups;  // committed, oldest first
  std::vector<Copy> open;                 // issued since the last commit
  void* asan_fake_stack = nullptr;
};

struct Warp {
  unsigned arrived = 0;
  unsigned a[32][4], b[32][2];
  float* d[32];
};

constexpr std::size_t kStackBytes = std::size_t{256} << 10;

// Fiber stacks with a guard page below each, kept for reuse across launches.
struct Stacks {
  std::vector<char*> mem;
  std::size_t page = static_cast<std::size_t>(sysconf(_SC_PAGESIZE));
  char* get(unsigned i) {
    while (mem.size() <= i) {
      void* p = mmap(nullptr, kStackBytes + page, PROT_READ | PROT_WRITE, MAP_PRIVATE | MAP_ANONYMOUS, -1, 0);
      if (p == MAP_FAILED) fatal("cannot map a fiber stack");
      mprotect(p, page, PROT_NONE);
      mem.push_back(static_cast<char*>(p) + page);
    }
    return mem[i];
  }
};

struct Block {
  std::vector<Fiber> fibers;
  std::vector<Warp> warps;
  std::function<void()> body;
  ucontext_t scheduler;
  void* asan_fake_stack = nullptr;
  const void* main_stack = nullptr;
  std::size_t main_stack_size = 0;
  unsigned at_barrier = 0;
  Fiber* current = nullptr;
};

inline Block& block() {
  static Block b;
  return b;
}
inline Stacks& stacks() {
  static Stacks s;
  return s;
}

inline void to_scheduler(Fiber& f, bool done) {
  Block& b = block();
#ifdef CONVKIT_EMU_ASAN
  __sanitizer_start_switch_fiber(done ? nullptr : &f.asan_fake_stack, b.main_stack, b.main_stack_size);
#endif
  swapcontext(&f.ctx, &b.scheduler);
#ifdef CONVKIT_EMU_ASAN
  __sanitizer_finish_switch_fiber(f.asan_fake_stack, &b.main_stack, &b.main_stack_size);
#endif
}

inline void land(const Copy& c) {
  if (c.src_bytes) std::memcpy(c.dst, c.src, static_cast<std::size_t>(c.src_bytes));
  std::memset(static_cast<char*>(c.dst) + c.src_bytes, 0, static_cast<std::size_t>(c.bytes - c.src_bytes));
}

inline void fiber_main(int i) {
  Block& b = block();
  Fiber& f = b.fibers[static_cast<unsigned>(i)];
#ifdef CONVKIT_EMU_ASAN
  __sanitizer_finish_switch_fiber(nullptr, &b.main_stack, &b.main_stack_size);
#endif
  b.body();
  // Copies still in flight at exit land anyway, as on the device.
  for (auto& g : f.groups)
    for (auto& c : g) land(c);
  for (auto& c : f.open) land(c);
  f.state = Fiber::Done;
  to_scheduler(f, true);
  fatal("a finished thread was resumed");
}

inline void deadlock(const Block& b) {
  unsigned done = 0, waiting = 0;
  for (const auto& f : b.fibers) (f.state == Fiber::Done ? done : waiting) += 1;
  char msg[200];
  std::snprintf(msg, sizeof msg,
                "block (%u,%u,%u) deadlocks: %u threads wait (%u of them at __syncthreads, the rest in mma.sync) "
                "while %u have exited",
                block_idx.x, block_idx.y, block_idx.z, waiting, b.at_barrier, done);
  fatal(msg);
}

inline void run_block(unsigned nthreads) {
  Block& b = block();
  b.fibers.assign(nthreads, Fiber{});
  b.warps.assign((nthreads + 31) / 32, Warp{});
  b.at_barrier = 0;
  ++block_serial;
  for (unsigned t = 0; t < nthreads; ++t) {
    Fiber& f = b.fibers[t];
    f.idx = dim3(t % block_dim.x, t / block_dim.x % block_dim.y, t / (block_dim.x * block_dim.y));
    f.lane = t % 32;
    f.warp = t / 32;
    char* stack = stacks().get(t);
#ifdef CONVKIT_EMU_ASAN
    __asan_unpoison_memory_region(stack, kStackBytes);
#endif
    getcontext(&f.ctx);
    f.ctx.uc_stack.ss_sp = stack;
    f.ctx.uc_stack.ss_size = kStackBytes;
    f.ctx.uc_link = nullptr;
    makecontext(&f.ctx, reinterpret_cast<void (*)()>(&fiber_main), 1, static_cast<int>(t));
    // ASan's swapcontext interceptor would clear the shadow of a stack named here at every
    // switch; the fiber annotations tell it about the stack instead.
    f.ctx.uc_stack = stack_t{};
    f.stack = stack;
  }
  std::vector<Fiber*> ready;
  for (;;) {
    ready.clear();
    for (auto& f : b.fibers)
      if (f.state == Fiber::Ready) ready.push_back(&f);
    if (ready.empty()) {
      for (const auto& f : b.fibers)
        if (f.state != Fiber::Done) deadlock(b);
      return;
    }
    std::shuffle(ready.begin(), ready.end(), order_rng());
    for (Fiber* f : ready) {
      if (f->state != Fiber::Ready) continue;
      b.current = f;
      thread_idx = f->idx;
#ifdef CONVKIT_EMU_ASAN
      __sanitizer_start_switch_fiber(&b.asan_fake_stack, f->stack, kStackBytes);
#endif
      swapcontext(&b.scheduler, &f->ctx);
#ifdef CONVKIT_EMU_ASAN
      __sanitizer_finish_switch_fiber(b.asan_fake_stack, nullptr, nullptr);
#endif
    }
  }
}

inline Fiber& me() {
  Fiber* f = block().current;
  if (!f) fatal("device code called outside a kernel launch");
  return *f;
}

struct SharedVar {
  void* p;
  std::size_t bytes;
  std::uint64_t serial;
};
inline std::vector<SharedVar>& shared_vars() {
  static std::vector<SharedVar> v;
  return v;
}

inline bool in_shared(const void* p, std::size_t n) {
  const auto a = reinterpret_cast<std::uintptr_t>(p);
  for (const auto& v : shared_vars()) {
    const auto lo = reinterpret_cast<std::uintptr_t>(v.p);
    if (a >= lo && a + n <= lo + v.bytes) return true;
  }
  return false;
}

}  // namespace detail

// Seeds the thread order of every block from here on.
inline void seed(std::uint64_t s) { detail::order_rng().seed(s); }

// Called by translate.py after each __shared__ declaration: the first thread of a block to
// get there fills the variable with garbage (0xff bytes: NaN as float, -1 as int).
template <class T>
void shared_variable(T& v) {
  auto& vars = detail::shared_vars();
  for (auto& s : vars)
    if (s.p == static_cast<void*>(&v)) {
      if (s.serial != detail::block_serial) {
        std::memset(static_cast<void*>(&v), 0xff, sizeof v);
        s.serial = detail::block_serial;
      }
      return;
    }
  std::memset(static_cast<void*>(&v), 0xff, sizeof v);
  vars.push_back({static_cast<void*>(&v), sizeof v, detail::block_serial});
}

// Called by translate.py at the top of every kernel with __launch_bounds__.
inline void check_launch_bounds(long long max_threads) {
  if (static_cast<long long>(detail::block_dim.x) * detail::block_dim.y * detail::block_dim.z > max_threads)
    fatal("a block has more threads than the kernel's __launch_bounds__");
}

inline void cp_async(void* dst, const void* src, int bytes, int src_bytes) {
  if (reinterpret_cast<std::uintptr_t>(dst) % static_cast<unsigned>(bytes)) fatal("cp.async: shared address misaligned");
  if (reinterpret_cast<std::uintptr_t>(src) % static_cast<unsigned>(bytes)) fatal("cp.async: global address misaligned");
  if (src_bytes < 0 || src_bytes > bytes) fatal("cp.async: src-size outside [0, cp-size]");
  if (!detail::in_shared(dst, static_cast<std::size_t>(bytes))) fatal("cp.async: destination is not __shared__");
  std::memset(dst, 0xff, static_cast<std::size_t>(bytes));
  detail::me().open.push_back({dst, src, bytes, src_bytes});
}

inline void cp_async_commit_group() {
  auto& f = detail::me();
  f.groups.push_back(std::move(f.open));
  f.open.clear();
}

inline void cp_async_wait_group(int n) {
  auto& f = detail::me();
  const auto keep = static_cast<std::size_t>(n);
  if (f.groups.size() <= keep) return;
  const auto landed = f.groups.size() - keep;
  for (std::size_t g = 0; g < landed; ++g)
    for (const auto& c : f.groups[g]) detail::land(c);
  f.groups.erase(f.groups.begin(), f.groups.begin() + static_cast<std::ptrdiff_t>(landed));
}

inline void syncthreads() {
  auto& b = detail::block();
  auto& f = detail::me();
  f.state = detail::Fiber::Waiting;
  if (++b.at_barrier == b.fibers.size()) {
    b.at_barrier = 0;
    for (auto& o : b.fibers) o.state = detail::Fiber::Ready;
  }
  detail::to_scheduler(f, false);
}

// cvt.rna.tf32.f32: round to the nearest value with a 10-bit mantissa, ties away from zero.
inline unsigned cvt_rna_tf32(float v) {
  std::uint32_t u;
  std::memcpy(&u, &v, 4);
  if ((u & 0x7f800000u) != 0x7f800000u) u = (u + 0x1000u) & 0xffffe000u;
  return u;
}

// mma.sync.aligned.m16n8k8.row.col.f32.tf32.tf32.f32, d += a * b over the warp. Lane l holds
// (g = l / 4, t = l % 4): a = A[g][t], A[g+8][t], A[g][t+4], A[g+8][t+4]; b = B[t][g], B[t+4][g];
// d = D[g][2t], D[g][2t+1], D[g+8][2t], D[g+8][2t+1]. The last lane to arrive computes for all.
inline void mma_m16n8k8_tf32(float (&d)[4], const unsigned (&a)[4], const unsigned (&b)[2]) {
  auto& blk = detail::block();
  auto& f = detail::me();
  auto& w = blk.warps[f.warp];
  std::memcpy(w.a[f.lane], a, sizeof a);
  std::memcpy(w.b[f.lane], b, sizeof b);
  w.d[f.lane] = d;
  f.state = detail::Fiber::Waiting;
  const unsigned width = std::min<unsigned>(32, static_cast<unsigned>(blk.fibers.size()) - f.warp * 32);
  if (width != 32) fatal("mma.sync in a warp of fewer than 32 threads");
  if (++w.arrived == 32) {
    w.arrived = 0;
    auto tf = [](unsigned u) {
      u &= 0xffffe000u;  // the tensor cores read only the tf32 bits
      float v;
      std::memcpy(&v, &u, 4);
      return v;
    };
    auto A = [&](int r, int k) { return tf(w.a[(r % 8) * 4 + k % 4][(r >= 8) + 2 * (k >= 4)]); };
    auto B = [&](int k, int n) { return tf(w.b[n * 4 + k % 4][k >= 4]); };
    for (int l = 0; l < 32; ++l) {
      const int g = l / 4, t = l % 4;
      const int rows[4] = {g, g, g + 8, g + 8}, cols[4] = {2 * t, 2 * t + 1, 2 * t, 2 * t + 1};
      for (int i = 0; i < 4; ++i) {
        float s = 0.f;
        for (int k = 0; k < 8; ++k) s += A(rows[i], k) * B(k, cols[i]);
        w.d[l][i] += s;
      }
    }
    for (unsigned l = 0; l < 32; ++l) blk.fibers[f.warp * 32 + l].state = detail::Fiber::Ready;
  }
  detail::to_scheduler(f, false);
}

// kernel<<<grid, block, smem, stream>>>(args) becomes emu::launch(kernel, grid, block, smem, stream)(args).
template <class... P>
struct Launch {
  void (*kernel)(P...);
  dim3 grid, block;
  std::size_t smem;

  template <class... A>
  void operator()(A&&... args) const {
    ++launches;
    const auto threads = static_cast<unsigned long long>(block.x) * block.y * block.z;
    if (grid.x < 1 || grid.x > 2147483647u || grid.y < 1 || grid.y > 65535 || grid.z < 1 || grid.z > 65535 ||
        block.x < 1 || block.y < 1 || block.z < 1 || block.x > 1024 || block.y > 1024 || block.z > 64 ||
        threads > 1024) {
      std::fprintf(stderr, "CUDA emulation: invalid launch, grid (%u,%u,%u) block (%u,%u,%u)\n", grid.x, grid.y,
                   grid.z, block.x, block.y, block.z);
      detail::last_error = cudaErrorInvalidConfiguration;
      return;
    }
    if (smem) fatal("dynamic shared memory is not emulated");
    const auto blocks = static_cast<unsigned long long>(grid.x) * grid.y * grid.z;
    if (blocks * threads > (1ull << 24)) fatal("a launch of more than 2^24 threads is too large to emulate");
    const std::tuple<P...> params(std::forward<A>(args)...);
    auto& b = detail::block();
    b.body = [this, &params] { std::apply(kernel, params); };
    detail::grid_dim = grid;
    detail::block_dim = block;
    for (unsigned z = 0; z < grid.z; ++z)
      for (unsigned y = 0; y < grid.y; ++y)
        for (unsigned x = 0; x < grid.x; ++x) {
          detail::block_idx = dim3(x, y, z);
          detail::run_block(static_cast<unsigned>(threads));
        }
    b.current = nullptr;
    b.body = nullptr;
  }
};

template <class... P>
Launch<P...> launch(void (*kernel)(P...), dim3 grid, dim3 block, std::size_t smem = 0, cudaStream_t = nullptr) {
  return {kernel, grid, block, smem};
}

}  // namespace emu

inline const dim3& threadIdx = emu::detail::thread_idx;
inline const dim3& blockIdx = emu::detail::block_idx;
inline const dim3& blockDim = emu::detail::block_dim;
inline const dim3& gridDim = emu::detail::grid_dim;

inline void __syncthreads() { emu::syncthreads(); }
template <class T>
T __ldg(const T* p) {
  return *p;
}
inline float __fmul_rn(float a, float b) { return a * b; }
// Fibers never run at once, so a plain add is atomic.
inline unsigned long long atomicAdd(unsigned long long* p, unsigned long long v) {
  const unsigned long long old = *p;
  *p = old + v;
  return old;
}
inline int min(int a, int b) { return a < b ? a : b; }
inline long long min(long long a, long long b) { return a < b ? a : b; }

inline cudaError_t cudaGetLastError() {
  const cudaError_t e = emu::detail::last_error;
  emu::detail::last_error = cudaSuccess;
  return e;
}
inline const char* cudaGetErrorString(cudaError_t e) {
  switch (e) {
    case cudaSuccess: return "no error";
    case cudaErrorMemoryAllocation: return "out of memory";
    case cudaErrorInvalidConfiguration: return "invalid configuration argument";
    case cudaErrorNotSupported: return "operation not supported";
    default: return "unknown error";
  }
}
inline cudaError_t cudaGetDevice(int* dev) {
  *dev = 0;
  return cudaSuccess;
}
inline cudaError_t cudaDeviceGetAttribute(int* v, cudaDeviceAttr, int) {
  *v = 132;
  return cudaSuccess;
}
inline cudaError_t cudaMemsetAsync(void* p, int v, std::size_t n, cudaStream_t = nullptr) {
  std::memset(p, v, n);
  return cudaSuccess;
}
inline cudaError_t cudaMallocAsync(void** p, std::size_t n, cudaStream_t = nullptr) {
  if (emu::fail_malloc_async) {
    emu::detail::last_error = cudaErrorNotSupported;
    return cudaErrorNotSupported;
  }
  *p = std::malloc(n ? n : 1);
  if (!*p) return emu::detail::last_error = cudaErrorMemoryAllocation;
  std::memset(*p, 0xff, n);
  return cudaSuccess;
}
inline cudaError_t cudaFreeAsync(void* p, cudaStream_t = nullptr) {
  std::free(p);
  return cudaSuccess;
}
inline cudaError_t cudaMalloc(void** p, std::size_t n) {
  *p = std::malloc(n ? n : 1);
  if (!*p) return emu::detail::last_error = cudaErrorMemoryAllocation;
  std::memset(*p, 0xff, n);
  return cudaSuccess;
}
inline cudaError_t cudaFree(void* p) {
  std::free(p);
  return cudaSuccess;
}
enum cudaMemcpyKind { cudaMemcpyDeviceToHost = 2 };
inline cudaError_t cudaMemcpyAsync(void* dst, const void* src, std::size_t n, cudaMemcpyKind, cudaStream_t = nullptr) {
  std::memcpy(dst, src, n);
  return cudaSuccess;
}
inline cudaError_t cudaStreamSynchronize(cudaStream_t) { return cudaSuccess; }
inline cudaError_t cudaDeviceGetDefaultMemPool(cudaMemPool_t* pool, int) {
  *pool = nullptr;
  return cudaSuccess;
}
inline cudaError_t cudaMemPoolGetAttribute(cudaMemPool_t, cudaMemPoolAttr, void* v) {
  *static_cast<std::uint64_t*>(v) = 0;
  return cudaSuccess;
}
inline cudaError_t cudaMemPoolSetAttribute(cudaMemPool_t, cudaMemPoolAttr, void*) { return cudaSuccess; }
