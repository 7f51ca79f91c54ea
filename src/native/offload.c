/* wgpy._offload: the TUN offloads of src/wgpy/io/offload.py in C, byte for byte.

    split(buf, out) -> int      one TUN read (virtio_net_hdr + packet) -> IP packets appended to out
    coalesce(packets, out)      IP packets -> TUN writes (virtio_net_hdr + packet), in-order TCP runs merged
    gso_run(out, start, ...)    the UDP GSO run of io/batch.py at out[start] -> (stop, size, joined datagrams)
    gro_split(data, seg, ...)   a UDP GRO read of io/batch.py -> its datagrams appended, with their source

The Python functions there (split_py, coalesce_py) are the reference: same output bytes, same drops (split
returns 0), same order. Every packet this module appends is a new `bytes` object. Inputs are any objects with
the buffer protocol (bytes, bytearray, memoryview); they are held (PyObject_GetBuffer) for the whole call.

Checksums follow io/offload.py's arithmetic: int.from_bytes(data, "big") mod 0xFFFF (2**16 == 1 mod 0xFFFF), a
stored checksum is 0xFFFF - sum % 0xFFFF (never 0). sum_int() is int.from_bytes mod 0xFFFF (an odd-length
string weighs as if padded with a zero byte in front); sum_pad() is the RFC 1071 sum (padded at the end).

Per call: lengths and offsets are checked and the output objects allocated with the GIL held; the byte work
(copies, checksums) then runs with the GIL released when there is enough of it (NOGIL_BYTES), reading only
offsets fixed before the release. */

#define PY_SSIZE_T_CLEAN
#include <Python.h>
#include <stdint.h>
#include <string.h>

#define VNET_HDR_LEN 10
#define F_NEEDS_CSUM 1
#define GSO_NONE 0
#define GSO_TCPV4 1
#define GSO_TCPV6 4
#define GSO_ECN 0x80
#define PROTO_TCP 6
#define TCP_FIN 0x01
#define TCP_PSH 0x08
#define TCP_CWR 0x80
#define COALESCE_OK_FLAGS 0x18      /* ACK | PSH */
#define MAX_GSO_BYTES 65535
#define NOGIL_BYTES 16384           /* below this much copying, dropping the GIL costs more than it frees */
/* run `work` (only byte work on buffers fixed beforehand) with the GIL released when `bytes` is large enough */
#define BYTE_WORK(bytes, work) \
    do { if ((bytes) >= NOGIL_BYTES) { Py_BEGIN_ALLOW_THREADS work; Py_END_ALLOW_THREADS } else { work; } } while (0)

static inline unsigned rd16(const uint8_t *p) { return ((unsigned)p[0] << 8) | p[1]; }
static inline uint32_t rd32(const uint8_t *p) { return ((uint32_t)rd16(p) << 16) | rd16(p + 2); }
static inline unsigned rd16le(const uint8_t *p) { return p[0] | ((unsigned)p[1] << 8); }
static inline void wr16(uint8_t *p, unsigned v) { p[0] = (uint8_t)(v >> 8); p[1] = (uint8_t)v; }
static inline void wr16le(uint8_t *p, unsigned v) { p[0] = (uint8_t)v; p[1] = (uint8_t)(v >> 8); }
static inline void wr32(uint8_t *p, uint32_t v) { wr16(p, v >> 16); wr16(p + 2, v & 0xFFFF); }

/* Sum of the big-endian 16-bit words of p[:n] (n even) mod 0xFFFF. Native 64-bit loads cut into 32-bit halves
   (a 32-bit value is the sum of its two words mod 0xFFFF), four sums in flight; on a little-endian host each
   loaded word is byte-swapped, i.e. multiplied by 256 mod 0xFFFF, and multiplying by 256 again undoes it. The
   sums cannot overflow for n up to 1 GiB (words() cuts longer data). */
