/* test_csv.c — the CSV reader (nn/io/csv.c): tables given as strings (and
 * one written to a file, plain and gzip-compressed), with and without a
 * header, labels by index and by name, quoting, CRLF, blank trailing lines,
 * and every malformed table with its "file:line:column: what" message.
 */
#include <stdlib.h>
#include <string.h>
#include <fcntl.h>
#include <unistd.h>

#include "test_util.h"

TestSuite(csv, NB_TEST_HOOKS);

static int parse(const char *text, const nb_csv_opts *o, nb_tensor **x, nb_tensor **y) {
    nb_clear_error();
    return nb_parse_csv(text, strlen(text), "t.csv", o, x, y);
}

#define EXPECT_CSV_ERROR(text, opts, ...)                                                \
    do {                                                                               \
        nb_tensor *x_ = (nb_tensor *)1, *y_ = (nb_tensor *)1;                          \
        cr_assert_eq(parse((text), (opts), &x_, &y_), -1, "bad table accepted");       \
        cr_assert_null(x_);                                                            \
        cr_assert_null(y_);                                                            \
        EXPECT_ERROR(__VA_ARGS__);                                                     \
    } while (0)

/* ---- good tables -------------------------------------------------------------------- */

Test(csv, plain_table_without_labels) {
    nb_tensor *x, *y;
    cr_assert_eq(parse("1,2,3\n4,5,6\n", NULL, &x, &y), 0, "%s", nb_error());
    EXPECT_SHAPE(x, 2, 3);
    EXPECT_VALUES(x, 0, 1, 2, 3, 4, 5, 6);
    cr_assert_null(y);
    cr_assert_eq(parse("1.5e3, -2 ,\t.25\n", NULL, &x, NULL), 0, "%s", nb_error()); /* no final newline, spaces */
    EXPECT_VALUES(x, 0, 1500, -2, 0.25f);
}

Test(csv, header_and_labels_by_name) {
    const char *t = "sepal,petal,class,weight\n1,2,0,10\n3,4,1,20\n5,6,2,30\n";
    nb_csv_opts o = {.header = true, .nlabels = 2, .label_names = (const char *[]){"weight", "class"}};
    nb_tensor *x, *y;
    cr_assert_eq(parse(t, &o, &x, &y), 0, "%s", nb_error());
    EXPECT_SHAPE(x, 3, 2);
    EXPECT_VALUES(x, 0, 1, 2, 3, 4, 5, 6);
    EXPECT_SHAPE(y, 3, 2);
    EXPECT_VALUES(y, 0, 10, 0, 20, 1, 30, 2);
}

Test(csv, labels_by_index_and_from_the_end) {
    nb_tensor *x, *y;
    nb_csv_opts o = {.nlabels = 1, .label_columns = (const int[]){-1}};
    cr_assert_eq(parse("1,2,7\n3,4,8\n", &o, &x, &y), 0, "%s", nb_error());
    EXPECT_VALUES(x, 0, 1, 2, 3, 4);
    EXPECT_SHAPE(y, 2, 1);
    EXPECT_VALUES(y, 0, 7, 8);
    o.label_columns = (const int[]){0};
    cr_assert_eq(parse("1,2,7\n3,4,8\n", &o, &x, &y), 0, "%s", nb_error());
    EXPECT_VALUES(x, 0, 2, 7, 4, 8);
    EXPECT_VALUES(y, 0, 1, 3);
}

Test(csv, quotes_crlf_delimiter_bom_and_blank_end) {
    nb_tensor *x, *y;
    const char *t = "\xef\xbb\xbf\"a;\"\"b\"\"\";\"c\r\nd\"\r\n\"1\";2\r\n3;\"4\"\r\n\r\n\n";
    nb_csv_opts o = {.delimiter = ';', .header = true, .nlabels = 1,
                     .label_names = (const char *[]){"c\r\nd"}};
    cr_assert_eq(parse(t, &o, &x, &y), 0, "%s", nb_error());
    EXPECT_VALUES(x, 0, 1, 3);
    EXPECT_VALUES(y, 0, 2, 4);
    o.label_names = (const char *[]){"a;\"b\""};
    cr_assert_eq(parse(t, &o, &x, &y), 0, "%s", nb_error());
    EXPECT_VALUES(y, 0, 1, 3);
    cr_assert_eq(parse("1\t2\n", &(nb_csv_opts){.delimiter = '\t'}, &x, NULL), 0, "%s", nb_error());
    EXPECT_VALUES(x, 0, 1, 2);
}

