// fa_emu.h — runs the CUDA C kernels of native/kernels on the CPU, for tests on machines without a GPU.
//
// The test support (tests/FastAttention.Tests/Emulation/KernelEmulator.cs) builds one shared library per kernel
// specialisation with g++: this header, then the program text NVRTC would compile (prelude + kernel file), rewritten
// in three ways: every inline-PTX statement asm("..." : outs : ins) becomes a call into namespace fa_ptx (one C++
// function per PTX instruction form, named after the opcode and the operand shapes, written from the PTX ISA), every
// `__shared__` becomes static storage, `extern __shared__ T name[];` becomes a pointer to the dynamic arena, and an
// exported fa_emu_launch_<kernel> per kernel unpacks the launch's argument pointers into the kernel's parameters.
//
// Execution model. One CUDA thread is one fiber with its own stack (hand-written x86-64 context switch: no syscall
// per switch, unlike swapcontext). The blocks of a grid run one after another on the calling OS thread, so __shared__
// variables can be plain static storage that the fibers of the running block share. A fiber runs until it waits: at
// __syncthreads (a barrier over the block's non-exited threads) or in a warp collective (shfl, ldmatrix, mma,
// __syncwarp, vote): every lane deposits its operands in a per-warp slot; the last lane to arrive computes every
// lane's result from all slots and releases the others. When no fiber can run and some have not exited, the launch
// fails with a deadlock report naming the kernel, the block and where each thread waits (e.g. __syncthreads in
// divergent code, a collective some lanes never reach). Launches of one library are serialised by a mutex (the
// static shared storage belongs to the library).
//
// Deliberate differences from hardware (documented in KernelEmulator): mma.sync sums the 16 exact products and C in
// double and rounds once (the tensor core's accumulation order and internal precision differ slightly);
// ex2.approx.ftz uses exp2f (the hardware is within 2 ulp); cp.async copies when issued and commit/wait are no-ops
// (asynchronous-copy races are for compute-sanitizer racecheck on a GPU); memory accesses are not bounds-checked
// except the shared-memory addresses that ldmatrix and cp.async take; at the start of every block the dynamic
// shared arena and the static __shared__ variables of non-template functions are filled with 0xFF bytes (a NaN
// for fp32, fp16 and bf16), so a read before any write shows up as NaN.
#pragma once

#include <cmath>
#include <cstdarg>
#include <cstddef>
#include <cstdint>
#include <cstdio>
#include <cstring>
#include <mutex>
#include <string>
#include <link.h>
#include <sys/mman.h>
#include <tuple>
#include <type_traits>
#include <utility>

// ---- CUDA keywords and builtins (what NVRTC provides without headers) ------------------------------------------

#define __global__
#define __device__
#define __host__
#define __noinline__ __attribute__((noinline))
#define __forceinline__ inline __attribute__((always_inline))
#define __launch_bounds__(...)
#define __align__(n) alignas(n)
#define __constant__ static
// `__shared__` is rewritten by the build step to `fa_emu_shared_storage` (after any alignas that follows it).
#define fa_emu_shared_storage static __attribute__((section("fa_emu_smem"), used))
#define FA_EMU_MAX_DYNAMIC_SMEM (227 * 1024)

struct uint3 { unsigned int x, y, z; };
struct dim3 { unsigned int x, y, z; };

#define threadIdx (fa_emu::current_thread_idx())
#define blockIdx (static_cast<const uint3&>(fa_emu::block_idx))
#define blockDim (static_cast<const dim3&>(fa_emu::block_dim))
#define gridDim (static_cast<const dim3&>(fa_emu::grid_dim))
#define warpSize 32

