// zlib's raw inflate and crc32: wheels (zip files) store checkpoints DEFLATE-compressed.
#include <zlib.h>
