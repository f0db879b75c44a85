/* Structure-aware mutation of HDF5 files for the dataset and checkpoint targets.
 *
 * Raw byte flips of an HDF5 file mostly exercise libhdf5's own metadata decoding (which is not
 * hardened: 1.10 crashes on some damaged heaps). What softprompt's readers must survive is a
 * well-formed HDF5 file whose CONTENT lies: wrong element types, ranks and shapes, missing or
 * extra datasets and attributes, counts and offsets that disagree. So the fuzz input is read as
 * a program of edits applied, through the HDF5 API, to a copy of a valid file made by the
 * library itself; the reader under test then opens the edited file.
 *
 * Each edit is one opcode byte followed by the bytes it consumes (missing bytes read as 0):
 *   0 delete an object or attribute          4 resize a 1-D dataset, keeping its values
 *   1 replace an attribute (new type/value)  5 change an attribute's value, same type
 *   2 replace a dataset (new type/shape)     6 add a dataset next to an existing object
 *   3 set one element of a dataset           7 replace a dataset by a group */
#ifndef SP_FUZZ_H5MUT_H
#define SP_FUZZ_H5MUT_H

#include <hdf5.h>
#include <stdint.h>
#include <string.h>

#include "fuzz_util.h"

#define H5M_MAX_ITEMS 96

typedef struct h5m_item {
    char obj[128];  /* object path ("/" for the root) */
    char attr[64];  /* attribute name, "" for the object itself */
    int is_dataset; /* object is a dataset (else a group) */
} h5m_item;

typedef struct h5m_base {
    char *bytes; /* the valid file */
    size_t len;
    int n_items;
    h5m_item items[H5M_MAX_ITEMS];
} h5m_base;

typedef struct h5m_in {
    const uint8_t *p;
    size_t n;
} h5m_in;

static inline uint8_t h5m_u8(h5m_in *in) {
    if (!in->n) return 0;
    in->n--;
    return *in->p++;
}

static inline uint64_t h5m_u64(h5m_in *in) {
    uint64_t v = 0;
    for (int i = 0; i < 8; i++) v |= (uint64_t)h5m_u8(in) << (8 * i);
    return v;
}

static herr_t h5m_attr_cb(hid_t loc, const char *name, const H5A_info_t *info, void *op) {
    (void)loc, (void)info;
    h5m_base *b = ((void **)op)[0];
    const char *obj = ((void **)op)[1];
    int is_dataset = *(int *)((void **)op)[2];
    if (b->n_items >= H5M_MAX_ITEMS) return 1;
    h5m_item *it = &b->items[b->n_items++];
    snprintf(it->obj, sizeof it->obj, "%s", obj);
    snprintf(it->attr, sizeof it->attr, "%s", name);
    it->is_dataset = is_dataset;
    return 0;
}

static void h5m_add_object(h5m_base *b, hid_t f, const char *obj, int is_dataset) {
    if (b->n_items >= H5M_MAX_ITEMS) return;
    h5m_item *it = &b->items[b->n_items++];
    snprintf(it->obj, sizeof it->obj, "%s", obj);
    it->attr[0] = 0;
    it->is_dataset = is_dataset;
    void *op[3] = {b, (void *)obj, &is_dataset};
    H5Aiterate_by_name(f, obj, H5_INDEX_NAME, H5_ITER_INC, NULL, h5m_attr_cb, op, H5P_DEFAULT);
}

static herr_t h5m_visit_cb(hid_t f, const char *name, const H5O_info_t *info, void *op) {
    h5m_base *b = op;
    char path[128];
    snprintf(path, sizeof path, "%s%s", name[0] == '.' ? "" : "/", name[0] == '.' ? "/" : name);
    h5m_add_object(b, f, path, info->type == H5O_TYPE_DATASET);
    return 0;
}

/* Reads the valid file at path and lists its objects and attributes. */
static inline void h5m_base_load(h5m_base *b, const char *path) {
    H5Eset_auto2(H5E_DEFAULT, NULL, NULL);
    memset(b, 0, sizeof *b);
    b->bytes = fz_read(path, &b->len);
    hid_t f = H5Fopen(path, H5F_ACC_RDONLY, H5P_DEFAULT);
    if (f < 0) fz_die("cannot open the base file", path);
    H5Ovisit(f, H5_INDEX_NAME, H5_ITER_INC, h5m_visit_cb, b);
    H5Fclose(f);
    if (b->n_items == 0) fz_die("no objects in", path);
}