namespace fa_emu
{
typedef unsigned short u16;
typedef unsigned int u32;
typedef unsigned long long u64;

// ---- fibers: a minimal x86-64 System V context switch ----------------------------------------------------------------

extern "C" void fa_emu_switch(void** save_sp, void* load_sp);
extern "C" void fa_emu_fiber_start();
asm(R"(
    .text
    .globl fa_emu_switch
    .hidden fa_emu_switch
    .type fa_emu_switch, @function
fa_emu_switch:
    pushq %rbp
    pushq %rbx
    pushq %r12
    pushq %r13
    pushq %r14
    pushq %r15
    subq $8, %rsp
    stmxcsr (%rsp)
    fnstcw 4(%rsp)
    movq %rsp, (%rdi)
    movq %rsi, %rsp
    ldmxcsr (%rsp)
    fldcw 4(%rsp)
    addq $8, %rsp
    popq %r15
    popq %r14
    popq %r13
    popq %r12
    popq %rbx
    popq %rbp
    ret
    .size fa_emu_switch, .-fa_emu_switch

    .globl fa_emu_fiber_start
    .hidden fa_emu_fiber_start
    .type fa_emu_fiber_start, @function
fa_emu_fiber_start:
    movq %r12, %rdi
    callq *%r13
    ud2
    .size fa_emu_fiber_start, .-fa_emu_fiber_start
)");

enum class State { Runnable, Waiting, Exited };
enum class WaitKind { None, Block, Warp };

struct Fiber
{
    void* sp = nullptr;
    char* stack = nullptr;
    uint3 tid{};
    int linear = 0, warp = 0, lane = 0;
    State state = State::Runnable;
    WaitKind wait = WaitKind::None;
};

// Operands and results of one warp collective: 8 64-bit words per lane each way.
struct WarpSlot
{
    u32 arrived = 0;       // lanes waiting in the collective
    u32 members = 0;       // lanes the collective needs
    u32 exited = 0;        // lanes of this warp that have left the kernel
    const char* op = nullptr;
    u64 in[32][8];
    u64 out[32][8];
};

typedef void (*WarpCompute)(WarpSlot& slot);

struct Launch
{
    const char* kernel = nullptr;
    Fiber* fibers = nullptr;
    int threads = 0, live = 0, warps = 0;
    int block_arrived = 0;
    WarpSlot* warp_slots = nullptr;
    void* scheduler_sp = nullptr;
    bool failed = false;
    char* error = nullptr;
    int error_length = 0;
    int dynamic_smem = 0;
    void (*body)(void*) = nullptr;
    void* body_arg = nullptr;
};

inline Fiber* current = nullptr;
inline Launch* launch_state = nullptr;
inline uint3 block_idx{};
inline dim3 block_dim{1, 1, 1}, grid_dim{1, 1, 1};
inline std::mutex launch_mutex;

inline unsigned int thread_index(int axis) { return axis == 0 ? current->tid.x : axis == 1 ? current->tid.y : current->tid.z; }
inline const uint3& current_thread_idx() { return current->tid; }

// Shared memory: 32-bit shared addresses are offsets from a base 2 GiB below an anchor in this library's data, so
// every static __shared__ variable (all live in this library) and the dynamic arena map into 32 bits.
// Shared memory is this library's writable data segment (static __shared__ variables, template ones included, and
// the dynamic arena, followed by a 4 KiB canary zone). A 32-bit shared address is the offset from the segment's start
// (rounded down to a page); cvta.to.shared of any other address (e.g. a global buffer) is an error.
alignas(1024) inline char dynamic_smem[FA_EMU_MAX_DYNAMIC_SMEM + 4096];
inline char* data_lo = nullptr;
inline char* data_hi = nullptr;

inline int find_data_segment(struct dl_phdr_info* info, size_t, void*)
{
    for (int i = 0; i < info->dlpi_phnum; i++)
    {
        const ElfW(Phdr)& ph = info->dlpi_phdr[i];
        if (ph.p_type != PT_LOAD || (ph.p_flags & PF_W) == 0) continue;
        char* lo = (char*)(info->dlpi_addr + ph.p_vaddr);
        char* hi = lo + ph.p_memsz;
        if (dynamic_smem >= lo && dynamic_smem < hi)
        {
            data_lo = lo;
            data_hi = hi;
            return 1;
        }
    }
    return 0;
}

inline char* smem_base()
{
    if (data_lo == nullptr) dl_iterate_phdr(find_data_segment, nullptr);
    return (char*)((uintptr_t)data_lo & ~(uintptr_t)4095);
}
inline bool is_shared(const char* p) { return p >= data_lo && p < data_hi; }
// Keeps the fa_emu_smem section (and its __start/__stop symbols) present when a program has no __shared__ variable.
alignas(16) fa_emu_shared_storage char smem_section_anchor[16];

[[noreturn]] void fail(const char* format, ...) __attribute__((format(printf, 1, 2)));

inline void yield_to_scheduler()
{
    Fiber* self = current;
    fa_emu_switch(&self->sp, launch_state->scheduler_sp);
    current = self;
}

inline void fail(const char* format, ...)
{
    Launch& L = *launch_state;
    if (!L.failed)
    {
        L.failed = true;
        char message[1024];
        va_list args;
        va_start(args, format);
        vsnprintf(message, sizeof message, format, args);
        va_end(args);
        const Fiber* f = current;
        snprintf(L.error, (size_t)L.error_length, "%s, block (%u, %u, %u), thread (%u, %u, %u) (warp %d, lane %d): %s",
                 L.kernel, block_idx.x, block_idx.y, block_idx.z, f->tid.x, f->tid.y, f->tid.z, f->warp, f->lane, message);
    }
    current->state = State::Waiting;
    for (;;) yield_to_scheduler();
}

inline char* shared_pointer(u32 address, int bytes, const char* what)
{
    char* p = smem_base() + address;
    if (!is_shared(p) || !is_shared(p + bytes - 1))
    {
        fail("%s: 0x%x is not a shared-memory address of this kernel (%d bytes)", what, address, bytes);
    }
    char* dyn = dynamic_smem;
    if (p >= dyn && p < dyn + sizeof dynamic_smem && p + bytes > dyn + launch_state->dynamic_smem)
    {
        fail("%s: shared address 0x%x (%d bytes) lies beyond the %d bytes of dynamic shared memory of this launch", what,
             address, bytes, launch_state->dynamic_smem);
    }
    return p;
}

// ---- barriers ------------------------------------------------------------------------------------------------------

inline void release_block_barrier()
{
    Launch& L = *launch_state;
    L.block_arrived = 0;
    for (int i = 0; i < L.threads; i++)
    {
        Fiber& f = L.fibers[i];
        if (f.state == State::Waiting && f.wait == WaitKind::Block)
        {
            f.state = State::Runnable;
            f.wait = WaitKind::None;
        }
    }
}

__attribute__((noinline, noipa)) inline void syncthreads()
{
    Launch& L = *launch_state;
    Fiber* self = current;
    if (++L.block_arrived == L.live)
    {
        release_block_barrier();
        return;
    }
    self->state = State::Waiting;
    self->wait = WaitKind::Block;
    yield_to_scheduler();
}

inline u32 warp_lanes_present(int warp)
{
    Launch& L = *launch_state;
    int first = warp * 32, count = L.threads - first < 32 ? L.threads - first : 32;
    return count == 32 ? 0xFFFFFFFFu : ((1u << count) - 1u);
}

// A warp collective: deposits this lane's operands, waits for every member lane, returns this lane's results.
// The last lane to arrive runs `compute` over all lanes' slots.
__attribute__((noinline, noipa)) inline void warp_collective(const char* op, u32 members, const u64* in, int in_words, u64* out,
                                                             int out_words, WarpCompute compute)
{
    Launch& L = *launch_state;
    Fiber* self = current;
    WarpSlot& s = L.warp_slots[self->warp];
    const u32 bit = 1u << self->lane;
    if ((members & bit) == 0) fail("%s: the executing lane is not in the member mask 0x%08x", op, members);
    const u32 present = warp_lanes_present(self->warp);
    if ((members & ~present) != 0)
    {
        fail("%s: member mask 0x%08x names lanes this block does not have (lanes present: 0x%08x)", op, members, present);
    }
    if (s.arrived == 0)
    {
        s.op = op;
        s.members = members;
    }
    else if (s.op != op || s.members != members)
    {
        fail("%s (mask 0x%08x) while other lanes of the warp wait in %s (mask 0x%08x): divergent warp collectives", op,
             members, s.op, s.members);
    }
    if ((members & s.exited) != 0)
    {
        fail("%s: lane %d of the member mask 0x%08x has exited and can never arrive", op, __builtin_ctz(members & s.exited), members);
    }
    memcpy(s.in[self->lane], in, sizeof(u64) * (size_t)in_words);
    s.arrived |= bit;
    if (s.arrived == members)
    {
        compute(s);
        s.arrived = 0;
        const int first = self->warp * 32, last = first + 32 < L.threads ? first + 32 : L.threads;
        for (int i = first; i < last; i++)
        {
            Fiber& f = L.fibers[i];
            if (((members >> f.lane) & 1u) && f.state == State::Waiting && f.wait == WaitKind::Warp)
            {
                f.state = State::Runnable;
                f.wait = WaitKind::None;
            }
        }
    }
    else
    {
        self->state = State::Waiting;
        self->wait = WaitKind::Warp;
        yield_to_scheduler();
    }
    memcpy(out, s.out[self->lane], sizeof(u64) * (size_t)out_words);
}

// ---- scheduler -------------------------------------------------------------------------------------------------------

inline void fiber_main(void*)
{
    Launch& L = *launch_state;
    L.body(L.body_arg);
    Fiber* self = current;
    self->state = State::Exited;
    L.live--;
    L.warp_slots[self->warp].exited |= 1u << self->lane;
    // Threads waiting at __syncthreads no longer wait for this one.
    if (L.block_arrived > 0 && L.block_arrived == L.live) release_block_barrier();
    WarpSlot& s = L.warp_slots[self->warp];
    if (s.arrived != 0 && ((s.members >> self->lane) & 1u))
    {
        self->state = State::Waiting; // report as this thread; it has already left the kernel
        L.live++;
        fail("exited while lanes 0x%08x of its warp wait for it in %s (mask 0x%08x)", s.arrived, s.op, s.members);
    }
    for (;;) yield_to_scheduler();
}

inline void describe_deadlock(Launch& L)
{
    std::string text;
    int block_waiters = 0;
    for (int i = 0; i < L.threads; i++)
        if (L.fibers[i].state == State::Waiting && L.fibers[i].wait == WaitKind::Block) block_waiters++;
    char line[256];
    if (block_waiters > 0)
    {
        snprintf(line, sizeof line, "%d of %d live threads wait at __syncthreads; ", block_waiters, L.live);
        text += line;
    }
    for (int w = 0; w < L.warps; w++)
    {
        const WarpSlot& s = L.warp_slots[w];
        if (s.arrived == 0) continue;
        u32 missing = s.members & ~s.arrived;
        snprintf(line, sizeof line, "warp %d: lanes 0x%08x wait in %s for lanes 0x%08x; ", w, s.arrived, s.op, missing);
        text += line;
    }
    int shown = 0;
    text += "threads not at the barrier the others wait at:";
    for (int i = 0; i < L.threads && shown < 8; i++)
    {
        const Fiber& f = L.fibers[i];
        bool at_block = f.state == State::Waiting && f.wait == WaitKind::Block;
        if (block_waiters > 0 && !at_block && f.state != State::Exited)
        {
            snprintf(line, sizeof line, " (%u,%u,%u)%s", f.tid.x, f.tid.y, f.tid.z, f.wait == WaitKind::Warp ? " in a warp collective" : "");
            text += line;
            shown++;
        }
    }
    if (block_waiters == 0) text += " (none at __syncthreads)";
    snprintf(L.error, (size_t)L.error_length, "deadlock in %s, block (%u, %u, %u): %s", L.kernel, block_idx.x, block_idx.y,
             block_idx.z, text.c_str());
    L.failed = true;
}

constexpr size_t stack_bytes = 256 * 1024;

inline void prepare_fiber(Fiber& f)
{
    // Top of stack: fa_emu_switch pops an MXCSR/x87 word, six registers (r12 = argument, r13 = entry), then returns to
    // fa_emu_fiber_start with %rsp 16-byte aligned, so its call leaves the entry function the usual alignment.
    u64* top = (u64*)(f.stack + stack_bytes);
    top -= 2; // keeps 16-byte alignment after the return address is popped
    u64* sp = top - 8;
    u32 mxcsr;
    u16 fpucw;
    asm volatile("stmxcsr %0" : "=m"(mxcsr));
    asm volatile("fnstcw %0" : "=m"(fpucw));
    sp[0] = (u64)mxcsr | ((u64)fpucw << 32);
    sp[1] = 0;                         // r15
    sp[2] = 0;                         // r14
    sp[3] = (u64)(void*)&fiber_main;   // r13
    sp[4] = 0;                         // r12
    sp[5] = 0;                         // rbx
    sp[6] = 0;                         // rbp
    sp[7] = (u64)(void*)&fa_emu_fiber_start;
    f.sp = sp;
    f.state = State::Runnable;
    f.wait = WaitKind::None;
}

inline int check_config(const char* kernel, const unsigned* grid, const unsigned* block, int dynamic_smem, char* error, int length)
{
    unsigned long long threads = (unsigned long long)block[0] * block[1] * block[2];
    if (grid[0] == 0 || grid[1] == 0 || grid[2] == 0 || block[0] == 0 || block[1] == 0 || block[2] == 0)
    {
        snprintf(error, (size_t)length, "%s: grid (%u, %u, %u) and block (%u, %u, %u) must be positive", kernel, grid[0], grid[1],
                 grid[2], block[0], block[1], block[2]);
        return 1;
    }
    if (threads > 1024 || block[0] > 1024 || block[1] > 1024 || block[2] > 64)
    {
        snprintf(error, (size_t)length, "%s: block (%u, %u, %u) exceeds CUDA's limits (1024 threads, z <= 64)", kernel, block[0],
                 block[1], block[2]);
        return 1;
    }
    if (grid[0] > 2147483647u || grid[1] > 65535u || grid[2] > 65535u)
    {
        snprintf(error, (size_t)length, "%s: grid (%u, %u, %u) exceeds CUDA's limits (x < 2^31, y and z <= 65535)", kernel, grid[0],
                 grid[1], grid[2]);
        return 1;
    }
    if (dynamic_smem < 0 || dynamic_smem > FA_EMU_MAX_DYNAMIC_SMEM)
    {
        snprintf(error, (size_t)length, "%s: %d bytes of dynamic shared memory; the emulator (like sm_90) allows 0 to %d", kernel,
                 dynamic_smem, FA_EMU_MAX_DYNAMIC_SMEM);
        return 1;
    }
    return 0;
}

extern "C" char __start_fa_emu_smem[];
extern "C" char __stop_fa_emu_smem[];

// flags bit 0: run the fibers of a block in reverse thread order (the default order runs thread 0 first), so a
// missing barrier shows up whichever side of it the reader is on.
inline int run_grid(const char* kernel, void (*body)(void*), void* arg, const unsigned* grid, const unsigned* block,
                    int dynamic_bytes, int flags, char* error, int error_length)
{
    if (check_config(kernel, grid, block, dynamic_bytes, error, error_length) != 0) return 1;
    std::lock_guard<std::mutex> lock(launch_mutex);
    if (smem_base() == nullptr || data_hi - data_lo > 0xFFFFFFFFLL)
    {
        snprintf(error, (size_t)error_length, "%s: the emulator could not find its shared-memory segment", kernel);
        return 1;
    }
    Launch L;
    L.kernel = kernel;
    L.threads = (int)(block[0] * block[1] * block[2]);
    L.warps = (L.threads + 31) / 32;
    L.dynamic_smem = dynamic_bytes;
    L.error = error;
    L.error_length = error_length;
    L.body = body;
    L.body_arg = arg;
    size_t stacks = stack_bytes * (size_t)L.threads;
    char* memory = (char*)mmap(nullptr, stacks, PROT_READ | PROT_WRITE, MAP_PRIVATE | MAP_ANONYMOUS | MAP_NORESERVE, -1, 0);
    if (memory == MAP_FAILED)
    {
        snprintf(error, (size_t)error_length, "%s: cannot map %zu bytes of fiber stacks", kernel, stacks);
        return 1;
    }
    Fiber* fibers = new Fiber[(size_t)L.threads];
    WarpSlot* slots = new WarpSlot[(size_t)L.warps];
    for (int i = 0; i < L.threads; i++)
    {
        Fiber& f = fibers[i];
        f.stack = memory + stack_bytes * (size_t)i;
        f.tid = uint3{(unsigned)i % block[0], ((unsigned)i / block[0]) % block[1], (unsigned)i / (block[0] * block[1])};
        f.linear = i;
        f.warp = i / 32;
        f.lane = i % 32;
    }
    L.fibers = fibers;
    L.warp_slots = slots;
    Launch* saved_launch = launch_state;
    Fiber* saved_current = current;
    launch_state = &L;
    block_dim = dim3{block[0], block[1], block[2]};
    grid_dim = dim3{grid[0], grid[1], grid[2]};
    int status = 0;
    for (unsigned bz = 0; bz < grid[2] && status == 0; bz++)
        for (unsigned by = 0; by < grid[1] && status == 0; by++)
            for (unsigned bx = 0; bx < grid[0] && status == 0; bx++)
            {
                block_idx = uint3{bx, by, bz};
                memset(dynamic_smem, 0xFF, sizeof dynamic_smem);
                memset(__start_fa_emu_smem, 0xFF, (size_t)(__stop_fa_emu_smem - __start_fa_emu_smem));
                for (int i = 0; i < L.threads; i++) prepare_fiber(fibers[i]);
                for (int w = 0; w < L.warps; w++) slots[w].arrived = slots[w].exited = 0;
                L.live = L.threads;
                L.block_arrived = 0;
                while (L.live > 0 && !L.failed)
                {
                    bool ran = false;
                    for (int n = 0; n < L.threads && !L.failed; n++)
                    {
                        Fiber& f = fibers[(flags & 1) ? L.threads - 1 - n : n];
                        if (f.state != State::Runnable) continue;
                        ran = true;
                        current = &f;
                        fa_emu_switch(&L.scheduler_sp, f.sp);
                    }
                    if (!ran && !L.failed && L.live > 0) describe_deadlock(L);
                }
                if (L.failed) status = 2;
                else
                {
                    for (int i = 0; i < 4096; i++)
                        if ((unsigned char)dynamic_smem[FA_EMU_MAX_DYNAMIC_SMEM + i] != 0xFF)
                        {
                            snprintf(error, (size_t)error_length, "%s, block (%u, %u, %u): a write landed past the end of the dynamic shared arena",
                                     kernel, bx, by, bz);
                            status = 3;
                            break;
                        }
                }
            }
    launch_state = saved_launch;
    current = saved_current;
    delete[] slots;
    delete[] fibers;
    munmap(memory, stacks);
    return status;
}

// ---- the kernel call: argument pointers -> parameters ---------------------------------------------------------------

template <class... P> struct KernelCall
{
    void (*kernel)(P...);
    std::tuple<typename std::decay<P>::type...> args;
    static void run(void* self)
    {
        KernelCall& c = *(KernelCall*)self;
        std::apply(c.kernel, c.args);
    }
};

template <class T> T read_argument(void* p)
{
    T value;
    memcpy(&value, p, sizeof(T));
    return value;
}

template <class... P, size_t... I>
KernelCall<P...> make_call(void (*kernel)(P...), void** args, std::index_sequence<I...>)
{
    return KernelCall<P...>{kernel, std::tuple<typename std::decay<P>::type...>(read_argument<typename std::decay<P>::type>(args[I])...)};
}

template <class... P>
int launch(const char* name, void (*kernel)(P...), const unsigned* grid, const unsigned* block, int dynamic_bytes, void** args,
           int count, int flags, char* error, int error_length)
{
    if (count != (int)sizeof...(P))
    {
        snprintf(error, (size_t)error_length, "%s takes %d parameters; the launch passed %d arguments", name, (int)sizeof...(P), count);
        return 1;
    }
    KernelCall<P...> call = make_call(kernel, args, std::index_sequence_for<P...>{});
    return run_grid(name, &KernelCall<P...>::run, &call, grid, block, dynamic_bytes, flags, error, error_length);
}

inline float bits_to_float(u32 b) { float f; memcpy(&f, &b, 4); return f; }
inline u32 float_to_bits(float f) { u32 b; memcpy(&b, &f, 4); return b; }
} // namespace fa_emu

