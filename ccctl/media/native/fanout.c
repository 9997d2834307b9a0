/*
 * ccctl.media.native._fanout: the batched native send of the tight fan-out path.
 *
 * One call per packetised unit (send_unit) writes, for every subscriber of a feed, the RTP
 * header (its SSRC, its own sequence counter, the program timestamp plus its offset, its
 * payload type and the marker on the last packet) and its constant extension block (the
 * `mid`), protects it with SRTP from libsrtp (no crypto of ours) and sends the packets with
 * sendmmsg, consecutive packets on one socket in one system call (on the shared UDP port,
 * ccctl/media/udpmux.py, the packets of many subscribers), a subscriber's consecutive packets of
 * one size as one UDP GSO message. The GIL is released from the first header to the last send.
 *
 * Which libsrtp: the one pylibsrtp bundles (libsrtp 2 on OpenSSL, AES-NI), the very library the
 * Python path and aiortc use, called through the function address its cffi module exposes
 * (its type checked at import), on an srtp_t of a pylibsrtp Session made for this stream.
 * Debian's libsrtp2 (built on NSS, a new PKCS#11 context per packet) protected at 70k packets/s
 * per core here, slower than the Python path itself; this one needs no headers to build either.
 *
 * Everything Python hands in is checked with the GIL held before anything is written: types,
 * lengths, counts. A packet never exceeds its slot: header + extension + payload + libsrtp's
 * largest trailer fit in SLOT bytes, or the call raises ValueError before sending anything.
 *
 * Sequence numbers: a packet that was protected but could not be sent (the socket was full)
 * still uses up its sequence number, so an SRTP index is never protected twice (libsrtp is
 * told to refuse it: allow_repeat_tx = 0). The receiver sees those packets as lost, which they
 * are; a video subscriber then waits for the next keyframe (need_keyframe).
 */
#define PY_SSIZE_T_CLEAN
#include <Python.h>
#include <structmember.h>

#include <arpa/inet.h>
#include <errno.h>
#include <netinet/in.h>
#include <stdint.h>
#include <string.h>
#include <sys/socket.h>
#include <sys/un.h>

/* The part of libsrtp 2's API used here (its type is checked against pylibsrtp's at import). */
typedef struct srtp_ctx_t_ *srtp_t;
typedef int (*srtp_protect_fn)(srtp_t, void *, int *);
#define SRTP_OK 0
#define SRTP_MAX_TRAILER_LEN 144  /* SRTP_MAX_TAG_LEN 16 + SRTP_MAX_MKI_LEN 128 */
#define PROTECT_TYPE "<ctype 'srtp_err_status_t(*)(struct srtp_ctx_t_ *, void *, int *)'>"

static srtp_protect_fn srtp_protect;  /* pylibsrtp's own libsrtp */
static PyObject *session_type;         /* pylibsrtp.Session */
static PyObject *srtp_ffi;             /* pylibsrtp._binding.ffi */

#define SLOT 2048                 /* bytes per packet slot: header + payload + SRTP trailer */
#define BATCH 64                  /* packets protected before one round of sendmmsg */
#define GSO_MAX_SEGS 32           /* packets per GSO message (the kernel takes 64 or more) */
#define GSO_MAX_BYTES 60000       /* bytes per GSO message (one UDP datagram's limit, less headers) */
#ifndef SOL_UDP
#define SOL_UDP 17
#endif
#ifndef UDP_SEGMENT
#define UDP_SEGMENT 103           /* linux/udp.h */
#endif
#define MAX_EXT 256               /* the constant extension block (ours is 8-12 bytes) */
#define MAX_PAYLOADS 4096         /* packets per unit (a 720p keyframe is ~100) */
#define MAX_PACKET (SLOT - SRTP_MAX_TRAILER_LEN)

enum { ST_OK = 0, ST_BEHIND = 1, ST_DEAD = 2, ST_SRTP = 3 };