/* A value for element or attribute edits: special values that break counts and offsets. */
static inline int64_t h5m_int_value(h5m_in *in, int64_t n) {
    static const int64_t special[] = {0,
                                      1,
                                      -1,
                                      2,
                                      INT32_MAX,
                                      INT32_MIN,
                                      INT64_MAX,
                                      INT64_MIN,
                                      (int64_t)INT32_MAX + 1,
                                      (int64_t)1 << 40};
    uint8_t k = h5m_u8(in) % 14;
    if (k < 10) return special[k];
    if (k < 13) return n - 11 + k; /* n - 1, n, n + 1 */
    return (int64_t)h5m_u64(in);
}

static inline double h5m_float_value(h5m_in *in) {
    static const double v[] = {0.0, -0.0, 1.0, -1.0, 1e38, 1e300, 0.0, 0.0};
    uint8_t k = h5m_u8(in);
    if (k % 9 < 8) {
        double d = v[k % 9];
        if (k % 9 == 6) d = __builtin_nan("");
        if (k % 9 == 7) d = __builtin_inf();
        return d;
    }
    uint64_t bits = h5m_u64(in);
    double d;
    memcpy(&d, &bits, sizeof d);
    return d;
}

/* File types the replace edits choose from. */
static inline hid_t h5m_pick_type(h5m_in *in, int *is_str) {
    static const hid_t *const types[] = {
        &H5T_STD_I8LE_g,  &H5T_STD_I16LE_g,  &H5T_STD_I32LE_g,  &H5T_STD_I64LE_g, &H5T_STD_U32LE_g,
        &H5T_STD_U64LE_g, &H5T_IEEE_F32LE_g, &H5T_IEEE_F64LE_g, &H5T_STD_I32BE_g, &H5T_IEEE_F32BE_g,
    };
    uint8_t k = h5m_u8(in) % 13;
    *is_str = 0;
    if (k < 10) return H5Tcopy(*types[k]);
    hid_t t = H5Tcopy(H5T_C_S1);
    *is_str = 1;
    if (k == 10) {
        H5Tset_size(t, H5T_VARIABLE);
    } else {
        H5Tset_size(t, 1 + h5m_u8(in) % 24);
        H5Tset_strpad(t, k == 11 ? H5T_STR_NULLTERM : H5T_STR_NULLPAD);
    }
    if (h5m_u8(in) & 1) H5Tset_cset(t, H5T_CSET_UTF8);
    return t;
}

/* Writes n elements of file type t from the input (strings: bytes of the input). */
static inline herr_t h5m_fill(hid_t obj, int is_attr, hid_t t, int is_str, size_t n, h5m_in *in) {
    herr_t st;
    if (is_str && H5Tis_variable_str(t) > 0) {
        char **v = calloc(n ? n : 1, sizeof *v);
        char(*s)[17] = calloc(n ? n : 1, sizeof *s);
        for (size_t i = 0; i < n; i++) {
            size_t len = h5m_u8(in) % 17;
            for (size_t j = 0; j < len && j < 16; j++) s[i][j] = (char)(h5m_u8(in) | 1);
            v[i] = s[i];
        }
        hid_t mt = H5Tcopy(H5T_C_S1);
        H5Tset_size(mt, H5T_VARIABLE);
        st = is_attr ? H5Awrite(obj, mt, v) : H5Dwrite(obj, mt, H5S_ALL, H5S_ALL, H5P_DEFAULT, v);
        H5Tclose(mt);
        free(v), free(s);
        return st;
    }
    size_t sz = H5Tget_size(t);
    unsigned char *buf = calloc(n ? n : 1, sz);
    for (size_t i = 0; i < n * sz; i++) buf[i] = h5m_u8(in);
    st = is_attr ? H5Awrite(obj, t, buf) : H5Dwrite(obj, t, H5S_ALL, H5S_ALL, H5P_DEFAULT, buf);
    free(buf);
    return st;
}

static inline hid_t h5m_pick_space(h5m_in *in, size_t *n) {
    int rank = h5m_u8(in) % 4; /* 0: scalar */
    if (rank == 3) rank = 1;   /* 1-D most often */
    hsize_t dims[2] = {0, 0};
    *n = 1;
    for (int i = 0; i < rank; i++) {
        dims[i] = h5m_u8(in) % 10;
        *n *= dims[i];
    }
    return rank == 0 ? H5Screate(H5S_SCALAR) : H5Screate_simple(rank, dims, NULL);
}

