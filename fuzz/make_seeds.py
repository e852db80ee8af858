#!/usr/bin/env python3
"""Writes the seed corpora of the fuzz targets into fuzz/seeds/<target>/.

The bytes are built here from the wire format as documented in src/frame.rs
and src/hello.rs, not by the crate itself, so the seeds are an independent
statement of the format. Re-run after a format change:

    python3 fuzz/make_seeds.py

It clears and rewrites fuzz/seeds/; the output is deterministic.
"""

import os
import shutil
import struct

HERE = os.path.dirname(os.path.abspath(__file__))
SEEDS = os.path.join(HERE, "seeds")

HELLO, ACCEPT, REJECT, DATA = 0x01, 0x02, 0x03, 0x10
MAGIC = b"tcpnet"
MAX_META_WIRE = 4096
MAX_HELLO = 6 + 2 + 8 + 2 + 1 + 1 + 63 + 1 + 63 + 8 + 2 + MAX_META_WIRE  # 4253
PROTOCOL_VERSION = 2
DEFAULT_MAX_FRAME_LEN = 8 * 1024 * 1024

# The fuzzing module's local hello (src/fuzzing.rs, `ours`).
OURS_ID = b"0123456789abcdef0123456789abcdef"
OURS_INC = 0x0123456789ABCDEF
OURS_CLUSTER = b"my-cluster"


def meta(*pairs):
    """Metadata on the wire: (key length u8, key, value length u8, value)*."""
    return b"".join(bytes([len(k)]) + k + bytes([len(v)]) + v for k, v in pairs)


def hello(version=PROTOCOL_VERSION, inc=0x0102030405060708, port=4000, id=OURS_ID[::-1],
          cluster=OURS_CLUSTER, id_len=None, cluster_len=None, magic=MAGIC, flags=0,
          meta_version=0x0102030405060709, meta=b"", meta_len=None):
    """A hello payload; the length fields may lie, to make bad ones."""
    return (magic + struct.pack(">HQHB", version, inc, port, flags)
            + bytes([len(id) if id_len is None else id_len]) + id
            + bytes([len(cluster) if cluster_len is None else cluster_len]) + cluster
            + struct.pack(">QH", meta_version, len(meta) if meta_len is None else meta_len)
            + meta)


def frame(kind, payload=b""):
    return struct.pack(">I", len(payload) + 1) + bytes([kind]) + payload


HTTP = b"GET / HTTP/1.1\r\nHost: 192.168.1.20:4000\r\nUser-Agent: curl/8.5.0\r\nAccept: */*\r\n\r\n"
SSH = b"SSH-2.0-OpenSSH_9.6p1 Ubuntu-3ubuntu13\r\n"


def tls_client_hello():
    """A small but well-formed TLS 1.3 ClientHello record with SNI."""
    host = b"node.local"
    sni = struct.pack(">HBH", len(host) + 3, 0, len(host)) + host
    exts = (struct.pack(">HH", 0x0000, len(sni)) + sni                   # server_name
            + struct.pack(">HHB", 0x002B, 3, 2) + b"\x03\x04"            # supported_versions
            + struct.pack(">HHH", 0x000A, 4, 2) + b"\x00\x1d")           # supported_groups
    body = (b"\x03\x03" + bytes(range(32))                               # version, random
            + b"\x00"                                                    # session id
            + struct.pack(">H", 6) + b"\x13\x01\x13\x02\x13\x03"         # cipher suites
            + b"\x01\x00"                                                # compression
            + struct.pack(">H", len(exts)) + exts)
    hs = b"\x01" + struct.pack(">I", len(body))[1:] + body
    return b"\x16\x03\x01" + struct.pack(">H", len(hs)) + hs


TLS = tls_client_hello()

