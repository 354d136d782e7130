/*
 * imageintrospect table scanners: the C half of imageintrospect.scan.
 *
 * Every scanner walks a table (or a window of a stream) that the caller has
 * read into memory, checks each entry against the file it belongs to and
 * returns counts plus the first offending entry. The scanners never allocate:
 * tables, claim bitmaps and output arrays all belong to the caller. Every
 * offset computation is done in uint64_t with explicit overflow checks, since
 * the entries come from hostile files.
 *
 * The text between the CDEF markers is fed verbatim to cffi's cdef(), so it
 * must stay within what cffi parses: no macros, no #include, no attributes.
 * imageintrospect/scan/_python.py is the pure-Python twin of this file; both
 * must give identical results (tests/test_scan.py compares them).
 */
#ifndef IMAGEINTROSPECT_SCAN_H
#define IMAGEINTROSPECT_SCAN_H

#include <stddef.h>
#include <stdint.h>

/* CDEF BEGIN */

/* Why an entry is bad. The numbers are shared with imageintrospect.scan.Reason. */
enum ii_reason {
    II_OK = 0,
    II_OUT_OF_RANGE = 1,   /* points past the end of the file (or of the disk) */
    II_MISALIGNED = 2,     /* not aligned as the format demands */
    II_IN_METADATA = 3,    /* points into the header / metadata area */
    II_RESERVED_BITS = 4,  /* a reserved bit is set */
    II_DOUBLE_CLAIM = 5,   /* overlaps something already claimed */
    II_BAD_COMPRESSED = 6, /* compressed descriptor that cannot be valid */
    II_BAD_SUBCLUSTER = 7, /* impossible extended-L2 subcluster bitmap */
    II_BAD_MARKER = 8,     /* stream marker that cannot be valid */
    II_TRUNCATED = 9,      /* the data runs past the end of the stream */
    II_TRAILING_DATA = 10, /* non-zero bytes after the end-of-stream marker */
    II_BAD_STATE = 11      /* undefined or forbidden block state */
};

/* Common part of every result: entries seen and the first bad one. */
typedef struct {
    uint64_t count;      /* entries (or markers) examined */
    uint64_t bad_count;  /* entries that failed a check (not counted elsewhere) */
    uint64_t bad_index;  /* first bad entry: absolute index (stream: byte offset) */
    uint64_t bad_value;  /* first bad entry: its raw value */
    int32_t bad_reason;  /* first bad entry: enum ii_reason, II_OK if none */
} ii_verdict;

/* qcow2 L1, qcow2 refcount table, VMDK grain directory. */
typedef struct {
    ii_verdict v;
    uint64_t allocated;   /* good entries written to indexes[] / offsets[] */
    uint64_t unallocated; /* zero entries */
} ii_pointer_result;

typedef struct {
    ii_verdict v;
    uint64_t allocated;        /* standard clusters with a host cluster */
    uint64_t compressed;       /* compressed clusters */
    uint64_t zero;             /* read as zeros, no host cluster */
    uint64_t unallocated;      /* no host cluster, not all zero */
    uint64_t allocated_bytes;  /* allocated * cluster size */
    uint64_t compressed_bytes; /* host bytes of the compressed clusters */
} ii_l2_result;

/* VMDK grain table, VHD BAT, VDI block map. */
typedef struct {
    ii_verdict v;
    uint64_t allocated;
    uint64_t zero;
    uint64_t unallocated;
    uint64_t allocated_bytes; /* allocated * grain/block size */
} ii_block_result;

typedef struct {
    ii_verdict v;
    uint64_t not_present;
    uint64_t undefined;
    uint64_t zero;
    uint64_t unmapped;
    uint64_t fully_present;
    uint64_t partially_present;
    uint64_t bitmaps_absent;   /* sector-bitmap entries, state 0 */
    uint64_t bitmaps_present;  /* sector-bitmap entries, state 6 */
    uint64_t allocated_bytes;  /* (fully + partially present) * block size */
} ii_vhdx_result;

/* State of a streamOptimized VMDK walk; the input of the next window. */
typedef struct {
    ii_verdict v;              /* v.count: markers read; v.bad_index: byte offset */
    uint64_t next_offset;      /* absolute offset where the walk goes on */
    uint64_t marker_offset;    /* offset of the last marker read */
    uint64_t grains;
    uint64_t grain_bytes;      /* sum of the grain markers' compressed sizes */
    uint64_t gt_markers;
    uint64_t gd_markers;
    uint64_t footer_markers;
    uint64_t other_markers;    /* type 4 (vSphere progress) */
    uint64_t eos_offset;       /* UINT64_MAX until an end-of-stream marker is seen */
    int32_t stopped;           /* a structural error ended the walk */
} ii_stream_state;

/* All scanners return 0, or -1 when a parameter is out of its documented range
   (the Python layer validates first, so -1 means a bug). first_index is the
   index of the table's first entry within the whole table. claimed (may be
   NULL) is a bitmap of claimed_bits bits, bit i = byte i / 8, mask 1 << (i % 8);
   the unit of a bit is given per scanner. */

int ii_qcow2_l1(const uint8_t *table, size_t nbytes, uint64_t first_index,
                uint32_t cluster_bits, uint64_t file_size,
                uint8_t *claimed, uint64_t claimed_bits,
                uint64_t *indexes, uint64_t *offsets, ii_pointer_result *out);

int ii_qcow2_refcount_table(const uint8_t *table, size_t nbytes, uint64_t first_index,
                            uint32_t cluster_bits, uint64_t file_size,
                            uint8_t *claimed, uint64_t claimed_bits,
                            uint64_t *indexes, uint64_t *offsets, ii_pointer_result *out);

