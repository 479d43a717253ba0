/* fastproxy.ratelimit._gcra: the shared-memory rate-limit table; one GCRA decision per call.
 *
 * Theory of operation
 * ===================
 *
 * GCRA
 * ----
 * A key's whole state is one number, its theoretical arrival time (TAT): nanoseconds on
 * CLOCK_MONOTONIC, which is system-wide, so every process compares the same clock. With T the
 * emission interval (per / rate) and the capacity C = (burst + 1) * T, a request of cost c at `now`
 * conforms iff
 *
 *     tat' = max(tat, now) + c * T      satisfies      tat' - now <= C,
 *
 * and only a conforming request stores tat'. A key never seen and a key whose TAT has passed are
 * the same thing, a full bucket (max(tat, now) == now). That is why a slot whose TAT has passed may
 * be handed to another key with nothing lost: forgetting a TAT <= now changes no later decision.
 * fastproxy/ratelimit/gcra.py is the reference of this arithmetic; the tests hold the two equal.
 *
 * Layout
 * ------
 * One anonymous MAP_SHARED mapping, made by the master before it forks (every worker inherits it):
 * a header of HEADER_BYTES (magic, version, slot count, probe window, reclaim grace, hash seed; then,
 * on a cache line of their own, the rare-path counters) and N slots of 16 bytes, 16-aligned:
 *
 *     tag  the key's SipHash-1-3 under the table's random 128-bit seed (0: never used; a hash that
 *          comes out 0 is stored as 1). Clients cannot aim collisions without the seed.
 *     tat  the key's TAT.
 *
 * A key may live in any of the W = min(WINDOW, N) slots from home = (hash * N) >> 64, wrapping.
 *
 * Why each slot changes by one 16-byte compare-and-swap
 * -----------------------------------------------------
 * The obvious design -- claim a slot with a CAS on `tag`, charge a key with a CAS on `tat` -- admits
 * too much. Process P reads slot {X, tat <= now} and means to reclaim it; the owner X's process
 * charges it (CAS on tat: X's TAT is live again), checks that the tag is still X and is admitted;
 * then P's CAS on the tag (still X) succeeds and hands X's live TAT to another key. X's next request
 * finds no slot and starts from a full bucket: X got a bucket too many. Claiming through the TAT
 * word first only moves the window (X charges on top of the new owner's TAT just before the new tag
 * lands, then loses the slot); a claim marker that others may clear when its claimer dies can also
 * be cleared under a claimer that is merely stalled, whose late write then lands in someone else's
 * slot. So here every write is one 16-byte CAS of the pair {tag, tat} (lock cmpxchg16b on x86-64;
 * casp or an ldaxp/stlxp loop on arm64), and a pair never takes the same value twice: every write
 * raises tat (a charge writes max(tat, now) + c * T > tat; a claim needs tat <= now and writes
 * now + c * T). So there is no ABA: a CAS that succeeds proves the slot did not change since it was
 * read. The two words are read with two 8-byte loads, tag first; a torn read can only make the CAS
 * fail (and the decision retry) or deny a request (a denial writes nothing).
 *
 * One decision (decide_slots)
 * ---------------------------
 *   1. now = the clock. Scan the window: `own` is the slot tagged with our hash that holds the
 *      highest TAT; `free` is the first slot either never used or tagged otherwise with a TAT that
 *      passed at least GRACE_NS ago.
 *   2. No own and no free slot: NO_SLOT, counted in the header, nothing written.
 *   3. GCRA on own's TAT (a free slot: on 0). Not conforming: LIMITED, nothing written -- unless the
 *      clock read now would make it conform (this process was preempted between its clock read
 *      and its scan while others charged the key): then go to 1. Another slot tagged with our hash
 *      that is still live (a duplicate, below): LIMITED, nothing written.
 *   4. CAS the chosen slot from the pair read to {hash, tat'}. If it fails, go to 1.
 *   5. Validate: scan the window again. Another slot tagged with our hash whose TAT is after `now`:
 *      LIMITED (our charge stays, which only errs towards denying). Then read the clock again; if
 *      GRACE_NS or more passed since `now`: LIMITED (the charge stays). Otherwise ALLOWED.
 *
 * Why admissions never exceed what one bucket allows
 * --------------------------------------------------
 * Take two admitted decisions of one key, A then B in the order of their CASes, A leaving TAT `a`
 * in slot s. B must have computed from a TAT >= a, or at a `now` >= a (A's charge already spent):
 *   - B wrote s: B's CAS came after A's, so B read s after A's write (pairs never repeat), and s's
 *     tat only grows. If B charged s, its base was >= a; if B claimed s from another key, that
 *     needed s's tat (>= a) + GRACE_NS <= B's now.
 *   - B wrote another slot: B's validation read s after B's CAS, so after A's. It found s
 *       tagged with our hash and live: B was denied, not admitted;
 *       tagged with our hash and tat <= B's now: a <= tat <= now, A's charge was spent;
 *       tagged otherwise: someone reclaimed s after A wrote it, which needed s's tat + GRACE_NS <=
 *       their clock, read before their CAS, before B's validation read, before B's second clock
 *       read. B took less than GRACE_NS, so a + GRACE_NS <= B's end < B's now + GRACE_NS: a < now.
 * So, in the order of their CASes, the admitted requests are a sequence that one sequential GCRA
 * would admit in full (each tat' is at least the sequential one); denied charges only add to TATs.
 * The grace is what lets a process that read the clock and then stalled know that nothing it could
 * have missed was live at its `now`; slots become reusable GRACE_NS after their TAT passes.
 *
 * The interleavings, one by one
 * -----------------------------
 *   - Two processes claim the same free slot for different keys: both CAS from the same pair; one
 *     wins; the other's CAS fails, it rescans, finds the slot live and takes another (or NO_SLOT).
 *   - A process charges a key while another reclaims its slot: both CAS from the same pair. Charge
 *     first: the reclaim fails, and the slot is live, no longer reclaimable. Reclaim first: the
 *     charge fails, rescans, finds its key gone -- its TAT had passed GRACE_NS ago, so it restarts
 *     from a full bucket, its true state.
 *   - Two processes insert the same new key into different slots (the first free slot each saw
 *     differs as TATs pass): the later CAS's validation sees the earlier slot live and denies; then
 *     the key is denied at step 3, writing nothing, until the weaker slot's TAT passes -- at most one
 *     charge, c * T -- after which `own` (the highest TAT) carries on.
 *   - A process killed at any point: before its CAS it wrote nothing; after it, its charge stands
 *     with no answer given, as if the request had been served. No slot is ever left in a state that
 *     another process must wait for or clear -- there is no lock or marker to leave held -- so the
 *     table cannot wedge.
 *   - A process stalled (preempted, SIGSTOP) before its CAS: the CAS fails if anything changed; for
 *     GRACE_NS or more between its clock read and its validation: denied (step 5).
 * Progress: step 4 retries only when another process's CAS succeeded (lock-free); after MAX_TRIES it
 * gives up with LIMITED, counted, so that no request can spin.
 *
 * Memory order: the 16-byte CAS is a __sync builtin, a full barrier; validation loads come after it.
 * Linux keeps CLOCK_MONOTONIC consistent across CPUs and orders the vDSO's TSC read after earlier
 * loads. Only a claim or a rare outcome touches the counters (relaxed atomic adds); the hot path
 * writes nothing shared but its own slot.
 */