typedef struct {
    PyObject_HEAD
    srtp_t ctx;                   /* owned by session, which this holds */
    PyObject *session;            /* a pylibsrtp.Session made for this stream alone */
    PyObject *sock;               /* the ICE pair's socket object (its fd is read per call) */
    struct sockaddr_storage addr;
    socklen_t addrlen;
    uint8_t b0, pt;
    uint32_t ssrc, ts_offset;
    uint16_t seq;
    uint8_t ext[MAX_EXT];
    Py_ssize_t extlen;
    int video, busy, inet;        /* inet: a UDP destination (GSO); not a Unix socket's */
    char need_keyframe;           /* T_BOOL: a char */
    unsigned long long packets, octets, delivered, dropped;
    uint32_t last_ts;
    unsigned long long last_ntp;
    /* per call, with the GIL released */
    int fd, status, sent;
} Sender;

/* The srtp_t of a pylibsrtp Session (its cffi pointer's address), or NULL with an exception. */
static srtp_t
session_ctx(PyObject *session)
{
    if ((PyObject *)Py_TYPE(session) != session_type) {  /* exactly: a subclass could hand out any pointer */
        PyErr_SetString(PyExc_TypeError, "session must be a pylibsrtp.Session");
        return NULL;
    }
    PyObject *holder = PyObject_GetAttrString(session, "_srtp");
    PyObject *zero = holder ? PyLong_FromLong(0) : NULL;
    PyObject *ctx = zero ? PyObject_GetItem(holder, zero) : NULL;  /* cdata: the mapping protocol */
    PyObject *addr = ctx ? PyObject_CallMethod(srtp_ffi, "cast", "sO", "uintptr_t", ctx) : NULL;
    PyObject *value = addr ? PyNumber_Long(addr) : NULL;
    srtp_t out = NULL;
    if (value != NULL) {
        out = (srtp_t)PyLong_AsVoidPtr(value);
        if (out == NULL && !PyErr_Occurred())
            PyErr_SetString(PyExc_ValueError, "the session has no SRTP context");
    }
    Py_XDECREF(holder);
    Py_XDECREF(zero);
    Py_XDECREF(ctx);
    Py_XDECREF(addr);
    Py_XDECREF(value);
    return out;
}

static int
parse_addr(Sender *self, const char *host, int port)
{
    struct sockaddr_in *v4 = (struct sockaddr_in *)&self->addr;
    struct sockaddr_in6 *v6 = (struct sockaddr_in6 *)&self->addr;
    if (port < 0 || port > 65535) {
        PyErr_SetString(PyExc_ValueError, "port out of range");
        return -1;
    }
    memset(&self->addr, 0, sizeof(self->addr));
    if (host[0] == '/' && port == 0) {  /* a Unix datagram socket (tests: a socket that fills up) */
        struct sockaddr_un *un = (struct sockaddr_un *)&self->addr;
        size_t n = strlen(host);
        if (n >= sizeof(un->sun_path)) {
            PyErr_SetString(PyExc_ValueError, "Unix socket path too long");
            return -1;
        }
        un->sun_family = AF_UNIX;
        memcpy(un->sun_path, host, n + 1);
        self->addrlen = (socklen_t)(offsetof(struct sockaddr_un, sun_path) + n + 1);
        self->inet = 0;  /* GSO is UDP's: a Unix socket would take the run as one datagram */
        return 0;
    }
    if (inet_pton(AF_INET, host, &v4->sin_addr) == 1) {
        v4->sin_family = AF_INET;
        v4->sin_port = htons((uint16_t)port);
        self->addrlen = sizeof(*v4);
        self->inet = 1;
        return 0;
    }
    if (inet_pton(AF_INET6, host, &v6->sin6_addr) == 1) {
        v6->sin6_family = AF_INET6;
        v6->sin6_port = htons((uint16_t)port);
        self->addrlen = sizeof(*v6);
        self->inet = 1;
        return 0;
    }
    PyErr_Format(PyExc_ValueError, "not a numeric IP address: %.100s", host);
    return -1;
}

/* A Python int in [0, max], or -1 with an exception set. */
static long long
bounded(PyObject *o, unsigned long max, const char *name)
{
    unsigned long v = PyLong_AsUnsignedLong(o);  /* TypeError, or OverflowError if negative or too big */
    if (v == (unsigned long)-1 && PyErr_Occurred())
        return -1;
    if (v > max) {
        PyErr_Format(PyExc_ValueError, "%s out of range", name);
        return -1;
    }
    return (long long)v;
}

