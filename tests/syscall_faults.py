"""Run a command with some syscalls failing, by a seccomp filter (libseccomp through ctypes).

``python -m tests.syscall_faults syncfs=EIO fsync=EIO -- CMD ARGS...`` installs a
filter making those syscalls fail with that errno, then execs CMD: the filter
is inherited by every process CMD forks (a Dramatiq worker group), and the
failure happens in the kernel's syscall entry, below Python and libc.
Why seccomp rather than an LD_PRELOAD shim: ``ctypes.CDLL("libc.so.6").syncfs``
resolves libc's own symbol and would bypass a preloaded one.
"""

from __future__ import annotations

import ctypes
import ctypes.util
import errno
import os
import sys

_SCMP_ACT_ALLOW = 0x7FFF0000
_SCMP_ACT_ERRNO = 0x00050000


def available() -> bool:
    return ctypes.util.find_library("seccomp") is not None


def install(faults: dict[str, int]) -> None:
    """Make each named syscall fail with its errno in this process and its children, from now on."""
    lib = ctypes.CDLL(ctypes.util.find_library("seccomp") or "libseccomp.so.2", use_errno=True)
    lib.seccomp_init.restype = ctypes.c_void_p
    lib.seccomp_init.argtypes = [ctypes.c_uint32]
    lib.seccomp_rule_add.argtypes = [ctypes.c_void_p, ctypes.c_uint32, ctypes.c_int, ctypes.c_uint]
    lib.seccomp_syscall_resolve_name.argtypes = [ctypes.c_char_p]
    lib.seccomp_load.argtypes = [ctypes.c_void_p]
    context = lib.seccomp_init(_SCMP_ACT_ALLOW)
    if not context:
        raise OSError("seccomp_init failed")
    for name, error in faults.items():
        number = lib.seccomp_syscall_resolve_name(name.encode())
        if number < 0 or lib.seccomp_rule_add(context, _SCMP_ACT_ERRNO | error, number, 0) != 0:
            raise OSError(f"cannot add a seccomp rule for {name}")
    if lib.seccomp_load(context) != 0:
        raise OSError("seccomp_load failed")


def command(faults: dict[str, int], argv: list[str]) -> list[str]:
    """``argv`` run under ``faults`` (syscall name -> errno)."""
    spec = [f"{name}={errno.errorcode[error]}" for name, error in faults.items()]
    return [sys.executable, "-m", "tests.syscall_faults", *spec, "--", *argv]


def main(args: list[str]) -> None:
    split = args.index("--")
    faults = {}
    for item in args[:split]:
        name, _, code = item.partition("=")
        faults[name] = getattr(errno, code)
    install(faults)
    os.execvp(args[split + 1], args[split + 1 :])


if __name__ == "__main__":
    main(sys.argv[1:])