static uint64_t words_upto_1g(const uint8_t *p, size_t n)
{
    uint64_t a = 0, b = 0, c = 0, d = 0, s;
    size_t i = 0;
    for (; i + 32 <= n; i += 32) {
        uint64_t w[4];
        memcpy(w, p + i, 32);
        a += (w[0] & 0xFFFFFFFF) + (w[0] >> 32);
        b += (w[1] & 0xFFFFFFFF) + (w[1] >> 32);
        c += (w[2] & 0xFFFFFFFF) + (w[2] >> 32);
        d += (w[3] & 0xFFFFFFFF) + (w[3] >> 32);
    }
    s = a + b + c + d;
    for (; i + 4 <= n; i += 4) {
        uint32_t w;
        memcpy(&w, p + i, 4);
        s += w;
    }
#if __BYTE_ORDER__ == __ORDER_LITTLE_ENDIAN__
    s = (s % 0xFFFF) << 8;
#endif
    if (i + 2 <= n)
        s += rd16(p + i);
    return s % 0xFFFF;
}

static uint64_t words(const uint8_t *p, size_t n)
{
    uint64_t s = 0;
    for (; n > (1u << 30); p += 1u << 30, n -= 1u << 30)
        s += words_upto_1g(p, 1u << 30);
    return (s + words_upto_1g(p, n)) % 0xFFFF;
}

static uint64_t sum_int(const uint8_t *p, size_t n)      /* int.from_bytes(p[:n], "big") mod 0xFFFF */
{
    return n & 1 ? (p[0] + words(p + 1, n - 1)) % 0xFFFF : words(p, n);
}

static uint64_t sum_pad(const uint8_t *p, size_t n)      /* the RFC 1071 sum: an odd last byte is a high byte */
{
    return n & 1 ? (words(p, n - 1) + ((uint64_t)p[n - 1] << 8)) % 0xFFFF : words(p, n);
}

static inline unsigned fin(uint64_t s) { return 0xFFFF - (unsigned)(s % 0xFFFF); }

static uint64_t pseudo_sum(const uint8_t *ip, int v6)    /* the addresses of the pseudo-header */
{
    return v6 ? sum_int(ip + 8, 32) : sum_int(ip + 12, 8);
}

static int append(PyObject *out, PyObject *item)          /* out.append(item); steals item */
{
    int rc;
    if (PyList_CheckExact(out)) {
        rc = PyList_Append(out, item);
    } else {
        PyObject *r = PyObject_CallMethod(out, "append", "O", item);
        rc = r ? 0 : -1;
        Py_XDECREF(r);
    }
    Py_DECREF(item);
    return rc;
}

/* Append the objects of segs[0:n] to out (stealing them all, also after an error). */
static int append_all(PyObject *out, PyObject **segs, Py_ssize_t n)
{
    int rc = 0;
    for (Py_ssize_t i = 0; i < n; i++) {
        if (rc == 0)
            rc = append(out, segs[i]);
        else
            Py_DECREF(segs[i]);
    }
    return rc;
}

static PyObject *new_bytes(Py_ssize_t n, uint8_t **data)
{
    PyObject *b = PyBytes_FromStringAndSize(NULL, n);
    if (b)
        *data = (uint8_t *)PyBytes_AS_STRING(b);
    return b;
}

/* ---- split ------------------------------------------------------------------------------------------------ */

typedef struct {        /* one TSO super-packet, checked: l4 + 20 <= hl <= n, mss < plen */
    const uint8_t *pkt;
    Py_ssize_t n, l4, hl, mss, plen, nseg;
    int v6;
    uint8_t **seg;      /* nseg output buffers, hl + mss bytes each (the last hl + the rest) */
} tso_t;