static int
Sender_init(Sender *self, PyObject *args, PyObject *kwds)
{
    static char *kwlist[] = {"sock", "host", "port", "session", "ssrc", "payload_type", "b0",
                             "extension", "seq", "ts_offset", "video", NULL};
    PyObject *sock, *session;
    const char *host;
    int port, pt, b0, video;
    Py_buffer ext;
    PyObject *ssrc_o, *seq_o, *ts_offset_o;
    long long ssrc, seq, ts_offset;
    srtp_t ctx;

    if (self->ctx != NULL || self->busy) {
        PyErr_SetString(PyExc_RuntimeError, "Sender is already initialised");
        return -1;
    }
    if (!PyArg_ParseTupleAndKeywords(args, kwds, "OsiOOiiy*OOp", kwlist, &sock, &host, &port, &session,
                                     &ssrc_o, &pt, &b0, &ext, &seq_o, &ts_offset_o, &video))
        return -1;
    int rc = -1;
    if ((ssrc = bounded(ssrc_o, 0xFFFFFFFFUL, "ssrc")) < 0 || (seq = bounded(seq_o, 0xFFFFUL, "seq")) < 0 ||
        (ts_offset = bounded(ts_offset_o, 0xFFFFFFFFUL, "ts_offset")) < 0)
        goto done;
    if (pt < 0 || pt > 127 || b0 < 0 || b0 > 255) {
        PyErr_SetString(PyExc_ValueError, "payload_type or b0 out of range");
        goto done;
    }
    if ((b0 & 0xC0) != 0x80 || (b0 & 0x0F) != 0) {
        PyErr_SetString(PyExc_ValueError, "b0 must be RTP version 2 with no CSRC");
        goto done;
    }
    if (ext.len > MAX_EXT || ext.len % 4 != 0 || (ext.len > 0) != ((b0 & 0x10) != 0)) {
        PyErr_SetString(PyExc_ValueError, "extension block: a multiple of 4 bytes, at most 256, present iff X is set");
        goto done;
    }
    if (parse_addr(self, host, port) < 0)
        goto done;
    if ((ctx = session_ctx(session)) == NULL)
        goto done;
    self->ctx = ctx;
    Py_INCREF(session);
    Py_XSETREF(self->session, session);
    Py_INCREF(sock);
    Py_XSETREF(self->sock, sock);
    self->b0 = (uint8_t)b0;
    self->pt = (uint8_t)pt;
    self->ssrc = (uint32_t)ssrc;
    self->seq = (uint16_t)seq;
    self->ts_offset = (uint32_t)ts_offset;
    memcpy(self->ext, ext.buf, (size_t)ext.len);
    self->extlen = ext.len;
    self->video = video;
    self->need_keyframe = (char)(video != 0);
    rc = 0;
done:
    PyBuffer_Release(&ext);
    return rc;
}

static void
Sender_dealloc(Sender *self)
{
    Py_XDECREF(self->session);  /* pylibsrtp frees the srtp_t with it */
    Py_XDECREF(self->sock);
    Py_TYPE(self)->tp_free((PyObject *)self);
}

static PyMemberDef Sender_members[] = {
    {"seq", T_USHORT, offsetof(Sender, seq), READONLY, "the next RTP sequence number"},
    {"ssrc", T_UINT, offsetof(Sender, ssrc), READONLY, "the stream's SSRC"},
    {"packets", T_ULONGLONG, offsetof(Sender, packets), READONLY, "RTP packets sent"},
    {"octets", T_ULONGLONG, offsetof(Sender, octets), READONLY, "payload bytes of the units sent"},
    {"delivered", T_ULONGLONG, offsetof(Sender, delivered), READONLY, "units of which a packet was sent"},
    {"dropped", T_ULONGLONG, offsetof(Sender, dropped), READONLY, "units skipped or cut short"},
    {"last_ts", T_UINT, offsetof(Sender, last_ts), READONLY, "RTP timestamp of the last unit sent"},
    {"last_ntp", T_ULONGLONG, offsetof(Sender, last_ntp), READONLY, "NTP time of the last unit sent"},
    {"need_keyframe", T_BOOL, offsetof(Sender, need_keyframe), 0, "skip units until a keyframe"},
    {NULL}
};

