#ifndef BOTTLENECK_CCACHEHINTS_H
#define BOTTLENECK_CCACHEHINTS_H

/// Cache and CPU hints for the Swift kernels, which have no prefetch or pause instruction of their own. Static inline,
/// so the Swift compiler inlines them into the loops that call them (one instruction each).

/// Asks for the 64-byte line holding `p` to be brought into every cache level, to be read soon.
static inline void bottleneck_prefetch_read(const void *p) { __builtin_prefetch(p, 0, 3); }

/// Asks for the line holding `p` to be brought into L2 (and the levels below it), not L1: for data
/// needed after what L1 holds now is done with (the next weight panel).
static inline void bottleneck_prefetch_l2(const void *p) { __builtin_prefetch(p, 0, 2); }

/// Asks for the line holding `p` in a writable state, to be written soon (no read-for-ownership
/// stall at the store).
static inline void bottleneck_prefetch_write(void *p) { __builtin_prefetch(p, 1, 3); }

/// Tells the CPU that the calling thread is in a spin-wait loop (x86 `pause`, arm64 `yield`): the
/// loop then draws less power and yields the core's resources to its SMT sibling, and leaving it
/// costs no memory-order mis-speculation.
static inline void bottleneck_spin_pause(void) {
#if defined(__x86_64__) || defined(__i386__)
    __builtin_ia32_pause();
#elif defined(__aarch64__)
    __asm__ __volatile__("yield");
#endif
}

#endif
