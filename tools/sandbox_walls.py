"""Kernel walls for a sandbox without bubblewrap: Landlock (files) and a seccomp filter.

A small ctypes layer over three Landlock system calls and ``prctl(PR_SET_SECCOMP)``, with no
import from the project: the sandbox runner executes this file's text inside the sandbox
process (``tools/sandbox_runner.py``), where the project is not importable, and the parent
imports it to probe the machine. Both walls are irrevocable and inherited by every thread;
nothing the code does in Python (rewriting the runner, removing an audit hook) lifts them.

``restrict_files(read_only, read_write, devices, listable)``: Landlock. Every file-system
access right the kernel's Landlock ABI knows is handled, so anything not granted is refused:
directories in ``read_only`` may be read and executed, those in ``read_write`` (the scratch
directory) are fully usable, the files in ``devices`` (``/dev/null`` and such) may be read and
written, ``listable`` directories (``/proc``) listed but their files not opened. ``/sys``,
home directories, other sandboxes' scratch directories, ``/tmp`` and ``/dev/shm`` are
unreachable. From ABI 4 on, TCP bind and connect are refused too; from ABI 6 on, abstract
Unix sockets and signals to processes outside the sandbox.

``restrict_syscalls(own_pid)``: seccomp-BPF (x86-64 only). The process stays one process:
``fork``, ``vfork``, ``execve`` and a ``clone`` without ``CLONE_THREAD`` fail with ``EPERM``
(threads work; ``clone3`` answers ``ENOSYS`` so the C library falls back to ``clone``, whose
flags a filter can read). Signals may only be sent to ``own_pid``. Sockets of every family
fail with ``EAFNOSUPPORT``. ``ptrace`` and other processes' memory, namespaces, mounts,
``chroot``, keyrings, BPF, ``perf_event_open``, ``userfaultfd``, ``io_uring``, file handles,
modules, ``setsid``, ``setpgid``, ``prctl(PR_SET_DUMPABLE)``, and changes of file modes,
owners, extended attributes and times (which Landlock does not cover) fail with ``EPERM``.
Another architecture's calls (x32 included) kill the process. With ``own_pid`` None (inside
bubblewrap, whose pid namespace holds the processes) processes may be started and signalled;
the rest holds.

``landlock_abi()`` and ``seccomp_supported()`` tell the parent what the kernel offers.
"""

from __future__ import annotations

import ctypes
import errno
import os
import platform
import struct

# Landlock (include/uapi/linux/landlock.h). The system call numbers are the same on x86-64
# and on the generic table (arm64).
_SYS_LANDLOCK_CREATE_RULESET = 444
_SYS_LANDLOCK_ADD_RULE = 445
_SYS_LANDLOCK_RESTRICT_SELF = 446
_LANDLOCK_CREATE_RULESET_VERSION = 1
_LANDLOCK_RULE_PATH_BENEATH = 1

FS_EXECUTE = 1 << 0
FS_WRITE_FILE = 1 << 1
FS_READ_FILE = 1 << 2
FS_READ_DIR = 1 << 3
FS_TRUNCATE = 1 << 14
FS_IOCTL_DEV = 1 << 15
#: File-system rights by the ABI version that introduced them (1: bits 0-12, 2: REFER,
#: 3: TRUNCATE, 5: IOCTL_DEV).
_FS_RIGHTS_SINCE = {1: (1 << 13) - 1, 2: 1 << 13, 3: 1 << 14, 5: 1 << 15}
_NET_BIND_TCP, _NET_CONNECT_TCP = 1 << 0, 1 << 1  # ABI 4
_SCOPE_ABSTRACT_UNIX_SOCKET, _SCOPE_SIGNAL = 1 << 0, 1 << 1  # ABI 6

_PR_SET_DUMPABLE = 4
_PR_SET_NO_NEW_PRIVS = 38
_PR_SET_SECCOMP = 22
_SECCOMP_MODE_FILTER = 2

_libc = ctypes.CDLL(None, use_errno=True)
_libc.syscall.restype = ctypes.c_long


def _check(result: int, what: str) -> int:
    if result < 0:
        number = ctypes.get_errno()
        raise OSError(number, f"{what}: {os.strerror(number)}")
    return result