static PyTypeObject SenderType = {
    PyVarObject_HEAD_INIT(NULL, 0)
    .tp_name = "ccctl.media.native._fanout.Sender",
    .tp_doc = PyDoc_STR("One subscriber stream: its SRTP context, socket, address and RTP header state."),
    .tp_basicsize = sizeof(Sender),
    .tp_flags = Py_TPFLAGS_DEFAULT,
    .tp_new = PyType_GenericNew,
    .tp_init = (initproc)Sender_init,
    .tp_dealloc = (destructor)Sender_dealloc,
    .tp_members = Sender_members,
};

static __thread unsigned char *arena = NULL;  /* BATCH slots per thread, allocated once */

/* UDP GSO (Linux 4.18+): one message of several equal-size packets to one subscriber, cut into
 * datagrams by the kernel (or the NIC) after the stack is walked once. On until the kernel
 * refuses a GSO message once (then off for the process, that message resent packet by packet),
 * or until set_gso(False). */
static int gso_on = 1;
static unsigned long long gso_messages, gso_packets;  /* messages sent with UDP_SEGMENT, their packets */

static void
fail(Sender *s, int err)
{
    if (s->status != ST_OK)
        return;
    if (err == EAGAIN || err == EWOULDBLOCK || err == ENOBUFS) {
        s->status = ST_BEHIND;
        s->dropped++;
        if (s->video)
            s->need_keyframe = 1;
    } else {
        s->status = ST_DEAD;
    }
}

/* The packets of one subscriber from who[k] on that can go as one GSO message: equal sizes, a
 * shorter one only last (the kernel's rule), within GSO_MAX_SEGS and GSO_MAX_BYTES. */
static int
gso_run(Sender **who, struct iovec *iov, int k, int end)
{
    Sender *s = who[k];
    if (!gso_on || !s->inet)
        return 1;
    size_t size = iov[k].iov_len, total = size;
    int run = 1;
    while (k + run < end && who[k + run] == s && run < GSO_MAX_SEGS && iov[k + run].iov_len <= size &&
           total + iov[k + run].iov_len <= GSO_MAX_BYTES) {
        total += iov[k + run].iov_len;
        run++;
        if (iov[k + run - 1].iov_len < size)
            break;
    }
    return run;
}

/* Send the pending packets (who[i] sends iov[i]): each run of packets on one socket in sendmmsg
 * calls, a subscriber's consecutive packets of one size as one GSO message. */
static void
flush(Sender **who, struct iovec *iov, int count)
{
    struct mmsghdr msgs[BATCH];
    Sender *owner[BATCH];          /* the subscriber of msgs[n] */
    int first[BATCH], segs[BATCH]; /* its first packet and how many it carries */
    union {
        char buf[CMSG_SPACE(sizeof(uint16_t))];
        struct cmsghdr align;
    } ctl[BATCH];
    int i = 0;
    while (i < count) {
        int fd = who[i]->fd, end = i;
        while (end < count && who[end]->fd == fd)
            end++;
        int n = 0;
        for (int k = i; k < end;) {
            Sender *s = who[k];
            if (s->status != ST_OK) {
                k++;
                continue;  /* this subscriber failed earlier in the unit */
            }
            int run = gso_run(who, iov, k, end);
            memset(&msgs[n], 0, sizeof(msgs[n]));
            msgs[n].msg_hdr.msg_name = &s->addr;
            msgs[n].msg_hdr.msg_namelen = s->addrlen;
            msgs[n].msg_hdr.msg_iov = &iov[k];
            msgs[n].msg_hdr.msg_iovlen = (size_t)run;
            if (run > 1) {
                memset(&ctl[n], 0, sizeof(ctl[n]));
                msgs[n].msg_hdr.msg_control = ctl[n].buf;
                msgs[n].msg_hdr.msg_controllen = sizeof(ctl[n].buf);
                struct cmsghdr *cm = CMSG_FIRSTHDR(&msgs[n].msg_hdr);
                cm->cmsg_level = SOL_UDP;
                cm->cmsg_type = UDP_SEGMENT;
                cm->cmsg_len = CMSG_LEN(sizeof(uint16_t));
                uint16_t size = (uint16_t)iov[k].iov_len;
                memcpy(CMSG_DATA(cm), &size, sizeof(size));
            }
            owner[n] = s;
            first[n] = k;
            segs[n] = run;
            n++;
            k += run;
        }
        int at = 0;
        while (at < n) {
            int r = sendmmsg(fd, msgs + at, (unsigned int)(n - at), MSG_DONTWAIT);
            if (r < 0) {
                int err = errno;
                if (err == EINTR)
                    continue;
                if (segs[at] > 1 && (err == EINVAL || err == EIO || err == EOPNOTSUPP || err == ENOPROTOOPT)) {
                    gso_on = 0;  /* this kernel or device takes no GSO: the rest packet by packet */
                    flush(who + first[at], iov + first[at], end - first[at]);
                    break;
                }
                Sender *bad = owner[at];
                fail(bad, err);
                at++;
                while (at < n && owner[at] == bad)
                    at++;  /* the rest of its packets are dropped with it */
                continue;
            }
            for (int k = at; k < at + r; k++) {
                owner[k]->sent += segs[k];
                if (segs[k] > 1) {
                    __atomic_fetch_add(&gso_messages, 1, __ATOMIC_RELAXED);
                    __atomic_fetch_add(&gso_packets, (unsigned long long)segs[k], __ATOMIC_RELAXED);
                }
            }
            at += r;
        }
        i = end;
    }
}