#define PY_SSIZE_T_CLEAN
#include <Python.h>
#include <errno.h>
#include <stdint.h>
#include <stdio.h>
#include <string.h>
#include <sys/mman.h>
#include <sys/random.h>
#include <time.h>

#if !defined(__GCC_HAVE_SYNC_COMPARE_AND_SWAP_16)
#error "fastproxy.ratelimit._gcra needs a 16-byte compare-and-swap (on x86-64, build with -mcx16)"
#endif
#if !defined(__BYTE_ORDER__) || __BYTE_ORDER__ != __ORDER_LITTLE_ENDIAN__
#error "fastproxy.ratelimit._gcra assumes a little-endian machine (the SipHash loads)"
#endif

#define MAGIC 0x4152434731525046ULL /* "FPR1GCRA" read as a little-endian word */
#define LAYOUT_VERSION 1
#define WINDOW 16
#define GRACE_NS 1000000000ULL
#define MAX_TRIES 1000
#define MAX_NS ((uint64_t)1 << 62) /* bound on every time, interval and product handled */
#define MAX_SLOTS ((uint64_t)1 << 32)

#define ALLOWED 1
#define LIMITED 0
#define NO_SLOT 2

__extension__ typedef unsigned __int128 u128; /* GCC and Clang on 64-bit targets */

/* One slot: the union lets the two words be loaded one by one and swapped as a pair. */
typedef union {
    struct {
        uint64_t tag;
        uint64_t tat;
    } w;
    u128 pair;
} slot_t;

typedef struct {
    /* Written once by the creator, before any fork; read-only afterwards. */
    uint64_t magic;
    uint32_t version;
    uint32_t header_bytes;
    uint64_t slots;
    uint64_t window;
    uint64_t grace_ns;
    uint64_t seed[2];
    uint64_t created_ns;
    /* Rare-path counters, on their own cache line so that bumping one never evicts the above. */
    uint64_t no_slot __attribute__((aligned(64)));
    uint64_t claims;
    uint64_t reclaims;
    uint64_t duplicates;
    uint64_t conflicts;
    uint64_t stalls;
    uint64_t contended;
    uint64_t stale; /* decisions made again: the clock read before the scan had gone stale */
} header_t;

#define HEADER_BYTES 128

_Static_assert(sizeof(slot_t) == 16, "a slot is two 64-bit words");
_Static_assert(_Alignof(slot_t) == 16, "cmpxchg16b needs 16-byte alignment");
_Static_assert(sizeof(header_t) == HEADER_BYTES, "the header is two cache lines");

typedef struct {
    PyObject_HEAD
    void *map;        /* the whole mapping: header then slots */
    size_t map_bytes;
    header_t *hdr;
    slot_t *slots;
    uint64_t n;       /* copies of the header's read-only fields, to skip a load per call */
    uint64_t w;
    uint64_t seed[2];
} TableObject;

typedef struct {
    int status;
    uint64_t remaining;
    uint64_t reset_after;
    uint64_t retry_after;
} result_t;

/* -- clock and hash ---------------------------------------------------------------------------- */

/* The one clock every process shares; a vDSO read, no system call. */
static inline uint64_t
monotonic_now(void)
{
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (uint64_t)ts.tv_sec * 1000000000ULL + (uint64_t)ts.tv_nsec;
}

#define ROTL(x, b) (uint64_t)(((x) << (b)) | ((x) >> (64 - (b))))
#define SIPROUND                                                                                  \
    do {                                                                                          \
        v0 += v1;                                                                                 \
        v1 = ROTL(v1, 13);                                                                        \
        v1 ^= v0;                                                                                 \
        v0 = ROTL(v0, 32);                                                                        \
        v2 += v3;                                                                                 \
        v3 = ROTL(v3, 16);                                                                        \
        v3 ^= v2;                                                                                 \
        v0 += v3;                                                                                 \
        v3 = ROTL(v3, 21);                                                                        \
        v3 ^= v0;                                                                                 \
        v2 += v1;                                                                                 \
        v1 = ROTL(v1, 17);                                                                        \
        v1 ^= v2;                                                                                 \
        v2 = ROTL(v2, 32);                                                                        \
    } while (0)

