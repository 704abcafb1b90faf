#!/usr/bin/env python3
"""make_seeds.py — regenerate the committed seed corpora in native/fuzz/corpus/.

Frames are built here with independently computed checksums (the same formats as the byte
literals in native/tests/test_wire.c, addressed to the fuzz_engine setup). Run: python3 native/fuzz/make_seeds.py
"""
import os
import struct

HERE = os.path.dirname(os.path.abspath(__file__))


def csum(b):
    if len(b) % 2:
        b += b'\0'
    s = sum(struct.unpack('!%dH' % (len(b) // 2), b))
    while s >> 16:
        s = (s & 0xffff) + (s >> 16)
    return (~s) & 0xffff


def ip4(src, dst, proto, payload, ident=0x1c46, frag=0x4000, ttl=64):
    h = struct.pack('!BBHHHBBH4s4s', 0x45, 0, 20 + len(payload), ident, frag, ttl, proto, 0,
                    bytes(src), bytes(dst))
    return h[:10] + struct.pack('!H', csum(h)) + h[12:] + payload


def tcp4(src, dst, seg):
    ph = bytes(src) + bytes(dst) + struct.pack('!BBH', 0, 6, len(seg))
    return seg[:16] + struct.pack('!H', csum(ph + seg)) + seg[18:]


def ph6(src, dst, nh, n):
    return bytes(src) + bytes(dst) + struct.pack('!IxxxB', n, nh)


def icmp6(src, dst, m):
    return m[:2] + struct.pack('!H', csum(ph6(src, dst, 58, len(m)) + m)) + m[4:]


def tcp6(src, dst, seg):
    return seg[:16] + struct.pack('!H', csum(ph6(src, dst, 6, len(seg)) + seg)) + seg[18:]


def ip6(src, dst, nh, payload, hl=64):
    return struct.pack('!IHBB', 0x60000000, len(payload), nh, hl) + bytes(src) + bytes(dst) + payload


def eth(d, s, t, p):
    return bytes(d) + bytes(s) + struct.pack('!H', t) + p


def tcpseg(sport, dport, seq, ack, flags, win=65535, opts=b'', payload=b''):
    return struct.pack('!HHIIBBHHH', sport, dport, seq, ack, (20 + len(opts)) // 4 << 4, flags,
                       win, 0, 0) + opts + payload


# addresses shared with fuzz_engine.c: A = engine under test, B = its peer engine
A = [198, 18, 0, 1]
B = [198, 18, 0, 2]
C = [198, 18, 0, 3]
MA = [0x02, 0, 0, 0, 0, 0x01]
MB = [0x02, 0, 0, 0, 0, 0x02]
MC = [0x02, 0, 0, 0, 0, 0x03]
A6 = bytes.fromhex('20010db8000000000000000000000001')
B6 = bytes.fromhex('20010db8000000000000000000000002')
C6 = bytes.fromhex('20010db8000000000000000000000003')
SN_A = bytes.fromhex('ff0200000000000000000001ff000001')
FIN, SYN, RST, PSH, ACK = 1, 2, 4, 8, 16

LINUX_SYN_OPTS = bytes([2, 4, 0x05, 0xb4, 4, 2, 8, 10]) + struct.pack('!II', 0x0019b4c1, 0) + bytes([1, 3, 3, 7])


def frames():
    f = {}
    syn = tcp4(C, A, tcpseg(43210, 80, 0x6e3d1c2a, 0, SYN, 64240, LINUX_SYN_OPTS))
    f['syn'] = eth(MA, MC, 0x0800, ip4(C, A, 6, syn))
    opts2 = bytes([1, 1, 8, 10]) + struct.pack('!II', 1000, 2000) + bytes([1, 1, 5, 18]) + struct.pack('!IIII', 100, 200, 300, 400)
    seg = tcp4(C, A, tcpseg(43210, 80, 0x6e3d1c2b, 0x11111111, PSH | ACK, 502, opts2, b'hello'))
    f['data'] = eth(MA, MC, 0x0800, ip4(C, A, 6, seg, ident=0))
    arp = struct.pack('!HHBBH6s4s6s4s', 1, 0x0800, 6, 4, 1, bytes(MC), bytes(C), bytes(6), bytes(A))
    f['arp'] = eth([0xff] * 6, MC, 0x0806, arp) + bytes(18)
    arpr = struct.pack('!HHBBH6s4s6s4s', 1, 0x0800, 6, 4, 2, bytes(MC), bytes(C), bytes(MA), bytes(A))
    f['arp_reply'] = eth(MA, MC, 0x0806, arpr) + bytes(18)
    ping = struct.pack('!BBHHH', 8, 0, 0, 0x1234, 1) + b'abcdefgh'
    ping = ping[:2] + struct.pack('!H', csum(ping)) + ping[4:]
    f['ping'] = eth(MA, MC, 0x0800, ip4(C, A, 1, ping, ident=7, frag=0))
    quoted = ip4(A, C, 6, tcpseg(80, 43210, 1, 1, ACK))[:28]
    fn = struct.pack('!BBHHH', 3, 4, 0, 0, 1280) + quoted
    fn = fn[:2] + struct.pack('!H', csum(fn)) + fn[4:]
    f['fragneed'] = eth(MA, MC, 0x0800, ip4(C, A, 1, fn, ident=9, frag=0))
    ns = struct.pack('!BBHI', 135, 0, 0, 0) + A6 + bytes([1, 1]) + bytes(MC)
    f['ns'] = eth([0x33, 0x33, 0xff, 0, 0, 1], MC, 0x86dd, ip6(C6, SN_A, 58, icmp6(C6, SN_A, ns), 255))
    na = struct.pack('!BBHI', 136, 0, 0, 0x60000000) + C6 + bytes([2, 1]) + bytes(MC)
    f['na'] = eth(MA, MC, 0x86dd, ip6(C6, A6, 58, icmp6(C6, A6, na), 255))
    e6 = struct.pack('!BBHHH', 128, 0, 0, 0xbeef, 3) + b'ping6!'
    f['echo6'] = eth(MA, MC, 0x86dd, ip6(C6, A6, 58, icmp6(C6, A6, e6)))
    syn6 = tcp6(C6, A6, tcpseg(40000, 80, 1, 0, SYN, 65535, bytes([2, 4, 0x05, 0xa0])))
    hbh = bytes([60, 0, 1, 4, 0, 0, 0, 0])
    dst = bytes([6, 1, 1, 12]) + bytes(12)
    f['syn6x'] = eth(MA, MC, 0x86dd, ip6(C6, A6, 0, hbh + dst + syn6))
    f['frag6'] = eth(MA, MC, 0x86dd, ip6(C6, A6, 44, bytes([6, 0, 0, 1, 0, 0, 0, 42]) + syn6))
    ptb = struct.pack('!BBHI', 2, 0, 0, 1280) + ip6(A6, C6, 6, tcpseg(80, 40000, 1, 1, ACK))[:48]
    f['ptb'] = eth(MA, MC, 0x86dd, ip6(C6, A6, 58, icmp6(C6, A6, ptb)))
    return f


def write(d, name, data):
    os.makedirs(d, exist_ok=True)
    with open(os.path.join(d, name), 'wb') as fh:
        fh.write(data)


def wire_corpus(fr):
    d = os.path.join(HERE, 'corpus', 'fuzz_wire')
    for name, b in fr.items():
        write(d, 'chain_' + name, bytes([0]) + b)          # full chain
        write(d, 'chainfix_' + name, bytes([0x80]) + b)    # full chain, checksums fixed up
    write(d, 'ipv4_syn', bytes([3]) + fr['syn'][14:])
    write(d, 'ipv6_syn6x', bytes([4]) + fr['syn6x'][14:])
    write(d, 'icmp4_ping', bytes([5]) + fr['ping'][34:])
    write(d, 'icmp6_ns', bytes([0x86]) + fr['ns'][54:])
    write(d, 'tcp_syn', bytes([7]) + fr['syn'][34:])
    write(d, 'tcp_data', bytes([0x87]) + fr['data'][34:])
    write(d, 'arp', bytes([2]) + fr['arp'][14:])
    write(d, 'csum', bytes([8]) + bytes(range(1, 41)))


# ---- fuzz_engine records: ctl, len(2, big-endian), bytes (see fuzz_engine.c) ----
# APP records: bytes[0] % 13 = 0 send, 1 recv, 2 shutdown, 3 close, 4 abort, 5 setopt/getopt,
# 6 readable/info, 7 connect, 8 send+recv, 9 close listener, 10 B connect burst (bytes[1] % 24 + 1,
# bytes[2] & 1 = IPv6), 11 B sends, 12 lossy exchange (drop mask bytes[1]); bytes[2] * 64 + 1 = amount
E_PATCH, E_PUMP, E_RAWFIX, E_T50MS, E_T1S, E_APP = 0x04, 0x08, 0x10, 0x20, 0x40, 0x80


def rec(ctl, data):
    return bytes([ctl]) + struct.pack('!H', len(data)) + data


def engine_corpus(fr):
    d = os.path.join(HERE, 'corpus', 'fuzz_engine')
    seg = lambda flags, payload=b'', opts=b'', seq=0, ack=0, win=65535: tcpseg(0, 0, seq, ack, flags, win, opts, payload)
    ts = bytes([1, 1, 8, 10]) + struct.pack('!II', 5000, 0)
    sack = bytes([1, 1, 5, 10]) + struct.pack('!II', 1000, 2000)
    seeds = {
        # patched segments on the established connections (conn k = ctl & 3)
        'conn0_data': rec(E_PATCH | 0, seg(ACK | PSH, b'hello world')) + rec(E_PUMP, b''),
        'conn0_fin': rec(E_PATCH | 0, seg(FIN | ACK)) + rec(E_T1S | E_PUMP, b''),
        'conn0_rst': rec(E_PATCH | 0, seg(RST | ACK)),
        'conn0_rst_oow': rec(E_PATCH | 0, seg(RST, seq=100000)),
        'conn0_syn_inwin': rec(E_PATCH | 0, seg(SYN, opts=bytes([2, 4, 5, 0xb4]))),
        'conn1_data_sack': rec(E_PATCH | 1, seg(ACK, b'x' * 100, opts=ts + sack)) + rec(E_APP | 1, b''),
        'conn2_v6_data': rec(E_PATCH | 2, seg(ACK | PSH, b'six')) + rec(E_PUMP | E_APP | 2, b''),
        'conn3_dupacks': rec(E_PATCH | 3, seg(ACK)) * 4 + rec(E_T50MS, b''),
        'conn3_ooo': rec(E_PATCH | 3, seg(ACK, b'later', seq=3000)) + rec(E_PATCH | 3, seg(ACK, b'now')),
        'conn3_zero_window': rec(E_PATCH | 3, seg(ACK, win=0)) + rec(E_T1S, b'') + rec(E_T1S, b''),
        'timers': rec(E_T1S | E_T50MS, b'') * 6,
        'conn0_close': rec(E_APP | E_PUMP | 0, b'\x03') + rec(E_PATCH | 0, seg(FIN | ACK)) + rec(E_PUMP | E_T1S, b''),
        'conn1_shutdown': rec(E_APP | 1, b'\x02') + rec(E_PUMP, b'') + rec(E_PATCH | 1, seg(FIN | ACK)),
        'conn2_abort': rec(E_APP | 2, b'\x04') + rec(E_PATCH | 2, seg(ACK, b'after abort')),
        'conn3_send_recv_info': rec(E_APP | 3, b'\x00\x00\x20') + rec(E_APP | 3, b'\x01\x00\x10') + rec(E_APP | 3, b'\x06'),
        'setopt_nodelay': rec(E_APP | 0, b'\x05\x00\x01') + rec(E_APP | 0, b'\x00\x00\x01') + rec(E_PUMP, b''),
        'syn_burst': rec(E_APP, b'\x0a\x13\x00') + rec(E_PUMP, b'') + rec(E_T1S | E_PUMP, b''),
        'syn_burst6': rec(E_APP, b'\x0a\x0b\x01') + rec(E_PUMP, b'') + rec(E_APP, b'\x0a\x05\x01') + rec(E_PUMP, b''),
        'close_listener': rec(E_APP, b'\x0a\x03\x00') + rec(E_APP, b'\x09\x00') + rec(E_PUMP, b''),
        'lossy_bulk': rec(E_APP | 0, b'\x00\x00\x40') + rec(E_APP, b'\x0c\x05') + rec(E_T1S, b'') + rec(E_APP, b'\x0c\x00')
                      + rec(E_T1S | E_PUMP, b''),
        'b_sends_lossy': rec(E_APP | 0, b'\x0b\x00\x30') + rec(E_APP, b'\x0c\x02') + rec(E_APP | 0, b'\x01\x00\xff')
                         + rec(E_T1S | E_PUMP, b''),
        'connect_new': rec(E_APP, b'\x07\x01') + rec(E_PUMP, b'') + rec(E_APP, b'\x07\x02') + rec(E_T1S, b'') * 3,
    }
    for name, b in fr.items():                      # the raw frames (new peer C), checksums as built
        seeds['raw_' + name] = rec(0, b)
    seeds['raw_syn_then_ack'] = rec(E_RAWFIX, fr['syn']) + rec(E_T50MS, b'') + rec(E_RAWFIX, fr['data'])
    for name, b in seeds.items():
        write(d, name, b)


def fault_corpus(fr):
    """fuzz_fault: setup byte, then rules and frames (see fuzz_fault.c)."""
    d = os.path.join(HERE, 'corpus', 'fuzz_fault')
    RULE, CTRL, TX = 0x80, 0xc0, 0x01

    def rule(action, dirs, flags=0, mask=0, value=0, a_port=0, b_port=0, skip=0, count=0, delay=0,
             start=0, dur=0):  # noqa: E306
        b = bytes([action - 1, dirs, flags, mask, value, 1 if a_port else 0, a_port >> 8, a_port & 255,
                   1, 1 if b_port else 0, b_port >> 8, b_port & 255, 2, start, dur, skip, count,
                   delay & 255, delay >> 8])
        return rec(RULE, b)
    synack = tcp4(A, C, tcpseg(80, 43210, 0x1000, 0x6e3d1c2b, SYN | ACK, 65535, bytes([2, 4, 0x05, 0xb4])))
    ack = tcp4(C, A, tcpseg(43210, 80, 0x6e3d1c2b, 0x1001, ACK, 502))
    fin = tcp4(A, C, tcpseg(80, 43210, 0x1001, 0x6e3d1c30, FIN | ACK, 65535))
    rst = tcp4(C, A, tcpseg(43210, 80, 0x6e3d1c30, 0, RST, 0))
    data6 = tcp6(C6, A6, tcpseg(40000, 80, 2, 1, PSH | ACK, 65535, b'', b'six'))
    tcp = [fr['syn'], eth(MC, MA, 0x0800, ip4(A, C, 6, synack)), eth(MA, MC, 0x0800, ip4(C, A, 6, ack)),
           fr['data'], eth(MC, MA, 0x0800, ip4(A, C, 6, fin)), eth(MA, MC, 0x0800, ip4(C, A, 6, rst)),
           eth(MA, MC, 0x86dd, ip6(C6, A6, 6, data6))]
    frames_tx = b''.join(rec(TX | (8 * (k % 3)), f) for k, f in enumerate(tcp))
    frames_rx = b''.join(rec(8 * (k % 2), f) for k, f in enumerate(tcp))
    seeds = {
        'drop_synack_tx': b'\x00' + rule(1, 1, mask=0x17, value=0x12, count=1) + frames_tx,
        'partition_both': b'\x00' + rule(1, 3, flags=1, a_port=80, dur=20) + frames_tx + frames_rx,
        'corrupt_data_rx': b'\x00' + rule(3, 2, flags=2, skip=1, count=1) + frames_rx * 2,
        'delay_tx_partial': b'\x00' + rule(2, 1, delay=300) + b''.join(rec(TX | 2, f) for f in tcp),
        'duplicate_impaired': b'\x0e' + rule(4, 3, count=2) + frames_tx + frames_rx,
        'loopback_rules': b'\x01' + rule(1, 1, skip=1, count=1) + rule(2, 2, delay=100) + frames_tx * 2
                          + rec(CTRL, b'\x00') + frames_tx + rec(CTRL, b'\x80') + frames_tx,
        'gso_corrupt': b'\x00' + rule(3, 1, count=3) + b''.join(rec(TX | 4, f) for f in tcp),
    }
    for name, b in seeds.items():
        write(d, name, b)


if __name__ == '__main__':
    fr = frames()
    wire_corpus(fr)
    engine_corpus(fr)
    fault_corpus(fr)