static void cut(const tso_t *t)                            /* the byte work of a split, GIL released or not */
{
    Py_ssize_t l4 = t->l4, hl = t->hl, thl = hl - l4, mss = t->mss;
    const uint8_t *payload = t->pkt + hl;
    uint8_t *h0 = t->seg[0];
    memcpy(h0, t->pkt, hl);
    h0[l4 + 16] = h0[l4 + 17] = 0;
    uint32_t seq0 = rd32(h0 + l4 + 4);
    unsigned tflags = h0[l4 + 13], doff = (unsigned)h0[l4 + 12] << 8;
    /* TCP header sum without seq (4..8), flags (13) and checksum (16..18, zeroed), plus the pseudo-header */
    uint64_t tcp_base = (sum_int(h0 + l4, 4) + sum_int(h0 + l4 + 8, 4) + sum_int(h0 + l4 + 14, thl - 14)) % 0xFFFF
                        + PROTO_TCP + thl + pseudo_sum(h0, t->v6);
    unsigned ip_id = 0;
    uint64_t ip_base = 0;
    if (!t->v6) {       /* IPv4 header sum without total length (2..4), id (4..6) and checksum (10..12, zeroed) */
        ip_id = rd16(h0 + 4);
        h0[10] = h0[11] = 0;
        ip_base = (sum_int(h0, 2) + sum_int(h0 + 6, l4 - 6)) % 0xFFFF;
    }
    unsigned first_flags = tflags & ~(TCP_FIN | TCP_PSH) & 0xFF;
    unsigned mid_flags = first_flags & ~TCP_CWR;
    unsigned last_flags = tflags & ~TCP_CWR;
    Py_ssize_t off = 0, last = t->nseg - 1;
    for (Py_ssize_t i = 0; i <= last; i++) {
        uint8_t *s = t->seg[i];
        Py_ssize_t seglen = i < last ? mss : t->plen - off;
        uint32_t seq = seq0 + (uint32_t)off;
        unsigned f = i == 0 ? first_flags : i < last ? mid_flags : last_flags;
        if (i)
            memcpy(s, h0, hl);
        memcpy(s + hl, payload + off, seglen);
        if (t->v6) {
            wr16(s + 4, (unsigned)(hl - 40 + seglen));
        } else {
            unsigned tot = (unsigned)(hl + seglen), ident = (ip_id + (unsigned)i) & 0xFFFF;
            wr16(s + 2, tot);
            wr16(s + 4, ident);
            wr16(s + 10, fin(ip_base + tot + ident));
        }
        wr32(s + l4 + 4, seq);
        s[l4 + 13] = (uint8_t)f;
        wr16(s + l4 + 16, fin(tcp_base + seglen + (seq >> 16) + (seq & 0xFFFF) + doff + f
                              + sum_pad(s + hl, seglen)));
        off += seglen;
    }
}

/* A super-packet: cut it into segments (returns how many, 0 = dropped), or -1 with an exception set. */
static Py_ssize_t split_tcp(const uint8_t *pkt, Py_ssize_t n, int v6, Py_ssize_t mss, Py_ssize_t l4,
                            PyObject *out)
{
    if (l4 + 20 > n)
        return 0;
    Py_ssize_t thl = (pkt[l4 + 12] >> 4) << 2, hl = l4 + thl, plen = n - hl;
    if (thl < 20 || hl > n || l4 < (v6 ? 40 : 20))
        return 0;
    if (plen <= mss) {                  /* nothing to cut: finish the checksums and pass it on */
        if ((v6 ? n - 40 : n) > 0xFFFF)
            return 0;
        uint8_t *one;
        PyObject *b = new_bytes(n, &one);
        if (!b)
            return -1;
        memcpy(one, pkt, n);
        if (v6) {
            wr16(one + 4, (unsigned)(n - 40));
        } else {
            wr16(one + 2, (unsigned)n);
            one[10] = one[11] = 0;
            wr16(one + 10, fin(sum_pad(one, l4)));
        }
        one[l4 + 16] = one[l4 + 17] = 0;
        wr16(one + l4 + 16, fin(sum_pad(one + l4, n - l4) + pseudo_sum(pkt, v6) + PROTO_TCP + n - l4));
        return append(out, b) < 0 ? -1 : 1;
    }
    if ((v6 ? hl - 40 + mss : hl + mss) > 0xFFFF)     /* a segment's length field would overflow */
        return 0;
    tso_t t = {pkt, n, l4, hl, mss, plen, (plen + mss - 1) / mss, v6, NULL};
    PyObject **objs = PyMem_Calloc(t.nseg, sizeof(PyObject *));
    t.seg = PyMem_Calloc(t.nseg, sizeof(uint8_t *));
    Py_ssize_t i = 0;
    if (!objs || !t.seg) {
        PyErr_NoMemory();
        goto fail;
    }
    for (; i < t.nseg; i++) {
        objs[i] = new_bytes(hl + (i < t.nseg - 1 ? mss : plen - i * mss), &t.seg[i]);
        if (!objs[i])
            goto fail;
    }
    BYTE_WORK(n, cut(&t));
    PyMem_Free(t.seg);
    Py_ssize_t nseg = t.nseg;
    int rc = append_all(out, objs, nseg);
    PyMem_Free(objs);
    return rc < 0 ? -1 : nseg;
fail:
    while (objs && i-- > 0)
        Py_DECREF(objs[i]);
    PyMem_Free(objs);
    PyMem_Free(t.seg);
    return -1;
}