/* SipHash-1-3 (the variant CPython uses for str and bytes): keyed, so that the slot a client's key
 * lands in cannot be predicted, and fast on the short keys a proxy limits by. */
static uint64_t
siphash13(uint64_t k0, uint64_t k1, const unsigned char *in, size_t len)
{
    uint64_t v0 = 0x736f6d6570736575ULL ^ k0;
    uint64_t v1 = 0x646f72616e646f6dULL ^ k1;
    uint64_t v2 = 0x6c7967656e657261ULL ^ k0;
    uint64_t v3 = 0x7465646279746573ULL ^ k1;
    uint64_t b = (uint64_t)len << 56;
    const unsigned char *end = in + (len & ~(size_t)7);
    uint64_t m;

    for (; in != end; in += 8) {
        memcpy(&m, in, 8);
        v3 ^= m;
        SIPROUND;
        v0 ^= m;
    }
    switch (len & 7) {
    case 7:
        b |= (uint64_t)in[6] << 48;
        /* fall through */
    case 6:
        b |= (uint64_t)in[5] << 40;
        /* fall through */
    case 5:
        b |= (uint64_t)in[4] << 32;
        /* fall through */
    case 4:
        b |= (uint64_t)in[3] << 24;
        /* fall through */
    case 3:
        b |= (uint64_t)in[2] << 16;
        /* fall through */
    case 2:
        b |= (uint64_t)in[1] << 8;
        /* fall through */
    case 1:
        b |= (uint64_t)in[0];
        break;
    default:
        break;
    }
    v3 ^= b;
    SIPROUND;
    v0 ^= b;
    v2 ^= 0xff;
    SIPROUND;
    SIPROUND;
    SIPROUND;
    return v0 ^ v1 ^ v2 ^ v3;
}

/* A key's tag: its hash, with 0 kept to mean "never used". */
static inline uint64_t
key_tag(const TableObject *t, const char *key, Py_ssize_t len)
{
    uint64_t h = siphash13(t->seed[0], t->seed[1], (const unsigned char *)key, (size_t)len);
    return h ? h : 1;
}

/* -- slots --------------------------------------------------------------------------------------- */

static inline uint64_t
load_tag(const slot_t *s)
{
    return __atomic_load_n(&s->w.tag, __ATOMIC_ACQUIRE);
}

static inline uint64_t
load_tat(const slot_t *s)
{
    return __atomic_load_n(&s->w.tat, __ATOMIC_ACQUIRE);
}

/* The only write to a slot: both words at once, and only if neither changed since they were read
 * (see "Why each slot changes by one 16-byte compare-and-swap"). A full barrier. */
static inline int
slot_cas(slot_t *s, uint64_t old_tag, uint64_t old_tat, uint64_t new_tag, uint64_t new_tat)
{
    slot_t old, new;
    old.w.tag = old_tag;
    old.w.tat = old_tat;
    new.w.tag = new_tag;
    new.w.tat = new_tat;
    return __sync_bool_compare_and_swap(&s->pair, old.pair, new.pair);
}

/* A counter in the header: rare events only, so contention on it does not matter. */
static inline void
count(uint64_t *counter)
{
    __atomic_fetch_add(counter, 1, __ATOMIC_RELAXED);
}

/* The index of the k-th slot of a window starting at home, wrapping at n without a division. */
static inline uint64_t
window_index(uint64_t home, uint64_t k, uint64_t n)
{
    uint64_t i = home + k;
    return i >= n ? i - n : i;
}

/* Fills r for a request that does not conform at `now` against a TAT of `start` (>= now); the
 * same arithmetic as gcra.py's, so that headers agree whichever side decided. */
static inline void
limited(result_t *r, uint64_t now, uint64_t start, uint64_t inc, uint64_t interval, uint64_t cap)
{
    uint64_t used = start - now;
    r->status = LIMITED;
    r->remaining = used >= cap ? 0 : (cap - used) / interval;
    r->reset_after = used;
    r->retry_after = start + inc - cap - now;
}

/* A denial after our charge was written (validation found a live duplicate with TAT `other`, or the
 * decision stalled: other == new_tat): told to come back once both TATs have passed, by when the
 * duplicate is spent and the bucket full. Rare, so simple rather than tight. */
static inline void
denied_after_charge(result_t *r, uint64_t now, uint64_t new_tat, uint64_t other)
{
    uint64_t until = new_tat > other ? new_tat : other;
    r->status = LIMITED;
    r->remaining = 0;
    r->reset_after = until - now;
    r->retry_after = until - now;
}

/* One decision, steps 1-5 of the theory of operation. fixed_now: a test clock (0: read the real one,
 * and check the decision's duration against the grace). */