// ---- CUDA device functions -----------------------------------------------------------------------------------------

inline void __syncthreads() { fa_emu::syncthreads(); }
inline void __threadfence() { asm volatile("" ::: "memory"); }
inline void __threadfence_block() { asm volatile("" ::: "memory"); }

namespace fa_emu
{
inline void compute_syncwarp(WarpSlot&) {}

// shfl.sync (PTX ISA): lane j's value, with segment mask c[12:8] and clamp c[4:0]; a source lane outside the
// bounds reads its own value. mode: 0 up, 1 down, 2 bfly, 3 idx. in[0] = value, in[1] = b, in[2] = c, in[3] = mode.
inline void compute_shfl(WarpSlot& s)
{
    for (int lane = 0; lane < 32; lane++)
    {
        if (((s.members >> lane) & 1u) == 0) continue;
        u32 b = (u32)s.in[lane][1] & 31u, c = (u32)s.in[lane][2];
        int mode = (int)s.in[lane][3];
        u32 segmask = (c >> 8) & 31u, clamp = c & 31u;
        int max_lane = (int)((lane & segmask) | (clamp & ~segmask));
        int min_lane = (int)(lane & segmask);
        int j = lane;
        bool ok = true;
        switch (mode)
        {
            case 0: j = lane - (int)b; ok = j >= max_lane; break;
            case 1: j = lane + (int)b; ok = j <= max_lane; break;
            case 2: j = lane ^ (int)b; ok = j <= max_lane; break;
            default: j = min_lane | (int)(b & ~segmask); ok = j <= max_lane; break;
        }
        if (!ok) j = lane;
        s.out[lane][0] = ((s.members >> j) & 1u) ? s.in[j][0] : 0xDEADBEEFull;
        s.out[lane][1] = ok ? 1 : 0;
        s.out[lane][2] = ((s.members >> j) & 1u) ? 1 : 0;
    }
}

inline u32 shfl(u32 members, u32 value, u32 b, u32 c, int mode, const char* op)
{
    u64 in[4] = {value, b, c, (u64)mode}, out[3];
    warp_collective(op, members, in, 4, out, 3, compute_shfl);
    if (out[2] == 0) fail("%s reads from a lane outside the member mask 0x%08x", op, members);
    return (u32)out[0];
}

inline void compute_vote(WarpSlot& s)
{
    u32 ballot = 0;
    for (int lane = 0; lane < 32; lane++)
        if (((s.members >> lane) & 1u) && s.in[lane][0] != 0) ballot |= 1u << lane;
    for (int lane = 0; lane < 32; lane++) s.out[lane][0] = ballot;
}

inline u32 vote(u32 members, bool predicate, const char* op)
{
    u64 in[1] = {predicate ? 1ull : 0ull}, out[1];
    warp_collective(op, members, in, 1, out, 1, compute_vote);
    return (u32)out[0];
}

template <class T> inline T shfl_typed(u32 members, T value, u32 b, u32 c, int mode, const char* op)
{
    static_assert(sizeof(T) == 4 || sizeof(T) == 8, "shuffles move 32- or 64-bit values");
    if constexpr (sizeof(T) == 4)
    {
        u32 bits;
        memcpy(&bits, &value, 4);
        bits = shfl(members, bits, b, c, mode, op);
        T r;
        memcpy(&r, &bits, 4);
        return r;
    }
    else
    {
        u64 bits;
        memcpy(&bits, &value, 8);
        u32 lo = shfl(members, (u32)bits, b, c, mode, op), hi = shfl(members, (u32)(bits >> 32), b, c, mode, op);
        bits = ((u64)hi << 32) | lo;
        T r;
        memcpy(&r, &bits, 8);
        return r;
    }
}
} // namespace fa_emu

