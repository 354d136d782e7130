/*
 * imageintrospect table scanners (see scan.h for the contract, and
 * docs/backend.md for the rules each scanner applies).
 *
 * Rules shared by every scanner:
 * - entries are decoded byte by byte, so the table needs no alignment and the
 *   host byte order does not matter;
 * - checks run in a fixed order and the first failing one names the reason;
 * - a bad entry is counted in bad_count only: it claims nothing and lands in
 *   no other counter;
 * - no sum or product is formed that could wrap: ranges are tested with
 *   range_fits(), and products are bounded by the parameter limits below.
 */
#include "scan.h"

#include <string.h>

/* Writing this file warning-free is part of its contract. */
#if defined(__GNUC__)
#pragma GCC diagnostic error "-Wall"
#pragma GCC diagnostic error "-Wextra"
#pragma GCC diagnostic error "-Wconversion"
#pragma GCC diagnostic error "-Wshadow"
#endif

#define SECTOR 512u
#define MIB ((uint64_t)1 << 20)
#define OFFSET_LIMIT ((uint64_t)INT64_MAX) /* file sizes and offsets */
#define INDEX_LIMIT ((uint64_t)1 << 62)    /* first_index */
#define SIZE32_LIMIT ((uint64_t)1 << 32)   /* grain, block and GT sizes */

/* ------------------------------------------------------------------ */
/* Decoding and small helpers                                          */
/* ------------------------------------------------------------------ */

#if defined(__GNUC__) && defined(__BYTE_ORDER__) && __BYTE_ORDER__ == __ORDER_LITTLE_ENDIAN__
/* One unaligned load and a byte swap: the hot loops decode millions of entries. */
static uint64_t get_be64(const uint8_t *p)
{
    uint64_t v;
    memcpy(&v, p, 8);
    return __builtin_bswap64(v);
}

static uint64_t get_le64(const uint8_t *p)
{
    uint64_t v;
    memcpy(&v, p, 8);
    return v;
}
#else
static uint64_t get_be64(const uint8_t *p)
{
    uint64_t v = 0;
    for (int i = 0; i < 8; i++)
        v = (v << 8) | p[i];
    return v;
}

static uint64_t get_le64(const uint8_t *p)
{
    uint64_t v = 0;
    for (int i = 7; i >= 0; i--)
        v = (v << 8) | p[i];
    return v;
}
#endif

static uint32_t get_be32(const uint8_t *p)
{
    return ((uint32_t)p[0] << 24) | ((uint32_t)p[1] << 16) | ((uint32_t)p[2] << 8) | p[3];
}

static uint32_t get_le32(const uint8_t *p)
{
    return ((uint32_t)p[3] << 24) | ((uint32_t)p[2] << 16) | ((uint32_t)p[1] << 8) | p[0];
}

/* True when [start, start + len) lies within [0, limit). */
static int range_fits(uint64_t start, uint64_t len, uint64_t limit)
{
    return len <= limit && start <= limit - len;
}

static uint64_t round_up_sector(uint64_t v) /* callers keep v below 2^64 - 511 */
{
    return (v + (SECTOR - 1)) & ~(uint64_t)(SECTOR - 1);
}

static void note_bad(ii_verdict *v, uint64_t index, uint64_t value, int reason)
{
    if (v->bad_count == 0) {
        v->bad_index = index;
        v->bad_value = value;
        v->bad_reason = reason;
    }
    v->bad_count++;
}

static void verdict_init(ii_verdict *v, uint64_t count)
{
    memset(v, 0, sizeof(*v));
    v->count = count;
    v->bad_reason = II_OK;
}

/* Bytes compared by one memcmp in same_run. */
#define RUN_BLOCK 2048u

/* How many entries of `width` bytes (4 or 8) from entry i on, up to entry `stop`, repeat
   entry i's bytes; compared eight bytes at a time. A sparse image's table is mostly long
   runs of its "unused" value. */
static uint64_t same_run(const uint8_t *table, uint64_t i, uint64_t stop, size_t width)
{
    uint8_t twice[8]; /* entry i, twice when entries are 4 bytes */
    memcpy(twice, table + i * width, width);
    memcpy(twice + 8 - width, table + i * width, width);
    uint64_t pattern;
    memcpy(&pattern, twice, 8);
    const uint64_t step = 8 / width;
    uint64_t next = i + 1;
    if (stop - i >= step + RUN_BLOCK / width && memcmp(table + i * width, &pattern, 8) == 0) {
        /* [at, at + 8) repeats entry i; memcmp of a block against itself one word further on
           says whether the eight bytes after the block still do (the library's memcmp is
           vectorised: several times the speed of the loop below on a long run) */
        const uint8_t *at = table + i * width;
        const uint8_t *const last = table + stop * width - 8 - RUN_BLOCK;
        while (at <= last && memcmp(at, at + 8, RUN_BLOCK) == 0)
            at += RUN_BLOCK;
        next = (uint64_t)(at - table) / width + step;
    }
    while (stop - next >= 4 * step) { /* 32 bytes per test while they match */
        uint64_t words[4];
        memcpy(words, table + next * width, sizeof(words));
        if (((words[0] ^ pattern) | (words[1] ^ pattern) | (words[2] ^ pattern) |
             (words[3] ^ pattern)) != 0)
            break;
        next += 4 * step;
    }
    while (stop - next >= step) {
        uint64_t value;
        memcpy(&value, table + next * width, 8);
        if (value != pattern)
            break;
        next += step;
    }
    return next - i;
}

/* ------------------------------------------------------------------ */
/* Claim bitmap                                                        */
/* ------------------------------------------------------------------ */

typedef struct {
    uint8_t *bits;
    uint64_t nbits;
} claim_map;