static void
decide_slots(TableObject *t, uint64_t tag, uint64_t fixed_now, uint64_t interval, uint64_t burst,
             uint64_t cost, result_t *r)
{
    header_t *hdr = t->hdr;
    const uint64_t n = t->n, w = t->w;
    const uint64_t home = (uint64_t)(((u128)tag * n) >> 64);
    const uint64_t cap = (burst + 1) * interval; /* bounded by the caller */
    const uint64_t inc = cost * interval;

    for (int tries = 0; tries < MAX_TRIES; tries++) {
        const uint64_t now = fixed_now ? fixed_now : monotonic_now();
        uint64_t own = UINT64_MAX, own_tat = 0, dup_tat = 0;
        uint64_t free = UINT64_MAX, free_tag = 0, free_tat = 0;

        /* 1. scan */
        for (uint64_t k = 0; k < w; k++) {
            uint64_t i = window_index(home, k, n);
            uint64_t s_tag = load_tag(&t->slots[i]);
            uint64_t s_tat = load_tat(&t->slots[i]);
            if (s_tag == tag) {
                if (own == UINT64_MAX || s_tat > own_tat) {
                    if (own != UINT64_MAX && own_tat > now && own_tat > dup_tat) {
                        dup_tat = own_tat;
                    }
                    own = i;
                    own_tat = s_tat;
                }
                else if (s_tat > now && s_tat > dup_tat) {
                    dup_tat = s_tat;
                }
            }
            else if (free == UINT64_MAX && (s_tag == 0 || (s_tat <= now && now - s_tat >= GRACE_NS))) {
                free = i;
                free_tag = s_tag;
                free_tat = s_tat;
            }
        }

        /* 2. no slot */
        uint64_t target, old_tag, old_tat, base;
        if (own != UINT64_MAX) {
            target = own;
            old_tag = tag;
            old_tat = own_tat;
            base = own_tat;
        }
        else if (free != UINT64_MAX) {
            target = free;
            old_tag = free_tag;
            old_tat = free_tat;
            base = 0;
        }
        else {
            count(&hdr->no_slot);
            r->status = NO_SLOT;
            r->remaining = 0;
            r->reset_after = 0;
            r->retry_after = inc;
            return;
        }

        /* 3. GCRA; a live duplicate denies without writing */
        const uint64_t start = base > now ? base : now;
        if (start - now > cap - inc || inc > cap) {
            /* `now` was read before the scan: a process preempted in between judges against TATs
             * other processes wrote since, at a clock that is no longer true, and would refuse a
             * request that conforms. When the clock read again would admit it, decide again from
             * the start (a denial writes nothing, so deciding later is deciding a later request). */
            if (!fixed_now && inc <= cap) {
                const uint64_t later = monotonic_now();
                if ((base > later ? base - later : 0) <= cap - inc) {
                    count(&hdr->stale);
                    continue;
                }
            }
            limited(r, now, start, inc, interval, cap);
            return;
        }
        const uint64_t new_tat = start + inc;
        if (dup_tat) {
            count(&hdr->duplicates);
            r->status = LIMITED;
            r->remaining = 0;
            r->reset_after = start - now;
            r->retry_after = dup_tat - now;
            return;
        }

        /* 4. commit */
        if (!slot_cas(&t->slots[target], old_tag, old_tat, tag, new_tat)) {
            continue;
        }
        if (own == UINT64_MAX) {
            count(&hdr->claims);
            if (old_tag != 0) {
                count(&hdr->reclaims);
            }
        }

        /* 5. validate */
        uint64_t conflict = 0;
        for (uint64_t k = 0; k < w; k++) {
            uint64_t i = window_index(home, k, n);
            if (i != target && load_tag(&t->slots[i]) == tag) {
                uint64_t s_tat = load_tat(&t->slots[i]);
                if (s_tat > now && s_tat > conflict) {
                    conflict = s_tat;
                }
            }
        }
        if (conflict) {
            count(&hdr->conflicts);
            denied_after_charge(r, now, new_tat, conflict);
            return;
        }
        if (!fixed_now && monotonic_now() - now >= GRACE_NS) {
            count(&hdr->stalls);
            denied_after_charge(r, now, new_tat, new_tat);
            return;
        }
        r->status = ALLOWED;
        r->remaining = (cap - (new_tat - now)) / interval;
        r->reset_after = new_tat - now;
        r->retry_after = 0;
        return;
    }
    count(&hdr->contended);
    r->status = LIMITED;
    r->remaining = 0;
    r->reset_after = 0;
    r->retry_after = inc;
}

/* -- argument checks ------------------------------------------------------------------------------ */

/* A key is bytes (as is) or str (its UTF-8); nothing else, so that no __bytes__ or buffer code runs
 * on the request path and equal keys always hash alike. */
static int
get_key(PyObject *obj, const char **data, Py_ssize_t *len)
{
    if (PyBytes_Check(obj)) {
        *data = PyBytes_AS_STRING(obj);
        *len = PyBytes_GET_SIZE(obj);
        return 0;
    }
    if (PyUnicode_Check(obj)) {
        *data = PyUnicode_AsUTF8AndSize(obj, len);
        return *data ? 0 : -1;
    }
    PyErr_Format(PyExc_TypeError, "key must be bytes or str, not %.100s", Py_TYPE(obj)->tp_name);
    return -1;
}

/* An int in [lo, MAX_NS]; bool is refused (True as an interval is a bug, not a 1 ns interval). */
static int
get_uint(PyObject *obj, const char *what, uint64_t lo, uint64_t *out)
{
    if (!PyLong_Check(obj) || PyBool_Check(obj)) {
        PyErr_Format(PyExc_TypeError, "%s must be an int, not %.100s", what, Py_TYPE(obj)->tp_name);
        return -1;
    }
    int overflow = 0;
    long long v = PyLong_AsLongLongAndOverflow(obj, &overflow);
    if (v == -1 && PyErr_Occurred()) {
        return -1;
    }
    if (overflow || v < 0 || (uint64_t)v < lo || (uint64_t)v > MAX_NS) {
        PyErr_Format(PyExc_ValueError, "%s must be in [%llu, 2**62]", what, (unsigned long long)lo);
        return -1;
    }
    *out = (uint64_t)v;
    return 0;
}