inline void __syncwarp(unsigned mask = 0xFFFFFFFFu)
{
    fa_emu::u64 none[1] = {0}, out[1];
    fa_emu::warp_collective("__syncwarp", mask, none, 1, out, 1, fa_emu::compute_syncwarp);
}
// CUDA's width argument: c = ((32 - width) << 8) | clamp, clamp 0x1f except for shfl.up (0).
template <class T> inline T __shfl_sync(unsigned mask, T v, int src, int width = 32)
{ return fa_emu::shfl_typed(mask, v, (unsigned)src, ((32u - (unsigned)width) << 8) | 0x1fu, 3, "__shfl_sync"); }
template <class T> inline T __shfl_xor_sync(unsigned mask, T v, int lane_mask, int width = 32)
{ return fa_emu::shfl_typed(mask, v, (unsigned)lane_mask, ((32u - (unsigned)width) << 8) | 0x1fu, 2, "__shfl_xor_sync"); }
template <class T> inline T __shfl_down_sync(unsigned mask, T v, unsigned delta, int width = 32)
{ return fa_emu::shfl_typed(mask, v, delta, ((32u - (unsigned)width) << 8) | 0x1fu, 1, "__shfl_down_sync"); }
template <class T> inline T __shfl_up_sync(unsigned mask, T v, unsigned delta, int width = 32)
{ return fa_emu::shfl_typed(mask, v, delta, (32u - (unsigned)width) << 8, 0, "__shfl_up_sync"); }
inline unsigned __ballot_sync(unsigned mask, int predicate) { return fa_emu::vote(mask, predicate != 0, "__ballot_sync"); }
inline int __any_sync(unsigned mask, int predicate) { return fa_emu::vote(mask, predicate != 0, "__any_sync") != 0; }
inline int __all_sync(unsigned mask, int predicate) { return fa_emu::vote(mask, predicate != 0, "__all_sync") == mask; }

