/* wgpy._crypto: ChaCha20-Poly1305 (RFC 8439) over OpenSSL 3 libcrypto, and the per-packet loops of wgpy's
 * transport data messages, a batch per call with the GIL released while it encrypts or decrypts.
 * The pure-Python code (protocol/transport.py seal_batch_py, protocol/replay.py, Device.open_transport_py)
 * is the reference; tests/unit/test_native_crypto.py holds this module to identical results.
 *
 * API (positional arguments only)
 *   Aead(key)                          key: 32 bytes (any bytes-like). Drop-in for cryptography's
 *                                      ChaCha20Poly1305: one EVP context per direction, keyed once.
 *     .encrypt(nonce, data, ad) -> bytes      ciphertext || 16-byte tag; nonce 12 bytes; ad bytes-like or None
 *     .decrypt(nonce, data, ad) -> bytes      raises cryptography.exceptions.InvalidTag
 *   Replay()                           the anti-replay window of protocol/replay.py: a ring of 128 64-bit
 *                                      blocks, window REPLAY_WINDOW = 8128, counters >= REJECT_AFTER_MESSAGES
 *                                      refused (both read from wgpy.constants at import).
 *     .check_and_update(counter) -> bool;  .top -> int;  .ring -> tuple of the 128 blocks
 *   seal_batch(kp, pkts, mtu, ep, out) -> (nbytes, big or None)
 *       transport.seal_batch itself: seals each packet of `pkts` (bytes-likes) under kp.send (an Aead) with
 *       consecutive counters from kp.send_counter, padded with zeros to a multiple of 16 within `mtu`, as
 *       message = kp.header_prefix (8) || counter (LE64) || ciphertext || tag, appending (message, ep) to the
 *       list `out`. Packets longer than `mtu` are not sealed: they come back in order in `big`. nbytes is the
 *       total length of the messages. Counters are taken from kp.send_counter, RUN packets at a time, and
 *       the next one stored there before the GIL is released: no counter is handed out twice, not to another
 *       thread, not after an error (a packet that raises leaves its chunk unsent and its counters unused).
 *   open_run(aead, replay, dgrams, start, peer, opened)
 *       -> (stop, n_ok, n_data, nbytes, first, last, n_invalid_tag, n_replay, n_expired)
 *       Opens the run of consecutive transport messages of the list `dgrams` ((data, src) tuples or lists) that
 *       starts at `start` and carries the receiver index of dgrams[start] (at most RUN messages; the caller
 *       loops). A counter >= REJECT_AFTER_MESSAGES is "expired" (not decrypted); a bad tag "invalid_tag";
 *       then, in message order and only for authenticated messages, the replay window ("replay"). For each
 *       accepted message with a non-empty plaintext, (peer, plaintext) is appended to the list `opened`.
 *       stop: the index after the run; n_ok / nbytes: accepted messages / their wire bytes; n_data: those
 *       appended; first / last: the indices of the first and last accepted message (-1: none).
 *
 * Ownership: every object returned is a new bytes/tuple/list owned by Python. While the GIL is released the
 * loops touch only memory they own or pin: output bytes objects allocated beforehand and not yet visible to
 * Python, and the inputs' Py_buffers (each holds a reference to its object; a bytearray cannot resize while
 * exported), released with the GIL held before return. Nothing of C outlives the call but the Aead's EVP
 * contexts (freed, which cleanses the key schedule, with the Aead) and the Replay's ring. The key itself is
 * never copied here: it goes from the caller's buffer straight into the two contexts.
 *
 * Safety rules: every length and offset is checked before use (messages shorter than 32 bytes, nonces other
 * than 12 bytes, a negative mtu, lengths past INT_MAX, a start out of range); a context is used by one
 * thread at a time (a lock per context, taken with the GIL released if contended); the replay window is read
 * and written only with the GIL held and only after authentication; counters are never reused.
 */
#define PY_SSIZE_T_CLEAN
#include <Python.h>
#include <pythread.h>
#include <limits.h>
#include <stdint.h>
#include <string.h>
#include <openssl/crypto.h>
#include <openssl/evp.h>