# Hello payloads, valid and not.
typical = hello()
hellos = {
    "valid_typical": typical,
    "valid_shortest": hello(id=b"a", cluster=b"c"),
    "valid_longest": hello(id=b"f" * 63, cluster=b"c" * 63, meta=b"\x00" * MAX_META_WIRE),
    "valid_with_meta": hello(meta=meta((b"role", b"gateway"), (b"http", b"10.99.0.2:8080"))),
    "valid_bad_meta_keys": hello(meta=meta((b"Role", b"x"), (b"a b", b"y"))),
    "valid_meta_cut_short": hello(meta=b"\x04rol"),
    "meta_len_lies": hello(meta=meta((b"role", b"web")), meta_len=200),
    "meta_over_bound": hello(meta=b"\x00" * (MAX_META_WIRE + 1)),
    "version_1_hello": hello(version=1)[:-10],
    "valid_upper_case_id": hello(id=b"ABCDEF0123456789ABCDEF0123456789"),
    "valid_accepted_by_ours": hello(id=b"f" * 32, inc=7),
    "valid_self_link": hello(id=OURS_ID, inc=OURS_INC, port=4000),
    "valid_id_conflict": hello(id=OURS_ID, inc=OURS_INC + 1),
    "valid_other_cluster": hello(cluster=b"other-cluster"),
    "valid_other_version": hello(version=3),
    "valid_other_id_len": hello(id=b"0a0"),
    "valid_port_0_max_incarnation": hello(port=0, inc=2**64 - 1),
    "valid_with_secret_flag": hello(flags=1),
    "bad_unknown_flags": hello(flags=0x80),
    "empty": b"",
    "magic_only": MAGIC,
    "bad_magic": b"tcpnex" + typical[6:],
    "truncated_fixed_fields": typical[:6 + 2 + 8 + 1],
    "truncated_in_id": typical[:6 + 2 + 8 + 2 + 1 + 5],
    "truncated_no_cluster_len": typical[:6 + 2 + 8 + 2 + 1 + len(OURS_ID)],
    "truncated_in_cluster": typical[:-11],
    "truncated_in_meta_header": typical[:-3],
    "trailing_byte": typical + b"\x00",
    "id_not_hex": hello(id=b"xyz"),
    "id_empty": hello(id=b""),
    "id_64_digits": hello(id=b"a" * 64),
    "id_len_255_short": hello(id=b"abc", id_len=255),
    "id_not_utf8": hello(id=b"\xff\xfe"),
    "cluster_empty": hello(cluster=b""),
    "cluster_64": hello(cluster=b"c" * 64),
    "cluster_bad_char": hello(cluster=b"my_cluster"),
    "cluster_not_utf8": hello(cluster=b"caf\xc3"),
    "cluster_len_lies": hello(cluster_len=200),
    "http_request": HTTP,
    "tls_client_hello": TLS,
}

# What a link may receive first: a hello frame, or anything else.
first = {}
for name, payload in hellos.items():
    first["hello_frame_" + name] = frame(HELLO, payload)