template <class T> inline T __ldg(const T* p) { return *p; }

inline float __int_as_float(int x) { float f; memcpy(&f, &x, 4); return f; }
inline int __float_as_int(float x) { int i; memcpy(&i, &x, 4); return i; }
inline float __uint_as_float(unsigned x) { float f; memcpy(&f, &x, 4); return f; }
inline unsigned __float_as_uint(float x) { unsigned i; memcpy(&i, &x, 4); return i; }
inline double __longlong_as_double(long long x) { double d; memcpy(&d, &x, 8); return d; }
inline long long __double_as_longlong(double x) { long long i; memcpy(&i, &x, 8); return i; }

inline float __expf(float x) { return expf(x); }
inline float __logf(float x) { return logf(x); }
inline float __log2f(float x) { return log2f(x); }
inline float __exp10f(float x) { return exp10f(x); }
inline float __powf(float x, float y) { return powf(x, y); }
inline float __fdividef(float a, float b) { return a / b; }
inline float __frcp_rn(float a) { return 1.0f / a; }
inline float __fsqrt_rn(float a) { return sqrtf(a); }
inline float __fmaf_rn(float a, float b, float c) { return fmaf(a, b, c); }
inline float __fadd_rn(float a, float b) { return a + b; }
inline float __fmul_rn(float a, float b) { return a * b; }
inline float __saturatef(float a) { return a != a ? 0.0f : a < 0.0f ? 0.0f : a > 1.0f ? 1.0f : a; }
inline float rsqrtf(float a) { return 1.0f / sqrtf(a); }
inline double rsqrt(double a) { return 1.0 / sqrt(a); }
inline int __float2int_rn(float a) { return (int)nearbyintf(a); }
inline int __float2int_rz(float a) { return (int)a; }
inline int __popc(unsigned x) { return __builtin_popcount(x); }
inline int __popcll(unsigned long long x) { return __builtin_popcountll(x); }
inline int __clz(int x) { return x == 0 ? 32 : __builtin_clz((unsigned)x); }
inline int __ffs(int x) { return __builtin_ffs(x); }
inline int __mul24(int a, int b) { return a * b; }
inline int __umul24(unsigned a, unsigned b) { return (int)(a * b); }
inline unsigned __umulhi(unsigned a, unsigned b) { return (unsigned)(((unsigned long long)a * b) >> 32); }

inline int min(int a, int b) { return a < b ? a : b; }
inline int max(int a, int b) { return a > b ? a : b; }
inline unsigned min(unsigned a, unsigned b) { return a < b ? a : b; }
inline unsigned max(unsigned a, unsigned b) { return a > b ? a : b; }
inline long long min(long long a, long long b) { return a < b ? a : b; }
inline long long max(long long a, long long b) { return a > b ? a : b; }
inline unsigned long long min(unsigned long long a, unsigned long long b) { return a < b ? a : b; }
inline unsigned long long max(unsigned long long a, unsigned long long b) { return a > b ? a : b; }
inline long min(long a, long b) { return a < b ? a : b; }
inline long max(long a, long b) { return a > b ? a : b; }
inline float min(float a, float b) { return fminf(a, b); }
inline float max(float a, float b) { return fmaxf(a, b); }
inline double min(double a, double b) { return fmin(a, b); }
inline double max(double a, double b) { return fmax(a, b); }
inline long long min(int a, long long b) { return min((long long)a, b); }
inline long long min(long long a, int b) { return min(a, (long long)b); }
inline long long max(int a, long long b) { return max((long long)a, b); }
inline long long max(long long a, int b) { return max(a, (long long)b); }

// Atomics: one OS thread runs all fibers and a fiber is never preempted, so plain read-modify-writes are atomic.
template <class T> inline T atomicAdd(T* p, T v) { T old = *p; *p = old + v; return old; }
template <class T> inline T atomicSub(T* p, T v) { T old = *p; *p = old - v; return old; }
template <class T> inline T atomicExch(T* p, T v) { T old = *p; *p = v; return old; }
template <class T> inline T atomicMax(T* p, T v) { T old = *p; *p = old > v ? old : v; return old; }
template <class T> inline T atomicMin(T* p, T v) { T old = *p; *p = old < v ? old : v; return old; }
template <class T> inline T atomicCAS(T* p, T compare, T v) { T old = *p; if (old == compare) *p = v; return old; }
template <class T> inline T atomicOr(T* p, T v) { T old = *p; *p = old | v; return old; }
template <class T> inline T atomicAnd(T* p, T v) { T old = *p; *p = old & v; return old; }