#define KEY_LEN 32
#define NONCE_LEN 12
#define TAG_LEN 16
#define HEADER_LEN 16                       /* type (4) || receiver (4) || counter (8) */
#define MIN_MSG (HEADER_LEN + TAG_LEN)      /* a keepalive */
#define RING_BLOCKS 128                     /* protocol/replay.py: REPLAY_WINDOW // 64 + 1 */
#define RING_MASK (RING_BLOCKS - 1)
#define WINDOW ((RING_BLOCKS - 1) * 64)
#define RUN 64                              /* messages per phase of a batch (a fixed array on the stack) */
#define MAX_DATA (INT_MAX - 64)             /* EVP lengths are int */

static PyObject *InvalidTag;                /* cryptography.exceptions.InvalidTag */
static uint64_t reject_after;               /* wgpy.constants.REJECT_AFTER_MESSAGES */
static PyObject *s_send, *s_prefix, *s_counter;
static const uint8_t zeros[16];
static const uint8_t transport_word[4] = {4, 0, 0, 0};

static uint64_t le64(const uint8_t *p) { uint64_t v = 0; for (int i = 7; i >= 0; i--) v = v << 8 | p[i]; return v; }
static uint32_t le32(const uint8_t *p) { return p[0] | p[1] << 8 | p[2] << 16 | (uint32_t)p[3] << 24; }
static void put_le64(uint8_t *p, uint64_t v) { for (int i = 0; i < 8; i++, v >>= 8) p[i] = (uint8_t)v; }

/* ---- ChaCha20-Poly1305 on a keyed context: no Python calls, safe without the GIL ---------------------- */

/* out (n + npad + TAG_LEN bytes) = Enc(p || npad zeros) || tag */
static int seal_one(EVP_CIPHER_CTX *c, const uint8_t *nonce, const uint8_t *ad, int adlen,
                    const uint8_t *p, int n, int npad, uint8_t *out)
{
    int l;
    if (EVP_EncryptInit_ex(c, NULL, NULL, NULL, nonce) != 1) return 0;
    if (adlen && EVP_EncryptUpdate(c, NULL, &l, ad, adlen) != 1) return 0;
    if (n && (EVP_EncryptUpdate(c, out, &l, p, n) != 1 || l != n)) return 0;
    if (npad && (EVP_EncryptUpdate(c, out + n, &l, zeros, npad) != 1 || l != npad)) return 0;
    if (EVP_EncryptFinal_ex(c, out + n + npad, &l) != 1 || l != 0) return 0;
    return EVP_CIPHER_CTX_ctrl(c, EVP_CTRL_AEAD_GET_TAG, TAG_LEN, out + n + npad) == 1;
}

/* out (n bytes) = Dec(ct[0:n]) if ct[n:n+16] is the right tag; returns 0 otherwise */
static int open_one(EVP_CIPHER_CTX *c, const uint8_t *nonce, const uint8_t *ad, int adlen,
                    const uint8_t *ct, int n, uint8_t *out)
{
    int l;
    uint8_t tag[TAG_LEN];
    memcpy(tag, ct + n, TAG_LEN);
    if (EVP_DecryptInit_ex(c, NULL, NULL, NULL, nonce) != 1) return 0;
    if (adlen && EVP_DecryptUpdate(c, NULL, &l, ad, adlen) != 1) return 0;
    if (n && (EVP_DecryptUpdate(c, out, &l, ct, n) != 1 || l != n)) return 0;
    if (EVP_CIPHER_CTX_ctrl(c, EVP_CTRL_AEAD_SET_TAG, TAG_LEN, tag) != 1) return 0;
    return EVP_DecryptFinal_ex(c, out + n, &l) == 1;
}

/* ---- Aead ------------------------------------------------------------------------------------------------ */

typedef struct {
    PyObject_HEAD
    EVP_CIPHER_CTX *enc, *dec;
    PyThread_type_lock enc_lock, dec_lock;  /* one user of a context at a time (batches run without the GIL) */
} Aead;

static PyTypeObject AeadType;