static PyObject *split(PyObject *self, PyObject *const *args, Py_ssize_t nargs)
{
    Py_buffer b;
    if (nargs != 2)
        return PyErr_Format(PyExc_TypeError, "split(buf, out) takes 2 arguments (%zd given)", nargs);
    if (PyObject_GetBuffer(args[0], &b, PyBUF_SIMPLE) < 0)
        return NULL;
    PyObject *out = args[1];
    const uint8_t *p = b.buf;
    Py_ssize_t n = b.len, got = 0;
    if (n < VNET_HDR_LEN)
        goto done;
    unsigned flags = p[0], gso_type = p[1] & ~GSO_ECN, gso_size = rd16le(p + 4);
    Py_ssize_t csum_start = rd16le(p + 6), csum_offset = rd16le(p + 8);
    const uint8_t *pkt = p + VNET_HDR_LEN;
    Py_ssize_t len = n - VNET_HDR_LEN;
    if (gso_type == GSO_NONE) {
        if ((flags & F_NEEDS_CSUM) && csum_start + csum_offset + 2 > len)
            goto done;
        uint8_t *data;
        PyObject *o = new_bytes(len, &data);
        if (!o) {
            got = -1;
            goto done;
        }
        memcpy(data, pkt, len);
        if (flags & F_NEEDS_CSUM)       /* the field holds the pseudo-header sum: fold in [csum_start, end) */
            wr16(data + csum_start + csum_offset, fin(sum_pad(data + csum_start, len - csum_start)));
        got = append(out, o) < 0 ? -1 : 1;
    } else if ((gso_type == GSO_TCPV4 || gso_type == GSO_TCPV6) && gso_size) {
        got = split_tcp(pkt, len, gso_type == GSO_TCPV6, gso_size, csum_start, out);
    }
done:
    PyBuffer_Release(&b);
    return got < 0 ? NULL : PyLong_FromSsize_t(got);
}

/* ---- coalesce --------------------------------------------------------------------------------------------- */

typedef struct {
    const uint8_t *p;
    Py_ssize_t n;
    Py_ssize_t run;     /* the run this packet starts, or -1 (written as it came) */
    Py_ssize_t next;    /* the next packet of its run, or -1 */
} pk_t;

typedef struct {        /* a run of in-order segments of one flow, started by packet `first` */
    Py_ssize_t first, tail, mss, total, lastlen, hl, npieces;
    uint32_t nextseq;
    int v6, psh;
} run_t;

typedef struct {        /* flow table slot: the key is the addresses and ports of packet pk; run -1: none (popped) */
    Py_ssize_t pk, run;
} slot_t;

typedef struct {
    slot_t *slots;
    size_t mask;
} flows_t;

static slot_t *flow_slot(flows_t *ft, const pk_t *pks, const uint8_t *key, size_t klen, size_t koff)
{
    uint64_t h = 1469598103934665603ULL;        /* FNV-1a */
    for (size_t i = 0; i < klen; i++)
        h = (h ^ key[i]) * 1099511628211ULL;
    for (size_t i = h & ft->mask;; i = (i + 1) & ft->mask) {
        slot_t *s = &ft->slots[i];
        if (s->pk < 0)
            return s;
        const pk_t *o = &pks[s->pk];
        size_t okoff = (o->p[0] >> 4) == 6 ? 8 : 12;
        if (okoff == koff && !memcmp(o->p + okoff, key, klen))
            return s;
    }
}

