/* history.c — a training history written out: as CSV (one row per epoch,
 * one column per key, Keras's CSVLogger) and as a self-contained SVG chart
 * that any browser opens, one panel per quantity with its training curve
 * and, where fit validated, its validation curve.
 *
 * The chart is drawn by hand (axes, "nice" ticks at 1, 2 or 5 times a power
 * of ten, a legend, a polyline per curve) so that nabla needs no plotting
 * library; values that are not finite break the curve instead of bending
 * the scale. Both writers exist in two forms: to a FILE (what a program
 * prints or pipes) and to a path, replaced atomically as DESIGN.md asks of
 * every file nabla writes.
 */
#include "io_internal.h"

#include <math.h>
#include <string.h>

int nb_history_write_csv(const nb_history *h, FILE *out) {
    if (!h || !out) {
        nb_set_error("nb_history_write_csv: %s is NULL", h ? "the file" : "the history");
        return -1;
    }
    int nkeys = nb_history_num_keys(h);
    fprintf(out, "epoch");
    for (int k = 0; k < nkeys; k++) fprintf(out, ",%s", nb_history_key(h, k));
    fputc('\n', out);
    for (int e = 0; e < nb_history_epochs(h); e++) {
        fprintf(out, "%d", e + 1);
        for (int k = 0; k < nkeys; k++)
            fprintf(out, ",%.9g", (double)nb_history_get(h, nb_history_key(h, k))[e]);
        fputc('\n', out);
    }
    return ferror(out) ? -1 : 0;
}

/* ---- the chart ------------------------------------------------------------------ */

enum { PANEL_W = 640, PANEL_H = 300, LEFT = 70, RIGHT = 20, TOP = 40, BOTTOM = 46 };

/* A tick step of 1, 2 or 5 times a power of ten giving about n ticks over span. */
static double nice_step(double span, int n) {
    double raw = span / n, p = pow(10, floor(log10(raw))), f = raw / p;
    return (f < 1.5 ? 1 : f < 3.5 ? 2 : f < 7.5 ? 5 : 10) * p;
}

typedef struct panel {
    const char *name;          /* the training key: "loss", "accuracy" */
    const float *train, *val;  /* val may be NULL */
    int epochs;
    double ymin, ymax;         /* the scale, widened to whole ticks */
    double step;               /* between y ticks */
} panel;

static void scale(panel *p) {
    double lo = INFINITY, hi = -INFINITY;
    for (int s = 0; s < 2; s++) {
        const float *v = s ? p->val : p->train;
        for (int e = 0; v && e < p->epochs; e++)
            if (isfinite(v[e])) {
                lo = fmin(lo, v[e]);
                hi = fmax(hi, v[e]);
            }
    }
    if (!(lo <= hi)) lo = 0, hi = 1; /* nothing finite to draw */
    if (hi - lo < 1e-12 * fmax(1, fabs(hi))) lo -= 0.5 * fmax(1e-3, fabs(lo)), hi += 0.5 * fmax(1e-3, fabs(hi));
    p->step = nice_step(hi - lo, 5);
    p->ymin = floor(lo / p->step) * p->step;
    p->ymax = ceil(hi / p->step) * p->step;
}

static double px(const panel *p, double epoch) { /* epochs 1..E across the plot */
    int span = p->epochs > 1 ? p->epochs - 1 : 1;
    return LEFT + (epoch - 1) / span * (PANEL_W - LEFT - RIGHT);
}

static double py(const panel *p, double v, double y0) {
    return y0 + TOP + (p->ymax - v) / (p->ymax - p->ymin) * (PANEL_H - TOP - BOTTOM);
}

static void curve(FILE *out, const panel *p, const float *v, double y0, const char *color, bool dashed) {
    bool open = false;
    for (int e = 0; e < p->epochs; e++) {
        if (!isfinite(v[e])) { /* a gap */
            if (open) fprintf(out, "\"/>\n");
            open = false;
            continue;
        }
        if (!open)
            fprintf(out, "<polyline fill=\"none\" stroke=\"%s\" stroke-width=\"2\"%s points=\"", color,
                    dashed ? " stroke-dasharray=\"6 4\"" : "");
        fprintf(out, "%.1f,%.1f ", px(p, e + 1), py(p, v[e], y0));
        open = true;
    }
    if (open) fprintf(out, "\"/>\n");
    if (p->epochs <= 40)
        for (int e = 0; e < p->epochs; e++)
            if (isfinite(v[e]))
                fprintf(out, "<circle cx=\"%.1f\" cy=\"%.1f\" r=\"3\" fill=\"%s\"/>\n", px(p, e + 1),
                        py(p, v[e], y0), color);
}