static void lock(PyThread_type_lock l)     /* with the GIL held; waits without it */
{
    if (!PyThread_acquire_lock(l, NOWAIT_LOCK)) {
        Py_BEGIN_ALLOW_THREADS
        PyThread_acquire_lock(l, WAIT_LOCK);
        Py_END_ALLOW_THREADS
    }
}

static void aead_dealloc(Aead *self)
{
    EVP_CIPHER_CTX_free(self->enc);         /* frees and cleanses the key schedule */
    EVP_CIPHER_CTX_free(self->dec);
    if (self->enc_lock) PyThread_free_lock(self->enc_lock);
    if (self->dec_lock) PyThread_free_lock(self->dec_lock);
    Py_TYPE(self)->tp_free((PyObject *)self);
}

static PyObject *aead_new(PyTypeObject *type, PyObject *args, PyObject *kw)
{
    Py_buffer key;
    if (kw && PyDict_GET_SIZE(kw)) return PyErr_Format(PyExc_TypeError, "Aead() takes no keyword arguments");
    if (!PyArg_ParseTuple(args, "y*:Aead", &key)) return NULL;
    Aead *self = NULL;
    if (key.len != KEY_LEN) {
        PyErr_SetString(PyExc_ValueError, "ChaCha20Poly1305 key must be 32 bytes.");
        goto done;
    }
    self = (Aead *)type->tp_alloc(type, 0);
    if (!self) goto done;
    self->enc = EVP_CIPHER_CTX_new();
    self->dec = EVP_CIPHER_CTX_new();
    self->enc_lock = PyThread_allocate_lock();
    self->dec_lock = PyThread_allocate_lock();
    if (!self->enc || !self->dec || !self->enc_lock || !self->dec_lock
            || EVP_EncryptInit_ex(self->enc, EVP_chacha20_poly1305(), NULL, key.buf, zeros) != 1
            || EVP_DecryptInit_ex(self->dec, EVP_chacha20_poly1305(), NULL, key.buf, zeros) != 1) {
        PyErr_SetString(PyExc_MemoryError, "cannot set up the ChaCha20-Poly1305 contexts");
        Py_CLEAR(self);
    }
done:
    PyBuffer_Release(&key);
    return (PyObject *)self;
}

/* encrypt/decrypt(nonce, data, ad): one message, with the GIL held (the batch functions release it) */
static PyObject *aead_call(Aead *self, PyObject *const *args, Py_ssize_t nargs, int enc)
{
    Py_buffer nonce = {0}, data = {0}, ad = {0};
    PyObject *res = NULL;
    if (nargs != 3) return PyErr_Format(PyExc_TypeError, "expected 3 arguments (nonce, data, associated_data)");
    if (PyObject_GetBuffer(args[0], &nonce, PyBUF_SIMPLE) < 0) return NULL;
    if (PyObject_GetBuffer(args[1], &data, PyBUF_SIMPLE) < 0) goto done;
    if (args[2] != Py_None && PyObject_GetBuffer(args[2], &ad, PyBUF_SIMPLE) < 0) goto done;
    if (nonce.len != NONCE_LEN) { PyErr_SetString(PyExc_ValueError, "Nonce must be 12 bytes"); goto done; }
    if (data.len > MAX_DATA || ad.len > MAX_DATA) {
        PyErr_SetString(PyExc_OverflowError, "Data or associated data too long. Max 2**31 - 1 bytes");
        goto done;
    }
    if (!enc && data.len < TAG_LEN) { PyErr_SetNone(InvalidTag); goto done; }
    Py_ssize_t n = enc ? data.len + TAG_LEN : data.len - TAG_LEN;
    if (!(res = PyBytes_FromStringAndSize(NULL, n))) goto done;
    uint8_t *out = (uint8_t *)PyBytes_AS_STRING(res);
    int ok;
    if (enc) {
        lock(self->enc_lock);
        ok = seal_one(self->enc, nonce.buf, ad.buf, (int)ad.len, data.buf, (int)data.len, 0, out);
        PyThread_release_lock(self->enc_lock);
    } else {
        lock(self->dec_lock);
        ok = open_one(self->dec, nonce.buf, ad.buf, (int)ad.len, data.buf, (int)n, out);
        PyThread_release_lock(self->dec_lock);
    }
    if (!ok) {
        OPENSSL_cleanse(out, n);            /* a forgery's "plaintext" is keystream for a nonce yet to come */
        Py_CLEAR(res);
        if (enc) PyErr_SetString(PyExc_RuntimeError, "ChaCha20-Poly1305 encryption failed");
        else PyErr_SetNone(InvalidTag);
    }
done:
    PyBuffer_Release(&nonce);
    if (data.obj) PyBuffer_Release(&data);
    if (ad.obj) PyBuffer_Release(&ad);
    return res;
}

