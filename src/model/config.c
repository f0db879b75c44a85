/* GPT-2 config.json: the keys the engine depends on, checked with messages that say what to fix. */
#include "model/config.h"

#include <errno.h>
#include <jansson.h>
#include <math.h>
#include <stdio.h>
#include <string.h>

static const char *kind(const json_t *v) {
    if (json_is_object(v)) return "object";
    if (json_is_array(v)) return "array";
    if (json_is_string(v)) return "string";
    if (json_is_integer(v)) return "integer";
    if (json_is_real(v)) return "real number";
    if (json_is_boolean(v)) return "boolean";
    return "null";
}

/* Reads an integer key in [lo, hi]. Absent (or null when null_ok) leaves *out unchanged. */
static int get_int(json_t *root, const char *key, int required, int null_ok, long long lo,
                   long long hi, int *out, const char *path, sp_error *err) {
    json_t *v = json_object_get(root, key);
    if (!v || (null_ok && json_is_null(v))) {
        if (!required) return 0;
        return sp_fail(err,
                       "%s: missing key '%s' (GPT-2 configs need n_layer, n_embd, n_head, "
                       "vocab_size, n_positions)",
                       path, key);
    }
    if (!json_is_integer(v))
        return sp_fail(err, "%s: key '%s' is a JSON %s, expected an integer%s", path, key, kind(v),
                       null_ok ? " or null" : "");
    long long x = json_integer_value(v);
    if (x < lo || x > hi)
        return sp_fail(err, "%s: key '%s' is %lld, expected an integer from %lld to %lld", path,
                       key, x, lo, hi);
    *out = (int)x;
    return 0;
}

/* A boolean key that, if present, must have the value GPT-2 (and our engine) uses. */
static int check_bool(json_t *root, const char *key, int want, const char *path, sp_error *err) {
    json_t *v = json_object_get(root, key);
    if (!v) return 0;
    if (!json_is_boolean(v))
        return sp_fail(err, "%s: key '%s' is a JSON %s, expected a boolean", path, key, kind(v));
    if (json_is_true(v) != want)
        return sp_fail(err, "%s: %s = %s is unsupported (only %s is implemented)", path, key,
                       want ? "false" : "true", want ? "true" : "false");
    return 0;
}

static int check_strings(json_t *root, const char *path, sp_error *err) {
    json_t *v = json_object_get(root, "model_type");
    if (v && !json_is_string(v))
        return sp_fail(err, "%s: key 'model_type' is a JSON %s, expected a string", path, kind(v));
    if (v && strcmp(json_string_value(v), "gpt2") != 0)
        return sp_fail(err, "%s: unsupported model_type '%s' (supported: \"gpt2\")", path,
                       json_string_value(v));
    v = json_object_get(root, "activation_function");
    if (v && !json_is_string(v))
        return sp_fail(err, "%s: key 'activation_function' is a JSON %s, expected a string", path,
                       kind(v));
    /* gelu_pytorch_tanh is the same tanh approximation as gelu_new. */
    if (v && strcmp(json_string_value(v), "gelu_new") != 0 &&
        strcmp(json_string_value(v), "gelu_pytorch_tanh") != 0)
        return sp_fail(err,
                       "%s: unsupported activation_function '%s' (supported: gelu_new, "
                       "gelu_pytorch_tanh)",
                       path, json_string_value(v));
    return 0;
}

static int read_eps(json_t *root, float *eps, const char *path, sp_error *err) {
    *eps = 1e-5f;
    json_t *v = json_object_get(root, "layer_norm_epsilon");
    if (!v) return 0;
    if (!json_is_number(v))
        return sp_fail(err, "%s: key 'layer_norm_epsilon' is a JSON %s, expected a number", path,
                       kind(v));
    double x = json_number_value(v);
    if (!(x > 0 && x < 1))
        return sp_fail(err, "%s: key 'layer_norm_epsilon' is %g, expected a number in (0, 1)", path,
                       x);
    *eps = (float)x;
    return 0;
}

static int parse(sp_gpt2_config *c, json_t *root, const char *path, sp_error *err) {
    if (!json_is_object(root))
        return sp_fail(err, "%s: is a JSON %s, expected an object", path, kind(root));
    if (check_strings(root, path, err) ||
        get_int(root, "n_layer", 1, 0, 1, 1024, &c->n_layer, path, err) ||
        get_int(root, "n_embd", 1, 0, 1, 65536, &c->d_model, path, err) ||
        get_int(root, "n_head", 1, 0, 1, 65536, &c->n_head, path, err) ||
        get_int(root, "vocab_size", 1, 0, 1, 1 << 24, &c->vocab_size, path, err) ||
        get_int(root, "n_positions", 1, 0, 1, 1 << 20, &c->n_ctx, path, err))
        return -1;
    if (c->d_model % c->n_head != 0)
        return sp_fail(err, "%s: n_embd = %d is not divisible by n_head = %d", path, c->d_model,
                       c->n_head);
    c->d_ff = 4 * c->d_model; /* HF's meaning of n_inner = null */
    if (get_int(root, "n_inner", 0, 1, 1, 1 << 20, &c->d_ff, path, err) ||
        read_eps(root, &c->ln_eps, path, err) ||
        check_bool(root, "scale_attn_weights", 1, path, err) ||
        check_bool(root, "scale_attn_by_inverse_layer_idx", 0, path, err) ||
        check_bool(root, "reorder_and_upcast_attn", 0, path, err))
        return -1;
    return 0;
}

int sp_gpt2_config_load(sp_gpt2_config *cfg, const char *path, sp_error *err) {
    memset(cfg, 0, sizeof *cfg);
    FILE *fp = fopen(path, "rb");
    if (!fp) return sp_fail(err, "%s: cannot open: %s", path, strerror(errno));
    json_error_t je;
    json_t *root = json_loadf(fp, JSON_REJECT_DUPLICATES, &je);
    fclose(fp);
    if (!root)
        return sp_fail(err, "%s: invalid JSON: %s (line %d, column %d)", path, je.text, je.line,
                       je.column);
    int rc = parse(cfg, root, path, err);
    json_decref(root);
    if (rc != 0) memset(cfg, 0, sizeof *cfg);
    return rc;
}