static int any_bit_set(const uint8_t *bits, uint64_t first, uint64_t end)
{
    while (first < end && (first & 63u) != 0) {
        if (bits[first >> 3] & (1u << (first & 7u)))
            return 1;
        first++;
    }
    /* whole 64-bit words: only "any bit set" matters, so byte order does not */
    while (end - first >= 64) {
        uint64_t word;
        memcpy(&word, bits + (first >> 3), 8);
        if (word != 0)
            return 1;
        first += 64;
    }
    while (first < end) {
        if (bits[first >> 3] & (1u << (first & 7u)))
            return 1;
        first++;
    }
    return 0;
}

static void set_bits(uint8_t *bits, uint64_t first, uint64_t end)
{
    while (first < end && (first & 7u) != 0) {
        bits[first >> 3] = (uint8_t)(bits[first >> 3] | (1u << (first & 7u)));
        first++;
    }
    if (end - first >= 8) {
        uint64_t nbytes = (end - first) >> 3;
        memset(bits + (first >> 3), 0xff, (size_t)nbytes);
        first += nbytes << 3;
    }
    while (first < end) {
        bits[first >> 3] = (uint8_t)(bits[first >> 3] | (1u << (first & 7u)));
        first++;
    }
}

/* Claim units [first, first + n): II_OK and marked, or II_DOUBLE_CLAIM (nothing
   marked), or II_OUT_OF_RANGE when the map is too small (a caller bug that must
   still not write out of bounds). */
static int claim(const claim_map *map, uint64_t first, uint64_t n)
{
    if (map->bits == NULL || n == 0)
        return II_OK;
    if (!range_fits(first, n, map->nbits))
        return II_OUT_OF_RANGE;
    if (n == 1) { /* one cluster or block: the usual case */
        uint8_t *byte = map->bits + (first >> 3);
        const uint8_t mask = (uint8_t)(1u << (first & 7u));
        if (*byte & mask)
            return II_DOUBLE_CLAIM;
        *byte = (uint8_t)(*byte | mask);
        return II_OK;
    }
    if (any_bit_set(map->bits, first, first + n))
        return II_DOUBLE_CLAIM;
    set_bits(map->bits, first, first + n);
    return II_OK;
}

/* ------------------------------------------------------------------ */
/* Tables of pointers to one-cluster (or one-GT) structures             */
/* ------------------------------------------------------------------ */

typedef struct {
    uint64_t reserved_mask;
    uint64_t offset_mask;
} pointer_layout;

/* qcow2 L1 and refcount table: big-endian u64, cluster-aligned cluster pointers. */
static int qcow2_pointers(const pointer_layout *layout, const uint8_t *table, size_t nbytes,
                          uint64_t first_index, uint32_t cluster_bits, uint64_t file_size,
                          uint8_t *claimed, uint64_t claimed_bits, uint64_t *indexes,
                          uint64_t *offsets, ii_pointer_result *out)
{
    if (cluster_bits < 9 || cluster_bits > 21 || file_size > OFFSET_LIMIT ||
        first_index > INDEX_LIMIT || nbytes % 8 != 0)
        return -1;
    const claim_map map = {claimed, claimed_bits};
    const uint64_t cluster = (uint64_t)1 << cluster_bits;
    const uint64_t n = nbytes / 8;
    memset(out, 0, sizeof(*out));
    verdict_init(&out->v, n);

    for (uint64_t i = 0; i < n; i++) {
        const uint64_t e = get_be64(table + i * 8);
        const uint64_t offset = e & layout->offset_mask;
        const uint64_t index = first_index + i;
        int reason = II_OK;
        if (e & layout->reserved_mask)
            reason = II_RESERVED_BITS;
        else if (offset == 0) {
            out->unallocated++;
            continue;
        } else if (offset & (cluster - 1))
            reason = II_MISALIGNED;
        else if (!range_fits(offset, cluster, file_size))
            reason = II_OUT_OF_RANGE;
        else
            reason = claim(&map, offset >> cluster_bits, 1);
        if (reason != II_OK) {
            note_bad(&out->v, index, e, reason);
            continue;
        }
        if (indexes)
            indexes[out->allocated] = index;
        if (offsets)
            offsets[out->allocated] = offset;
        out->allocated++;
    }
    return 0;
}

int ii_qcow2_l1(const uint8_t *table, size_t nbytes, uint64_t first_index, uint32_t cluster_bits,
                uint64_t file_size, uint8_t *claimed, uint64_t claimed_bits, uint64_t *indexes,
                uint64_t *offsets, ii_pointer_result *out)
{
    /* bits 0-8 and 56-62 reserved, 9-55 offset, 63 "copied" (not checked) */
    static const pointer_layout l1 = {0x7f000000000001ffull, 0x00fffffffffffe00ull};
    return qcow2_pointers(&l1, table, nbytes, first_index, cluster_bits, file_size, claimed,
                          claimed_bits, indexes, offsets, out);
}

int ii_qcow2_refcount_table(const uint8_t *table, size_t nbytes, uint64_t first_index,
                            uint32_t cluster_bits, uint64_t file_size, uint8_t *claimed,
                            uint64_t claimed_bits, uint64_t *indexes, uint64_t *offsets,
                            ii_pointer_result *out)
{
    /* bits 0-8 reserved, 9-63 offset */
    static const pointer_layout reftable = {0x1ffull, 0xfffffffffffffe00ull};
    return qcow2_pointers(&reftable, table, nbytes, first_index, cluster_bits, file_size,
                          claimed, claimed_bits, indexes, offsets, out);
}

