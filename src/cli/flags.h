/* Command-line flags from one table per command.
 *
 * A command describes its flags once, as an array of sp__flag: the long name, where the value
 * goes (an offset into the command's own argument struct), how it is checked, the help text and
 * the group it is listed under. From that table sp__flags_parse reads argv, sp__flags_usage prints
 * --help (and so docs/usage.md's reference, which scripts/update-usage-docs takes from --help),
 * and every message has one wording:
 *
 *   softprompt train: unknown option '--stpes' (did you mean --steps?)
 *   softprompt train: --lr 'abc': expected a number from 1e-12 to 1e+06
 *   softprompt train: --out given twice ('a', then 'b')
 *   softprompt init-model: --tied and --untied both given: choose one
 *   softprompt train: --model is required (see softprompt train --help)
 *
 * Usage errors return 2 (the usage-error exit status) after the message. Programs other than
 * softprompt (the benchmarks in bench/) use the same tables; their messages name the program. */
#ifndef SP_CLI_FLAGS_H
#define SP_CLI_FLAGS_H

#include <stddef.h>
#include <stdint.h>
#include <stdio.h>

/* A macro's value as a string literal, for help texts: SP_XSTR(SP_EXIT_STOPPED) is "75". */
#define SP_STR_(x) #x
#define SP_XSTR(x) SP_STR_(x)

typedef enum sp__flag_type {
    SP_FLAG_SWITCH,       /* no value: stores .set in an int */
    SP_FLAG_STRING,       /* const char * (points into argv) */
    SP_FLAG_INT,          /* int in [lo, hi] */
    SP_FLAG_INT64,        /* int64_t in [lo, hi] */
    SP_FLAG_U64,          /* uint64_t, decimal */
    SP_FLAG_DOUBLE,       /* finite double in [lo, hi] */
    SP_FLAG_CUSTOM,       /* .parse decides */
    SP_FLAG_WEIGHTS,      /* sp_weights: auto, f32 or bf16 (SP_OPT_WEIGHTS) */
    SP_FLAG_METHOD,       /* const char *: a method name of sp_method_parse (SP_OPT_METHOD) */
    SP_FLAG_INPUT_FORMAT, /* const char *: a format sp_input_open reads (SP_OPT_INPUT_FORMAT) */
} sp__flag_type;

/* A custom flag's parser: stores the value into args and returns 0, or returns what was
 * expected ("adafactor, adamw or sgd") for the standard bad-value message. */
typedef const char *(*sp_flag_parser)(void *args, const char *value);

enum {
    SP_FLAG_REQUIRED = 1, /* must be given */
    SP_FLAG_REPEAT = 2,   /* may be given more than once (a custom parser collects the values) */
};

typedef struct sp__flag {
    const char *name; /* "model" for --model; NULL ends the table */
    sp__flag_type type;
    size_t offset;       /* of the value in the command's argument struct */
    const char *metavar; /* "DIR" (NULL for switches) */
    const char *help;    /* '\n' starts a continuation line */
    double lo, hi;       /* numeric range */
    int set;             /* what a switch stores */
    sp_flag_parser parse;
    unsigned flags;    /* SP_FLAG_REQUIRED | SP_FLAG_REPEAT */
    int order;         /* flags are applied by increasing order, then as given: a flag that
                          sets defaults for others (--optimizer, --shape) has a lower order */
    const char *group; /* heading printed before this flag when it differs from the previous */
} sp__flag;

/* Table entries. The trailing arguments are optional designated fields: .flags, .order,
 * .group. */
#define SP_OPT_STR(n, off, meta, text, ...)                                                        \
    { .name = n, .type = SP_FLAG_STRING, .offset = off, .metavar = meta, .help = text, __VA_ARGS__ }
#define SP_OPT_SWITCH(n, off, value, text, ...)                                                    \
    { .name = n, .type = SP_FLAG_SWITCH, .offset = off, .set = value, .help = text, __VA_ARGS__ }
#define SP_OPT_NUM(n, t, off, meta, low, high, text, ...)                                          \
    {                                                                                              \
        .name = n, .type = t, .offset = off, .metavar = meta, .lo = low, .hi = high, .help = text, \
        __VA_ARGS__                                                                                \
    }
#define SP_OPT_INT(n, off, meta, low, high, text, ...)                                             \
    SP_OPT_NUM(n, SP_FLAG_INT, off, meta, low, high, text, __VA_ARGS__)
#define SP_OPT_INT64(n, off, meta, low, high, text, ...)                                           \
    SP_OPT_NUM(n, SP_FLAG_INT64, off, meta, low, high, text, __VA_ARGS__)
#define SP_OPT_DOUBLE(n, off, meta, low, high, text, ...)                                          \
    SP_OPT_NUM(n, SP_FLAG_DOUBLE, off, meta, low, high, text, __VA_ARGS__)
