/* fuzz_util.h — what the fuzz harnesses share. Each harness defines
 * fuzz_<reader>_one(data, size), which runs the reader on the bytes and
 * checks what must hold whatever they are; FUZZ_CHECK aborts (a finding for
 * libFuzzer) unless the includer defines it otherwise, as the corpus replay
 * test does with a Criterion assertion; NB_FUZZ_ENTRY makes the function
 * libFuzzer's entry point unless NB_FUZZ_NO_ENTRY is defined (the replay
 * test includes every harness in one program).
 */
#ifndef NB_FUZZ_UTIL_H
#define NB_FUZZ_UTIL_H

#include <stdlib.h>
#include <string.h>

#include "nabla.h"

#ifndef FUZZ_CHECK
#define FUZZ_CHECK(cond)                                                                  \
    do {                                                                                  \
        if (!(cond)) abort();                                                             \
    } while (0)
#endif

#ifndef NB_FUZZ_NO_ENTRY
#define NB_FUZZ_ENTRY(one)                                                                \
    int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size);                         \
    int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size) { return one(data, size); }
#else
#define NB_FUZZ_ENTRY(one)
#endif

#endif