Test(csv, header_only_gives_empty_tensors) {
    nb_tensor *x, *y;
    nb_csv_opts o = {.header = true, .nlabels = 1, .label_columns = (const int[]){1}};
    cr_assert_eq(parse("a,b,c\n", &o, &x, &y), 0, "%s", nb_error());
    EXPECT_SHAPE(x, 0, 2);
    EXPECT_SHAPE(y, 0, 1);
}

Test(csv, files_plain_and_gzip) {
    char path[] = "/tmp/nb_test_csv_XXXXXX";
    int fd = mkstemp(path);
    cr_assert(fd >= 0);
    const char *t = "x,y\n1,2\n3,4\n";
    cr_assert_eq(write(fd, t, strlen(t)), (ssize_t)strlen(t));
    close(fd);
    nb_tensor *x, *y;
    nb_csv_opts o = {.header = true, .nlabels = 1, .label_names = (const char *[]){"y"}};
    cr_assert_eq(nb_read_csv(path, &o, &x, &y), 0, "%s", nb_error());
    EXPECT_VALUES(x, 0, 1, 3);
    EXPECT_VALUES(y, 0, 2, 4);
    /* the same as a gzip file (one stored block) */
    uint8_t gz[64] = {0x1f, 0x8b, 8, 0, 0, 0, 0, 0, 0, 3, 1, 12, 0, 0xf3, 0xff};
    memcpy(gz + 15, t, 12);
    uint32_t crc = nb_crc32(0, t, 12);
    for (int i = 0; i < 4; i++) gz[27 + i] = (uint8_t)(crc >> 8 * i);
    gz[31] = 12;
    fd = open(path, O_WRONLY | O_TRUNC);
    cr_assert_eq(write(fd, gz, 35), 35);
    close(fd);
    cr_assert_eq(nb_read_csv(path, &o, &x, &y), 0, "%s", nb_error());
    EXPECT_VALUES(y, 0, 2, 4);
    /* an error in it names the file */
    fd = open(path, O_WRONLY | O_TRUNC);
    cr_assert_eq(write(fd, "x,y\n1,2\n3,z\n", 12), 12);
    close(fd);
    cr_assert_eq(nb_read_csv(path, &o, &x, &y), -1);
    EXPECT_ERROR("nb_read_csv: ", path, ":3:3: not a number: 'z'");
    unlink(path);
    cr_assert_eq(nb_read_csv(path, &o, &x, &y), -1);
    EXPECT_ERROR("nb_read_csv: ", path, "cannot open");
}

/* ---- bad tables --------------------------------------------------------------------- */

Test(csv, missing_and_non_numeric_values) {
    EXPECT_CSV_ERROR("1,2\n3,\n", NULL, "nb_parse_csv: t.csv:2:3: missing value");
    EXPECT_CSV_ERROR("1,2\n, 4\n", NULL, "t.csv:2:1: missing value");
    EXPECT_CSV_ERROR("1,2\n3,\"\"\n", NULL, "t.csv:2:3: missing value");
    EXPECT_CSV_ERROR("1,2\n3,four\n", NULL, "t.csv:2:3: not a number: 'four'");
    EXPECT_CSV_ERROR("1,2\n3,4x\n", NULL, "t.csv:2:3: not a number: '4x'");
    EXPECT_CSV_ERROR("1,2\n3,1e40\n", NULL, "t.csv:2:3: 1e40 is out of the float32 range");
    EXPECT_CSV_ERROR("a,b\n1,2\n", NULL, "t.csv:1:1: not a number: 'a'"); /* a header not declared */
}

Test(csv, ragged_rows_and_blank_lines) {
    EXPECT_CSV_ERROR("1,2,3\n4,5\n6,7,8\n", NULL, "t.csv:2:4: row has 2 fields, expected 3");
    EXPECT_CSV_ERROR("1,2\n3,4,5\n", NULL, "t.csv:2:5: row has more than 2 fields");
    EXPECT_CSV_ERROR("a,b\n1\n", &(nb_csv_opts){.header = true}, "t.csv:2:2: row has 1 field, expected 2");
    EXPECT_CSV_ERROR("1,2\n\n3,4\n", NULL, "t.csv:2:1: empty line inside the table");
    EXPECT_CSV_ERROR("1,2\r\n\r\n3,4\n", NULL, "t.csv:2:1: empty line inside the table");
}

