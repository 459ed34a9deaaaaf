/* test_sample.c — nb_sample_logits (nn/sample.c).
 *
 * The draws are checked against softmax probabilities worked out by hand
 * (e^1, e^0, e^-1, e^2 over their sum), with a tolerance of over four
 * standard deviations of a frequency over the number of draws; then the
 * exact cases (argmax by temperature 0 and by top_k 1, classes outside the
 * top k never drawn, -inf never drawn), reproducibility from a seed, and
 * the refusals.
 */
#include <string.h>

#include "test_util.h"

TestSuite(sample, NB_TEST_HOOKS);

enum { DRAWS = 20000 };

/* DRAWS copies of one row of four logits. */
static nb_tensor *rows_of(const float *row) {
    nb_tensor *t = nb_empty(NB_SHAPE(DRAWS, 4));
    float *d = nb_data_mut(t);
    for (int i = 0; i < DRAWS; i++) memcpy(d + 4 * i, row, 4 * sizeof *d);
    return t;
}

static void frequencies(const nb_tensor *drawn, double *freq) {
    int64_t count[4] = {0};
    EXPECT_SHAPE(drawn, DRAWS);
    for (int i = 0; i < DRAWS; i++) {
        float c = nb_data(drawn)[i];
        cr_assert(c == 0 || c == 1 || c == 2 || c == 3, "draw %d is %g", i, (double)c);
        count[(int)c]++;
    }
    for (int c = 0; c < 4; c++) freq[c] = (double)count[c] / DRAWS;
}

/* sqrt(p(1-p)/DRAWS) is at most 0.0036: 0.015 is over four of those. */
static void expect_frequencies(const nb_tensor *drawn, const double *p) {
    double f[4];
    frequencies(drawn, f);
    for (int c = 0; c < 4; c++)
        cr_assert(fabs(f[c] - p[c]) < 0.015, "class %d drawn with frequency %.4f, probability %.4f", c, f[c],
                  p[c]);
}

Test(sample, frequencies_follow_the_softmax) {
    nb_generator g;
    nb_generator_seed(&g, 7);
    /* softmax([1, 0, -1, 2]) = (e, 1, 1/e, e^2) / 11.475217 */
    nb_tensor *drawn = nb_sample_logits(rows_of((float[]){1, 0, -1, 2}), 1.0f, 0, &g);
    expect_frequencies(drawn, (double[]){0.236883, 0.087144, 0.032059, 0.643914});
}

Test(sample, temperature_divides_the_logits) {
    /* softmax([0.5, 0, -0.5, 1]) = (e^0.5, 1, e^-0.5, e) / 5.973534 */
    nb_tensor *drawn = nb_sample_logits(rows_of((float[]){1, 0, -1, 2}), 2.0f, 0, NULL);
    expect_frequencies(drawn, (double[]){0.276004, 0.167405, 0.101536, 0.455054});
}

Test(sample, top_k_keeps_the_k_largest) {
    /* top 2 of [1, 0, -1, 2]: classes 3 and 0, with e^2 / (e^2 + e) =
     * sigmoid(1) and its complement; top_k 4 and beyond is all. */
    nb_tensor *x = rows_of((float[]){1, 0, -1, 2});
    expect_frequencies(nb_sample_logits(x, 1.0f, 2, NULL), (double[]){0.268941, 0, 0, 0.731059});
    expect_frequencies(nb_sample_logits(x, 2.0f, 4, NULL), (double[]){0.276004, 0.167405, 0.101536, 0.455054});
    expect_frequencies(nb_sample_logits(x, 2.0f, 99, NULL), (double[]){0.276004, 0.167405, 0.101536, 0.455054});
}

