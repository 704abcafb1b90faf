# The engine's public C API (native/include/mtcp.h), declared once for the compiled data path.
#
# Only the per-connection / per-event part is declared: types, event and option constants, and
# the functions the data path calls. The functions are not linked by name: the engine is compiled
# once, into the cffi extension (mtcp_loop._mtcp_cffi), and the data path calls it through the
# table `mtcp_api` below, filled at import from the cffi module's function addresses (see
# mtcp_loop/_aio/core.pyx: _bind_api). One copy of the engine's code and globals in the process.
from libc.stdint cimport uint8_t, uint16_t, uint32_t, int32_t, uint64_t, int64_t

cdef extern from "mtcp.h" nogil:
    ctypedef struct mtcp_engine:
        pass
    ctypedef uint64_t mtcp_cid

    cdef enum:
        MTCP_AF_INET
        MTCP_AF_INET6
        MTCP_EV_ACCEPT
        MTCP_EV_CONNECTED
        MTCP_EV_CONNECT_FAILED
        MTCP_EV_READABLE
        MTCP_EV_WRITABLE
        MTCP_EV_PEER_CLOSED
        MTCP_EV_ERROR
        MTCP_EV_CLOSED
        MTCP_OPT_NODELAY
        MTCP_OPT_KEEPALIVE
        MTCP_OPT_KEEPIDLE
        MTCP_OPT_KEEPINTVL
        MTCP_OPT_KEEPCNT
        MTCP_OPT_SNDBUF
        MTCP_OPT_RCVBUF
        MTCP_OPT_LINGER_ZERO

    struct mtcp_addr:
        uint8_t family
        uint8_t pad
        uint16_t port
        uint8_t ip[16]

    struct mtcp_event:
        mtcp_cid cid
        mtcp_cid parent
        uint32_t type
        int32_t err
        uint32_t len
        uint32_t pad


# Function pointer types of the calls the data path makes (signatures as in mtcp.h).
ctypedef int (*mtcp_engine_poll_t)(mtcp_engine *e, uint64_t now_us) noexcept nogil
ctypedef int64_t (*mtcp_engine_next_deadline_t)(mtcp_engine *e) noexcept nogil
ctypedef uint32_t (*mtcp_engine_events_t)(mtcp_engine *e, mtcp_event *ev, uint32_t max) noexcept nogil
ctypedef int64_t (*mtcp_send_t)(mtcp_engine *e, mtcp_cid cid, const uint8_t *data, uint32_t len) noexcept nogil
ctypedef int64_t (*mtcp_recv_t)(mtcp_engine *e, mtcp_cid cid, uint8_t *buf, uint32_t cap) noexcept nogil
ctypedef int64_t (*mtcp_readable_t)(mtcp_engine *e, mtcp_cid cid) noexcept nogil
ctypedef int (*mtcp_cid_op_t)(mtcp_engine *e, mtcp_cid cid) noexcept nogil
ctypedef int (*mtcp_setopt_t)(mtcp_engine *e, mtcp_cid cid, int opt, int64_t val) noexcept nogil
ctypedef int (*mtcp_getopt_t)(mtcp_engine *e, mtcp_cid cid, int opt, int64_t *val) noexcept nogil
ctypedef int (*mtcp_getaddrs_t)(mtcp_engine *e, mtcp_cid cid, mtcp_addr *local, mtcp_addr *remote) noexcept nogil

cdef struct mtcp_api:
    mtcp_engine_poll_t engine_poll_rx
    mtcp_engine_poll_t engine_poll_tx
    mtcp_engine_next_deadline_t engine_next_deadline
    mtcp_engine_events_t engine_events
    mtcp_send_t send
    mtcp_recv_t recv
    mtcp_readable_t readable
    mtcp_cid_op_t shutdown
    mtcp_cid_op_t close
    mtcp_cid_op_t abort
    mtcp_setopt_t setopt
    mtcp_getopt_t getopt
    mtcp_getaddrs_t getaddrs