/* interval_ns, burst and cost, with the products the decision uses kept within MAX_NS so that no
 * sum it forms (a time below 2**62 plus one of them) can wrap. */
static int
get_limit(PyObject *const *args, Py_ssize_t nargs, uint64_t *interval, uint64_t *burst, uint64_t *cost)
{
    uint64_t cap, inc;
    if (get_uint(args[0], "interval_ns", 1, interval) < 0 || get_uint(args[1], "burst", 0, burst) < 0) {
        return -1;
    }
    *cost = 1;
    if (nargs > 2 && get_uint(args[2], "cost", 1, cost) < 0) {
        return -1;
    }
    if (__builtin_mul_overflow(*burst + 1, *interval, &cap) || cap > MAX_NS) {
        PyErr_SetString(PyExc_ValueError, "(burst + 1) * interval_ns must be at most 2**62");
        return -1;
    }
    if (__builtin_mul_overflow(*cost, *interval, &inc) || inc > MAX_NS) {
        PyErr_SetString(PyExc_ValueError, "cost * interval_ns must be at most 2**62");
        return -1;
    }
    return 0;
}

/* The result as the plain tuple (status, remaining, reset_after_ns, retry_after_ns): the cheapest
 * thing to build here and to unpack in Python. */
static PyObject *
result_tuple(const result_t *r)
{
    PyObject *t = PyTuple_New(4);
    if (t == NULL) {
        return NULL;
    }
    PyObject *items[4] = {
        PyLong_FromLong(r->status),
        PyLong_FromUnsignedLongLong(r->remaining),
        PyLong_FromUnsignedLongLong(r->reset_after),
        PyLong_FromUnsignedLongLong(r->retry_after),
    };
    for (int i = 0; i < 4; i++) {
        if (items[i] == NULL) {
            for (int j = i + 1; j < 4; j++) {
                Py_XDECREF(items[j]);
            }
            Py_DECREF(t);
            return NULL;
        }
        PyTuple_SET_ITEM(t, i, items[i]);
    }
    return t;
}

/* -- Table ------------------------------------------------------------------------------------------ */

/* Table(slots): maps the shared region and writes its header. Done once, in the master, before fork:
 * a child that maps its own would share nothing. */
static PyObject *
Table_new(PyTypeObject *type, PyObject *args, PyObject *kwds)
{
    static char *kwlist[] = {"slots", NULL};
    PyObject *slots_obj;
    uint64_t n;

    if (!PyArg_ParseTupleAndKeywords(args, kwds, "O:Table", kwlist, &slots_obj)) {
        return NULL;
    }
    if (!PyLong_Check(slots_obj) || PyBool_Check(slots_obj)) {
        PyErr_Format(PyExc_TypeError, "slots must be an int, not %.100s", Py_TYPE(slots_obj)->tp_name);
        return NULL;
    }
    int overflow = 0;
    long long v = PyLong_AsLongLongAndOverflow(slots_obj, &overflow);
    if (v == -1 && PyErr_Occurred()) {
        return NULL;
    }
    if (overflow || v < 1 || (uint64_t)v > MAX_SLOTS) {
        PyErr_SetString(PyExc_ValueError, "slots must be in [1, 2**32]");
        return NULL;
    }
    n = (uint64_t)v;

    uint64_t seed[2];
    size_t got = 0;
    while (got < sizeof(seed)) {
        ssize_t k = getrandom((char *)seed + got, sizeof(seed) - got, 0);
        if (k < 0) {
            if (errno == EINTR) {
                if (PyErr_CheckSignals() < 0) {
                    return NULL;
                }
                continue;
            }
            return PyErr_SetFromErrno(PyExc_OSError);
        }
        got += (size_t)k;
    }

    TableObject *self = (TableObject *)type->tp_alloc(type, 0);
    if (self == NULL) {
        return NULL;
    }
    size_t bytes = HEADER_BYTES + (size_t)n * sizeof(slot_t);
    void *map = mmap(NULL, bytes, PROT_READ | PROT_WRITE, MAP_SHARED | MAP_ANONYMOUS, -1, 0);
    if (map == MAP_FAILED) {
        PyErr_SetFromErrno(PyExc_OSError);
        Py_DECREF(self);
        return NULL;
    }
    self->map = map;
    self->map_bytes = bytes;
    self->hdr = (header_t *)map;
    self->slots = (slot_t *)((char *)map + HEADER_BYTES);
    self->n = n;
    self->w = n < WINDOW ? n : WINDOW;
    self->seed[0] = seed[0];
    self->seed[1] = seed[1];

    header_t *hdr = self->hdr; /* the mapping is zero-filled: every slot is {0, 0}, never used */
    hdr->version = LAYOUT_VERSION;
    hdr->header_bytes = HEADER_BYTES;
    hdr->slots = n;
    hdr->window = self->w;
    hdr->grace_ns = GRACE_NS;
    hdr->seed[0] = seed[0];
    hdr->seed[1] = seed[1];
    hdr->created_ns = monotonic_now();
    __atomic_store_n(&hdr->magic, MAGIC, __ATOMIC_RELEASE);
    return (PyObject *)self;
}

/* Unmaps this process's view; other processes keep theirs (the kernel frees the memory with the last). */
static void
Table_dealloc(TableObject *self)
{
    if (self->map != NULL) {
        munmap(self->map, self->map_bytes);
        self->map = NULL;
    }
    Py_TYPE(self)->tp_free((PyObject *)self);
}