first.update({
    "hello_then_accept": frame(HELLO, typical) + frame(ACCEPT),
    "hello_then_data": frame(HELLO, typical) + frame(DATA, b"early"),
    "longest_hello_exact_bound": frame(HELLO, hellos["valid_longest"]),
    "length_one_over_bound": struct.pack(">I", MAX_HELLO + 2) + bytes([HELLO])
                             + hellos["valid_longest"] + b"x",
    "accept_first": frame(ACCEPT),
    "data_first": frame(DATA, b"hello"),
    "optional_kind_first": frame(0x80, b"hint"),
    "kind_only": frame(HELLO),
    "zero_length": b"\x00\x00\x00\x00",
    "length_4gib": b"\xff\xff\xff\xff" + bytes([HELLO]) + typical,
    "empty": b"",
    "two_bytes": b"\x00\x00",
    "header_only": struct.pack(">I", len(typical) + 1),
    "header_and_kind": struct.pack(">I", len(typical) + 1) + bytes([HELLO]),
    "half_a_hello": frame(HELLO, typical)[: 5 + len(typical) // 2],
    "http_request": HTTP,
    "tls_client_hello": TLS,
    "ssh_banner": SSH,
})


def frames_input(stream, mode=0, param=0, split=0):
    """Input of the `frames` target: mode byte, u16 parameter, split seed.

    mode % 4: 0 max = MAX_HELLO, 1 max = 8 MiB (default), 2 max = param % 32,
    3 max = param. split: 0 feeds one byte at a time, else reads of 0..=split.
    """
    return bytes([mode]) + struct.pack(">H", param) + bytes([split]) + stream


session = (frame(ACCEPT) + frame(DATA, b"hello") + frame(DATA) + frame(0x80)
           + frame(0xFF, b"optional hint") + frame(DATA, bytes(range(256))))
frames = {
    "session_bytewise": frames_input(session, mode=3, param=4096, split=0),
    "session_chunks_7": frames_input(session, mode=3, param=4096, split=7),
    "session_chunks_200": frames_input(session, mode=1, split=200),
    "handshake_then_data": frames_input(frame(HELLO, typical) + frame(ACCEPT)
                                        + frame(DATA, b"x" * 40), mode=0, split=3),
    "reject": frames_input(frame(REJECT), mode=0, split=1),
    "unknown_low_kind": frames_input(frame(0x04, b"??") + frame(DATA, b"after"), mode=3,
                                     param=64, split=2),
    "kind_only_frames": frames_input(b"".join(frame(k) for k in (1, 2, 3, 0x10, 0x7F, 0x80, 0xFF)),
                                     mode=2, param=0, split=5),
    "payload_exactly_max": frames_input(frame(DATA, b"12345"), mode=2, param=5, split=4),
    "payload_max_plus_one": frames_input(frame(DATA, b"123456"), mode=2, param=5, split=4),
    "max_zero": frames_input(frame(ACCEPT) + frame(DATA, b"x"), mode=2, param=0, split=1),
    "zero_length": frames_input(frame(DATA, b"ok") + b"\x00\x00\x00\x00" + frame(DATA),
                                mode=3, param=100, split=3),
    "length_4gib": frames_input(b"\xff\xff\xff\xff" + bytes([DATA]) + b"x" * 16, mode=1, split=2),
    "default_max_plus_one": frames_input(struct.pack(">I", DEFAULT_MAX_FRAME_LEN + 2)
                                         + bytes([DATA]), mode=1, split=9),
    "announced_not_sent": frames_input(struct.pack(">I", 1000) + bytes([DATA]) + b"partial",
                                       mode=3, param=2000, split=3),
    "ends_in_header": frames_input(frame(DATA, b"a") + b"\x00\x00", mode=3, param=10, split=1),
    "empty_stream": frames_input(b"", mode=0),
    "http_request": frames_input(HTTP, mode=1, split=16),
    "tls_client_hello": frames_input(TLS, mode=1, split=16),
}


def envelope(op, flags=0, hops=0, origin=OURS_ID, seq=1, corr=0, name=b"", body=b""):
    """A messaging envelope (the payload of a MSG frame, see src/message.rs)."""
    return (bytes([op, flags, hops, len(origin)]) + origin + struct.pack(">QQH", seq, corr, len(name))
            + name + body)


envelopes = {
    "direct": envelope(1, body=b"hello"),
    "broadcast": envelope(2, flags=1, seq=7, body=b"to all"),
    "event": envelope(3, flags=1, name=b"join", body=b"alice"),
    "publish": envelope(4, flags=1, hops=2, name=b"room", body=b"hi"),
    "interest": envelope(5, flags=1, corr=3, body=b"room\nnews\n"),
    "request": envelope(6, corr=42, name=b"upper", body=b"x"),
    "reply": envelope(7, corr=42, body=b"X"),
    "fail": envelope(8, corr=42, name=b"not-found", body=b"\x00no such thing"),
    "neighbors": envelope(9, body=OURS_ID + b"\n"),
    "neighbors_with_address": envelope(9, body=OURS_ID + b" 10.99.0.2:4000\n" + OURS_ID[::-1]
                                       + b" [fe80::1%2]:4000\n"),
    "neighbors_bad_address": envelope(9, body=OURS_ID + b" 10.99.0.2:99999\n"),
    "member": envelope(10, flags=1, corr=9, body=struct.pack(">QHB", 5, 4000, 0)
                       + meta((b"role", b"web"))),
    "member_leaving": envelope(10, flags=1, corr=10, body=struct.pack(">QHB", 5, 4000, 1)),
    "member_bad_state": envelope(10, flags=1, corr=10, body=struct.pack(">QHB", 5, 4000, 7)),
    "unknown_op": envelope(99),
    "unknown_flag": envelope(2, flags=0x80),
    "too_many_hops": envelope(4, flags=1, hops=200, name=b"t"),
    "name_len_lies": envelope(3, name=b"ab")[:-1],
    "origin_not_hex": envelope(1, origin=b"zz"),
    "header_only": envelope(1)[:10],
}

sealed = {
    "empty_mode_plain": b"\x00",
    "genuine_then_junk": b"\x01" + b"junk after a genuine record",
    "genuine_one_byte_reads": b"\x03" + b"abc",
    "short_record": b"\x00\x00\x05abcde",
    "max_record_header": b"\x00\xff\xff",
}


def write(target, seeds):
    d = os.path.join(SEEDS, target)
    os.makedirs(d)
    for name, data in sorted(seeds.items()):
        with open(os.path.join(d, name), "wb") as f:
            f.write(data)


if __name__ == "__main__":
    assert len(hellos["valid_longest"]) == MAX_HELLO
    shutil.rmtree(SEEDS, ignore_errors=True)
    write("hello", hellos)
    write("first_frame", first)
    write("frames", frames)
    write("envelope", envelopes)
    write("sealed", sealed)
    for t in ("hello", "first_frame", "frames", "envelope", "sealed"):
        print(t, len(os.listdir(os.path.join(SEEDS, t))), "seeds")