PyDoc_STRVAR(send_unit_doc,
"send_unit(senders, payloads, timestamp, ntp, keyframe) -> bytes | None\n\n"
"Send one packetised unit to every Sender of the tuple: RTP header, SRTP, sendmmsg.\n"
"Returns None when every subscriber got it (or skipped it waiting for a keyframe), else one\n"
"status byte per sender: 0 ok, 1 behind (socket full), 2 gone (socket closed or error),\n"
"3 SRTP failure. Raises TypeError/ValueError, before sending anything, on bad input.");

static PyObject *
send_unit(PyObject *module, PyObject *args)
{
    PyObject *senders, *payloads;
    unsigned long long timestamp, ntp;
    int keyframe;
    if (!PyArg_ParseTuple(args, "O!O!KKp", &PyTuple_Type, &senders, &PyTuple_Type, &payloads, &timestamp, &ntp,
                          &keyframe))
        return NULL;
    Py_ssize_t ns = PyTuple_GET_SIZE(senders), np = PyTuple_GET_SIZE(payloads);
    if (np > MAX_PAYLOADS) {
        PyErr_Format(PyExc_ValueError, "a unit of at most %d packets", MAX_PAYLOADS);
        return NULL;
    }
    if (ns == 0 || np == 0)
        Py_RETURN_NONE;
    const char **data = PyMem_Malloc(sizeof(char *) * (size_t)np);
    Py_ssize_t *lens = PyMem_Malloc(sizeof(Py_ssize_t) * (size_t)np);
    Sender **list = PyMem_Malloc(sizeof(Sender *) * (size_t)ns);
    PyObject *result = NULL;
    Py_ssize_t taken = 0, size = 0;
    if (data == NULL || lens == NULL || list == NULL) {
        PyErr_NoMemory();
        goto out;
    }
    if (arena == NULL && (arena = PyMem_RawMalloc((size_t)SLOT * BATCH)) == NULL) {
        PyErr_NoMemory();
        goto out;
    }
    Py_ssize_t maxpayload = 0;
    for (Py_ssize_t i = 0; i < np; i++) {
        PyObject *p = PyTuple_GET_ITEM(payloads, i);
        if (!PyBytes_Check(p)) {
            PyErr_SetString(PyExc_TypeError, "payloads must be a tuple of bytes");
            goto out;
        }
        data[i] = PyBytes_AS_STRING(p);
        lens[i] = PyBytes_GET_SIZE(p);
        size += lens[i];
        if (lens[i] > maxpayload)
            maxpayload = lens[i];
    }
    for (Py_ssize_t j = 0; j < ns; j++) {
        PyObject *o = PyTuple_GET_ITEM(senders, j);
        if (!PyObject_TypeCheck(o, &SenderType) || ((Sender *)o)->ctx == NULL) {
            PyErr_SetString(PyExc_TypeError, "senders must be a tuple of initialised Sender");
            goto out;
        }
        Sender *s = (Sender *)o;
        if (12 + s->extlen + maxpayload > MAX_PACKET) {
            PyErr_Format(PyExc_ValueError, "a payload of %zd bytes does not fit an SRTP packet of %d", maxpayload,
                         MAX_PACKET);
            goto out;
        }
        if (s->busy) {  /* in a send_unit of another thread, or twice in this tuple */
            PyErr_SetString(PyExc_ValueError, "a Sender is already being sent to");
            goto out;
        }
        int fd = PyObject_AsFileDescriptor(s->sock);
        if (fd < 0)
            PyErr_Clear();  /* closed: reported as gone below */
        s->busy = 1;
        Py_INCREF(s);
        list[taken++] = s;
        s->fd = fd;
        s->status = fd < 0 ? ST_DEAD : ST_OK;
        s->sent = 0;
    }

    Py_BEGIN_ALLOW_THREADS
    Sender *who[BATCH];
    struct iovec iov[BATCH];
    int count = 0;
    uint32_t ts32 = (uint32_t)timestamp;  /* the RTP clock wraps at 32 bits, as the Python path masks */
    for (Py_ssize_t j = 0; j < ns; j++) {
        Sender *s = list[j];
        if (s->status != ST_OK)
            continue;
        if (s->need_keyframe) {
            if (!keyframe) {
                s->dropped++;
                continue;
            }
            s->need_keyframe = 0;
        }
        uint32_t ts = ts32 + s->ts_offset;
        for (Py_ssize_t i = 0; i < np && s->status == ST_OK; i++) {
            if (count == BATCH) {
                flush(who, iov, count);
                count = 0;
                if (s->status != ST_OK)
                    break;
            }
            unsigned char *buf = arena + (size_t)count * SLOT;
            uint16_t seq = s->seq;
            buf[0] = s->b0;
            buf[1] = (uint8_t)(s->pt | (i == np - 1 ? 0x80 : 0));
            buf[2] = (uint8_t)(seq >> 8);
            buf[3] = (uint8_t)seq;
            buf[4] = (uint8_t)(ts >> 24);
            buf[5] = (uint8_t)(ts >> 16);
            buf[6] = (uint8_t)(ts >> 8);
            buf[7] = (uint8_t)ts;
            buf[8] = (uint8_t)(s->ssrc >> 24);
            buf[9] = (uint8_t)(s->ssrc >> 16);
            buf[10] = (uint8_t)(s->ssrc >> 8);
            buf[11] = (uint8_t)s->ssrc;
            memcpy(buf + 12, s->ext, (size_t)s->extlen);
            memcpy(buf + 12 + s->extlen, data[i], (size_t)lens[i]);
            int len = (int)(12 + s->extlen + lens[i]);
            if (srtp_protect(s->ctx, buf, &len) != SRTP_OK || len < 0 || len > SLOT) {
                s->status = ST_SRTP;
                break;
            }
            s->seq = (uint16_t)(seq + 1);  /* used up even if the send fails: never reused */
            who[count] = s;
            iov[count].iov_base = buf;
            iov[count].iov_len = (size_t)len;
            count++;
        }
    }
    if (count)
        flush(who, iov, count);
    for (Py_ssize_t j = 0; j < ns; j++) {
        Sender *s = list[j];
        if (s->sent) {
            s->packets += (unsigned long long)s->sent;
            s->octets += (unsigned long long)size;
            s->delivered++;
            s->last_ts = ts32 + s->ts_offset;
            s->last_ntp = ntp;
        }
    }
    Py_END_ALLOW_THREADS

    int bad = 0;
    for (Py_ssize_t j = 0; j < ns; j++)
        bad |= list[j]->status != ST_OK;
    if (!bad) {
        Py_INCREF(Py_None);
        result = Py_None;
    } else if ((result = PyBytes_FromStringAndSize(NULL, ns)) != NULL) {
        char *st = PyBytes_AS_STRING(result);
        for (Py_ssize_t j = 0; j < ns; j++)
            st[j] = (char)list[j]->status;
    }
out:
    for (Py_ssize_t j = 0; j < taken; j++) {
        list[j]->busy = 0;
        Py_DECREF(list[j]);
    }
    PyMem_Free(data);
    PyMem_Free(lens);
    PyMem_Free(list);
    return result;
}