static inline const h5m_item *h5m_pick(const h5m_base *b, h5m_in *in, int want_attr,
                                       int want_dataset) {
    int start = h5m_u8(in) % b->n_items;
    for (int k = 0; k < b->n_items; k++) {
        const h5m_item *it = &b->items[(start + k) % b->n_items];
        if (want_attr >= 0 && (it->attr[0] != 0) != want_attr) continue;
        if (want_dataset && (!it->is_dataset || it->attr[0])) continue;
        return it;
    }
    return NULL;
}

/* Deletes an attribute or object (ignoring failures: it may be gone already). */
static inline void h5m_delete(hid_t f, const h5m_item *it) {
    if (it->attr[0])
        H5Adelete_by_name(f, it->obj, it->attr, H5P_DEFAULT);
    else if (strcmp(it->obj, "/") != 0)
        H5Ldelete(f, it->obj, H5P_DEFAULT);
}

/* Reads a dataset's values as int64 (integers) or double (floats); NULL for other classes. */
static inline void *h5m_read_values(hid_t d, size_t *n, int *is_float) {
    hid_t t = H5Dget_type(d), s = H5Dget_space(d);
    H5T_class_t cls = H5Tget_class(t);
    hssize_t np = H5Sget_simple_extent_npoints(s);
    H5Tclose(t), H5Sclose(s);
    if ((cls != H5T_INTEGER && cls != H5T_FLOAT) || np < 0 || np > (1 << 20)) return NULL;
    *n = (size_t)np;
    *is_float = cls == H5T_FLOAT;
    void *buf = calloc(*n ? *n : 1, 8);
    if (*n && H5Dread(d, *is_float ? H5T_NATIVE_DOUBLE : H5T_NATIVE_INT64, H5S_ALL, H5S_ALL,
                      H5P_DEFAULT, buf) < 0) {
        free(buf);
        return NULL;
    }
    return buf;
}