static PyObject *aead_encrypt(Aead *s, PyObject *const *a, Py_ssize_t n) { return aead_call(s, a, n, 1); }
static PyObject *aead_decrypt(Aead *s, PyObject *const *a, Py_ssize_t n) { return aead_call(s, a, n, 0); }

static PyMethodDef aead_methods[] = {
    {"encrypt", (PyCFunction)(void (*)(void))aead_encrypt, METH_FASTCALL, "encrypt(nonce, data, ad) -> ct||tag"},
    {"decrypt", (PyCFunction)(void (*)(void))aead_decrypt, METH_FASTCALL, "decrypt(nonce, data, ad) -> plaintext"},
    {NULL}
};

static PyTypeObject AeadType = {
    PyVarObject_HEAD_INIT(NULL, 0)
    .tp_name = "wgpy._crypto.Aead",
    .tp_basicsize = sizeof(Aead),
    .tp_dealloc = (destructor)aead_dealloc,
    .tp_flags = Py_TPFLAGS_DEFAULT,
    .tp_doc = "Aead(key): ChaCha20-Poly1305 (RFC 8439) with a 32-byte key",
    .tp_methods = aead_methods,
    .tp_new = aead_new,
};

/* ---- Replay ---------------------------------------------------------------------------------------------- */

typedef struct {
    PyObject_HEAD
    uint64_t top;                           /* greatest counter accepted (0 before any, with block 0 empty) */
    uint64_t ring[RING_BLOCKS];
} Replay;

static PyTypeObject ReplayType;

/* replay.py's check_and_update, line for line */
static int replay_update(Replay *r, uint64_t c)
{
    uint64_t top = r->top;
    if (c > top) {
        if (c >= reject_after) return 0;
        uint64_t cur = top >> 6, new_ = c >> 6;
        if (new_ - cur >= RING_BLOCKS)
            memset(r->ring, 0, sizeof r->ring);
        else
            for (uint64_t i = cur + 1; i <= new_; i++) r->ring[i & RING_MASK] = 0;
        r->top = c;
    } else if (top - c >= WINDOW) {
        return 0;
    }
    uint64_t *word = &r->ring[(c >> 6) & RING_MASK], bit = (uint64_t)1 << (c & 63);
    if (*word & bit) return 0;
    *word |= bit;
    return 1;
}

static PyObject *replay_new(PyTypeObject *type, PyObject *args, PyObject *kw)
{
    if (PyTuple_GET_SIZE(args) || (kw && PyDict_GET_SIZE(kw)))
        return PyErr_Format(PyExc_TypeError, "Replay() takes no arguments");
    return type->tp_alloc(type, 0);         /* zeroed: top 0, empty ring */
}

static PyObject *replay_check(Replay *self, PyObject *arg)
{
    int ovf;
    if (!PyLong_Check(arg)) return PyErr_Format(PyExc_TypeError, "counter must be an int");
    long long c = PyLong_AsLongLongAndOverflow(arg, &ovf);
    if (c == -1 && PyErr_Occurred()) return NULL;
    if (ovf < 0 || (!ovf && c < 0)) return PyErr_Format(PyExc_OverflowError, "a counter is not negative");
    if (!ovf) return PyBool_FromLong(replay_update(self, (uint64_t)c));
    uint64_t u = PyLong_AsUnsignedLongLong(arg);       /* 2**63 and above */
    if (u == (uint64_t)-1 && PyErr_Occurred()) {
        PyErr_Clear();
        Py_RETURN_FALSE;                    /* past 2**64 - 1, so past REJECT_AFTER_MESSAGES */
    }
    return PyBool_FromLong(replay_update(self, u));
}