static PyObject *
set_gso(PyObject *module, PyObject *arg)
{
    int on = PyObject_IsTrue(arg);
    if (on < 0)
        return NULL;
    int was = __atomic_exchange_n(&gso_on, on, __ATOMIC_RELAXED);
    return PyBool_FromLong(was);
}

static PyObject *
gso_stats(PyObject *module, PyObject *unused)
{
    return Py_BuildValue("(iKK)", __atomic_load_n(&gso_on, __ATOMIC_RELAXED),
                         __atomic_load_n(&gso_messages, __ATOMIC_RELAXED), __atomic_load_n(&gso_packets, __ATOMIC_RELAXED));
}

static PyMethodDef methods[] = {
    {"send_unit", send_unit, METH_VARARGS, send_unit_doc},
    {"set_gso", set_gso, METH_O, "set_gso(on) -> bool: send a subscriber's equal-size packets as one UDP GSO message (returns the previous setting)"},
    {"gso_stats", gso_stats, METH_NOARGS, "gso_stats() -> (on, messages, packets): whether GSO is used, and what it has sent"},
    {NULL, NULL, 0, NULL}
};

static struct PyModuleDef module = {
    PyModuleDef_HEAD_INIT, "_fanout", "Batched RTP header + SRTP (pylibsrtp's libsrtp) + sendmmsg fan-out.", -1, methods,
};

