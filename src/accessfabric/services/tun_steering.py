"""Which queue of a multi-queue TUN device a packet leaves the kernel on (``TUNSETSTEERINGEBPF``).

A TUN device's queue is a FIFO ring the node reads in bursts: a ping written behind a
megabyte of bulk super-packets is read after them (ADR 0066).  Given one more queue, a
steering program puts the packets of latency flows there — ICMP and ICMPv6, TCP and UDP
to or from the ports of the ``dns`` and ``interactive`` classes — and everything else on
queue 0.  The node reads the urgent queue first (ADR 0071).  Only whole flows are
steered, never packets by their size, so a flow's packets stay in order.  A device
opened with more than one bulk queue keeps the kernel's own spreading of flows instead:
the skb's hash, which a steering program could use, is 0 for unconnected UDP, so it
would put all of that on one queue.

The program is eBPF of type ``BPF_PROG_TYPE_SOCKET_FILTER`` (the type the TUN driver
takes), assembled here instruction by instruction: it reads the IP header with
``LD_ABS``/``LD_IND`` (the skb's data starts at the IP header on a layer-3 TUN device),
and a short packet ends the program with 0, the first bulk queue.  Loading needs
``CAP_BPF`` (root); :func:`attach_steering` raises :class:`OSError` when the kernel
refuses, and the caller keeps a device with one queue.
"""

from __future__ import annotations

import ctypes
import fcntl
import os
import platform
import struct
from collections.abc import Iterable
from dataclasses import dataclass

TUNSETSTEERINGEBPF = 0x800454E0
BPF_PROG_LOAD = 5
BPF_PROG_TYPE_SOCKET_FILTER = 1
SYS_BPF = {"x86_64": 321, "aarch64": 280, "armv7l": 386, "riscv64": 280}

IPPROTO_ICMP = 1
IPPROTO_TCP = 6
IPPROTO_UDP = 17
IPPROTO_ICMPV6 = 58
IPV6_HEADER = 40

# Opcodes (linux/bpf.h, linux/bpf_common.h).
_MOV64_REG = 0xBF
_MOV64_IMM = 0xB7
_AND64_IMM = 0x57
_LSH64_IMM = 0x67
_RSH64_IMM = 0x77
_LD_ABS_B = 0x30
_LD_ABS_H = 0x28
_LD_IND_H = 0x48
_JA = 0x05
_JEQ_IMM = 0x15
_JNE_IMM = 0x55
_EXIT = 0x95
_JUMPS = (_JA, _JEQ_IMM, _JNE_IMM)


@dataclass(frozen=True, slots=True)
class _Insn:
    code: int
    dst: int = 0
    src: int = 0
    imm: int = 0
    off: int = 0
    target: str = ""
    """A jump's label, resolved into ``off`` by :func:`_assemble`."""


def _jump(code: int, target: str, dst: int = 0, imm: int = 0) -> _Insn:
    return _Insn(code, dst=dst, imm=imm, target=target)


def _assemble(program: list[_Insn | str]) -> bytes:
    """Instructions and labels (``str``) as ``struct bpf_insn`` bytes, jumps resolved."""
    labels: dict[str, int] = {}
    insns: list[_Insn] = []
    for item in program:
        if isinstance(item, str):
            labels[item] = len(insns)
        else:
            insns.append(item)
    out = bytearray()
    for index, insn in enumerate(insns):
        off = labels[insn.target] - index - 1 if insn.code in _JUMPS else insn.off
        out += struct.pack("<BBhi", insn.code, insn.src << 4 | insn.dst, off, insn.imm)
    return bytes(out)


URGENT_QUEUE = 1
"""The queue a steered device puts latency flows on; queue 0 takes the rest."""