static void draw_panel(FILE *out, const panel *p, double y0) {
    double x1 = LEFT, x2 = PANEL_W - RIGHT, ytop = y0 + TOP, ybot = y0 + PANEL_H - BOTTOM;
    fprintf(out, "<text x=\"%d\" y=\"%.0f\" font-size=\"16\" font-weight=\"bold\">%s</text>\n", LEFT,
            y0 + 24, p->name);
    /* y grid and ticks */
    for (double v = p->ymin; v <= p->ymax + p->step / 2; v += p->step) {
        double y = py(p, v, y0);
        fprintf(out, "<line x1=\"%.1f\" y1=\"%.1f\" x2=\"%.1f\" y2=\"%.1f\" stroke=\"#e4e4e4\"/>\n", x1, y, x2, y);
        fprintf(out, "<text x=\"%.1f\" y=\"%.1f\" font-size=\"12\" text-anchor=\"end\">%.4g</text>\n",
                x1 - 6, y + 4, fabs(v) < p->step * 1e-6 ? 0.0 : v);
    }
    /* x ticks at whole epochs */
    double xstep = fmax(1, nice_step(p->epochs > 1 ? p->epochs - 1 : 1, 8));
    for (double e = 1; e <= p->epochs + 1e-9; e += xstep) {
        double x = px(p, e);
        fprintf(out, "<line x1=\"%.1f\" y1=\"%.1f\" x2=\"%.1f\" y2=\"%.1f\" stroke=\"#444\"/>\n", x, ybot, x, ybot + 5);
        fprintf(out, "<text x=\"%.1f\" y=\"%.1f\" font-size=\"12\" text-anchor=\"middle\">%.0f</text>\n", x,
                ybot + 19, e);
    }
    fprintf(out, "<text x=\"%.1f\" y=\"%.1f\" font-size=\"12\" text-anchor=\"middle\">epoch</text>\n",
            (x1 + x2) / 2, ybot + 38);
    /* axes */
    fprintf(out, "<polyline fill=\"none\" stroke=\"#444\" points=\"%.1f,%.1f %.1f,%.1f %.1f,%.1f\"/>\n", x1,
            ytop, x1, ybot, x2, ybot);
    curve(out, p, p->train, y0, "#1f77b4", false);
    if (p->val) curve(out, p, p->val, y0, "#ff7f0e", true);
    /* legend, top right */
    double lx = x2 - 150, ly = y0 + 14;
    fprintf(out, "<line x1=\"%.1f\" y1=\"%.1f\" x2=\"%.1f\" y2=\"%.1f\" stroke=\"#1f77b4\" stroke-width=\"2\"/>\n",
            lx, ly, lx + 24, ly);
    fprintf(out, "<text x=\"%.1f\" y=\"%.1f\" font-size=\"12\">training</text>\n", lx + 30, ly + 4);
    if (p->val) {
        fprintf(out, "<line x1=\"%.1f\" y1=\"%.1f\" x2=\"%.1f\" y2=\"%.1f\" stroke=\"#ff7f0e\" stroke-width=\"2\" "
                     "stroke-dasharray=\"6 4\"/>\n", lx, ly + 18, lx + 24, ly + 18);
        fprintf(out, "<text x=\"%.1f\" y=\"%.1f\" font-size=\"12\">validation</text>\n", lx + 30, ly + 22);
    }
}

int nb_history_write_svg(const nb_history *h, FILE *out, const char *title) {
    if (!h || !out) {
        nb_set_error("nb_history_write_svg: %s is NULL", h ? "the file" : "the history");
        return -1;
    }
    /* one panel per key that is not a val_ key; its val_ twin joins it */
    panel panels[32];
    int n = 0;
    for (int k = 0; k < nb_history_num_keys(h) && n < 32; k++) {
        const char *key = nb_history_key(h, k);
        if (strncmp(key, "val_", 4) == 0 && nb_history_get(h, key + 4)) continue;
        char twin[80];
        snprintf(twin, sizeof twin, "val_%s", key);
        panels[n] = (panel){key, nb_history_get(h, key), nb_history_get(h, twin), nb_history_epochs(h), 0, 0, 0};
        scale(&panels[n++]);
    }
    int head = title ? 30 : 0, height = head + (n ? n : 1) * PANEL_H;
    fprintf(out, "<?xml version=\"1.0\" encoding=\"UTF-8\"?>\n"
                 "<svg xmlns=\"http://www.w3.org/2000/svg\" width=\"%d\" height=\"%d\" viewBox=\"0 0 %d %d\" "
                 "font-family=\"sans-serif\">\n"
                 "<rect width=\"100%%\" height=\"100%%\" fill=\"white\"/>\n",
            PANEL_W, height, PANEL_W, height);
    if (title) {
        fprintf(out, "<text x=\"%d\" y=\"22\" font-size=\"18\" text-anchor=\"middle\">", PANEL_W / 2);
        for (const char *c = title; *c; c++) { /* the title is text: escape what XML reserves */
            if (*c == '<') fputs("&lt;", out);
            else if (*c == '>') fputs("&gt;", out);
            else if (*c == '&') fputs("&amp;", out);
            else fputc(*c, out);
        }
        fputs("</text>\n", out);
    }
    if (n == 0 || nb_history_epochs(h) == 0)
        fprintf(out, "<text x=\"%d\" y=\"%d\" font-size=\"14\">no epochs recorded</text>\n", LEFT, head + 40);
    else
        for (int i = 0; i < n; i++) draw_panel(out, &panels[i], head + (double)i * PANEL_H);
    fputs("</svg>\n", out);
    return ferror(out) ? -1 : 0;
}

/* ---- to a path ----------------------------------------------------------------- */

typedef int (*writer)(const nb_history *h, FILE *out, const char *title);

static int csv_writer(const nb_history *h, FILE *out, const char *title) {
    (void)title;
    return nb_history_write_csv(h, out);
}

/* Writes into a temporary file that replaces path once complete. */
static int save(const char *who, writer w, const nb_history *h, const char *path, const char *title) {
    if (!h || !path) {
        nb_set_error("%s: %s is NULL", who, h ? "path" : "the history");
        return -1;
    }
    nb__atomic_file a;
    if (nb__atomic_begin(who, path, &a) != 0) return -1;
    if (w(h, a.f, title) != 0) {
        nb_set_error("%s: %s: cannot write %s", who, path, a.tmp);
        nb__atomic_abort(&a);
        return -1;
    }
    return nb__atomic_commit(who, &a);
}

int nb_history_save_csv(const nb_history *h, const char *path) {
    return save("nb_history_save_csv", csv_writer, h, path, NULL);
}

int nb_history_save_svg(const nb_history *h, const char *path, const char *title) {
    return save("nb_history_save_svg", nb_history_write_svg, h, path, title);
}