/* pylibsrtp's libsrtp: its srtp_protect (type checked) and its Session type. */
static int
bind_libsrtp(void)
{
    int rc = -1;
    PyObject *binding = PyImport_ImportModule("pylibsrtp._binding");
    PyObject *pylibsrtp = binding ? PyImport_ImportModule("pylibsrtp") : NULL;
    PyObject *lib = binding ? PyObject_GetAttrString(binding, "lib") : NULL;
    PyObject *ffi = binding ? PyObject_GetAttrString(binding, "ffi") : NULL;
    PyObject *fn = lib ? PyObject_GetAttrString(lib, "srtp_protect") : NULL;
    PyObject *type = (ffi && fn) ? PyObject_CallMethod(ffi, "typeof", "O", fn) : NULL;
    PyObject *text = type ? PyObject_Str(type) : NULL;
    PyObject *ptr = (text && ffi) ? PyObject_CallMethod(ffi, "addressof", "Os", lib, "srtp_protect") : NULL;
    PyObject *addr = ptr ? PyObject_CallMethod(ffi, "cast", "sO", "uintptr_t", ptr) : NULL;
    PyObject *value = addr ? PyNumber_Long(addr) : NULL;
    if (value == NULL || pylibsrtp == NULL)
        goto out;
    const char *got = PyUnicode_AsUTF8(text);
    if (got == NULL)
        goto out;
    if (strcmp(got, PROTECT_TYPE) != 0) {
        PyErr_Format(PyExc_ImportError, "pylibsrtp's srtp_protect is %s, not the libsrtp 2 call this was built for", got);
        goto out;
    }
    srtp_protect = (srtp_protect_fn)PyLong_AsVoidPtr(value);
    if (srtp_protect == NULL) {
        if (!PyErr_Occurred())
            PyErr_SetString(PyExc_ImportError, "no srtp_protect in pylibsrtp");
        goto out;
    }
    if ((session_type = PyObject_GetAttrString(pylibsrtp, "Session")) == NULL)
        goto out;
    Py_INCREF(ffi);
    srtp_ffi = ffi;
    rc = 0;
out:
    Py_XDECREF(binding);
    Py_XDECREF(pylibsrtp);
    Py_XDECREF(lib);
    Py_XDECREF(ffi);
    Py_XDECREF(fn);
    Py_XDECREF(type);
    Py_XDECREF(text);
    Py_XDECREF(ptr);
    Py_XDECREF(addr);
    Py_XDECREF(value);
    return rc;
}

PyMODINIT_FUNC
PyInit__fanout(void)
{
    if (srtp_protect == NULL && bind_libsrtp() < 0)
        return NULL;
    if (PyType_Ready(&SenderType) < 0)
        return NULL;
    PyObject *m = PyModule_Create(&module);
    if (m == NULL)
        return NULL;
    Py_INCREF(&SenderType);
    if (PyModule_AddObject(m, "Sender", (PyObject *)&SenderType) < 0 ||
        PyModule_AddIntConstant(m, "MAX_PACKET", MAX_PACKET) < 0) {
        Py_DECREF(&SenderType);
        Py_DECREF(m);
        return NULL;
    }
    return m;
}