#define SP_OPT_U64(n, off, meta, text, ...)                                                        \
    { .name = n, .type = SP_FLAG_U64, .offset = off, .metavar = meta, .help = text, __VA_ARGS__ }
#define SP_OPT_CUSTOM(n, off, meta, parser, text, ...)                                             \
    {                                                                                              \
        .name = n, .type = SP_FLAG_CUSTOM, .offset = off, .metavar = meta, .parse = parser,        \
        .help = text, __VA_ARGS__                                                                  \
    }

/* --weights auto|f32|bf16, the same flag in every command that loads a model (softprompt/model.h,
 * sp_weights; the field's default is SP_WEIGHTS_AUTO, 0). */
#define SP_OPT_WEIGHTS(off)                                                                        \
    {                                                                                              \
        .name = "weights", .type = SP_FLAG_WEIGHTS, .offset = off, .metavar = "T",                 \
        .help = "the blocks' matrices in f32 or bf16 (auto: bf16 when the model\n"                 \
                "stores them in BF16); bf16 uses BF16 files in place and rounds\n"                 \
                "others once; products run in BF16 with float32 sums where the\n"                  \
                "CPU has AVX512-BF16 (SP_CPU_NO_BF16=1: the float32 path)"                         \
    }

/* --method NAME, kept as the string (the commands that read a trained prompt check it against
 * the file's method); an unknown name is a usage error listing the methods. */
#define SP_OPT_METHOD(off, text, ...)                                                              \
    {                                                                                              \
        .name = "method", .type = SP_FLAG_METHOD, .offset = off, .metavar = "NAME", .help = text,  \
        __VA_ARGS__                                                                                \
    }

/* An input file's format (--format, --input-format), kept as the string for sp_input_open. */
#define SP_OPT_INPUT_FORMAT(n, off, text, ...)                                                     \
    {                                                                                              \
        .name = n, .type = SP_FLAG_INPUT_FORMAT, .offset = off, .metavar = "F", .help = text,      \
        __VA_ARGS__                                                                                \
    }

typedef struct sp__flag_spec {
    const char *cmd;        /* "train" */
    const char *usage;      /* the usage lines, "usage: softprompt ..." included */
    const char *about;      /* paragraphs between the usage lines and the flags */
    const sp__flag *flags;  /* ends with an entry whose name is NULL */
    const char *positional; /* name of the positional arguments ("PATH"), NULL: none */
    int min_positional, max_positional;
    const char *epilog;  /* printed after the flags, may be NULL */
    const char *program; /* what the messages name: NULL for a command ("softprompt train"),
                            else this program (bench/bench_engine.c: "bench_engine") */
} sp__flag_spec;

/* Parses argv[1..argc) (argv[0] is the command's name) into args, whose fields the caller has
 * set to their defaults. Positional arguments are returned in order in pos (argv pointers; pos
 * has room for argc entries; unused when spec takes none) and counted in *n_pos. Returns 0, or 2
 * after a usage message. */
int sp__flags_parse(const sp__flag_spec *spec, int argc, char **argv, void *args, char **pos,
                    int *n_pos);

/* Whether argv[1..argc) asks for --help (-h or --help before any "--"). */
int sp__flags_wants_help(int argc, char **argv);

/* A program's main (bench/): parses argv into args, or prints --help to stdout. Returns 0 to go
 * on, or 1 when main is to return *status (0 after --help, 2 after a usage message). pos and
 * n_pos are as for sp__flags_parse; both may be NULL when spec takes no positional arguments. */
int sp__flags_program(const sp__flag_spec *spec, int argc, char **argv, void *args, char **pos,
                      int *n_pos, int *status);

/* Prints --help: usage, about, every flag under its group, epilog. */
void sp__flags_usage(const sp__flag_spec *spec, FILE *out);

/* Whether the flag called name was given in argv (for checks between flags after parsing). */
int sp__flags_given(int argc, char **argv, const char *name);

/* The standard messages, for checks a command makes after parsing. Each prints and returns 2. */
int sp__flag_bad(const char *cmd, const char *flag, const char *value, const char *expected);
int sp__flag_usage_error(const char *cmd, const char *fmt, ...)
    __attribute__((format(printf, 2, 3)));
/* The same naming what spec names (a command, or spec.program). */
int sp__flags_error(const sp__flag_spec *spec, const char *fmt, ...)
    __attribute__((format(printf, 2, 3)));

/* The method names for messages: "prompt, prefix, ptuning-v2 or prompt+prefix". */
const char *sp__flag_methods(void);

/* Value checks shared with custom parsers: 0 and the value, or -1. */
int sp__parse_int64(const char *s, int64_t lo, int64_t hi, int64_t *out);
int sp__parse_u64(const char *s, uint64_t *out);
int sp__parse_double(const char *s, double lo, double hi, double *out);

#endif