def steering_program(ports: Iterable[int]) -> bytes:
    """The program: :data:`URGENT_QUEUE` for a latency flow's packet, else 0.

    Latency flows: ICMP, ICMPv6, and TCP or UDP with either port in ``ports``.
    """
    watched = sorted(set(ports))
    if any(not 0 < port < 0x10000 for port in watched):
        raise ValueError("ports: 1..65535")
    # r6 holds the context (LD_ABS/LD_IND need it there); r8 the transport header's offset.
    program: list[_Insn | str] = [
        _Insn(_MOV64_REG, dst=6, src=1),
        _Insn(_LD_ABS_B, imm=0),  # version
        _Insn(_RSH64_IMM, dst=0, imm=4),
        _jump(_JEQ_IMM, "v4", dst=0, imm=4),
        _jump(_JEQ_IMM, "v6", dst=0, imm=6),
        _jump(_JA, "bulk"),
        "v4",
        _Insn(_LD_ABS_B, imm=9),  # protocol
        _jump(_JEQ_IMM, "urgent", dst=0, imm=IPPROTO_ICMP),
        _jump(_JEQ_IMM, "v4_ports", dst=0, imm=IPPROTO_TCP),
        _jump(_JNE_IMM, "bulk", dst=0, imm=IPPROTO_UDP),
        "v4_ports",
        _Insn(_LD_ABS_H, imm=6),  # a later fragment carries no ports
        _Insn(_AND64_IMM, dst=0, imm=0x1FFF),
        _jump(_JNE_IMM, "bulk", dst=0, imm=0),
        _Insn(_LD_ABS_B, imm=0),  # header length, in words
        _Insn(_AND64_IMM, dst=0, imm=0x0F),
        _Insn(_LSH64_IMM, dst=0, imm=2),
        _Insn(_MOV64_REG, dst=8, src=0),
        _jump(_JA, "ports"),
        "v6",
        _Insn(_LD_ABS_B, imm=6),  # next header (extension headers count as bulk)
        _jump(_JEQ_IMM, "urgent", dst=0, imm=IPPROTO_ICMPV6),
        _jump(_JEQ_IMM, "v6_ports", dst=0, imm=IPPROTO_TCP),
        _jump(_JNE_IMM, "bulk", dst=0, imm=IPPROTO_UDP),
        "v6_ports",
        _Insn(_MOV64_IMM, dst=8, imm=IPV6_HEADER),
        "ports",
    ]
    for field in (0, 2):  # source port, destination port
        program.append(_Insn(_LD_IND_H, src=8, imm=field))
        program += [_jump(_JEQ_IMM, "urgent", dst=0, imm=port) for port in watched]
    program += [
        "bulk",
        _Insn(_MOV64_IMM, dst=0, imm=0),
        _Insn(_EXIT),
        "urgent",
        _Insn(_MOV64_IMM, dst=0, imm=URGENT_QUEUE),
        _Insn(_EXIT),
    ]
    return _assemble(program)


def load_socket_filter(code: bytes, name: str = "af_tun_steer") -> int:
    """Load ``code`` as a socket-filter program; its fd (close it when attached)."""
    number = SYS_BPF.get(platform.machine())
    if number is None:
        raise OSError(f"bpf(2): no syscall number known for {platform.machine()}")
    insns = ctypes.create_string_buffer(code, len(code))
    license_ = ctypes.create_string_buffer(b"Apache-2.0")
    libc = ctypes.CDLL(None, use_errno=True)

    def load(log: ctypes.Array[ctypes.c_char] | None) -> int:
        attr = struct.pack(
            "<IIQQIIQII16s",
            BPF_PROG_TYPE_SOCKET_FILTER, len(code) // 8,
            ctypes.addressof(insns), ctypes.addressof(license_),
            1 if log is not None else 0, len(log) if log is not None else 0,
            ctypes.addressof(log) if log is not None else 0, 0, 0, name.encode()[:15],
        )  # fmt: skip
        buffer = ctypes.create_string_buffer(attr, len(attr))
        return int(libc.syscall(number, BPF_PROG_LOAD, buffer, len(attr)))

    fd = load(None)
    if fd < 0:
        errno = ctypes.get_errno()
        log = ctypes.create_string_buffer(16384)
        load(log)  # once more, for the verifier's reason
        verifier = log.value.decode(errors="replace").strip().splitlines()[-1:]
        raise OSError(errno, " ".join([f"bpf(BPF_PROG_LOAD): {os.strerror(errno)}", *verifier]))
    return fd


def attach_steering(tun_fd: int, ports: Iterable[int]) -> None:
    """Steer the two-queue device behind ``tun_fd`` with :func:`steering_program`."""
    program = load_socket_filter(steering_program(ports))
    try:
        fcntl.ioctl(tun_fd, TUNSETSTEERINGEBPF, struct.pack("i", program))
    finally:
        os.close(program)  # the device holds its own reference