int ii_vmdk_gd(const uint8_t *table, size_t nbytes, uint64_t first_index, uint64_t gt_sectors,
               uint64_t file_size, uint8_t *claimed, uint64_t claimed_bits, uint64_t *indexes,
               uint64_t *offsets, ii_pointer_result *out)
{
    if (gt_sectors == 0 || gt_sectors > SIZE32_LIMIT || file_size > OFFSET_LIMIT ||
        first_index > INDEX_LIMIT || nbytes % 4 != 0)
        return -1;
    const claim_map map = {claimed, claimed_bits};
    const uint64_t n = nbytes / 4;
    memset(out, 0, sizeof(*out));
    verdict_init(&out->v, n);

    for (uint64_t i = 0; i < n; i++) {
        const uint64_t sector = get_le32(table + i * 4);
        const uint64_t index = first_index + i;
        int reason;
        if (sector == 0) {
            out->unallocated++;
            continue;
        }
        /* sector < 2^32 and gt_sectors <= 2^32: the byte values fit easily */
        if (!range_fits(sector * SECTOR, gt_sectors * SECTOR, file_size))
            reason = II_OUT_OF_RANGE;
        else
            reason = claim(&map, sector, gt_sectors);
        if (reason != II_OK) {
            note_bad(&out->v, index, sector, reason);
            continue;
        }
        if (indexes)
            indexes[out->allocated] = index;
        if (offsets)
            offsets[out->allocated] = sector * SECTOR;
        out->allocated++;
    }
    return 0;
}

/* ------------------------------------------------------------------ */
/* qcow2 L2                                                            */
/* ------------------------------------------------------------------ */

#define L2_COPIED ((uint64_t)1 << 63)
#define L2_COMPRESSED ((uint64_t)1 << 62)
#define L2_ZERO ((uint64_t)1)
#define L2_STD_RESERVED 0x3f000000000001feull /* bits 1-8 and 56-61 */
#define L2_STD_OFFSET 0x00fffffffffffe00ull   /* bits 9-55 */
#define SUBCLUSTERS_ALL 0xffffffffull

typedef struct {
    uint32_t cluster_bits;
    uint64_t cluster;
    int extended;
    uint32_t version;
    uint64_t file_size;
    int has_data_file;
    claim_map map;
} l2_params;

static int l2_compressed(const l2_params *p, uint64_t e, uint64_t bitmap, ii_l2_result *out)
{
    const uint32_t x = 62 - (p->cluster_bits - 8); /* 49..61 */
    const uint64_t coffset = e & (((uint64_t)1 << x) - 1);
    /* sectors field is bits x..61: cluster_bits - 8 bits, at most 13 */
    const uint64_t sectors = ((e >> x) & (((uint64_t)1 << (62 - x)) - 1)) + 1;
    if (p->has_data_file || (e & L2_COPIED))
        return II_BAD_COMPRESSED;
    if (coffset >> 56)
        return II_RESERVED_BITS;
    if (p->extended && bitmap != 0)
        return II_BAD_SUBCLUSTER;
    if (coffset < p->cluster)
        return II_IN_METADATA;
    /* The last sector may be cut short: qemu does not pad the file after the
       last compressed cluster, so the end is checked against the size rounded
       up to a sector. coffset < 2^56, sectors <= 2^13: no wrap. */
    const uint64_t end = (coffset & ~(uint64_t)(SECTOR - 1)) + sectors * SECTOR;
    if (coffset >= p->file_size || end > round_up_sector(p->file_size))
        return II_OUT_OF_RANGE;
    out->compressed++;
    out->compressed_bytes += sectors * SECTOR - (coffset & (SECTOR - 1));
    return II_OK;
}

static int l2_standard(const l2_params *p, uint64_t e, uint64_t bitmap, ii_l2_result *out)
{
    const uint64_t reserved = L2_STD_RESERVED | ((p->version < 3 || p->extended) ? L2_ZERO : 0);
    const uint64_t offset = e & L2_STD_OFFSET;
    const int copied = (e & L2_COPIED) != 0;
    const uint64_t alloc_bits = bitmap & SUBCLUSTERS_ALL;
    const uint64_t zero_bits = bitmap >> 32;
    if (e & reserved)
        return II_RESERVED_BITS;
    if (p->extended && (alloc_bits & zero_bits))
        return II_BAD_SUBCLUSTER;
    /* Offset 0 with "copied" names host offset 0: legal only in a data file. */
    const int has_host = offset != 0 || (p->has_data_file && copied);
    if (!has_host) {
        if (copied)
            return II_IN_METADATA;
        if (p->extended && alloc_bits)
            return II_BAD_SUBCLUSTER;
        if (p->extended ? zero_bits == SUBCLUSTERS_ALL : (e & L2_ZERO) != 0)
            out->zero++;
        else
            out->unallocated++;
        return II_OK;
    }
    if (offset & (p->cluster - 1))
        return II_MISALIGNED;
    if (!p->has_data_file) {
        /* The last data cluster may extend past the end of the file (qemu
           writes only the subclusters it needs): its start must be inside. */
        if (offset >= p->file_size)
            return II_OUT_OF_RANGE;
        const int reason = claim(&p->map, offset >> p->cluster_bits, 1);
        if (reason != II_OK)
            return reason;
    }
    out->allocated++;
    out->allocated_bytes += p->cluster;
    return II_OK;
}

/* One entry (with its subcluster bitmap when extended), every rule applied. */
static void l2_entry(const l2_params *p, uint64_t e, uint64_t bitmap, uint64_t index,
                     ii_l2_result *out)
{
    int reason;
    if (e == 0 && bitmap == 0) { /* the common case in sparse images */
        out->unallocated++;
        return;
    }
    if (e & L2_COMPRESSED)
        reason = l2_compressed(p, e, bitmap, out);
    else
        reason = l2_standard(p, e, bitmap, out);
    if (reason != II_OK)
        note_bad(&out->v, index, e, reason);
}

/* Caps a run so that its span of host offsets (count * cluster) stays far below 2^64. */
#define L2_RUN_MAX ((uint64_t)1 << 30)

/* How many 8-byte entries from entry i on go up by one cluster each (raw values, so flags
   equal too unless a carry left the offset field, which l2_run_clean rules out). A
   preallocated image's tables are such runs, thousands of entries long. */