Test(sample, top_k_keeps_ties_with_the_kth) {
    /* [3, 1, 3, 1] with top_k 1 is argmax (the first 3); with top_k 2 both
     * 3s; with top_k 3 the 1s tie with the third largest: all four. */
    nb_tensor *x = rows_of((float[]){3, 1, 3, 1});
    double f[4];
    frequencies(nb_sample_logits(x, 1.0f, 1, NULL), f);
    cr_assert_eq(f[0], 1.0);
    frequencies(nb_sample_logits(x, 1.0f, 2, NULL), f);
    cr_assert(f[1] == 0 && f[3] == 0 && fabs(f[0] - 0.5) < 0.015, "%g %g %g %g", f[0], f[1], f[2], f[3]);
    frequencies(nb_sample_logits(x, 1.0f, 3, NULL), f);
    cr_assert(f[1] > 0 && f[3] > 0);
}

Test(sample, argmax_by_temperature_zero_and_by_top_k_one) {
    nb_tensor *x = nb_from_array(NB_SHAPE(2, 3, 4), (float[]){0, 5, 1, 2,    9, -3, 8, 9,  -1, -2, -3, -4,
                                                                  1, 1, 1, 7,    0, 0, 0, 0,   2, 6, 5, 6});
    uint64_t before = nb_default_generator()->state;
    nb_tensor *a = nb_sample_logits(x, 0.0f, 0, NULL);
    EXPECT_SHAPE(a, 2, 3);
    EXPECT_VALUES(a, 0, 1, 0, 0, 3, 0, 1); /* the first maximum on ties */
    cr_assert_eq(nb_default_generator()->state, before, "argmax draws nothing");
    EXPECT_VALUES(nb_sample_logits(x, 1.0f, 1, NULL), 0, 1, 0, 0, 3, 0, 1);
    EXPECT_VALUES(nb_sample_logits(x, 0.0f, 3, NULL), 0, 1, 0, 0, 3, 0, 1);
}

Test(sample, one_row_gives_a_zero_dimensional_index) {
    nb_tensor *a = nb_sample_logits(nb_from_array(NB_SHAPE(3), (float[]){0, 4, 1}), 0.0f, 0, NULL);
    cr_assert_eq(nb_ndim(a), 0);
    cr_assert_eq(nb_item(a), 1.0f);
    /* a single class is always drawn */
    cr_assert_eq(nb_item(nb_sample_logits(nb_from_array(NB_SHAPE(1), (float[]){-7}), 1.0f, 0, NULL)), 0.0f);
}

Test(sample, low_temperature_tends_to_argmax_without_overflow) {
    /* logits 1e30 apart and a temperature of 1e-30: exp would overflow
     * without the shift by the maximum. */
    double f[4];
    frequencies(nb_sample_logits(rows_of((float[]){1e30f, -1e30f, 3e30f, 0}), 1e-30f, 0, NULL), f);
    cr_assert_eq(f[2], 1.0);
    frequencies(nb_sample_logits(rows_of((float[]){0, 1, 0.5f, 0}), 1e-6f, 0, NULL), f);
    cr_assert_eq(f[1], 1.0);
}

Test(sample, minus_infinity_is_never_drawn) {
    /* softmax over the three finite logits [0, 0, ln 2]: 1/4, 1/4, 1/2 */
    double f[4];
    frequencies(nb_sample_logits(rows_of((float[]){0, -INFINITY, 0, 0.693147f}), 1.0f, 0, NULL), f);
    cr_assert_eq(f[1], 0.0);
    cr_assert(fabs(f[0] - 0.25) < 0.015 && fabs(f[2] - 0.25) < 0.015 && fabs(f[3] - 0.5) < 0.015);
}

