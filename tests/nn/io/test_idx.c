#include "test_util.h"
TestSuite(x, NB_TEST_HOOKS);