typedef struct {
    pk_t *pks;
    run_t *runs;
    Py_ssize_t *items;  /* packet indices in output order */
    uint8_t **data;     /* the output buffers, one per item */
    Py_ssize_t nitems;
} writes_t;

/* Can packet q (a TCP segment of r's flow: l4, hl, plen, seq checked) join run r? As coalesce_py decides. */
static int joins(const run_t *r, const pk_t *pks, const pk_t *q, Py_ssize_t l4, Py_ssize_t hl, Py_ssize_t plen,
                 uint32_t seq)
{
    const uint8_t *p = q->p, *f = pks[r->first].p;
    if (seq != r->nextseq || plen > r->mss || r->lastlen != r->mss || r->psh || hl != r->hl
        || r->total + plen + hl > MAX_GSO_BYTES)
        return 0;
    if (l4 == 20 ? p[1] != f[1] || p[6] != f[6] || p[8] != f[8]
                 : p[1] != f[1] || p[2] != f[2] || p[3] != f[3] || p[7] != f[7])
        return 0;
    return !memcmp(p + l4 + 8, f + l4 + 8, 5) && !memcmp(p + l4 + 14, f + l4 + 14, 2)
           && !memcmp(p + l4 + 18, f + l4 + 18, hl - l4 - 18);
}

/* Sort the packets into runs and list the writes in order (w->items): every packet outside a run, and each run
   where its first packet was. With the GIL held: it only reads bytes of held buffers. */
static void group(writes_t *w, Py_ssize_t npk, flows_t *ft)
{
    pk_t *pks = w->pks;
    run_t *runs = w->runs;
    Py_ssize_t nruns = 0;
    for (Py_ssize_t k = 0; k < npk; k++) {
        pk_t *q = &pks[k];
        const uint8_t *p = q->p;
        Py_ssize_t n = q->n, l4, koff, klen;
        q->run = q->next = -1;
        w->items[w->nitems++] = k;                      /* taken back below if it joins a run */
        if (n > 0 && p[0] == 0x45) {
            if (n < 40 || p[9] != PROTO_TCP || (p[6] & 0x3F) || p[7])
                continue;                               /* not TCP, or a fragment */
            l4 = 20, koff = 12, klen = 12;
        } else if (n > 0 && p[0] >> 4 == 6) {
            if (n < 60 || p[6] != PROTO_TCP)
                continue;
            l4 = 40, koff = 8, klen = 36;
        } else {
            continue;
        }
        Py_ssize_t hl = l4 + ((p[l4 + 12] >> 4) << 2), plen = n - hl;
        unsigned tflags = p[l4 + 13];
        slot_t *s = flow_slot(ft, pks, p + koff, klen, koff);
        if (plen <= 0 || hl < l4 + 20 || (tflags & ~COALESCE_OK_FLAGS)) {
            if (s->pk >= 0)
                s->run = -1;                            /* nothing may join a run across this one */
            continue;
        }
        uint32_t seq = rd32(p + l4 + 4);
        if (s->pk >= 0 && s->run >= 0) {
            run_t *r = &runs[s->run];
            if (joins(r, pks, q, l4, hl, plen, seq)) {
                pks[r->tail].next = k;
                r->tail = k;
                r->nextseq = seq + (uint32_t)plen;
                r->total += plen;
                r->lastlen = plen;
                r->npieces++;
                r->psh |= (tflags & TCP_PSH) != 0;
                w->nitems--;
                continue;
            }
        }
        run_t *r = &runs[nruns];
        *r = (run_t){k, k, plen, plen, plen, hl, 1, seq + (uint32_t)plen, l4 == 40, (tflags & TCP_PSH) != 0};
        if (s->pk < 0)
            s->pk = k;
        s->run = nruns;
        q->run = nruns++;
    }
}

