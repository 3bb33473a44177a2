#ifndef BOTTLENECK_CCACHEHINTS_H
#define BOTTLENECK_CCACHEHINTS_H

/// Cache hints for the Swift kernels, which have no prefetch instruction of their own. Static inline,
/// so the Swift compiler inlines them into the loops that call them (one instruction each).

/// Asks for the 64-byte line holding `p` to be brought into every cache level, to be read soon.
static inline void bottleneck_prefetch_read(const void *p) { __builtin_prefetch(p, 0, 3); }

/// Asks for the line holding `p` in a writable state, to be written soon (no read-for-ownership
/// stall at the store).
static inline void bottleneck_prefetch_write(void *p) { __builtin_prefetch(p, 1, 3); }

#endif