static uint64_t l2_run_length(const uint8_t *table, uint64_t i, uint64_t n, uint64_t cluster)
{
    const uint64_t stop = n - i > L2_RUN_MAX ? i + L2_RUN_MAX : n;
    uint64_t expect = get_be64(table + i * 8) + cluster;
    uint64_t next = i + 1;
    /* four entries per test while they all follow on: no dependency from one entry's test
       to the next, so the loads and byte swaps overlap (twice the speed of the loop below) */
    while (stop - next >= 4) {
        const uint8_t *at = table + next * 8;
        if (((get_be64(at) ^ expect) | (get_be64(at + 8) ^ (expect + cluster)) |
             (get_be64(at + 16) ^ (expect + 2 * cluster)) |
             (get_be64(at + 24) ^ (expect + 3 * cluster))) != 0)
            break;
        expect += 4 * cluster;
        next += 4;
    }
    while (next < stop && get_be64(table + next * 8) == expect) {
        expect += cluster;
        next++;
    }
    return next - i;
}

/* A run of `count` standard entries from `first` to `last`, counted and claimed at once.
   Without a wrap (last >= first) and with bits 56-63 equal at both ends, every entry in
   between has the same flags as the first, and bits 0-8 never change (the cluster is a
   multiple of 512): so l2_standard would accept every entry exactly when it accepts the
   first, the last is inside the file and no cluster of the run is claimed yet. Returns 0,
   having changed nothing, when the entries must go one by one instead. */
static int l2_run_clean(const l2_params *p, uint64_t first, uint64_t last, uint64_t count,
                        ii_l2_result *out)
{
    const uint64_t refused =
        L2_COMPRESSED | L2_STD_RESERVED | (p->version < 3 ? L2_ZERO : 0);
    const uint64_t offset = first & L2_STD_OFFSET;
    if ((first & refused) || offset == 0 || (offset & (p->cluster - 1)) || last < first ||
        ((first ^ last) >> 56) != 0)
        return 0;
    if (!p->has_data_file && ((last & L2_STD_OFFSET) >= p->file_size ||
                              claim(&p->map, offset >> p->cluster_bits, count) != II_OK))
        return 0; /* claim() marks nothing when it fails */
    out->allocated += count;
    out->allocated_bytes += count * p->cluster;
    return 1;
}

/* Standard (8-byte) entries from entry i on: a run at once when it is clean, else the run's
   entries one by one. Returns how many entries were handled. */
static uint64_t l2_plain_entries(const l2_params *p, const uint8_t *table, uint64_t i,
                                 uint64_t n, uint64_t first_index, ii_l2_result *out)
{
    const uint64_t e = get_be64(table + i * 8);
    if (e == 0) {
        out->unallocated++;
        return 1;
    }
    const uint64_t count = l2_run_length(table, i, n, p->cluster);
    if (l2_run_clean(p, e, get_be64(table + (i + count - 1) * 8), count, out))
        return count;
    for (uint64_t j = i; j < i + count; j++)
        l2_entry(p, get_be64(table + j * 8), 0, first_index + j, out);
    return count;
}

int ii_qcow2_l2(const uint8_t *table, size_t nbytes, uint64_t first_index, uint32_t cluster_bits,
                int extended_l2, uint32_t version, uint64_t file_size, int has_data_file,
                uint8_t *claimed, uint64_t claimed_bits, ii_l2_result *out)
{
    const size_t entry = extended_l2 ? 16 : 8;
    if (cluster_bits < 9 || cluster_bits > 21 || version < 2 || version > 3 ||
        file_size > OFFSET_LIMIT || first_index > INDEX_LIMIT || nbytes % entry != 0)
        return -1;
    const l2_params p = {cluster_bits,         (uint64_t)1 << cluster_bits,
                         extended_l2 != 0,     version,
                         file_size,            has_data_file != 0,
                         {claimed, claimed_bits}};
    const uint64_t n = nbytes / entry;
    memset(out, 0, sizeof(*out));
    verdict_init(&out->v, n);

    if (!p.extended) {
        for (uint64_t i = 0; i < n;)
            i += l2_plain_entries(&p, table, i, n, first_index, out);
        return 0;
    }
    for (uint64_t i = 0; i < n; i++) {
        const uint8_t *at = table + i * entry;
        l2_entry(&p, get_be64(at), get_be64(at + 8), first_index + i, out);
    }
    return 0;
}

/* ------------------------------------------------------------------ */
/* VMDK grain table                                                    */
/* ------------------------------------------------------------------ */

int ii_vmdk_gt(const uint8_t *table, size_t nbytes, uint64_t first_index, uint64_t grain_sectors,
               uint64_t overhead_sectors, uint64_t file_size, int zeroed_grain_ok, int compressed,
               uint8_t *claimed, uint64_t claimed_bits, ii_block_result *out)
{
    if (grain_sectors == 0 || grain_sectors > SIZE32_LIMIT || file_size > OFFSET_LIMIT ||
        first_index > INDEX_LIMIT || nbytes % 4 != 0)
        return -1;
    const claim_map map = {claimed, claimed_bits};
    /* A compressed grain is a marker of unknown length: only its first sector
       is known to belong to it. */
    const uint64_t footprint = compressed ? 1 : grain_sectors;
    const uint64_t n = nbytes / 4;
    memset(out, 0, sizeof(*out));
    verdict_init(&out->v, n);

    for (uint64_t i = 0; i < n; i++) {
        const uint64_t sector = get_le32(table + i * 4);
        int reason;
        if (sector == 0) { /* a sparse disk's tables are mostly runs of zeros */
            const uint64_t run = same_run(table, i, n, 4);
            out->unallocated += run;
            i += run - 1;
            continue;
        }
        if (sector == 1 && zeroed_grain_ok) {
            out->zero++;
            continue;
        }
        if (sector < overhead_sectors)
            reason = II_IN_METADATA;
        else if (!range_fits(sector * SECTOR, footprint * SECTOR, file_size))
            reason = II_OUT_OF_RANGE;
        else
            reason = claim(&map, sector, footprint);
        if (reason != II_OK) {
            note_bad(&out->v, first_index + i, sector, reason);
            continue;
        }
        out->allocated++;
        out->allocated_bytes += grain_sectors * SECTOR;
    }
    return 0;
}