static void build_super(uint8_t *o, const run_t *r, const pk_t *pks)
{
    Py_ssize_t hl = r->hl, l4 = r->v6 ? 40 : 20, tcp_len = hl - l4 + r->total;
    uint8_t *hdr = o + VNET_HDR_LEN;
    o[0] = F_NEEDS_CSUM;
    o[1] = r->v6 ? GSO_TCPV6 : GSO_TCPV4;
    wr16le(o + 2, (unsigned)hl);
    wr16le(o + 4, (unsigned)r->mss);
    wr16le(o + 6, (unsigned)l4);
    wr16le(o + 8, 16);
    memcpy(hdr, pks[r->first].p, hl);
    if (r->psh)
        hdr[l4 + 13] |= TCP_PSH;            /* the PSH of the run's last segment */
    if (r->v6) {
        wr16(hdr + 4, (unsigned)tcp_len);
    } else {
        wr16(hdr + 2, (unsigned)(hl + r->total));
        hdr[10] = hdr[11] = 0;
        wr16(hdr + 10, fin(sum_pad(hdr, 20)));
    }
    /* CHECKSUM_PARTIAL: the field holds the (uncomplemented) pseudo-header sum, the kernel folds in the rest */
    wr16(hdr + l4 + 16, (unsigned)((pseudo_sum(hdr, r->v6) + PROTO_TCP + tcp_len) % 0xFFFF));
    uint8_t *at = hdr + hl;
    for (Py_ssize_t k = r->first; k >= 0; k = pks[k].next) {
        memcpy(at, pks[k].p + hl, pks[k].n - hl);
        at += pks[k].n - hl;
    }
}

static void fill(const writes_t *w)
{
    for (Py_ssize_t i = 0; i < w->nitems; i++) {
        const pk_t *q = &w->pks[w->items[i]];
        if (q->run >= 0 && w->runs[q->run].npieces > 1) {
            build_super(w->data[i], &w->runs[q->run], w->pks);
        } else {
            memset(w->data[i], 0, VNET_HDR_LEN);
            memcpy(w->data[i] + VNET_HDR_LEN, q->p, q->n);
        }
    }
}

static PyObject *coalesce(PyObject *self, PyObject *const *args, Py_ssize_t nargs)
{
    if (nargs != 2)
        return PyErr_Format(PyExc_TypeError, "coalesce(packets, out) takes 2 arguments (%zd given)", nargs);
    PyObject *seq = PySequence_Fast(args[0], "coalesce: packets must be a sequence"), *out = args[1];
    if (!seq)
        return NULL;
    Py_ssize_t npk = PySequence_Fast_GET_SIZE(seq), cap = npk ? npk : 1, nbuf = 0, nobj = 0, total = 0;
    PyObject **items_o = PySequence_Fast_ITEMS(seq), *result = NULL;
    PyObject **objs = PyMem_Calloc(cap, sizeof(PyObject *));
    Py_buffer *bufs = PyMem_Calloc(cap, sizeof(Py_buffer));
    writes_t w = {PyMem_Calloc(cap, sizeof(pk_t)), PyMem_Calloc(cap, sizeof(run_t)),
                  PyMem_Calloc(cap, sizeof(Py_ssize_t)), PyMem_Calloc(cap, sizeof(uint8_t *)), 0};
    flows_t ft = {NULL, 15};            /* at least twice as many slots as packets: a probe always ends */
    while (ft.mask < (size_t)npk * 2)
        ft.mask = ft.mask * 2 + 1;
    ft.slots = PyMem_Malloc((ft.mask + 1) * sizeof(slot_t));
    if (!bufs || !w.pks || !w.runs || !w.items || !w.data || !ft.slots || !objs) {
        PyErr_NoMemory();
        goto done;
    }
    for (; nbuf < npk; nbuf++) {
        if (PyObject_GetBuffer(items_o[nbuf], &bufs[nbuf], PyBUF_SIMPLE) < 0)
            goto done;
        w.pks[nbuf].p = bufs[nbuf].buf;
        w.pks[nbuf].n = bufs[nbuf].len;
    }
    for (size_t i = 0; i <= ft.mask; i++)
        ft.slots[i] = (slot_t){-1, -1};
    group(&w, npk, &ft);
    for (; nobj < w.nitems; nobj++) {
        const pk_t *q = &w.pks[w.items[nobj]];
        const run_t *r = q->run >= 0 ? &w.runs[q->run] : NULL;
        Py_ssize_t size = VNET_HDR_LEN + (r && r->npieces > 1 ? r->hl + r->total : q->n);
        if (!(objs[nobj] = new_bytes(size, &w.data[nobj])))
            goto done;
        total += size;
    }
    BYTE_WORK(total, fill(&w));
    nobj = 0;
    if (append_all(out, objs, w.nitems) == 0) {
        Py_INCREF(Py_None);
        result = Py_None;
    }
done:
    while (nobj-- > 0)
        Py_DECREF(objs[nobj]);
    while (nbuf-- > 0)
        PyBuffer_Release(&bufs[nbuf]);
    PyMem_Free(objs);
    PyMem_Free(ft.slots);
    PyMem_Free(w.data);
    PyMem_Free(w.items);
    PyMem_Free(w.runs);
    PyMem_Free(w.pks);
    PyMem_Free(bufs);
    Py_DECREF(seq);
    return result;
}


