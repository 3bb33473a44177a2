// libpng's full read API is used instead of the simplified png_image_* API because the simplified
// API treats 16-bit input as linear light (gamma-converting it when 8-bit output is requested),
// premultiplies alpha for 16-bit output and honours gAMA; Pillow does none of that. Pillow's
// convert("RGB") takes the high byte of 16-bit RGB/RGBA/LA samples, clips 16-bit gray ("I;16")
// to 255, maps palette indices through PLTE and simply drops alpha and tRNS.
#include "png_read.h"
#include <png.h>
#include <setjmp.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

typedef struct {
    const uint8_t *data;
    size_t size;
    size_t pos;
    int truncated;
    char message[200];
} bn_source;

static void bn_read(png_structp png, png_bytep out, size_t n) {
    bn_source *src = (bn_source *)png_get_io_ptr(png);
    if (src->size - src->pos < n) {
        src->truncated = 1;
        png_error(png, "unexpected end of data");
    }
    memcpy(out, src->data + src->pos, n);
    src->pos += n;
}

static void bn_error(png_structp png, png_const_charp msg) {
    bn_source *src = (bn_source *)png_get_error_ptr(png);
    snprintf(src->message, sizeof src->message, "%s", msg);
    png_longjmp(png, 1);
}

static void bn_warning(png_structp png, png_const_charp msg) {
    (void)png;
    (void)msg;  // ancillary-chunk problems: Pillow ignores them too
}

int bn_png_decode_rgb(const uint8_t *data, size_t size, uint8_t *rgb, uint32_t width, uint32_t height,
                      char *message, size_t message_len) {
    bn_source src = {data, size, 0, 0, {0}};
    png_structp png = png_create_read_struct(PNG_LIBPNG_VER_STRING, &src, bn_error, bn_warning);
    if (png == NULL) {
        snprintf(message, message_len, "out of memory");
        return BN_PNG_NOMEM;
    }
    png_infop info = png_create_info_struct(png);
    if (info == NULL) {
        png_destroy_read_struct(&png, NULL, NULL);
        snprintf(message, message_len, "out of memory");
        return BN_PNG_NOMEM;
    }
    // Modified between setjmp and a possible longjmp, hence volatile.
    uint8_t *volatile buffer = NULL;
    png_bytep *volatile rows = NULL;
    if (setjmp(png_jmpbuf(png))) {
        free(buffer);
        free(rows);
        png_destroy_read_struct(&png, &info, NULL);
        snprintf(message, message_len, "%s", src.message);
        if (src.truncated || strstr(src.message, "Not enough image data") != NULL) return BN_PNG_TRUNCATED;
        return BN_PNG_CORRUPT;
    }
    png_set_read_fn(png, &src, bn_read);
    png_set_user_limits(png, 0x7fffffff, 0x7fffffff);  // the caller already enforced its pixel budget
    png_read_info(png, info);

    png_uint_32 w = 0, h = 0;
    int depth = 0, color = 0, interlace = 0;
    png_get_IHDR(png, info, &w, &h, &depth, &color, &interlace, NULL, NULL);
    if (w != width || h != height) {
        png_destroy_read_struct(&png, &info, NULL);
        snprintf(message, message_len, "IHDR changed while reading");
        return BN_PNG_MISMATCH;
    }
    const int gray16 = (color == PNG_COLOR_TYPE_GRAY && depth == 16);
    if (color == PNG_COLOR_TYPE_PALETTE) png_set_palette_to_rgb(png);
    if (color == PNG_COLOR_TYPE_GRAY && depth < 8) png_set_expand_gray_1_2_4_to_8(png);
    if (depth == 16 && !gray16) png_set_strip_16(png);  // high byte, like Pillow's ";16B" unpackers
    png_set_interlace_handling(png);
    png_read_update_info(png, info);

    const size_t rowbytes = png_get_rowbytes(png, info);
    const int channels = png_get_channels(png, info);
    buffer = (uint8_t *)malloc(rowbytes * (size_t)h);
    rows = (png_bytep *)malloc(sizeof(png_bytep) * (size_t)h);
    if (buffer == NULL || rows == NULL) {
        free(buffer);
        free(rows);
        png_destroy_read_struct(&png, &info, NULL);
        snprintf(message, message_len, "out of memory for %u rows of %zu bytes", (unsigned)h, rowbytes);
        return BN_PNG_NOMEM;
    }
    for (png_uint_32 y = 0; y < h; y++) rows[y] = buffer + (size_t)y * rowbytes;
    png_read_image(png, rows);

    const uint8_t *s = buffer;
    uint8_t *d = rgb;
    for (png_uint_32 y = 0; y < h; y++) {
        s = buffer + (size_t)y * rowbytes;
        for (png_uint_32 x = 0; x < w; x++, d += 3) {
            if (gray16) {
                unsigned v = ((unsigned)s[0] << 8) | s[1];
                d[0] = d[1] = d[2] = (uint8_t)(v > 255 ? 255 : v);
                s += 2;
            } else if (channels <= 2) {
                d[0] = d[1] = d[2] = s[0];
                s += channels;
            } else {
                d[0] = s[0];
                d[1] = s[1];
                d[2] = s[2];
                s += channels;
            }
        }
    }
    free(buffer);
    free(rows);
    png_destroy_read_struct(&png, &info, NULL);
    return BN_PNG_OK;
}