/* ------------------------------------------------------------------ */
/* streamOptimized VMDK markers                                        */
/* ------------------------------------------------------------------ */

#define MARKER_EOS 0
#define MARKER_GT 1
#define MARKER_GD 2
#define MARKER_FOOTER 3
#define MARKER_PROGRESS 4
#define GRAIN_SLACK 1024u /* deflate may expand incompressible data a little */

static void stream_stop(ii_stream_state *s, uint64_t offset, uint64_t value, int reason)
{
    note_bad(&s->v, offset, value, reason);
    s->stopped = 1;
}

/* The stream ends at `end` with the walk at s->next_offset and no end-of-stream marker seen:
   anything but a marker boundary exactly at the end is a truncation. */
static void stream_ends_at(ii_stream_state *s, uint64_t end)
{
    const uint64_t pos = s->next_offset;
    if (pos > end) /* the last marker's data runs past the end */
        stream_stop(s, s->marker_offset, pos, II_TRUNCATED);
    else if (pos < end) /* a partial sector where a marker should be */
        stream_stop(s, pos, end - pos, II_TRUNCATED);
}

/* A walk's geometry and where it starts (or a window begins): what every entry point checks. */
static int stream_params_bad(uint64_t grain_sectors, uint64_t start)
{
    return grain_sectors == 0 || grain_sectors > SIZE32_LIMIT || start > OFFSET_LIMIT ||
           start % SECTOR != 0;
}

/* After end-of-stream only zero padding may follow: the bytes from `from` to the window's
   end are checked. next_offset stays sector-aligned (windows start on sectors): a few bytes
   may be checked twice, which is harmless. */
static void stream_trailing(const uint8_t *window, size_t nbytes, uint64_t base, uint64_t from,
                            ii_stream_state *s)
{
    const uint64_t end = base + nbytes;
    for (uint64_t pos = from; pos < end; pos++) {
        const uint8_t byte = window[pos - base];
        if (byte != 0) {
            s->next_offset = pos & ~(uint64_t)(SECTOR - 1);
            stream_stop(s, pos, byte, II_TRAILING_DATA);
            return;
        }
    }
    const uint64_t checked = end & ~(uint64_t)(SECTOR - 1);
    if (s->next_offset < checked)
        s->next_offset = checked;
}

/* One marker at s->next_offset, whose first sector is inside the window. */
static void stream_marker(const uint8_t *at, uint64_t capacity, uint64_t grain_sectors,
                          ii_stream_state *s)
{
    const uint64_t pos = s->next_offset;
    const uint64_t value = get_le64(at); /* grain: LBA; metadata: sectors that follow */
    const uint32_t size = get_le32(at + 8);
    s->marker_offset = pos;
    s->v.count++;
    if (size != 0) {
        if (size > grain_sectors * SECTOR + GRAIN_SLACK) {
            stream_stop(s, pos, size, II_BAD_MARKER);
            return;
        }
        if (value >= capacity)
            note_bad(&s->v, pos, value, II_OUT_OF_RANGE);
        else if (value % grain_sectors != 0)
            note_bad(&s->v, pos, value, II_MISALIGNED);
        else {
            s->grains++;
            s->grain_bytes += size;
        }
        /* pos <= OFFSET_LIMIT and size < 2^32: no wrap in uint64_t */
        const uint64_t next = round_up_sector(pos + 12 + size);
        if (next > OFFSET_LIMIT) {
            stream_stop(s, pos, size, II_TRUNCATED);
            return;
        }
        s->next_offset = next;
        return;
    }
    const uint32_t type = get_le32(at + 12);
    switch (type) {
    case MARKER_EOS:
        s->eos_offset = pos;
        s->next_offset = pos + SECTOR;
        return;
    case MARKER_GT:
        s->gt_markers++;
        break;
    case MARKER_GD:
        s->gd_markers++;
        break;
    case MARKER_FOOTER:
        s->footer_markers++;
        break;
    case MARKER_PROGRESS:
        s->other_markers++;
        break;
    default:
        stream_stop(s, pos, type, II_BAD_MARKER);
        return;
    }
    /* The payload must be addressable: pos + 512 + value * 512 <= OFFSET_LIMIT. */
    if (value > (OFFSET_LIMIT - SECTOR - pos) / SECTOR) {
        stream_stop(s, pos, value, II_TRUNCATED);
        return;
    }
    s->next_offset = pos + SECTOR + value * SECTOR;
}

int ii_vmdk_stream(const uint8_t *window, size_t nbytes, uint64_t base_offset,
                   uint64_t capacity_sectors, uint64_t grain_sectors, int final,
                   ii_stream_state *s)
{
    if (stream_params_bad(grain_sectors, base_offset) || nbytes > OFFSET_LIMIT - base_offset ||
        s->next_offset < base_offset || s->next_offset > OFFSET_LIMIT ||
        s->next_offset % SECTOR != 0)
        return -1;
    const uint64_t end = base_offset + nbytes;
    while (!s->stopped) {
        if (s->eos_offset != UINT64_MAX) {
            stream_trailing(window, nbytes, base_offset, s->next_offset, s);
            break;
        }
        const uint64_t pos = s->next_offset;
        if (pos >= end || end - pos < SECTOR) {
            if (final)
                stream_ends_at(s, end);
            break;
        }
        stream_marker(window + (pos - base_offset), capacity_sectors, grain_sectors, s);
    }
    return 0;
}