static PyObject *replay_top(Replay *self, void *x) { return PyLong_FromUnsignedLongLong(self->top); }

static PyObject *replay_ring(Replay *self, void *x)
{
    PyObject *t = PyTuple_New(RING_BLOCKS);
    for (int i = 0; t && i < RING_BLOCKS; i++) {
        PyObject *v = PyLong_FromUnsignedLongLong(self->ring[i]);
        if (!v) { Py_CLEAR(t); break; }
        PyTuple_SET_ITEM(t, i, v);
    }
    return t;
}

static PyMethodDef replay_methods[] = {
    {"check_and_update", (PyCFunction)replay_check, METH_O, "accept `counter` once, within the window"},
    {NULL}
};
static PyGetSetDef replay_getset[] = {
    {"top", (getter)replay_top, NULL, "greatest counter accepted", NULL},
    {"ring", (getter)replay_ring, NULL, "the ring of 64-bit blocks, as a tuple", NULL},
    {NULL}
};

static PyTypeObject ReplayType = {
    PyVarObject_HEAD_INIT(NULL, 0)
    .tp_name = "wgpy._crypto.Replay",
    .tp_basicsize = sizeof(Replay),
    .tp_flags = Py_TPFLAGS_DEFAULT,
    .tp_doc = "Replay(): the anti-replay window of protocol/replay.py",
    .tp_methods = replay_methods,
    .tp_getset = replay_getset,
    .tp_new = replay_new,
};

/* ---- seal_batch ------------------------------------------------------------------------------------------ */

struct sealed { Py_buffer in; PyObject *msg, *big; int pad; };   /* msg: to seal; big: to give back unsent */