/* decide(key, interval_ns, burst, cost=1): the per-request call, on the shared clock. */
static PyObject *
Table_decide(TableObject *self, PyObject *const *args, Py_ssize_t nargs)
{
    const char *key;
    Py_ssize_t len;
    uint64_t interval, burst, cost;
    result_t r;

    if (nargs < 3 || nargs > 4) {
        PyErr_Format(PyExc_TypeError, "decide() takes 3 or 4 arguments (%zd given)", nargs);
        return NULL;
    }
    if (get_key(args[0], &key, &len) < 0 || get_limit(args + 1, nargs - 1, &interval, &burst, &cost) < 0) {
        return NULL;
    }
    decide_slots(self, key_tag(self, key, len), 0, interval, burst, cost, &r);
    return result_tuple(&r);
}

/* The header lines of an admitted request, what RateLimitStage adds to the response, are
 * "RateLimit-Limit: <shown>\r\nRateLimit-Remaining: <n>\r\nRateLimit-Reset: <n>\r\n", put
 * together by hand: snprintf cost a fifth of a microsecond per request under load. */
#define PUT(out, literal) (memcpy((out), (literal), sizeof(literal) - 1), (out) + sizeof(literal) - 1)

/* n in decimal at out; returns the end (at most 20 digits). */
static char *
put_decimal(char *out, unsigned long long n)
{
    char digits[20];
    int i = 20;
    do {
        digits[--i] = (char)('0' + n % 10);
        n /= 10;
    } while (n != 0);
    memcpy(out, digits + i, (size_t)(20 - i));
    return out + (20 - i);
}

/* admit(prefix, value, interval_ns, burst, shown_limit): the rate-limit stage's call. The key is
 * prefix + value (joined here, not in Python); an admitted request gets its RateLimit-* header
 * lines as bytes, formatted as rate_limit_headers formats them (Reset rounded up to whole
 * seconds), anything else the tuple decide() returns. One call instead of a concatenation, a
 * tuple and a formatting in Python: the stage's cost, nearly halved (measured). */
static PyObject *
Table_admit(TableObject *self, PyObject *const *args, Py_ssize_t nargs)
{
    const char *prefix, *value, *shown;
    Py_ssize_t prefix_len, value_len;
    uint64_t interval, burst, cost;
    result_t r;
    char stack[256];

    if (nargs != 5) {
        PyErr_Format(PyExc_TypeError, "admit() takes 5 arguments (%zd given)", nargs);
        return NULL;
    }
    if (get_key(args[0], &prefix, &prefix_len) < 0 || get_key(args[1], &value, &value_len) < 0
        || get_limit(args + 2, 2, &interval, &burst, &cost) < 0) {
        return NULL;
    }
    if (!PyBytes_Check(args[4]) || PyBytes_GET_SIZE(args[4]) > 32) {
        PyErr_SetString(PyExc_TypeError, "shown_limit must be bytes of at most 32");
        return NULL;
    }
    shown = PyBytes_AS_STRING(args[4]);
    Py_ssize_t len = prefix_len + value_len;
    char *key = len <= (Py_ssize_t)sizeof(stack) ? stack : PyMem_Malloc((size_t)len);
    if (key == NULL) {
        return PyErr_NoMemory();
    }
    memcpy(key, prefix, (size_t)prefix_len);
    memcpy(key + prefix_len, value, (size_t)value_len);
    uint64_t tag = key_tag(self, key, len);
    if (key != stack) {
        PyMem_Free(key);
    }
    decide_slots(self, tag, 0, interval, burst, cost, &r);
    if (r.status != ALLOWED) {
        return result_tuple(&r);
    }
    char out[160]; /* 17 + 32 + 2 + 21 + 20 + 2 + 17 + 20 + 2 = 133 at most */
    char *w = PUT(out, "RateLimit-Limit: ");
    memcpy(w, shown, (size_t)PyBytes_GET_SIZE(args[4]));
    w += PyBytes_GET_SIZE(args[4]);
    w = PUT(w, "\r\nRateLimit-Remaining: ");
    w = put_decimal(w, (unsigned long long)r.remaining);
    w = PUT(w, "\r\nRateLimit-Reset: ");
    w = put_decimal(w, (unsigned long long)((r.reset_after + 999999999ULL) / 1000000000ULL));
    w = PUT(w, "\r\n");
    return PyBytes_FromStringAndSize(out, w - out);
}

/* decide_at(now_ns, key, interval_ns, burst, cost=1): the same decision at a clock the caller
 * chooses (tests, replays). now_ns must be >= 1: 0 means "read the clock" inside. */
static PyObject *
Table_decide_at(TableObject *self, PyObject *const *args, Py_ssize_t nargs)
{
    const char *key;
    Py_ssize_t len;
    uint64_t now, interval, burst, cost;
    result_t r;

    if (nargs < 4 || nargs > 5) {
        PyErr_Format(PyExc_TypeError, "decide_at() takes 4 or 5 arguments (%zd given)", nargs);
        return NULL;
    }
    if (get_uint(args[0], "now_ns", 1, &now) < 0 || get_key(args[1], &key, &len) < 0
        || get_limit(args + 2, nargs - 2, &interval, &burst, &cost) < 0) {
        return NULL;
    }
    decide_slots(self, key_tag(self, key, len), now, interval, burst, cost, &r);
    return result_tuple(&r);
}

/* key_hash(key): the tag a key is stored under; for tests and debugging (it depends on the seed). */
static PyObject *
Table_key_hash(TableObject *self, PyObject *key_obj)
{
    const char *key;
    Py_ssize_t len;
    if (get_key(key_obj, &key, &len) < 0) {
        return NULL;
    }
    return PyLong_FromUnsignedLongLong(key_tag(self, key, len));
}