/* Chunk by chunk: the same walk, each chunk read where it lies. A marker is read once its
   whole first sector has passed (as ii_vmdk_stream wants it in the window), from the 16
   bytes carried in w->header. */

#define MARKER_HEADER 16u

int ii_vmdk_stream_init(ii_stream_walk *w, uint64_t start, uint64_t capacity_sectors,
                        uint64_t grain_sectors)
{
    if (stream_params_bad(grain_sectors, start))
        return -1;
    memset(w, 0, sizeof(*w));
    w->s.next_offset = start;
    w->s.marker_offset = start;
    w->s.eos_offset = UINT64_MAX;
    w->capacity_sectors = capacity_sectors;
    w->grain_sectors = grain_sectors;
    w->position = start;
    return 0;
}

/* Take the bytes [pos, stop) of the first sector of the marker at s.next_offset; read the
   marker once the sector is complete. Returns 1 when that marker was a GT or GD marker. */
static int stream_sector(ii_stream_walk *w, const uint8_t *data, uint64_t base, uint64_t pos,
                         uint64_t stop)
{
    ii_stream_state *s = &w->s;
    const uint64_t marker = s->next_offset;
    if (pos < marker + MARKER_HEADER) {
        const uint64_t upto = stop < marker + MARKER_HEADER ? stop : marker + MARKER_HEADER;
        memcpy(w->header + (pos - marker), data + (pos - base), upto - pos);
    }
    w->position = stop;
    if (stop < marker + SECTOR)
        return 0;
    const uint64_t tables = s->gt_markers + s->gd_markers;
    stream_marker(w->header, w->capacity_sectors, w->grain_sectors, s);
    if (s->stopped || s->gt_markers + s->gd_markers == tables)
        return 0;
    w->table_end = s->next_offset;
    return 1;
}

int ii_vmdk_stream_feed(ii_stream_walk *w, uint64_t offset, const uint8_t *data, size_t n)
{
    return ii_vmdk_stream_resume(w, offset, data, n, 0);
}

int ii_vmdk_stream_resume(ii_stream_walk *w, uint64_t offset, const uint8_t *data, size_t n,
                          size_t from)
{
    if (from > n || offset > OFFSET_LIMIT || n > OFFSET_LIMIT - offset)
        return -1;
    ii_stream_state *s = &w->s;
    const uint64_t end = offset + n;
    if (offset + from != w->position)
        w->lost = 1; /* the walk cannot go on over a gap */
    while (!w->lost && !s->stopped && w->position < end) {
        const uint64_t pos = w->position;
        if (s->eos_offset != UINT64_MAX) {
            stream_trailing(data, n, offset, pos, s);
            break;
        }
        if (pos < s->next_offset) { /* grain data or a payload: skipped unread */
            w->position = s->next_offset < end ? s->next_offset : end;
            continue;
        }
        const uint64_t sector_end = s->next_offset + SECTOR;
        if (stream_sector(w, data, offset, pos, sector_end < end ? sector_end : end))
            return 1; /* a table's payload begins at w->position */
    }
    w->position = end;
    return offset + from < w->table_end ? 2 : 0;
}

int ii_vmdk_stream_run(ii_stream_walk *w, uint64_t offset, size_t n, size_t count,
                       const uint8_t *d0,
                       const uint8_t *d1, const uint8_t *d2, const uint8_t *d3,
                       const uint8_t *d4, const uint8_t *d5, const uint8_t *d6,
                       const uint8_t *d7)
{
    const uint8_t *const run[8] = {d0, d1, d2, d3, d4, d5, d6, d7};
    if (count > 8 || offset > OFFSET_LIMIT || n > OFFSET_LIMIT / 8 ||
        offset > OFFSET_LIMIT - 8 * (uint64_t)n)
        return -1;
    for (int k = 0; k < (int)count; k++) {
        const int status = ii_vmdk_stream_resume(w, offset + (uint64_t)k * n, run[k], n, 0);
        if (status < 0)
            return status;
        if (status > 0)
            return 4 * k + status;
    }
    return 0;
}

uint64_t ii_vmdk_stream_skip(ii_stream_walk *w, uint64_t limit)
{
    const ii_stream_state *s = &w->s;
    if (w->lost || s->stopped || s->eos_offset != UINT64_MAX)
        return w->position;
    const uint64_t to = s->next_offset < limit ? s->next_offset : limit;
    if (to > w->position)
        w->position = to;
    return w->position;
}

int ii_vmdk_stream_end(const ii_stream_walk *w, uint64_t size, ii_stream_state *out)
{
    *out = w->s;
    if (out->stopped || w->lost || w->position != size || out->eos_offset != UINT64_MAX)
        return 0;
    stream_ends_at(out, size);
    return 0;
}

/* ------------------------------------------------------------------ */
/* VHD block allocation table                                          */
/* ------------------------------------------------------------------ */

#define VHD_UNUSED 0xffffffffu