int ii_qcow2_l2(const uint8_t *table, size_t nbytes, uint64_t first_index,
                uint32_t cluster_bits, int extended_l2, uint32_t version,
                uint64_t file_size, int has_data_file,
                uint8_t *claimed, uint64_t claimed_bits, ii_l2_result *out);

int ii_vmdk_gd(const uint8_t *table, size_t nbytes, uint64_t first_index,
               uint64_t gt_sectors, uint64_t file_size,
               uint8_t *claimed, uint64_t claimed_bits,
               uint64_t *indexes, uint64_t *offsets, ii_pointer_result *out);

int ii_vmdk_gt(const uint8_t *table, size_t nbytes, uint64_t first_index,
               uint64_t grain_sectors, uint64_t overhead_sectors, uint64_t file_size,
               int zeroed_grain_ok, int compressed,
               uint8_t *claimed, uint64_t claimed_bits, ii_block_result *out);

int ii_vmdk_stream(const uint8_t *window, size_t nbytes, uint64_t base_offset,
                   uint64_t capacity_sectors, uint64_t grain_sectors, int final,
                   ii_stream_state *state);

/* A streamOptimized walk fed the stream chunk by chunk, each chunk read in place:
   the first sector of a marker may straddle chunks (its first 16 bytes are carried in
   header), grain data and payloads are skipped unread. */
typedef struct {
    ii_stream_state s;         /* the walk, as ii_vmdk_stream leaves it */
    uint64_t capacity_sectors;
    uint64_t grain_sectors;
    uint64_t position;         /* stream offset of the next byte expected */
    uint64_t table_end;        /* end of the payload of the last GT or GD marker read */
    uint8_t header[16];        /* first bytes of the marker at s.next_offset, then the last read */
    int32_t lost;              /* a chunk did not start where the previous one ended */
} ii_stream_walk;

int ii_vmdk_stream_init(ii_stream_walk *w, uint64_t start, uint64_t capacity_sectors,
                        uint64_t grain_sectors);

/* Walk data[0:n], the stream bytes from offset on. Returns 0 once the chunk is walked; 1
   right after a GT or GD marker, whose payload begins at w->position (the caller collects
   what it wants of it and goes on with ii_vmdk_stream_resume from there); 2 once the chunk
   is walked, if it began inside the payload of the last GT or GD marker (the caller may
   still be collecting it); -1 on bad parameters. */
int ii_vmdk_stream_feed(ii_stream_walk *w, uint64_t offset, const uint8_t *data, size_t n);

/* The same for data[from:n], after a 1. */
int ii_vmdk_stream_resume(ii_stream_walk *w, uint64_t offset, const uint8_t *data, size_t n,
                          size_t from);

/* The upload's steady state, one call for a run of chunks: the first count of d0..d7
   (count <= 8; the others are not read) are chunks of n bytes each, one after another from
   offset on. Returns 0 once all are walked, -1 on bad parameters, or 4 * k + s when chunk k returned s (1 or 2) as
   ii_vmdk_stream_feed would: the caller goes on with chunk k as after that call, and the
   chunks after it are left unwalked. */
int ii_vmdk_stream_run(ii_stream_walk *w, uint64_t offset, size_t n, size_t count,
                       const uint8_t *d0,
                       const uint8_t *d1, const uint8_t *d2, const uint8_t *d3,
                       const uint8_t *d4, const uint8_t *d5, const uint8_t *d6,
                       const uint8_t *d7);

/* On a seekable file: jump over the bytes the walk would skip unread (grain data, a payload
   the caller does not collect) up to the next marker, or to limit if that comes first.
   Returns where the walk then expects its next chunk; unchanged when it cannot jump (the
   walk stopped or lost its place, stands inside a marker's first sector, or is past the
   end-of-stream marker, where every byte must be read). */
uint64_t ii_vmdk_stream_skip(ii_stream_walk *w, uint64_t limit);

/* The walk's state judged as if the stream ended at size (w is left as it is). */
int ii_vmdk_stream_end(const ii_stream_walk *w, uint64_t size, ii_stream_state *out);

int ii_vhd_bat(const uint8_t *table, size_t nbytes, uint64_t first_index,
               uint64_t block_size, uint64_t data_start, uint64_t file_size,
               uint8_t *claimed, uint64_t claimed_bits, ii_block_result *out);

int ii_vhdx_bat(const uint8_t *table, size_t nbytes, uint64_t first_index,
                uint64_t block_size, uint64_t logical_sector_size, uint64_t file_size,
                int has_parent, uint8_t *claimed, uint64_t claimed_bits,
                ii_vhdx_result *out);

int ii_vdi_blockmap(const uint8_t *table, size_t nbytes, uint64_t first_index,
                    uint64_t blocks_allocated, uint64_t block_size,
                    uint64_t data_offset, uint64_t file_size,
                    uint8_t *claimed, uint64_t claimed_bits, ii_block_result *out);

/* CRC-32C (Castagnoli), zlib-style chaining: crc32c(b, crc32c(a, 0)) == crc32c(a + b, 0). */
uint32_t ii_crc32c(uint32_t crc, const uint8_t *data, size_t n);
uint32_t ii_crc32c_sw(uint32_t crc, const uint8_t *data, size_t n);
int ii_crc32c_hw(void);
void ii_init(void);

/* CDEF END */

#endif /* IMAGEINTROSPECT_SCAN_H */
