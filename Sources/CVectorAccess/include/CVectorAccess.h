#ifndef BOTTLENECK_CVECTORACCESS_H
#define BOTTLENECK_CVECTORACCESS_H

/// Unaligned loads and stores of 8 and 16 floats for the Swift kernels. Swift imports these vector
/// types as SIMD8<Float> and SIMD16<Float>; the functions are static inline and always inlined, so
/// each is one or two `vmovups` wherever it is called. (The standard library's
/// `loadUnaligned(as:)` and `storeBytes(of:as:)` are left as out-of-line calls, with the vector
/// registers spilled around them, whenever the optimiser's inlining budget for the calling kernel
/// runs out, and unrelated code elsewhere in the module can tip that budget.)

typedef float bottleneck_f32x8 __attribute__((ext_vector_type(8)));
typedef float bottleneck_f32x16 __attribute__((ext_vector_type(16)));

/// The 8 floats at `p` (any alignment).
static inline __attribute__((always_inline)) bottleneck_f32x8 bottleneck_load_f32x8(const void *p) {
    bottleneck_f32x8 v;
    __builtin_memcpy(&v, p, sizeof v);
    return v;
}

/// The 16 floats at `p` (any alignment).
static inline __attribute__((always_inline)) bottleneck_f32x16 bottleneck_load_f32x16(const void *p) {
    bottleneck_f32x16 v;
    __builtin_memcpy(&v, p, sizeof v);
    return v;
}

/// Writes 8 floats to `p` (any alignment).
static inline __attribute__((always_inline)) void bottleneck_store_f32x8(void *p, bottleneck_f32x8 v) {
    __builtin_memcpy(p, &v, sizeof v);
}

/// Writes 16 floats to `p` (any alignment).
static inline __attribute__((always_inline)) void bottleneck_store_f32x16(void *p, bottleneck_f32x16 v) {
    __builtin_memcpy(p, &v, sizeof v);
}

#endif