int ii_vhd_bat(const uint8_t *table, size_t nbytes, uint64_t first_index, uint64_t block_size,
               uint64_t data_start, uint64_t file_size, uint8_t *claimed, uint64_t claimed_bits,
               ii_block_result *out)
{
    if (block_size == 0 || block_size > SIZE32_LIMIT || block_size % SECTOR != 0 ||
        data_start > OFFSET_LIMIT || file_size > OFFSET_LIMIT || first_index > INDEX_LIMIT ||
        nbytes % 4 != 0)
        return -1;
    const claim_map map = {claimed, claimed_bits};
    /* one bit per sector of the block, rounded up to whole sectors */
    const uint64_t bitmap_bytes = round_up_sector((block_size / SECTOR + 7) / 8);
    const uint64_t footprint = bitmap_bytes + block_size;
    const uint64_t data_end = file_size >= SECTOR ? file_size - SECTOR : 0; /* footer */
    const uint64_t n = nbytes / 4;
    memset(out, 0, sizeof(*out));
    verdict_init(&out->v, n);

    for (uint64_t i = 0; i < n; i++) {
        const uint32_t sector = get_be32(table + i * 4);
        const uint64_t start = (uint64_t)sector * SECTOR;
        int reason;
        if (sector == VHD_UNUSED) {
            const uint64_t run = same_run(table, i, n, 4);
            out->unallocated += run;
            i += run - 1;
            continue;
        }
        if (start < data_start)
            reason = II_IN_METADATA;
        else if (!range_fits(start, footprint, data_end))
            reason = II_OUT_OF_RANGE;
        else
            reason = claim(&map, sector, footprint / SECTOR);
        if (reason != II_OK) {
            note_bad(&out->v, first_index + i, sector, reason);
            continue;
        }
        out->allocated++;
        out->allocated_bytes += block_size;
    }
    return 0;
}

/* ------------------------------------------------------------------ */
/* VHDX block allocation table                                         */
/* ------------------------------------------------------------------ */

#define VHDX_STATE_MASK 0x7u
#define VHDX_RESERVED_MASK 0xffff8ull /* bits 3-19 */
#define VHDX_NOT_PRESENT 0
#define VHDX_UNDEFINED 1
#define VHDX_ZERO 2
#define VHDX_UNMAPPED 3
#define VHDX_FULLY_PRESENT 6
#define VHDX_PARTIALLY_PRESENT 7
#define VHDX_BITMAP_PRESENT 6

typedef struct {
    claim_map map;
    uint64_t block_size;
    uint64_t file_size;
    int has_parent;
} vhdx_params;

/* A present block of len bytes at offset_mb MiB: outside the 1 MiB header
   section, inside the file, claiming 1 MiB units. */
static int vhdx_place(const vhdx_params *p, uint64_t offset_mb, uint64_t len)
{
    if (offset_mb == 0)
        return II_IN_METADATA;
    if (!range_fits(offset_mb << 20, len, p->file_size)) /* offset_mb < 2^44 */
        return II_OUT_OF_RANGE;
    return claim(&p->map, offset_mb, len / MIB);
}

static int vhdx_bitmap_entry(const vhdx_params *p, uint64_t e, ii_vhdx_result *out)
{
    const unsigned state = (unsigned)(e & VHDX_STATE_MASK);
    int reason = II_OK;
    if (state == VHDX_NOT_PRESENT)
        out->bitmaps_absent++;
    else if (state != VHDX_BITMAP_PRESENT)
        reason = II_BAD_STATE;
    else if ((reason = vhdx_place(p, e >> 20, MIB)) == II_OK)
        out->bitmaps_present++;
    return reason;
}

/* The counter of a payload state that places no block in the file (0 to 3). */
static uint64_t *vhdx_absent_counter(ii_vhdx_result *out, unsigned state)
{
    switch (state) {
    case VHDX_NOT_PRESENT:
        return &out->not_present;
    case VHDX_UNDEFINED:
        return &out->undefined;
    case VHDX_ZERO:
        return &out->zero;
    default:
        return &out->unmapped;
    }
}

static int vhdx_payload_entry(const vhdx_params *p, uint64_t e, ii_vhdx_result *out)
{
    const unsigned state = (unsigned)(e & VHDX_STATE_MASK);
    int reason = II_OK;
    switch (state) {
    case VHDX_NOT_PRESENT:
    case VHDX_UNDEFINED:
    case VHDX_ZERO:
    case VHDX_UNMAPPED:
        (*vhdx_absent_counter(out, state))++;
        break;
    case VHDX_FULLY_PRESENT:
    case VHDX_PARTIALLY_PRESENT:
        if (state == VHDX_PARTIALLY_PRESENT && !p->has_parent)
            return II_BAD_STATE;
        reason = vhdx_place(p, e >> 20, p->block_size);
        if (reason != II_OK)
            break;
        if (state == VHDX_FULLY_PRESENT)
            out->fully_present++;
        else
            out->partially_present++;
        out->allocated_bytes += p->block_size;
        break;
    default:
        reason = II_BAD_STATE;
    }
    return reason;
}

int ii_vhdx_bat(const uint8_t *table, size_t nbytes, uint64_t first_index, uint64_t block_size,
                uint64_t logical_sector_size, uint64_t file_size, int has_parent,
                uint8_t *claimed, uint64_t claimed_bits, ii_vhdx_result *out)
{
    if (block_size < MIB || block_size > 256 * MIB || (block_size & (block_size - 1)) != 0 ||
        (logical_sector_size != 512 && logical_sector_size != 4096) ||
        file_size > OFFSET_LIMIT || first_index > INDEX_LIMIT || nbytes % 8 != 0)
        return -1;
    const vhdx_params p = {{claimed, claimed_bits}, block_size, file_size, has_parent != 0};
    /* 2^23 sectors are covered by one sector-bitmap block; each chunk's payload entries
       are followed by its sector-bitmap entry */
    const uint64_t chunk_ratio = (((uint64_t)1 << 23) * logical_sector_size) / block_size;
    const uint64_t n = nbytes / 8;
    uint64_t position = first_index % (chunk_ratio + 1); /* of entry i in its chunk */
    memset(out, 0, sizeof(*out));
    verdict_init(&out->v, n);

    for (uint64_t i = 0; i < n;) {
        const uint64_t e = get_le64(table + i * 8);
        if (position != chunk_ratio && e <= VHDX_UNMAPPED) {
            /* payload blocks not in the file (no offset, no reserved bits): the bulk of a
               sparse BAT, in runs as long as a chunk's payload entries */
            const uint64_t chunk_left = chunk_ratio - position;
            const uint64_t run = same_run(table, i, n - i > chunk_left ? i + chunk_left : n, 8);
            *vhdx_absent_counter(out, (unsigned)e) += run;
            position += run;
            i += run;
            continue;
        }
        int reason;
        if (e & VHDX_RESERVED_MASK)
            reason = II_RESERVED_BITS;
        else if (position == chunk_ratio)
            reason = vhdx_bitmap_entry(&p, e, out);
        else
            reason = vhdx_payload_entry(&p, e, out);
        if (reason != II_OK)
            note_bad(&out->v, first_index + i, e, reason);
        position = position == chunk_ratio ? 0 : position + 1;
        i++;
    }
    return 0;
}