// ---- PTX instructions (namespace fa_ptx) ---------------------------------------------------------------------------
// The build step turns asm("op.a.b %0, {%1, %2}, [%3];" : ...) into fa_ptx::op_a_b__s_v2_m(out0, in1, in2, in3): the
// opcode with '.' -> '_', then one letter per operand: s = register or immediate, vN = vector of N registers (its
// elements follow in order), m = [address]. Outputs ("=r", "+f") are passed as lvalues, inputs converted to the
// constraint's register type (r: u32, h: u16, f: float, l: u64, n: int). Every function below implements the PTX
// ISA's definition of that instruction, not our helpers' comments.
namespace fa_ptx
{
using fa_emu::u16;
using fa_emu::u32;
using fa_emu::u64;
using fa_emu::bits_to_float;
using fa_emu::float_to_bits;

template <class T> inline u64 to_u64(T* p) { return (u64)(uintptr_t)p; }
template <class T> inline u64 to_u64(const T* p) { return (u64)(uintptr_t)p; }
inline u64 to_u64(u64 v) { return v; }
inline u64 to_u64(long long v) { return (u64)v; }
inline u64 to_u64(unsigned long v) { return (u64)v; }
inline u64 to_u64(long v) { return (u64)v; }
inline u64 to_u64(std::nullptr_t) { return 0; }

// Round to nearest even, IEEE binary16. NaN -> canonical 0x7FFF (what cvt produces on sm_80+); overflow -> inf.
inline u16 f32_to_f16_rn(float f)
{
    u32 x = float_to_bits(f);
    u32 sign = (x >> 16) & 0x8000u, ax = x & 0x7FFFFFFFu;
    if (ax > 0x7F800000u) return 0x7FFF;
    if (ax >= 0x477FF000u) return (u16)(sign | 0x7C00u); // >= 65520 (halfway above 65504) rounds to inf
    if (ax < 0x38800000u)                                 // below 2^-14: subnormal half; units of 2^-24, RNE
    {
        float a = bits_to_float(ax) * 16777216.0f;        // exact (power-of-two scaling)
        u32 q = (u32)a;
        float rest = a - (float)q;
        if (rest > 0.5f || (rest == 0.5f && (q & 1u))) q++;
        return (u16)(sign | q);
    }
    u32 h = ((((ax >> 23) - 127u + 15u) << 10) | ((ax & 0x7FFFFFu) >> 13));
    u32 rest = ax & 0x1FFFu;
    if (rest > 0x1000u || (rest == 0x1000u && (h & 1u))) h++;
    return (u16)(sign | h);
}

inline float f16_to_f32(u16 h)
{
    u32 sign = (u32)(h & 0x8000u) << 16, e = (h >> 10) & 0x1Fu, m = h & 0x3FFu;
    if (e == 0x1Fu) return bits_to_float(sign | 0x7F800000u | (m << 13));
    if (e == 0) return bits_to_float(sign) + (sign ? -1.0f : 1.0f) * (float)m * (1.0f / 16777216.0f);
    return bits_to_float(sign | ((e - 15u + 127u) << 23) | (m << 13));
}

// Round to nearest even, bfloat16 = upper half of binary32. NaN -> canonical 0x7FFF.
inline u16 f32_to_bf16_rn(float f)
{
    u32 x = float_to_bits(f);
    if ((x & 0x7FFFFFFFu) > 0x7F800000u) return 0x7FFF;
    return (u16)((x + 0x7FFFu + ((x >> 16) & 1u)) >> 16);
}

inline float bf16_to_f32(u16 b) { return bits_to_float((u32)b << 16); }

// mov.b32: a 32-bit move between register types; mov.b32 {lo, hi}, a unpacks (first element = low half).
template <class D, class S> inline void mov_b32__s_s(D& d, S a)
{
    static_assert(sizeof(D) == 4 && sizeof(S) == 4, "mov.b32 moves 32 bits");
    memcpy(&d, &a, 4);
}
inline void mov_b32__v2_s(u16& lo, u16& hi, u32 a) { lo = (u16)(a & 0xFFFFu); hi = (u16)(a >> 16); }
inline void mov_b32__s_v2(u32& d, u16 lo, u16 hi) { d = (u32)lo | ((u32)hi << 16); }

// max.f32: the larger; NaN only when both are NaN (then canonical NaN); -0 < +0.
inline void max_f32__s_s_s(float& d, float a, float b)
{
    if (a != a && b != b) { d = bits_to_float(0x7FFFFFFFu); return; }
    if (a != a) { d = b; return; }
    if (b != b) { d = a; return; }
    if (a == 0.0f && b == 0.0f) { d = (std::signbit(a) && std::signbit(b)) ? -0.0f : 0.0f; return; }
    d = a > b ? a : b;
}
inline void min_f32__s_s_s(float& d, float a, float b)
{
    if (a != a && b != b) { d = bits_to_float(0x7FFFFFFFu); return; }
    if (a != a) { d = b; return; }
    if (b != b) { d = a; return; }
    if (a == 0.0f && b == 0.0f) { d = (std::signbit(a) || std::signbit(b)) ? -0.0f : 0.0f; return; }
    d = a < b ? a : b;
}

inline float flush_subnormal(float x) { return (float_to_bits(x) & 0x7F800000u) == 0 ? std::copysign(0.0f, x) : x; }

// ex2.approx.ftz.f32: 2^a, subnormal input and output flushed to sign-preserving zero; ex2(-inf) = +0.
inline void ex2_approx_ftz_f32__s_s(float& d, float a) { d = flush_subnormal(exp2f(flush_subnormal(a))); }
inline void ex2_approx_f32__s_s(float& d, float a) { d = exp2f(a); }
inline void lg2_approx_ftz_f32__s_s(float& d, float a) { d = flush_subnormal(log2f(flush_subnormal(a))); }
inline void lg2_approx_f32__s_s(float& d, float a) { d = log2f(a); }
inline void rcp_approx_ftz_f32__s_s(float& d, float a) { d = flush_subnormal(1.0f / flush_subnormal(a)); }
inline void tanh_approx_f32__s_s(float& d, float a) { d = tanhf(a); }

inline void cvt_f32_f16__s_s(float& d, u16 a) { d = f16_to_f32(a); }
inline void cvt_rn_f16_f32__s_s(u16& d, float a) { d = f32_to_f16_rn(a); }
inline void cvt_rn_bf16_f32__s_s(u16& d, float a) { d = f32_to_bf16_rn(a); }
inline void cvt_f32_bf16__s_s(float& d, u16 a) { d = bf16_to_f32(a); }
// cvt.rn.{f16,bf16}x2.f32 d, a, b: "the value converted from input a is stored in the upper half of d and the value
// converted from input b is stored in the lower half of d" (PTX ISA, cvt).
inline void cvt_rn_f16x2_f32__s_s_s(u32& d, float a, float b) { d = ((u32)f32_to_f16_rn(a) << 16) | f32_to_f16_rn(b); }
inline void cvt_rn_bf16x2_f32__s_s_s(u32& d, float a, float b) { d = ((u32)f32_to_bf16_rn(a) << 16) | f32_to_bf16_rn(b); }

// cvta.to.shared.u64 / cvt.u32.u64: generic address -> shared window offset (truncated to 32 bits).
inline void cvta_to_shared_u64__s_s(u64& d, u64 a)
{
    char* p = (char*)(uintptr_t)a;
    long long offset = p - fa_emu::smem_base();
    if (!fa_emu::is_shared(p))
    {
        fa_emu::fail("cvta.to.shared of address %p, which is not shared memory of this kernel", (void*)p);
    }
    d = (u64)offset;
}
inline void cvt_u32_u64__s_s(u32& d, u64 a) { d = (u32)a; }

// shfl.sync.{up,down,bfly,idx}.b32 d, a, b, c, membermask (PTX ISA; see fa_emu::compute_shfl).
template <class T> inline void shfl_ptx(T& d, T a, u32 b, u32 c, u32 members, int mode, const char* op)
{
    static_assert(sizeof(T) == 4, "shfl.sync moves 32 bits");
    d = fa_emu::shfl_typed(members, a, b, c, mode, op);
}
template <class T> inline void shfl_sync_up_b32__s_s_s_s_s(T& d, T a, u32 b, u32 c, u32 m) { shfl_ptx(d, a, b, c, m, 0, "shfl.sync.up"); }
template <class T> inline void shfl_sync_down_b32__s_s_s_s_s(T& d, T a, u32 b, u32 c, u32 m) { shfl_ptx(d, a, b, c, m, 1, "shfl.sync.down"); }
template <class T> inline void shfl_sync_bfly_b32__s_s_s_s_s(T& d, T a, u32 b, u32 c, u32 m) { shfl_ptx(d, a, b, c, m, 2, "shfl.sync.bfly"); }
template <class T> inline void shfl_sync_idx_b32__s_s_s_s_s(T& d, T a, u32 b, u32 c, u32 m) { shfl_ptx(d, a, b, c, m, 3, "shfl.sync.idx"); }

// cp.async.{ca,cg}.shared.global [dst], [src], cp-size{, src-size}: copies src-size bytes (default cp-size) and
// fills the rest of cp-size with zeros. .cg allows only cp-size 16. Both addresses must be cp-size aligned.
inline void cp_async(const char* op, u32 dst, u64 src, int cp_size, u32 src_size)
{
    if (cp_size != 4 && cp_size != 8 && cp_size != 16) fa_emu::fail("%s: cp-size %d is not 4, 8 or 16", op, cp_size);
    if (src_size > (u32)cp_size) fa_emu::fail("%s: src-size %u exceeds cp-size %d", op, src_size, cp_size);
    if (dst % (u32)cp_size != 0) fa_emu::fail("%s: shared address 0x%x is not %d-byte aligned", op, dst, cp_size);
    if (src_size > 0 && src % (u64)cp_size != 0)
    {
        fa_emu::fail("%s: global address %p is not %d-byte aligned", op, (void*)(uintptr_t)src, cp_size);
    }
    char* d = fa_emu::shared_pointer(dst, cp_size, op);
    if (src_size > 0) memcpy(d, (const void*)(uintptr_t)src, src_size);
    memset(d + src_size, 0, (size_t)cp_size - src_size);
}
inline void cp_async_cg_shared_global__m_m_s(u32 dst, u64 src, int cp_size)
{
    if (cp_size != 16) fa_emu::fail("cp.async.cg: cp-size must be 16, not %d", cp_size);
    cp_async("cp.async.cg.shared.global", dst, src, cp_size, (u32)cp_size);
}
inline void cp_async_cg_shared_global__m_m_s_s(u32 dst, u64 src, int cp_size, u32 src_size)
{
    if (cp_size != 16) fa_emu::fail("cp.async.cg: cp-size must be 16, not %d", cp_size);
    cp_async("cp.async.cg.shared.global", dst, src, cp_size, src_size);
}
inline void cp_async_ca_shared_global__m_m_s(u32 dst, u64 src, int cp_size) { cp_async("cp.async.ca.shared.global", dst, src, cp_size, (u32)cp_size); }
inline void cp_async_ca_shared_global__m_m_s_s(u32 dst, u64 src, int cp_size, u32 src_size) { cp_async("cp.async.ca.shared.global", dst, src, cp_size, src_size); }
inline void cp_async_commit_group__() {}
inline void cp_async_wait_group__s(int) {}
inline void cp_async_wait_all__() {}

// ldmatrix.sync.aligned.m8n8.xN[.trans].shared.b16: lanes 8i..8i+7 give the addresses of rows 0..7 of matrix i
// (16 bytes each, 16-byte aligned; only the first 8N lanes' addresses are used). Destination register i of lane l
// holds, from matrix i, row l/4, elements 2(l%4) and 2(l%4)+1 (lower index in the low half). With .trans, each
// matrix is read column-major: register i of lane l holds elements (2(l%4), l/4) and (2(l%4)+1, l/4).
template <int N, bool Trans> inline void compute_ldmatrix(fa_emu::WarpSlot& s)
{
    u16 m[4][8][8];
    for (int i = 0; i < N; i++)
        for (int r = 0; r < 8; r++)
        {
            const char* p = (const char*)(uintptr_t)s.in[8 * i + r][0];
            memcpy(m[i][r], p, 16);
        }
    for (int lane = 0; lane < 32; lane++)
        for (int i = 0; i < N; i++)
        {
            int row = lane / 4, col = 2 * (lane % 4);
            u16 lo = Trans ? m[i][col][row] : m[i][row][col];
            u16 hi = Trans ? m[i][col + 1][row] : m[i][row][col + 1];
            s.out[lane][i] = (u64)lo | ((u64)hi << 16);
        }
}

template <int N, bool Trans> inline void ldmatrix(const char* op, u32 (&d)[4], u32 address)
{
    const fa_emu::Fiber* self = fa_emu::current;
    u64 in[1] = {0}, out[4];
    if (self->lane < 8 * N)
    {
        if (address % 16 != 0) fa_emu::fail("%s: row address 0x%x is not 16-byte aligned", op, address);
        in[0] = (u64)(uintptr_t)fa_emu::shared_pointer(address, 16, op);
    }
    fa_emu::warp_collective(op, 0xFFFFFFFFu, in, 1, out, N, compute_ldmatrix<N, Trans>);
    for (int i = 0; i < N; i++) d[i] = (u32)out[i];
}

#define FA_PTX_LDMATRIX(NAME, N, TRANS, OPNAME)                                              \
    inline void NAME(u32& d0, u32 a)                                                          \
    {                                                                                         \
        u32 d[4];                                                                             \
        ldmatrix<N, TRANS>(OPNAME, d, a);                                                     \
        d0 = d[0];                                                                            \
    }
FA_PTX_LDMATRIX(ldmatrix_sync_aligned_m8n8_x1_shared_b16__v1_m, 1, false, "ldmatrix.x1")
FA_PTX_LDMATRIX(ldmatrix_sync_aligned_m8n8_x1_trans_shared_b16__v1_m, 1, true, "ldmatrix.x1.trans")
#undef FA_PTX_LDMATRIX
inline void ldmatrix_sync_aligned_m8n8_x2_shared_b16__v2_m(u32& d0, u32& d1, u32 a)
{ u32 d[4]; ldmatrix<2, false>("ldmatrix.x2", d, a); d0 = d[0]; d1 = d[1]; }
inline void ldmatrix_sync_aligned_m8n8_x2_trans_shared_b16__v2_m(u32& d0, u32& d1, u32 a)
{ u32 d[4]; ldmatrix<2, true>("ldmatrix.x2.trans", d, a); d0 = d[0]; d1 = d[1]; }
inline void ldmatrix_sync_aligned_m8n8_x4_shared_b16__v4_m(u32& d0, u32& d1, u32& d2, u32& d3, u32 a)
{ u32 d[4]; ldmatrix<4, false>("ldmatrix.x4", d, a); d0 = d[0]; d1 = d[1]; d2 = d[2]; d3 = d[3]; }
inline void ldmatrix_sync_aligned_m8n8_x4_trans_shared_b16__v4_m(u32& d0, u32& d1, u32& d2, u32& d3, u32 a)
{ u32 d[4]; ldmatrix<4, true>("ldmatrix.x4.trans", d, a); d0 = d[0]; d1 = d[1]; d2 = d[2]; d3 = d[3]; }

// mma.sync.aligned.m16n8k16.row.col.f32.{f16,bf16}.{f16,bf16}.f32 d, a, b, c (PTX ISA fragment layouts), with
// groupID = lane / 4 and threadID_in_group = lane % 4:
//   A (16x16, 4 regs, 8 elements a0..a7, two per reg, lower index in the low half):
//     row = groupID for a0, a1, a4, a5; groupID + 8 for a2, a3, a6, a7
//     col = threadID_in_group * 2 + (i & 1) for a0..a3; + 8 for a4..a7
//   B (16x8, 2 regs, b0..b3): row (k) = threadID_in_group * 2 + (i & 1) for b0, b1; + 8 for b2, b3; col (n) = groupID
//   C, D (16x8 fp32, c0..c3): row = groupID for c0, c1; groupID + 8 for c2, c3; col = threadID_in_group * 2 + (i & 1)
// The 16 products are exact in double; D = C + sum, summed in double and rounded once to fp32.
template <bool Bf16> inline void compute_mma_m16n8k16(fa_emu::WarpSlot& s)
{
    float A[16][16], B[16][8], C[16][8];
    for (int lane = 0; lane < 32; lane++)
    {
        const int g = lane / 4, t = lane % 4;
        for (int i = 0; i < 8; i++)
        {
            u32 reg = (u32)s.in[lane][i / 2];
            u16 bits = (i & 1) ? (u16)(reg >> 16) : (u16)(reg & 0xFFFFu);
            int row = (i < 2 || (i >= 4 && i < 6)) ? g : g + 8;
            int col = t * 2 + (i & 1) + (i >= 4 ? 8 : 0);
            A[row][col] = Bf16 ? bf16_to_f32(bits) : f16_to_f32(bits);
        }
        for (int i = 0; i < 4; i++)
        {
            u32 reg = (u32)s.in[lane][4 + i / 2];
            u16 bits = (i & 1) ? (u16)(reg >> 16) : (u16)(reg & 0xFFFFu);
            int row = t * 2 + (i & 1) + (i >= 2 ? 8 : 0);
            B[row][g] = Bf16 ? bf16_to_f32(bits) : f16_to_f32(bits);
        }
        for (int i = 0; i < 4; i++)
        {
            int row = i < 2 ? g : g + 8, col = t * 2 + (i & 1);
            C[row][col] = bits_to_float((u32)(s.in[lane][6 + i / 2] >> (32 * (i & 1))));
        }
    }
    for (int lane = 0; lane < 32; lane++)
    {
        const int g = lane / 4, t = lane % 4;
        for (int i = 0; i < 4; i++)
        {
            int row = i < 2 ? g : g + 8, col = t * 2 + (i & 1);
            double sum = C[row][col];
            for (int k = 0; k < 16; k++) sum += (double)A[row][k] * (double)B[k][col];
            s.out[lane][i] = float_to_bits((float)sum);
        }
    }
}

template <bool Bf16>
inline void mma_m16n8k16(const char* op, float& d0, float& d1, float& d2, float& d3, u32 a0, u32 a1, u32 a2, u32 a3, u32 b0,
                         u32 b1, float c0, float c1, float c2, float c3)
{
    // Words 0-3: A, 4-5: B, 6: c0 | c1 << 32, 7: c2 | c3 << 32.
    u64 in[8] = {a0, a1, a2, a3, b0, b1, (u64)float_to_bits(c0) | ((u64)float_to_bits(c1) << 32),
                 (u64)float_to_bits(c2) | ((u64)float_to_bits(c3) << 32)};
    u64 out[4];
    fa_emu::warp_collective(op, 0xFFFFFFFFu, in, 8, out, 4, compute_mma_m16n8k16<Bf16>);
    d0 = bits_to_float((u32)out[0]);
    d1 = bits_to_float((u32)out[1]);
    d2 = bits_to_float((u32)out[2]);
    d3 = bits_to_float((u32)out[3]);
}

inline void mma_sync_aligned_m16n8k16_row_col_f32_f16_f16_f32__v4_v4_v2_v4(float& d0, float& d1, float& d2, float& d3, u32 a0,
    u32 a1, u32 a2, u32 a3, u32 b0, u32 b1, float c0, float c1, float c2, float c3)
{
    mma_m16n8k16<false>("mma.m16n8k16.f16", d0, d1, d2, d3, a0, a1, a2, a3, b0, b1, c0, c1, c2, c3);
}
inline void mma_sync_aligned_m16n8k16_row_col_f32_bf16_bf16_f32__v4_v4_v2_v4(float& d0, float& d1, float& d2, float& d3, u32 a0,
    u32 a1, u32 a2, u32 a3, u32 b0, u32 b1, float c0, float c1, float c2, float c3)
{
    mma_m16n8k16<true>("mma.m16n8k16.bf16", d0, d1, d2, d3, a0, a1, a2, a3, b0, b1, c0, c1, c2, c3);
}
} // namespace fa_ptx