def landlock_abi() -> int:
    """The kernel's Landlock ABI version; 0 when Landlock is missing or disabled."""
    result = _libc.syscall(
        _SYS_LANDLOCK_CREATE_RULESET, None, ctypes.c_size_t(0), _LANDLOCK_CREATE_RULESET_VERSION
    )
    return max(int(result), 0)


def fs_rights(abi: int) -> int:
    """Every file-system access right known to Landlock ABI ``abi``."""
    return sum(bits for since, bits in _FS_RIGHTS_SINCE.items() if abi >= since)


def restrict_files(
    read_only: list[str] | tuple[str, ...],
    read_write: list[str] | tuple[str, ...],
    devices: list[str] | tuple[str, ...] = (),
    listable: list[str] | tuple[str, ...] = (),
) -> int:
    """Confine this process (and all it starts) to the given paths; returns the ABI used.

    ``listable`` directories (``/proc``) may be listed, their files not opened.

    Paths that do not exist are skipped. Raises OSError when Landlock is unavailable.
    """
    abi = landlock_abi()
    if abi < 1:
        raise OSError(errno.ENOSYS, "Landlock is not available in this kernel")
    handled = fs_rights(abi)
    fields = [handled]
    if abi >= 4:
        fields.append(_NET_BIND_TCP | _NET_CONNECT_TCP)
    if abi >= 6:
        fields.append(_SCOPE_ABSTRACT_UNIX_SOCKET | _SCOPE_SIGNAL)
    attr = ctypes.create_string_buffer(struct.pack(f"={len(fields)}Q", *fields))
    ruleset = _check(
        _libc.syscall(_SYS_LANDLOCK_CREATE_RULESET, attr, ctypes.c_size_t(len(attr.raw)), 0),
        "landlock_create_ruleset",
    )
    read = FS_EXECUTE | FS_READ_FILE | FS_READ_DIR
    device = FS_READ_FILE | FS_WRITE_FILE | (FS_TRUNCATE if abi >= 3 else 0)
    try:
        grants = [(read_only, read), (read_write, handled), (devices, device)]
        for paths, rights in [*grants, (listable, FS_READ_DIR)]:
            for path in paths:
                _allow(ruleset, path, rights)
        _check(_libc.prctl(_PR_SET_NO_NEW_PRIVS, 1, 0, 0, 0), "prctl(NO_NEW_PRIVS)")
        _check(_libc.syscall(_SYS_LANDLOCK_RESTRICT_SELF, ruleset, 0), "landlock_restrict_self")
    finally:
        os.close(ruleset)
    return abi


def _allow(ruleset: int, path: str, rights: int) -> None:
    try:
        fd = os.open(path, os.O_PATH | os.O_CLOEXEC)
    except FileNotFoundError:
        return
    try:
        if not os.path.isdir(path):
            # Only these rights apply to a file (the kernel refuses the others on one).
            rights &= FS_EXECUTE | FS_WRITE_FILE | FS_READ_FILE | FS_TRUNCATE | FS_IOCTL_DEV
        attr = ctypes.create_string_buffer(struct.pack("=Qi", rights, fd))
        _check(
            _libc.syscall(_SYS_LANDLOCK_ADD_RULE, ruleset, _LANDLOCK_RULE_PATH_BENEATH, attr, 0),
            f"landlock_add_rule({path})",
        )
    finally:
        os.close(fd)


# seccomp-BPF (include/uapi/linux/seccomp.h, filter.h, audit.h)
_AUDIT_ARCH_X86_64 = 0xC000003E
_X32_SYSCALL_BIT = 0x40000000
_RET_KILL_PROCESS = 0x80000000
_RET_ALLOW = 0x7FFF0000
_RET_ERRNO = 0x00050000
_LD_W_ABS = 0x20
_JEQ, _JGE, _JSET = 0x15, 0x35, 0x45
_RET = 0x06
_CLONE_THREAD = 0x00010000
#: CLONE_NEWNS, NEWCGROUP, NEWUTS, NEWIPC, NEWUSER, NEWPID, NEWNET, NEWTIME.
_CLONE_NAMESPACES = 0x00020000 | 0x02000000 | 0x04000000 | 0x08000000 | 0x10000000
_CLONE_NAMESPACES |= 0x20000000 | 0x40000000 | 0x00000080