/* ------------------------------------------------------------------ */
/* VDI block map                                                       */
/* ------------------------------------------------------------------ */

#define VDI_FREE 0xffffffffu
#define VDI_ZERO 0xfffffffeu

int ii_vdi_blockmap(const uint8_t *table, size_t nbytes, uint64_t first_index,
                    uint64_t blocks_allocated, uint64_t block_size, uint64_t data_offset,
                    uint64_t file_size, uint8_t *claimed, uint64_t claimed_bits,
                    ii_block_result *out)
{
    if (block_size == 0 || block_size > SIZE32_LIMIT || blocks_allocated > SIZE32_LIMIT ||
        data_offset > OFFSET_LIMIT || file_size > OFFSET_LIMIT || first_index > INDEX_LIMIT ||
        nbytes % 4 != 0)
        return -1;
    const claim_map map = {claimed, claimed_bits};
    const uint64_t data_room = file_size > data_offset ? file_size - data_offset : 0;
    const uint64_t n = nbytes / 4;
    memset(out, 0, sizeof(*out));
    verdict_init(&out->v, n);

    for (uint64_t i = 0; i < n; i++) {
        const uint32_t block = get_le32(table + i * 4);
        int reason;
        if (block == VDI_FREE) {
            const uint64_t run = same_run(table, i, n, 4);
            out->unallocated += run;
            i += run - 1;
            continue;
        }
        if (block == VDI_ZERO) {
            out->zero++;
            continue;
        }
        /* block < 2^32 and block_size <= 2^32: the product fits */
        if (block >= blocks_allocated || !range_fits(block * block_size, block_size, data_room))
            reason = II_OUT_OF_RANGE;
        else
            reason = claim(&map, block, 1);
        if (reason != II_OK) {
            note_bad(&out->v, first_index + i, block, reason);
            continue;
        }
        out->allocated++;
        out->allocated_bytes += block_size;
    }
    return 0;
}

/* ------------------------------------------------------------------ */
/* CRC-32C                                                             */
/* ------------------------------------------------------------------ */

#define CRC32C_POLY 0x82f63b78u /* reflected Castagnoli polynomial */

static uint32_t crc_table[8][256];
static int crc_ready;

void ii_init(void)
{
    if (crc_ready)
        return;
    for (uint32_t b = 0; b < 256; b++) {
        uint32_t c = b;
        for (int k = 0; k < 8; k++)
            c = (c >> 1) ^ ((c & 1u) ? CRC32C_POLY : 0u);
        crc_table[0][b] = c;
    }
    for (uint32_t b = 0; b < 256; b++)
        for (int t = 1; t < 8; t++)
            crc_table[t][b] = (crc_table[t - 1][b] >> 8) ^ crc_table[0][crc_table[t - 1][b] & 0xffu];
    crc_ready = 1;
}

#if defined(__GNUC__)
/* Built when the library is loaded, before any thread can call in. */
__attribute__((constructor)) static void crc_init_at_load(void)
{
    ii_init();
}
#endif

/* slicing-by-8: eight table lookups per 8 input bytes */
uint32_t ii_crc32c_sw(uint32_t crc, const uint8_t *p, size_t n)
{
    uint32_t c = ~crc;
    ii_init();
    while (n >= 8) {
        const uint32_t lo = c ^ get_le32(p);
        const uint32_t hi = get_le32(p + 4);
        c = crc_table[7][lo & 0xffu] ^ crc_table[6][(lo >> 8) & 0xffu] ^
            crc_table[5][(lo >> 16) & 0xffu] ^ crc_table[4][lo >> 24] ^
            crc_table[3][hi & 0xffu] ^ crc_table[2][(hi >> 8) & 0xffu] ^
            crc_table[1][(hi >> 16) & 0xffu] ^ crc_table[0][hi >> 24];
        p += 8;
        n -= 8;
    }
    while (n--)
        c = (c >> 8) ^ crc_table[0][(c ^ *p++) & 0xffu];
    return ~c;
}

#if defined(__GNUC__) && defined(__x86_64__)
/* SSE 4.2 has a CRC-32C instruction; used only when the CPU says so. */
__attribute__((target("sse4.2"))) static uint32_t crc32c_sse42(uint32_t crc, const uint8_t *p,
                                                                size_t n)
{
    uint64_t c = ~crc;
    while (n >= 8) {
        uint64_t word;
        memcpy(&word, p, 8); /* x86 is little-endian: bytes in stream order */
        c = __builtin_ia32_crc32di(c, word);
        p += 8;
        n -= 8;
    }
    uint32_t c32 = (uint32_t)c;
    while (n--)
        c32 = __builtin_ia32_crc32qi(c32, *p++);
    return ~c32;
}

int ii_crc32c_hw(void)
{
    return __builtin_cpu_supports("sse4.2") ? 1 : 0;
}

uint32_t ii_crc32c(uint32_t crc, const uint8_t *data, size_t n)
{
    if (__builtin_cpu_supports("sse4.2"))
        return crc32c_sse42(crc, data, n);
    return ii_crc32c_sw(crc, data, n);
}
#else
int ii_crc32c_hw(void)
{
    return 0;
}

uint32_t ii_crc32c(uint32_t crc, const uint8_t *data, size_t n)
{
    return ii_crc32c_sw(crc, data, n);
}
#endif
