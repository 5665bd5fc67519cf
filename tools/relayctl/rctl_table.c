/* Text tables for relayctl's human output: collect the rows, then size the columns. */
#include <stdbool.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "rctl.h"

#define RCTL_TABLE_MAX_COLS 16

struct rctl_table {
    size_t cols, rows, cap;
    char **cells; /* rows * cols, row-major, owned */
};

rctl_table *rctl_table_create(size_t cols)
{
    if (cols == 0 || cols > RCTL_TABLE_MAX_COLS)
        return NULL;
    rctl_table *t = calloc(1, sizeof *t);
    if (t)
        t->cols = cols;
    return t;
}

int rctl_table_row(rctl_table *t, const char *const *cells)
{
    if (!t)
        return -1;
    if (t->rows == t->cap) {
        size_t cap = t->cap ? t->cap * 2 : 16;
        char **grown = realloc(t->cells, cap * t->cols * sizeof *grown);
        if (!grown)
            return -1;
        t->cells = grown;
        t->cap = cap;
    }
    char **row = t->cells + t->rows * t->cols;
    for (size_t i = 0; i < t->cols; i++) {
        row[i] = strdup(cells[i] ? cells[i] : "-");
        if (!row[i]) {
            while (i--)
                free(row[i]);
            return -1;
        }
    }
    t->rows++;
    return 0;
}

/* "12", "-3", "0.4s": numbers, optionally with a unit of seconds. */
static bool table_numeric(const char *s)
{
    if (*s == '-')
        s++;
    size_t n = strspn(s, "0123456789");
    if (n == 0)
        return false;
    s += n;
    if (*s == '.') {
        n = strspn(++s, "0123456789");
        if (n == 0)
            return false;
        s += n;
    }
    if (*s == 's')
        s++;
    return *s == '\0';
}

void rctl_table_print(const rctl_table *t, FILE *out)
{
    if (!t)
        return;
    size_t width[RCTL_TABLE_MAX_COLS] = {0};
    for (size_t i = 0; i < t->rows * t->cols; i++) {
        size_t len = strlen(t->cells[i]);
        if (len > width[i % t->cols])
            width[i % t->cols] = len;
    }
    for (size_t r = 0; r < t->rows; r++) {
        for (size_t c = 0; c < t->cols; c++) {
            const char *cell = t->cells[r * t->cols + c];
            bool last = c + 1 == t->cols;
            /* The header row and text are left-aligned, numbers right-aligned. */
            if (r > 0 && table_numeric(cell))
                fprintf(out, "%*s", (int)width[c], cell);
            else
                fprintf(out, "%-*s", last ? 0 : (int)width[c], cell);
            fputs(last ? "\n" : "  ", out);
        }
    }
}

void rctl_table_destroy(rctl_table *t)
{
    if (!t)
        return;
    for (size_t i = 0; i < t->rows * t->cols; i++)
        free(t->cells[i]);
    free(t->cells);
    free(t);
}
