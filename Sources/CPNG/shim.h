// Only libpng's simplified png_image_* API is used: it reports errors in the
// png_image struct instead of longjmp-ing through Swift frames.
#include <png.h>