Test(csv, quoting_errors) {
    EXPECT_CSV_ERROR("1,2\n3,\"4\n", NULL, "t.csv:2:3: unterminated quoted field");
    EXPECT_CSV_ERROR("1,2\n3,\"4\"5\n", NULL, "t.csv:2:6: unexpected character after a closing quote");
    EXPECT_CSV_ERROR("1,2\n3,4\"5\n", NULL, "t.csv:2:4: quote inside an unquoted field");
    /* lines are counted inside quoted fields */
    EXPECT_CSV_ERROR("\"a\nb\",c\n1,x\n", &(nb_csv_opts){.header = true}, "t.csv:3:3: not a number");
}

Test(csv, bad_options) {
    nb_csv_opts o = {.header = true, .nlabels = 1, .label_names = (const char *[]){"z"}};
    EXPECT_CSV_ERROR("a,b\n1,2\n", &o, "t.csv:1:1: no column named 'z' in the header");
    o = (nb_csv_opts){.nlabels = 1, .label_columns = (const int[]){2}};
    EXPECT_CSV_ERROR("1,2\n", &o, "label column 2 is out of range: the table has 2 columns");
    o.label_columns = (const int[]){-3};
    EXPECT_CSV_ERROR("1,2\n", &o, "label column -3 is out of range");
    o = (nb_csv_opts){.nlabels = 2, .label_columns = (const int[]){1, -1}};
    EXPECT_CSV_ERROR("1,2\n", &o, "column 1 is chosen as a label twice");
    o = (nb_csv_opts){.nlabels = 1, .label_names = (const char *[]){"a"}};
    EXPECT_CSV_ERROR("1,2\n", &o, "label columns chosen by name need a header");
    o = (nb_csv_opts){.nlabels = 1};
    EXPECT_CSV_ERROR("1,2\n", &o, "without their indices or names");
    EXPECT_CSV_ERROR("1,2\n", &(nb_csv_opts){.nlabels = -1}, "label columns asked for");
    EXPECT_CSV_ERROR("1,2\n", &(nb_csv_opts){.delimiter = '"'}, "the delimiter cannot be a quote");
    EXPECT_CSV_ERROR("", NULL, "t.csv:1:1: no data: the file is empty");
    EXPECT_CSV_ERROR("\n\n", NULL, "no data");
    EXPECT_CSV_ERROR("", &(nb_csv_opts){.header = true}, "t.csv:1:1: empty file: expected a header line");
    nb_tensor *x;
    o = (nb_csv_opts){.nlabels = 1, .label_columns = (const int[]){0}};
    cr_assert_eq(nb_parse_csv("1,2\n", 4, NULL, &o, &x, NULL), -1);
    EXPECT_ERROR("nb_parse_csv: (memory): 1 label columns asked for, without a y");
    cr_assert_eq(nb_parse_csv(NULL, 4, NULL, NULL, &x, NULL), -1);
    EXPECT_ERROR("NULL argument");
}

Test(csv, out_of_memory_at_every_allocation) {
    /* enough values to grow the value array, a long field, a header */
    static char t[20000];
    size_t k = (size_t)snprintf(t, sizeof t, "\"a long column name, longer than sixty-four bytes, to grow the field\",b\n");
    for (int i = 0; i < 1500; i++) k += (size_t)snprintf(t + k, sizeof t - k, "%d,%d\n", i, -i);
    nb_csv_opts o = {.header = true, .nlabels = 1, .label_names = (const char *[]){"b"}};
    nb_empty_cache();
    int64_t fail_at;
    for (fail_at = 1;; fail_at++) {
        nb_test_alloc a = {.fail_at = fail_at};
        nb_clear_error();
        nb_tensor *x, *y;
        nb_set_alloc_hook(nb_test_alloc_hook, &a);
        int err = nb_parse_csv(t, k, "t.csv", &o, &x, &y);
        nb_set_alloc_hook(NULL, NULL);
        if (err == 0) {
            cr_assert_eq(nb_dim(x, 0), 1500);
            cr_assert_eq(nb_data(y)[1499], -1499.0f);
            nb_release(nb_keep(x)); /* see test_idx.c: freed whoever owns them */
            nb_release(nb_keep(y));
            if (!a.fired) break;
            continue;
        }
        cr_assert_null(x);
        cr_assert_null(y);
        EXPECT_ERROR("nb_parse_csv: t.csv:", "out of memory");
        nb_empty_cache();
    }
    cr_expect_geq(fail_at, 6);
}