#: x86-64 system calls refused with EPERM (arch/x86/entry/syscalls/syscall_64.tbl).
_X86_64_REFUSED = {
    "fork": 57, "vfork": 58, "execve": 59, "execveat": 322,
    "ptrace": 101, "process_vm_readv": 310, "process_vm_writev": 311, "kcmp": 312,
    "pidfd_open": 434, "pidfd_getfd": 438, "pidfd_send_signal": 424, "tkill": 200,
    "setpgid": 109, "setsid": 112, "unshare": 272, "setns": 308, "mount": 165,
    "umount2": 166, "pivot_root": 155, "chroot": 161, "open_tree": 428, "move_mount": 429,
    "fsopen": 430, "fsconfig": 431, "fsmount": 432, "fspick": 433, "mount_setattr": 442,
    "bpf": 321, "perf_event_open": 298, "keyctl": 250, "add_key": 248, "request_key": 249,
    "userfaultfd": 323, "io_uring_setup": 425, "io_uring_enter": 426,
    "io_uring_register": 427, "name_to_handle_at": 303, "open_by_handle_at": 304,
    "kexec_load": 246, "kexec_file_load": 320, "init_module": 175, "finit_module": 313,
    "delete_module": 176, "reboot": 169, "swapon": 167, "swapoff": 168, "acct": 163,
    "quotactl": 179, "syslog": 103, "personality": 135, "modify_ldt": 154, "iopl": 172,
    "ioperm": 173, "uselib": 134, "mknod": 133, "mknodat": 259, "settimeofday": 164,
    "clock_settime": 227, "clock_adjtime": 305, "adjtimex": 159, "sethostname": 170,
    "setdomainname": 171, "vhangup": 153, "lookup_dcookie": 212, "move_pages": 279,
    "migrate_pages": 256, "fanotify_init": 300,
    # Metadata Landlock does not cover: a sandbox with its parent's uid could change the
    # parent's files' modes, owners, attributes and times.
    "chmod": 90, "fchmod": 91, "fchmodat": 268, "fchmodat2": 452, "chown": 92, "fchown": 93,
    "lchown": 94, "fchownat": 260, "setxattr": 188, "lsetxattr": 189, "fsetxattr": 190,
    "removexattr": 197, "lremovexattr": 198, "fremovexattr": 199, "setxattrat": 463,
    "removexattrat": 466, "utime": 132, "utimes": 235, "futimesat": 261, "utimensat": 280,
}  # fmt: skip
#: Refused with EAFNOSUPPORT: no address family exists in the sandbox.
_X86_64_SOCKETS = {"socket": 41, "socketpair": 53}
#: Signal calls whose first argument is the target process: allowed for ``own_pid`` only.
_X86_64_SIGNAL = {"kill": 62, "tgkill": 234, "rt_sigqueueinfo": 129, "rt_tgsigqueueinfo": 297}
_X86_64_CLONE, _X86_64_CLONE3, _X86_64_PRCTL = 56, 435, 157
#: Refused only when the sandbox must stay one process.
_X86_64_PROCESSES = ("fork", "vfork", "execve", "execveat", "setsid", "setpgid")


def seccomp_supported() -> bool:
    """Whether ``restrict_syscalls`` has a system call table for this machine."""
    return platform.machine() == "x86_64"


