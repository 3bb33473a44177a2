// TurboJPEG reports errors through return codes (no longjmp), which Swift can call safely.
#include <turbojpeg.h>