static PyObject *seal_batch(PyObject *mod, PyObject *const *args, Py_ssize_t nargs)
{
    if (nargs != 5) return PyErr_Format(PyExc_TypeError, "seal_batch(kp, pkts, mtu, ep, out)");
    PyObject *kp = args[0], *ep = args[3], *out = args[4], *aead_o = NULL, *prefix = NULL, *seq = NULL;
    PyObject *big = NULL, *res = NULL;
    struct sealed it[RUN];
    int overflow;
    long long nbytes = 0, mtu = PyLong_AsLongLongAndOverflow(args[2], &overflow);
    if (mtu == -1 && PyErr_Occurred()) return NULL;
    if (overflow) mtu = overflow > 0 ? LLONG_MAX : -1;
    if (!PyList_Check(out)) return PyErr_Format(PyExc_TypeError, "out must be a list");
    if (!(aead_o = PyObject_GetAttr(kp, s_send)) || !(prefix = PyObject_GetAttr(kp, s_prefix))) goto done;
    if (!PyObject_TypeCheck(aead_o, &AeadType) || !PyBytes_Check(prefix) || PyBytes_GET_SIZE(prefix) != 8) {
        PyErr_SetString(PyExc_TypeError, "kp.send must be an Aead and kp.header_prefix 8 bytes");
        goto done;
    }
    if (!(seq = PySequence_Fast(args[1], "pkts must be a sequence"))) goto done;
    Aead *aead = (Aead *)aead_o;
    /* the size is read again each time: a finalizer run by an allocation could shrink the list */
    for (Py_ssize_t i0 = 0; i0 < PySequence_Fast_GET_SIZE(seq); i0 += RUN) {
        /* 1: with the GIL, pin the inputs and make the outputs (bytes: no garbage collection, no Python code) */
        int k = 0, nseal = 0, ok = 1;
        for (Py_ssize_t i = i0; i < i0 + RUN && i < PySequence_Fast_GET_SIZE(seq); i++, k++) {
            PyObject *pkt = PySequence_Fast_GET_ITEM(seq, i);
            struct sealed *s = &it[k];
            s->msg = s->big = NULL;
            if (PyObject_GetBuffer(pkt, &s->in, PyBUF_SIMPLE) < 0) { ok = 0; break; }
            long long len = s->in.len;
            if (len > mtu) {                /* too big: back to the caller, unsent, in order */
                PyBuffer_Release(&s->in);
                Py_INCREF(s->big = pkt);
                continue;
            }
            s->pad = (int)(-len & 15);
            if (s->pad && len + s->pad > mtu) s->pad = (int)(mtu - len);     /* len <= mtu: 0 <= pad < 16 */
            if (len + s->pad > MAX_DATA) PyErr_SetString(PyExc_OverflowError, "packet too long");
            else s->msg = PyBytes_FromStringAndSize(NULL, HEADER_LEN + len + s->pad + TAG_LEN);
            if (!s->msg) { PyBuffer_Release(&s->in); ok = 0; break; }
            nseal++;
        }
        /* ... take the chunk's counters from kp.send_counter and store the next one before the GIL goes, so
         * that no other thread (and no error below) can hand out one of them again */
        if (ok && nseal) {
            PyObject *c = PyObject_GetAttr(kp, s_counter), *next = NULL;
            uint64_t base = c ? PyLong_AsUnsignedLongLong(c) : 0;
            if (c && !(base == (uint64_t)-1 && PyErr_Occurred())) {
                if ((uint64_t)nseal > UINT64_MAX - base)
                    PyErr_SetString(PyExc_OverflowError, "send counter exhausted");
                else if ((next = PyLong_FromUnsignedLongLong(base + nseal)) && PyObject_SetAttr(kp, s_counter, next) == 0)
                    for (int j = 0, n = 0; j < k; j++)
                        if (it[j].msg) {
                            uint8_t *m = (uint8_t *)PyBytes_AS_STRING(it[j].msg);
                            memcpy(m, PyBytes_AS_STRING(prefix), 8);
                            put_le64(m + 8, base + n++);
                        }
            }
            ok = next && !PyErr_Occurred();
            Py_XDECREF(c);
            Py_XDECREF(next);
        }
        /* 2: without the GIL, encrypt */
        int failed = 0;
        if (ok && nseal) {
            lock(aead->enc_lock);
            Py_BEGIN_ALLOW_THREADS
            for (int j = 0; j < k && !failed; j++) {
                struct sealed *s = &it[j];
                if (!s->msg) continue;
                uint8_t *m = (uint8_t *)PyBytes_AS_STRING(s->msg), nonce[NONCE_LEN] = {0};
                memcpy(nonce + 4, m + 8, 8);
                failed = !seal_one(aead->enc, nonce, NULL, 0, s->in.buf, (int)s->in.len, s->pad, m + HEADER_LEN);
            }
            Py_END_ALLOW_THREADS
            PyThread_release_lock(aead->enc_lock);
            if (failed) {
                PyErr_SetString(PyExc_RuntimeError, "ChaCha20-Poly1305 encryption failed");
                ok = 0;
            }
        }
        /* 3: with the GIL, hand the messages and the big packets over in order, unpin the inputs */
        for (int j = 0; j < k; j++) {
            struct sealed *s = &it[j];
            if (s->msg) PyBuffer_Release(&s->in);
            if (ok && s->msg) {
                PyObject *t = PyTuple_Pack(2, s->msg, ep);
                if (!t || PyList_Append(out, t) < 0) ok = 0;
                else nbytes += PyBytes_GET_SIZE(s->msg);
                Py_XDECREF(t);
            } else if (ok && s->big) {
                if ((!big && !(big = PyList_New(0))) || PyList_Append(big, s->big) < 0) ok = 0;
            }
            Py_XDECREF(s->msg);
            Py_XDECREF(s->big);
        }
        if (!ok) goto done;
    }
    res = Py_BuildValue("(LO)", nbytes, big ? big : Py_None);
done:
    Py_XDECREF(aead_o); Py_XDECREF(prefix); Py_XDECREF(seq); Py_XDECREF(big);
    return res;
}

/* ---- open_run -------------------------------------------------------------------------------------------- */

enum { ACCEPT, INVALID_TAG, EXPIRED, REPLAYED };
struct opened { Py_buffer in; PyObject *pt; uint64_t ctr; int status; };