/* gso_run(out, start, max_segments, max_bytes) -> (stop, size, data) or None: io/batch.py's UDP GSO run. `out` is a list
   of (datagram, endpoint) pairs; the run starts at `start` (< len(out)) and takes the datagrams after it while
   they go to an equal endpoint, are no longer than the first (`size`: a shorter one ends the run), keep the
   total within max_bytes and the count within max_segments. `data` is the first datagram itself for a run of
   one, else the run's datagrams joined into one new bytes object (one sendmsg with UDP_SEGMENT = size).
   None when out[start] is not a (bytes, endpoint) tuple (gso_run_py takes any bytes-like). */
static PyObject *gso_run(PyObject *mod, PyObject *const *args, Py_ssize_t nargs)
{
    if (nargs != 4 || !PyList_Check(args[0]))
        return PyErr_Format(PyExc_TypeError, "gso_run(out: list, start, max_segments, max_bytes)");
    PyObject *out = args[0];
    Py_ssize_t start = PyLong_AsSsize_t(args[1]);
    Py_ssize_t max_seg = PyLong_AsSsize_t(args[2]);
    Py_ssize_t max_bytes = PyLong_AsSsize_t(args[3]);
    if (PyErr_Occurred()) return NULL;
    Py_ssize_t n = PyList_GET_SIZE(out);
    if (start < 0 || start >= n || max_seg < 1)
        return PyErr_Format(PyExc_ValueError, "gso_run: start %zd out of range (%zd items) or no segments", start, n);
    PyObject *first = PyList_GET_ITEM(out, start);
    if (!PyTuple_Check(first) || PyTuple_GET_SIZE(first) < 2 || !PyBytes_Check(PyTuple_GET_ITEM(first, 0)))
        Py_RETURN_NONE;                     /* not a (bytes, endpoint) pair: the caller's Python loop decides */
    PyObject *ep = PyTuple_GET_ITEM(first, 1);
    Py_ssize_t size = PyBytes_GET_SIZE(PyTuple_GET_ITEM(first, 0)), total = size, j = start + 1;
    Py_ssize_t limit = n - start > max_seg ? start + max_seg : n;
    while (j < limit) {
        PyObject *it = PyList_GET_ITEM(out, j);
        if (!PyTuple_Check(it) || PyTuple_GET_SIZE(it) < 2 || !PyBytes_Check(PyTuple_GET_ITEM(it, 0)))
            break;                          /* not ours to judge: the Python loop sends it on its own */
        Py_ssize_t l2 = PyBytes_GET_SIZE(PyTuple_GET_ITEM(it, 0));
        if (l2 > size || total + l2 > max_bytes) break;
        PyObject *e2 = PyTuple_GET_ITEM(it, 1);
        if (e2 != ep) {
            int eq = PyObject_RichCompareBool(e2, ep, Py_EQ);
            if (eq < 0) return NULL;
            if (!eq) break;
        }
        total += l2;
        j++;
        if (l2 < size) break;               /* a shorter datagram can only end a run */
    }
    PyObject *data;
    if (j - start == 1) {
        data = PyTuple_GET_ITEM(first, 0);
        Py_INCREF(data);
    } else {
        data = PyBytes_FromStringAndSize(NULL, total);
        if (!data) return NULL;
        char *w = PyBytes_AS_STRING(data);
        for (Py_ssize_t k = start; k < j; k++) {      /* sizes read above; bytes objects cannot change */
            PyObject *d = PyTuple_GET_ITEM(PyList_GET_ITEM(out, k), 0);
            memcpy(w, PyBytes_AS_STRING(d), PyBytes_GET_SIZE(d));
            w += PyBytes_GET_SIZE(d);
        }
    }
    return Py_BuildValue("nnN", j, size, data);
}