/* Reads an index argument in [0, slots). */
static int
get_index(TableObject *self, PyObject *obj, uint64_t *index)
{
    if (get_uint(obj, "index", 0, index) < 0) {
        return -1;
    }
    if (*index >= self->n) {
        PyErr_SetString(PyExc_IndexError, "slot index out of range");
        return -1;
    }
    return 0;
}

/* slot(index) -> (tag, tat): one slot as it is now (two loads, so possibly torn); for tests. */
static PyObject *
Table_slot(TableObject *self, PyObject *index_obj)
{
    uint64_t i;
    if (get_index(self, index_obj, &i) < 0) {
        return NULL;
    }
    uint64_t tag = load_tag(&self->slots[i]);
    uint64_t tat = load_tat(&self->slots[i]);
    return Py_BuildValue("(KK)", (unsigned long long)tag, (unsigned long long)tat);
}

/* _store(index, tag, tat): overwrites a slot, to set up states (a duplicate) that only races
 * produce. Tests only: it bypasses every rule above. */
static PyObject *
Table_store(TableObject *self, PyObject *const *args, Py_ssize_t nargs)
{
    uint64_t i, tag, tat;
    if (nargs != 3) {
        PyErr_Format(PyExc_TypeError, "_store() takes 3 arguments (%zd given)", nargs);
        return NULL;
    }
    if (get_index(self, args[0], &i) < 0) {
        return NULL;
    }
    if (!PyLong_Check(args[1]) || PyBool_Check(args[1])) {
        PyErr_SetString(PyExc_TypeError, "tag must be an int");
        return NULL;
    }
    tag = PyLong_AsUnsignedLongLong(args[1]);
    if (tag == (uint64_t)-1 && PyErr_Occurred()) {
        return NULL;
    }
    if (get_uint(args[2], "tat", 0, &tat) < 0) {
        return NULL;
    }
    slot_t *s = &self->slots[i];
    slot_t old;
    do {
        old.w.tag = load_tag(s);
        old.w.tat = load_tat(s);
    } while (!slot_cas(s, old.w.tag, old.w.tat, tag, tat));
    Py_RETURN_NONE;
}

/* live_slots(now_ns=None): slots holding a TAT later than now; O(slots), for metrics and tests. */
static PyObject *
Table_live_slots(TableObject *self, PyObject *const *args, Py_ssize_t nargs)
{
    uint64_t now, live = 0;
    if (nargs > 1) {
        PyErr_Format(PyExc_TypeError, "live_slots() takes at most 1 argument (%zd given)", nargs);
        return NULL;
    }
    if (nargs == 1 && args[0] != Py_None) {
        if (get_uint(args[0], "now_ns", 0, &now) < 0) {
            return NULL;
        }
    }
    else {
        now = monotonic_now();
    }
    for (uint64_t i = 0; i < self->n; i++) {
        if (load_tag(&self->slots[i]) != 0 && load_tat(&self->slots[i]) > now) {
            live++;
        }
    }
    return PyLong_FromUnsignedLongLong(live);
}

/* stats(): the header's counters, for the master's metrics. */
static PyObject *
Table_stats(TableObject *self, PyObject *Py_UNUSED(ignored))
{
    header_t *h = self->hdr;
#define C(field) (unsigned long long)__atomic_load_n(&h->field, __ATOMIC_RELAXED)
    return Py_BuildValue("{sKsKsKsKsKsKsKsKsKsK}", "slots", (unsigned long long)self->n, "window",
                         (unsigned long long)self->w, "no_slot", C(no_slot), "claims", C(claims),
                         "reclaims", C(reclaims), "duplicates", C(duplicates), "conflicts", C(conflicts),
                         "stalls", C(stalls), "contended", C(contended), "stale", C(stale));
#undef C
}

/* Read-only attributes: what the table is, from the header. */
static PyObject *
Table_get_slots(TableObject *self, void *Py_UNUSED(closure))
{
    return PyLong_FromUnsignedLongLong(self->n);
}

static PyObject *
Table_get_window(TableObject *self, void *Py_UNUSED(closure))
{
    return PyLong_FromUnsignedLongLong(self->w);
}

static PyObject *
Table_get_nbytes(TableObject *self, void *Py_UNUSED(closure))
{
    return PyLong_FromSize_t(self->map_bytes);
}

/* The header's fixed fields, for tests and debugging; never the seed (it would let a reader aim
 * collisions). */
static PyObject *
Table_get_header(TableObject *self, void *Py_UNUSED(closure))
{
    const header_t *h = self->hdr;
    return Py_BuildValue("{sKsIsIsKsKsKsK}", "magic", (unsigned long long)h->magic, "version",
                         (unsigned int)h->version, "header_bytes", (unsigned int)h->header_bytes, "slots",
                         (unsigned long long)h->slots, "window", (unsigned long long)h->window, "grace_ns",
                         (unsigned long long)h->grace_ns, "created_ns", (unsigned long long)h->created_ns);
}