/* dgrams[i] as a transport message to receiver `idx` (any idx if want_idx is 0): pins it in *b, or returns
 * 0 (with no error set) when it is not one */
static int pin_message(PyObject *dgrams, Py_ssize_t i, Py_buffer *b, int want_idx, uint32_t idx)
{
    PyObject *item = PyList_GET_ITEM(dgrams, i);
    if (!(PyTuple_Check(item) || PyList_Check(item)) || PySequence_Fast_GET_SIZE(item) != 2) return 0;
    if (PyObject_GetBuffer(PySequence_Fast_GET_ITEM(item, 0), b, PyBUF_SIMPLE) < 0) { PyErr_Clear(); return 0; }
    const uint8_t *p = b->buf;
    if (b->len < MIN_MSG || b->len > MAX_DATA || memcmp(p, transport_word, 4) || (want_idx && le32(p + 4) != idx)) {
        PyBuffer_Release(b);
        return 0;
    }
    return 1;
}

static PyObject *open_run(PyObject *mod, PyObject *const *args, Py_ssize_t nargs)
{
    if (nargs != 6) return PyErr_Format(PyExc_TypeError, "open_run(aead, replay, dgrams, start, peer, opened)");
    PyObject *dgrams = args[2], *peer = args[4], *opened = args[5];
    if (!PyObject_TypeCheck(args[0], &AeadType) || !PyObject_TypeCheck(args[1], &ReplayType)
            || !PyList_Check(dgrams) || !PyList_Check(opened))
        return PyErr_Format(PyExc_TypeError, "open_run(Aead, Replay, list, int, peer, list)");
    Aead *aead = (Aead *)args[0];
    Replay *replay = (Replay *)args[1];
    Py_ssize_t start = PyLong_AsSsize_t(args[3]);
    if (start == -1 && PyErr_Occurred()) return NULL;
    if (start < 0 || start >= PyList_GET_SIZE(dgrams)) return PyErr_Format(PyExc_IndexError, "start out of range");
    struct opened it[RUN];
    /* 1: with the GIL, pin the run's messages and make their plaintext objects */
    if (!pin_message(dgrams, start, &it[0].in, 0, 0))
        return PyErr_Format(PyExc_ValueError, "dgrams[start] is not a (transport message, src) pair");
    uint32_t idx = le32((const uint8_t *)it[0].in.buf + 4);
    int k = 0, err = 0;
    Py_ssize_t stop = start;
    while (1) {
        struct opened *o = &it[k];
        o->ctr = le64((const uint8_t *)o->in.buf + 8);
        o->pt = NULL;
        o->status = EXPIRED;
        if (o->ctr < reject_after) {
            if (!(o->pt = PyBytes_FromStringAndSize(NULL, o->in.len - MIN_MSG))) { PyBuffer_Release(&o->in); err = 1; break; }
            o->status = INVALID_TAG;        /* until it authenticates */
        }
        k++;
        stop++;
        if (k == RUN || stop >= PyList_GET_SIZE(dgrams) || !pin_message(dgrams, stop, &it[k].in, 1, idx)) break;
    }
    /* 2: without the GIL, decrypt */
    if (!err) {
        lock(aead->dec_lock);
        Py_BEGIN_ALLOW_THREADS
        for (int j = 0; j < k; j++) {
            struct opened *o = &it[j];
            if (!o->pt) continue;
            uint8_t nonce[NONCE_LEN] = {0};
            memcpy(nonce + 4, (const uint8_t *)o->in.buf + 8, 8);    /* the counter field as on the wire */
            if (open_one(aead->dec, nonce, NULL, 0, (const uint8_t *)o->in.buf + HEADER_LEN,
                         (int)(o->in.len - MIN_MSG), (uint8_t *)PyBytes_AS_STRING(o->pt)))
                o->status = ACCEPT;
        }
        Py_END_ALLOW_THREADS
        PyThread_release_lock(aead->dec_lock);
    }
    /* 3: with the GIL, in message order: the replay window, then the plaintexts */
    Py_ssize_t nok = 0, ndata = 0, nbytes = 0, first = -1, last = -1, count[4] = {0};
    for (int j = 0; j < k; j++) {
        struct opened *o = &it[j];
        if (!err) {
            if (o->status == ACCEPT && !replay_update(replay, o->ctr)) o->status = REPLAYED;
            count[o->status]++;
            if (o->status == ACCEPT) {
                nok++;
                nbytes += o->in.len;
                if (first < 0) first = start + j;
                last = start + j;
                if (PyBytes_GET_SIZE(o->pt)) {
                    PyObject *t = PyTuple_Pack(2, peer, o->pt);
                    if (!t || PyList_Append(opened, t) < 0) err = 1;
                    else ndata++;
                    Py_XDECREF(t);
                }
            }
        }
        PyBuffer_Release(&o->in);
        if (o->pt && o->status == INVALID_TAG)  /* keystream of a forged nonce: see aead_call */
            OPENSSL_cleanse(PyBytes_AS_STRING(o->pt), PyBytes_GET_SIZE(o->pt));
        Py_XDECREF(o->pt);
    }
    if (err) return NULL;
    return Py_BuildValue("(nnnnnnnnn)", stop, nok, ndata, nbytes, first, last,
                         count[INVALID_TAG], count[REPLAYED], count[EXPIRED]);
}