/* gro_split(data, seg, src, out) -> int: io/batch.py's UDP GRO read cut back into its datagrams: (data[off:off +
   seg], src) appended to the list `out` for off = 0, seg, ... (the last may be shorter); returns how many. */
static PyObject *gro_split(PyObject *mod, PyObject *const *args, Py_ssize_t nargs)
{
    if (nargs != 4 || !PyBytes_Check(args[0]) || !PyList_Check(args[3]))
        return PyErr_Format(PyExc_TypeError, "gro_split(data: bytes, seg: int, src, out: list)");
    Py_ssize_t seg = PyLong_AsSsize_t(args[1]);
    if (seg == -1 && PyErr_Occurred()) return NULL;
    if (seg < 1) return PyErr_Format(PyExc_ValueError, "gro_split: segment size %zd", seg);
    const char *p = PyBytes_AS_STRING(args[0]);
    Py_ssize_t n = PyBytes_GET_SIZE(args[0]), count = 0;
    for (Py_ssize_t off = 0; off < n; off += seg, count++) {
        Py_ssize_t len = n - off < seg ? n - off : seg;
        PyObject *d = PyBytes_FromStringAndSize(p + off, len);
        if (!d) return NULL;
        PyObject *t = PyTuple_Pack(2, d, args[2]);
        Py_DECREF(d);
        if (!t) return NULL;
        int rc = PyList_Append(args[3], t);
        Py_DECREF(t);
        if (rc < 0) return NULL;
    }
    return PyLong_FromSsize_t(count);
}

static PyMethodDef methods[] = {
    {"split", (PyCFunction)(void (*)(void))split, METH_FASTCALL,
     "split(buf, out) -> int\n\nAppend the IP packets (bytes) of one TUN read (virtio_net_hdr + packet) to out; "
     "return how many, 0 for a dropped read. Identical to wgpy.io.offload.split_py."},
    {"coalesce", (PyCFunction)(void (*)(void))coalesce, METH_FASTCALL,
     "coalesce(packets, out) -> None\n\nAppend TUN write buffers (bytes: virtio_net_hdr + packet) for packets to "
     "out, in-order TCP runs merged into GSO super-packets. Identical to wgpy.io.offload.coalesce_py."},
    {"gso_run", (PyCFunction)(void (*)(void))gso_run, METH_FASTCALL,
     "gso_run(out, start, max_segments, max_bytes) -> (stop, size, data)\n\nThe UDP GSO run of (datagram, "
     "endpoint) pairs at out[start] and its datagrams joined. Identical to wgpy.io.batch.gso_run_py."},
    {"gro_split", (PyCFunction)(void (*)(void))gro_split, METH_FASTCALL,
     "gro_split(data, seg, src, out) -> int\n\n(data[off:off + seg], src) appended to out for every segment of "
     "a UDP GRO read. Identical to wgpy.io.batch.gro_split_py."},
    {NULL, NULL, 0, NULL},
};

static struct PyModuleDef module = {
    PyModuleDef_HEAD_INIT, .m_name = "wgpy._offload", .m_size = -1, .m_methods = methods,
    .m_doc = "TUN offloads (TSO split, TCP coalescing) of wgpy.io.offload in C.",
};

PyMODINIT_FUNC PyInit__offload(void) { return PyModule_Create(&module); }
