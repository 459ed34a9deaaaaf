#include "test_util.h"
TestSuite(checkpoint, NB_TEST_HOOKS);