def _program(own_pid: int | None) -> list[tuple[int, int, int, int]]:
    """The filter as (code, jt, jf, k) instructions, assembled from labelled jumps.

    ``own_pid`` None: processes may be started and signalled (a pid namespace holds them).
    """
    refused = dict(_X86_64_REFUSED)
    if own_pid is None:
        for name in _X86_64_PROCESSES:
            del refused[name]
    source: list[tuple[int, str, str, int] | str] = [
        (_LD_W_ABS, "", "", 4),  # seccomp_data.arch
        (_JEQ, "", "kill", _AUDIT_ARCH_X86_64),
        (_LD_W_ABS, "", "", 0),  # seccomp_data.nr
        (_JGE, "kill", "", _X32_SYSCALL_BIT),
        *[(_JEQ, "deny", "", number) for number in sorted(refused.values())],
        *[(_JEQ, "nofamily", "", number) for number in sorted(_X86_64_SOCKETS.values())],
        (_JEQ, "enosys", "", _X86_64_CLONE3),
        (_JEQ, "clone", "", _X86_64_CLONE),
        (_JEQ, "prctl", "", _X86_64_PRCTL),
    ]
    if own_pid is not None:
        signals = sorted(_X86_64_SIGNAL.values())
        source += [(_JEQ, "signal", "", number) for number in signals]
    source += [
        (_RET, "", "", _RET_ALLOW),
        "clone",
        (_LD_W_ABS, "", "", 16),  # args[0], low half: the clone flags
        (_JSET, "deny", "", _CLONE_NAMESPACES),
        (_JSET, "allow", "deny" if own_pid is not None else "allow", _CLONE_THREAD),
        "prctl",
        (_LD_W_ABS, "", "", 16),  # args[0]: the option
        (_JEQ, "deny", "allow", _PR_SET_DUMPABLE),
        "signal",
        (_LD_W_ABS, "", "", 16),  # args[0], low half: the target pid
        (_JEQ, "allow", "deny", (own_pid or 0) & 0xFFFFFFFF),
        "allow",
        (_RET, "", "", _RET_ALLOW),
        "deny",
        (_RET, "", "", _RET_ERRNO | errno.EPERM),
        "nofamily",
        (_RET, "", "", _RET_ERRNO | errno.EAFNOSUPPORT),
        "enosys",
        (_RET, "", "", _RET_ERRNO | errno.ENOSYS),
        "kill",
        (_RET, "", "", _RET_KILL_PROCESS),
    ]
    labels: dict[str, int] = {}
    instructions: list[tuple[int, str, str, int]] = []
    for item in source:
        if isinstance(item, str):
            labels[item] = len(instructions)
        else:
            instructions.append(item)

    def offset(label: str, index: int) -> int:
        return labels[label] - index - 1 if label else 0

    return [
        (code, offset(jt, i), offset(jf, i), k) for i, (code, jt, jf, k) in enumerate(instructions)
    ]


def make_undumpable() -> None:
    """Make this process non-dumpable: processes of the same uid (without ``CAP_SYS_PTRACE``)
    can no longer open its file descriptors, memory or environment through ``/proc``, whose
    descriptor links Landlock does not govern for pipes and sockets. The seccomp filter keeps
    a sandbox from turning it back on."""
    _check(_libc.prctl(_PR_SET_DUMPABLE, 0, 0, 0, 0), "prctl(SET_DUMPABLE)")


def restrict_syscalls(own_pid: int | None) -> None:
    """Install the filter on this process and all it starts. Raises OSError.

    ``own_pid``: the process stays one process and signals only itself. None (inside
    bubblewrap's pid namespace): processes may be started and signalled.
    """
    if not seccomp_supported():
        raise OSError(errno.ENOSYS, f"no seccomp system call table for {platform.machine()}")
    program = _program(own_pid)
    if any(not 0 <= jt <= 255 or not 0 <= jf <= 255 for _, jt, jf, _ in program):
        raise OSError(errno.EINVAL, "seccomp filter jump out of range")
    code = b"".join(struct.pack("=HBBI", *instruction) for instruction in program)
    filters = ctypes.create_string_buffer(code)

    class SockFprog(ctypes.Structure):
        _fields_ = (("len", ctypes.c_ushort), ("filter", ctypes.c_void_p))

    fprog = SockFprog(len(program), ctypes.cast(filters, ctypes.c_void_p))
    _check(_libc.prctl(_PR_SET_NO_NEW_PRIVS, 1, 0, 0, 0), "prctl(NO_NEW_PRIVS)")
    _check(
        _libc.prctl(_PR_SET_SECCOMP, _SECCOMP_MODE_FILTER, ctypes.byref(fprog), 0, 0),
        "prctl(SECCOMP)",
    )