Test(sample, the_same_seed_gives_the_same_draws) {
    nb_tensor *x = nb_randn(NB_SHAPE(50, 10));
    nb_generator g1, g2, g3;
    nb_generator_seed(&g1, 123);
    nb_generator_seed(&g2, 123);
    nb_generator_seed(&g3, 124);
    nb_tensor *a = nb_sample_logits(x, 1.0f, 5, &g1), *b = nb_sample_logits(x, 1.0f, 5, &g2);
    nb_tensor *c = nb_sample_logits(x, 1.0f, 5, &g3);
    cr_assert_eq(memcmp(nb_data(a), nb_data(b), 50 * sizeof(float)), 0);
    cr_assert_neq(memcmp(nb_data(a), nb_data(c), 50 * sizeof(float)), 0);
    /* the default generator follows nb_manual_seed */
    nb_manual_seed(5);
    nb_tensor *d = nb_sample_logits(x, 1.0f, 0, NULL);
    nb_manual_seed(5);
    nb_tensor *e = nb_sample_logits(x, 1.0f, 0, NULL);
    cr_assert_eq(memcmp(nb_data(d), nb_data(e), 50 * sizeof(float)), 0);
}

Test(sample, the_result_records_no_graph) {
    nb_tensor *x = nb_test_leaf(-1, 1, NB_SHAPE(3, 5));
    nb_tensor *a = nb_sample_logits(x, 1.0f, 0, NULL);
    cr_assert_not(nb_requires_grad(a));
}

Test(sample, bad_input_is_refused) {
    nb_tensor *x = nb_zeros(NB_SHAPE(2, 3));
    cr_assert_null(nb_sample_logits(x, -1.0f, 0, NULL));
    EXPECT_ERROR("nb_sample_logits", "temperature -1");
    cr_assert_null(nb_sample_logits(x, NAN, 0, NULL));
    EXPECT_ERROR("nb_sample_logits", "temperature nan");
    cr_assert_null(nb_sample_logits(x, INFINITY, 0, NULL));
    EXPECT_ERROR("nb_sample_logits", "temperature inf");
    cr_assert_null(nb_sample_logits(nb_scalar(1), 1.0f, 0, NULL));
    EXPECT_ERROR("nb_sample_logits", "[..., V]", "[]");
    cr_assert_null(nb_sample_logits(nb_zeros(NB_SHAPE(2, 0)), 1.0f, 0, NULL));
    EXPECT_ERROR("nb_sample_logits", "[2,0]");
    nb_tensor *bad = nb_from_array(NB_SHAPE(2, 3), (float[]){0, 1, 2, 3, NAN, 5});
    cr_assert_null(nb_sample_logits(bad, 1.0f, 0, NULL));
    EXPECT_ERROR("nb_sample_logits", "[2,3]", "nan", "row 1");
    nb_data_mut(bad)[4] = INFINITY;
    cr_assert_null(nb_sample_logits(bad, 0.0f, 0, NULL));
    EXPECT_ERROR("nb_sample_logits", "inf", "row 1");
    nb_tensor *none = nb_full(NB_SHAPE(1, 3), -INFINITY);
    cr_assert_null(nb_sample_logits(none, 1.0f, 0, NULL));
    EXPECT_ERROR("nb_sample_logits", "row 0", "all -inf");
    /* NULL in, NULL out, no second message */
    nb_clear_error();
    cr_assert_null(nb_sample_logits(NULL, 1.0f, 0, NULL));
    cr_assert_null(nb_error());
}

Test(sample, no_rows_give_an_empty_result) {
    nb_tensor *a = nb_sample_logits(nb_zeros(NB_SHAPE(0, 4)), 1.0f, 2, NULL);
    EXPECT_SHAPE(a, 0);
}

Test(sample, out_of_memory_is_an_error) {
    nb_tensor *x = nb_zeros(NB_SHAPE(2, 3));
    for (int n = 1; n <= 2; n++) {
        nb_test_alloc a = {.fail_at = n};
        nb_set_alloc_hook(nb_test_alloc_hook, &a);
        nb_tensor *s = nb_sample_logits(x, 1.0f, 2, NULL);
        nb_set_alloc_hook(NULL, NULL);
        if (a.fired) cr_assert_null(s);
        else cr_assert_not_null(s);
    }
}
