#include <cblas.h>
// OpenBLAS extensions (declared in OpenBLAS's cblas.h as well; repeated for clarity).
void openblas_set_num_threads(int num_threads);
int openblas_get_num_threads(void);
char *openblas_get_corename(void);