static PyMethodDef Table_methods[] = {
    {"decide", (PyCFunction)(void (*)(void))Table_decide, METH_FASTCALL,
     "decide(key, interval_ns, burst, cost=1, /) -> (status, remaining, reset_after_ns, retry_after_ns)"},
    {"admit", (PyCFunction)(void (*)(void))Table_admit, METH_FASTCALL,
     "admit(prefix, value, interval_ns, burst, shown_limit, /) -> RateLimit-* header lines (bytes) when "
     "admitted, else decide()'s tuple"},
    {"decide_at", (PyCFunction)(void (*)(void))Table_decide_at, METH_FASTCALL,
     "decide_at(now_ns, key, interval_ns, burst, cost=1, /): decide() at the given clock"},
    {"key_hash", (PyCFunction)Table_key_hash, METH_O, "key_hash(key, /) -> the tag the key is stored under"},
    {"slot", (PyCFunction)Table_slot, METH_O, "slot(index, /) -> (tag, tat)"},
    {"_store", (PyCFunction)(void (*)(void))Table_store, METH_FASTCALL,
     "_store(index, tag, tat, /): overwrite a slot (tests only)"},
    {"live_slots", (PyCFunction)(void (*)(void))Table_live_slots, METH_FASTCALL,
     "live_slots(now_ns=None, /) -> slots whose TAT is later than now"},
    {"stats", (PyCFunction)Table_stats, METH_NOARGS, "stats() -> the header's counters"},
    {NULL, NULL, 0, NULL},
};

static PyGetSetDef Table_getset[] = {
    {"slots", (getter)Table_get_slots, NULL, "number of slots", NULL},
    {"window", (getter)Table_get_window, NULL, "slots a key may occupy (probe window)", NULL},
    {"nbytes", (getter)Table_get_nbytes, NULL, "bytes mapped: header and slots", NULL},
    {"header", (getter)Table_get_header, NULL, "the header's fixed fields, less the seed", NULL},
    {NULL, NULL, NULL, NULL, NULL},
};

static PyTypeObject TableType = {
    PyVarObject_HEAD_INIT(NULL, 0)
    .tp_name = "fastproxy.ratelimit._gcra.Table",
    .tp_doc = "Table(slots): a GCRA rate-limit table in memory shared with the processes forked after it.",
    .tp_basicsize = sizeof(TableObject),
    .tp_flags = Py_TPFLAGS_DEFAULT,
    .tp_new = Table_new,
    .tp_dealloc = (destructor)Table_dealloc,
    .tp_methods = Table_methods,
    .tp_getset = Table_getset,
};

/* -- module ------------------------------------------------------------------------------------------ */

/* monotonic_ns(): the clock decide() reads (the same as time.monotonic_ns()). */
static PyObject *
mod_monotonic_ns(PyObject *Py_UNUSED(module), PyObject *Py_UNUSED(ignored))
{
    return PyLong_FromUnsignedLongLong(monotonic_now());
}

/* siphash13(key16, data): the table's hash under an explicit key, so tests can hold it to known
 * values (CPython's own siphash13). */
static PyObject *
mod_siphash13(PyObject *Py_UNUSED(module), PyObject *const *args, Py_ssize_t nargs)
{
    uint64_t k[2];
    if (nargs != 2) {
        PyErr_Format(PyExc_TypeError, "siphash13() takes 2 arguments (%zd given)", nargs);
        return NULL;
    }
    if (!PyBytes_Check(args[0]) || PyBytes_GET_SIZE(args[0]) != 16) {
        PyErr_SetString(PyExc_TypeError, "siphash13() key must be 16 bytes");
        return NULL;
    }
    if (!PyBytes_Check(args[1])) {
        PyErr_Format(PyExc_TypeError, "siphash13() data must be bytes, not %.100s", Py_TYPE(args[1])->tp_name);
        return NULL;
    }
    memcpy(k, PyBytes_AS_STRING(args[0]), 16);
    return PyLong_FromUnsignedLongLong(siphash13(k[0], k[1], (const unsigned char *)PyBytes_AS_STRING(args[1]),
                                                 (size_t)PyBytes_GET_SIZE(args[1])));
}

static PyMethodDef module_methods[] = {
    {"monotonic_ns", mod_monotonic_ns, METH_NOARGS, "monotonic_ns() -> the clock decide() reads"},
    {"siphash13", (PyCFunction)(void (*)(void))mod_siphash13, METH_FASTCALL,
     "siphash13(key16, data, /) -> SipHash-1-3 of data"},
    {NULL, NULL, 0, NULL},
};

static struct PyModuleDef module_def = {
    PyModuleDef_HEAD_INIT,
    .m_name = "fastproxy.ratelimit._gcra",
    .m_doc = "The shared-memory GCRA rate-limit table (see the theory of operation in _gcra.c).",
    .m_size = -1,
    .m_methods = module_methods,
};

PyMODINIT_FUNC
PyInit__gcra(void)
{
    PyObject *m;
    if (PyType_Ready(&TableType) < 0) {
        return NULL;
    }
    m = PyModule_Create(&module_def);
    if (m == NULL) {
        return NULL;
    }
    Py_INCREF(&TableType);
    if (PyModule_AddObject(m, "Table", (PyObject *)&TableType) < 0) {
        Py_DECREF(&TableType);
        Py_DECREF(m);
        return NULL;
    }
    if (PyModule_AddIntConstant(m, "ALLOWED", ALLOWED) < 0 || PyModule_AddIntConstant(m, "LIMITED", LIMITED) < 0
        || PyModule_AddIntConstant(m, "NO_SLOT", NO_SLOT) < 0
        || PyModule_AddIntConstant(m, "LAYOUT_VERSION", LAYOUT_VERSION) < 0
        || PyModule_AddIntConstant(m, "WINDOW", WINDOW) < 0
        || PyModule_AddIntConstant(m, "SLOT_BYTES", (long)sizeof(slot_t)) < 0
        || PyModule_AddIntConstant(m, "HEADER_BYTES", HEADER_BYTES) < 0
        || PyModule_AddIntConstant(m, "GRACE_NS", (long)GRACE_NS) < 0
        || PyModule_AddIntConstant(m, "MAX_TRIES", MAX_TRIES) < 0) {
        Py_DECREF(m);
        return NULL;
    }
    return m;
}