/* ---- module ---------------------------------------------------------------------------------------------- */

static PyMethodDef methods[] = {
    {"seal_batch", (PyCFunction)(void (*)(void))seal_batch, METH_FASTCALL,
     "seal_batch(kp, pkts, mtu, ep, out) -> (nbytes, big or None)"},
    {"open_run", (PyCFunction)(void (*)(void))open_run, METH_FASTCALL,
     "open_run(aead, replay, dgrams, start, peer, opened) -> (stop, n_ok, n_data, nbytes, first, last, "
     "n_invalid_tag, n_replay, n_expired)"},
    {NULL}
};

static struct PyModuleDef moddef = {PyModuleDef_HEAD_INIT, .m_name = "wgpy._crypto", .m_size = -1,
    .m_doc = "ChaCha20-Poly1305 and wgpy's batch data path over OpenSSL (src/native/crypto.c)", .m_methods = methods};

static PyObject *constant(const char *module, const char *name)
{
    PyObject *m = PyImport_ImportModule(module), *v = m ? PyObject_GetAttrString(m, name) : NULL;
    Py_XDECREF(m);
    return v;
}

PyMODINIT_FUNC PyInit__crypto(void)
{
    PyObject *m = NULL, *v;
    if (!(InvalidTag = constant("cryptography.exceptions", "InvalidTag"))) return NULL;
    if (!(v = constant("wgpy.constants", "REJECT_AFTER_MESSAGES"))) return NULL;
    reject_after = PyLong_AsUnsignedLongLong(v);
    Py_DECREF(v);
    if (PyErr_Occurred()) return NULL;
    if (!(v = constant("wgpy.constants", "REPLAY_WINDOW"))) return NULL;
    long window = PyLong_AsLong(v);
    Py_DECREF(v);
    if (window != WINDOW) return PyErr_Format(PyExc_ImportError, "wgpy._crypto is built for REPLAY_WINDOW %d",
                                               WINDOW);
    if (!(s_send = PyUnicode_InternFromString("send")) || !(s_prefix = PyUnicode_InternFromString("header_prefix"))
            || !(s_counter = PyUnicode_InternFromString("send_counter")))
        return NULL;
    if (PyType_Ready(&AeadType) < 0 || PyType_Ready(&ReplayType) < 0 || !(m = PyModule_Create(&moddef)))
        return NULL;
    Py_INCREF(&AeadType);
    Py_INCREF(&ReplayType);
    if (PyModule_AddObject(m, "Aead", (PyObject *)&AeadType) < 0
            || PyModule_AddObject(m, "Replay", (PyObject *)&ReplayType) < 0
            || PyModule_AddIntConstant(m, "RUN", RUN) < 0) {
        Py_DECREF(m);
        return NULL;
    }
    return m;
}
