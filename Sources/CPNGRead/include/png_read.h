// Reads a PNG with libpng's full API behind setjmp so that libpng's longjmp error path never
// crosses Swift frames. Samples are reduced exactly as Pillow's convert("RGB") does (see png_read.c).
#ifndef BOTTLENECK_PNG_READ_H
#define BOTTLENECK_PNG_READ_H
#include <stddef.h>
#include <stdint.h>

enum {
    BN_PNG_OK = 0,
    BN_PNG_TRUNCATED = 1,   // the data ended before all rows were decoded
    BN_PNG_CORRUPT = 2,     // libpng rejected the data (CRC, zlib stream, filter...)
    BN_PNG_NOMEM = 3,       // allocation failed
    BN_PNG_MISMATCH = 4     // IHDR differs from the dimensions the caller validated
};

/// Decodes `data` into `rgb` (width * height * 3 bytes, caller-allocated after checking the IHDR).
/// On failure writes a NUL-terminated reason into `message` and returns a BN_PNG_* code.
int bn_png_decode_rgb(const uint8_t *data, size_t size, uint8_t *rgb, uint32_t width, uint32_t height,
                      char *message, size_t message_len);

#endif