static inline void h5m_edit(hid_t f, const h5m_base *b, h5m_in *in) {
    uint8_t op = h5m_u8(in) % 8;
    const h5m_item *it;
    int is_str;
    size_t n;
    switch (op) {
    case 0:
        if ((it = h5m_pick(b, in, -1, 0))) h5m_delete(f, it);
        break;
    case 1: {
        if (!(it = h5m_pick(b, in, 1, 0))) break;
        h5m_delete(f, it);
        hid_t t = h5m_pick_type(in, &is_str), s = h5m_pick_space(in, &n);
        hid_t a =
            H5Acreate_by_name(f, it->obj, it->attr, t, s, H5P_DEFAULT, H5P_DEFAULT, H5P_DEFAULT);
        if (a >= 0) h5m_fill(a, 1, t, is_str, n, in), H5Aclose(a);
        H5Tclose(t), H5Sclose(s);
        break;
    }
    case 2: {
        if (!(it = h5m_pick(b, in, 0, 1))) break;
        h5m_delete(f, it);
        hid_t t = h5m_pick_type(in, &is_str), s = h5m_pick_space(in, &n);
        hid_t d = H5Dcreate2(f, it->obj, t, s, H5P_DEFAULT, H5P_DEFAULT, H5P_DEFAULT);
        if (d >= 0) h5m_fill(d, 0, t, is_str, n, in), H5Dclose(d);
        H5Tclose(t), H5Sclose(s);
        break;
    }
    case 3: {
        if (!(it = h5m_pick(b, in, 0, 1))) break;
        hid_t d = H5Dopen2(f, it->obj, H5P_DEFAULT);
        if (d < 0) break;
        int is_float;
        void *v = h5m_read_values(d, &n, &is_float);
        if (v && n > 0) {
            size_t i = h5m_u8(in) % n;
            if (is_float)
                ((double *)v)[i] = h5m_float_value(in);
            else
                ((int64_t *)v)[i] = h5m_int_value(in, (int64_t)n);
            H5Dwrite(d, is_float ? H5T_NATIVE_DOUBLE : H5T_NATIVE_INT64, H5S_ALL, H5S_ALL,
                     H5P_DEFAULT, v);
        }
        free(v);
        H5Dclose(d);
        break;
    }
    case 4: {
        if (!(it = h5m_pick(b, in, 0, 1))) break;
        hid_t d = H5Dopen2(f, it->obj, H5P_DEFAULT);
        if (d < 0) break;
        int is_float;
        void *v = h5m_read_values(d, &n, &is_float);
        hid_t t = H5Dget_type(d);
        H5Dclose(d);
        if (v) {
            hsize_t m = h5m_u8(in) % (2 * n + 3);
            int64_t *nv = calloc(m ? m : 1, 8);
            for (size_t i = 0; i < m; i++)
                nv[i] = i < n ? ((int64_t *)v)[i] : is_float ? 0 : h5m_int_value(in, (int64_t)n);
            H5Ldelete(f, it->obj, H5P_DEFAULT);
            hid_t s = H5Screate_simple(1, &m, NULL);
            d = H5Dcreate2(f, it->obj, t, s, H5P_DEFAULT, H5P_DEFAULT, H5P_DEFAULT);
            if (d >= 0 && m)
                H5Dwrite(d, is_float ? H5T_NATIVE_DOUBLE : H5T_NATIVE_INT64, H5S_ALL, H5S_ALL,
                         H5P_DEFAULT, nv);
            if (d >= 0) H5Dclose(d);
            H5Sclose(s);
            free(nv);
        }
        H5Tclose(t);
        free(v);
        break;
    }
    case 5: {
        if (!(it = h5m_pick(b, in, 1, 0))) break;
        hid_t a = H5Aopen_by_name(f, it->obj, it->attr, H5P_DEFAULT, H5P_DEFAULT);
        if (a < 0) break;
        hid_t t = H5Aget_type(a), s = H5Aget_space(a);
        hssize_t np = H5Sget_simple_extent_npoints(s);
        H5T_class_t cls = H5Tget_class(t);
        if (np == 1 && cls == H5T_INTEGER) {
            int64_t v = h5m_int_value(in, 1);
            H5Awrite(a, H5T_NATIVE_INT64, &v);
        } else if (np == 1 && cls == H5T_FLOAT) {
            double v = h5m_float_value(in);
            H5Awrite(a, H5T_NATIVE_DOUBLE, &v);
        } else if (np >= 1 && np < 64 && cls == H5T_STRING) {
            h5m_fill(a, 1, t, 1, (size_t)np, in);
        }
        H5Tclose(t), H5Sclose(s), H5Aclose(a);
        break;
    }
    case 6: {
        if (!(it = h5m_pick(b, in, 0, 0))) break;
        char name[160];
        const char *slash = strrchr(it->obj, '/');
        int dir_len = it->is_dataset ? (int)(slash - it->obj) : (int)strlen(it->obj);
        snprintf(name, sizeof name, "%.*s/%c%u", dir_len, it->obj, 'a' + h5m_u8(in) % 26,
                 (unsigned)h5m_u8(in) % 4);
        hid_t t = h5m_pick_type(in, &is_str), s = h5m_pick_space(in, &n);
        hid_t d = H5Dcreate2(f, name[0] == '/' && name[1] == '/' ? name + 1 : name, t, s,
                             H5P_DEFAULT, H5P_DEFAULT, H5P_DEFAULT);
        if (d >= 0) h5m_fill(d, 0, t, is_str, n, in), H5Dclose(d);
        H5Tclose(t), H5Sclose(s);
        break;
    }
    default: {
        if (!(it = h5m_pick(b, in, 0, 1))) break;
        H5Ldelete(f, it->obj, H5P_DEFAULT);
        hid_t g = H5Gcreate2(f, it->obj, H5P_DEFAULT, H5P_DEFAULT, H5P_DEFAULT);
        if (g >= 0) H5Gclose(g);
        break;
    }
    }
}

/* Writes the base file to path and applies the edits the input describes (at most 8). */
static inline void h5m_apply(const h5m_base *b, const char *path, const uint8_t *data,
                             size_t size) {
    fz_write(path, b->bytes, b->len);
    if (size == 0) return;
    hid_t f = H5Fopen(path, H5F_ACC_RDWR, H5P_DEFAULT);
    if (f < 0) fz_die("cannot reopen the base file", path);
    h5m_in in = {data, size};
    for (int k = 0; k < 8 && in.n > 0; k++) h5m_edit(f, b, &in);
    H5Fclose(f);
    H5Eclear2(H5E_DEFAULT);
}

#endif
