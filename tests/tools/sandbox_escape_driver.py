"""Escape attempts against the code sandbox, run from a parent of a given uid.

``tests/tools/test_sandbox_escapes.py`` runs this file as a program, as root or as an
unprivileged user, once per protection (``bubblewrap``, ``fallback``); it prints one JSON
object: for every attempt, the evidence that it got out (empty when it was blocked). The
parent plants what an attacker would want next to the sandbox: a secret in its environment,
a world-readable secret file, another job's scratch directory, a world-writable directory and
file, listening TCP (IPv4, IPv6), UDP, Unix and abstract Unix sockets on loopback, and signal
handlers. After every attempt it looks for any effect: the secret in the output, ``ESCAPED``
printed by the attempt (it prints that when a forbidden operation succeeded), a changed file,
a connection or datagram, a signal, a process left running, a file in ``/tmp``, ``/var/tmp``
or ``/dev/shm``.

Every attempt first takes the fallback's audit hook down (rewriting its closure cells, as an
attacker would): what must hold is the kernel's walls, not Python's.
"""

from __future__ import annotations

import io
import json
import os
import resource
import secrets
import shutil
import signal
import socket
import stat
import sys
import tempfile
import threading
import time

# Takes the fallback's audit hook down; in bubblewrap there is none and this does nothing.
UNHOOK = """
import gc as _gc, types as _types
class _Any:
    def __eq__(self, other): return True
    def __ne__(self, other): return False
for _f in _gc.get_objects():
    if isinstance(_f, _types.FunctionType) and _f.__name__ == 'hook' and _f.__closure__:
        _cells = dict(zip(_f.__code__.co_freevars, _f.__closure__))
        if 'blocked' in _cells:
            _cells['blocked'].cell_contents = ()
            _cells['path_events'].cell_contents = {}
            _cells['socket'].cell_contents = _types.SimpleNamespace(AF_UNIX=_Any())
            _cells['writable'].cell_contents = lambda path: True
            _cells['readable_path'].cell_contents = lambda path: True
import ctypes, errno
libc = ctypes.CDLL(None, use_errno=True)
libc.syscall.restype = ctypes.c_long
def say(*parts):
    print(*parts, flush=True)
def trying(what, fn):
    try:
        result = fn()
    except BaseException as error:
        say('blocked', what, type(error).__name__)
        return None
    say('done', what, repr(result)[:300])
    return result
def forbidden(what, fn):
    # The operation itself must fail: its success is the escape.
    try:
        result = fn()
    except BaseException as error:
        say('blocked', what, type(error).__name__)
        return
    say('ESCAPED', what, repr(result)[:200])
def sys_ok(what, number, *args):
    # A raw system call: its success is the escape.
    result = libc.syscall(number, *args)
    if result < 0:
        say('blocked', what, errno.errorcode.get(ctypes.get_errno(), '?'))
    else:
        say('ESCAPED', what, result)
def spawn(argv):
    import _posixsubprocess
    # fork_exec raises no audit event: the classic way past the hook.
    r, w = os.pipe()
    args = [os.fsencode(a) for a in argv]
    pid = _posixsubprocess.fork_exec(
        args, [args[0]], True, (), None, [b'PATH=/usr/bin:/bin'], -1, -1, -1, -1, -1, -1,
        r, w, True, False, -1, None, None, None, -1, None, False)
    os.close(w)
    return pid
"""

# name -> code; the constants (SECRET, CANARY, ...) are defined before it (see ``prelude``).
ATTEMPTS: dict[str, str] = {
    # ---- reading what is not the sandbox's
    "read_etc_shadow": "forbidden('shadow', lambda: open('/etc/shadow').read()[:5])",
    "read_secret_file": "trying('secret file', lambda: say(open(SECRET_FILE).read()))",
    "read_secret_file_os_open": (
        "fd = trying('open', lambda: os.open(SECRET_FILE, os.O_RDONLY))\n"
        "if fd is not None: say(os.read(fd, 100))"
    ),
    "read_secret_via_dotdot": (
        "trying('dotdot', lambda: say(open(os.getcwd() + '/../../..' + SECRET_FILE).read()))"
    ),
    "read_secret_via_chdir_root": (
        "trying('chdir', lambda: os.chdir('/'))\n"
        "trying('relative', lambda: say(open(SECRET_FILE.lstrip('/')).read()))"
    ),
    "read_secret_via_dir_fd": (
        "d = trying('dirfd', lambda: os.open(os.path.dirname(SECRET_FILE), os.O_RDONLY))\n"
        "if d is not None:\n"
        "    f = trying('openat', lambda: os.open(os.path.basename(SECRET_FILE), 0, dir_fd=d))\n"
        "    if f is not None: say(os.read(f, 100))"
    ),
    "read_secret_via_o_path_and_proc_fd": (
        "fd = trying('o_path', lambda: os.open(SECRET_FILE, os.O_PATH))\n"
        "if fd is not None: trying('reopen', lambda: say(open(f'/proc/self/fd/{fd}').read()))"
    ),
    "read_secret_via_mmap": (
        "import mmap\n"
        "f = trying('open', lambda: open(SECRET_FILE, 'rb'))\n"
        "if f: say(mmap.mmap(f.fileno(), 0, prot=mmap.PROT_READ)[:])"
    ),
    "read_secret_via_symlink": (
        "trying('symlink', lambda: os.symlink(SECRET_FILE, 'link'))\n"
        "trying('read', lambda: say(open('link').read()))"
    ),
    "read_secret_via_hard_link": (
        "trying('link', lambda: os.link(SECRET_FILE, 'hard'))\n"
        "trying('read', lambda: say(open('hard').read()))"
    ),
    "hard_link_etc_shadow": "forbidden('link shadow', lambda: os.link('/etc/shadow', 'shadow'))",
    "hard_link_secret_via_syscall": (
        "forbidden('linkat', lambda: 0 if libc.linkat(-100, SECRET_FILE.encode(), -100,"
        " b'hard2', 0) == 0 else 1/0)"
    ),
    "rename_secret_into_scratch": (
        "forbidden('rename', lambda: os.rename(SECRET_FILE, os.getcwd() + '/stolen'))"
    ),
    "read_other_jobs_scratch": (
        "trying('list', lambda: say(os.listdir(OTHER)))\n"
        "trying('read', lambda: say(open(OTHER + '/job.txt').read()))"
    ),
    "walk_tmp_for_scratch": (
        "import glob\n"
        "for path in trying('glob', lambda: glob.glob('/tmp/*/job.txt')) or []:\n"
        "    trying('read', lambda: say(open(path).read()))"
    ),
    "read_parent_environ": (
        "trying('environ', lambda: say(open(f'/proc/{PARENT}/environ', 'rb').read()))"
    ),
    "read_ppid_environ": (
        "trying('environ', lambda: say(open(f'/proc/{os.getppid()}/environ', 'rb').read()))"
    ),
    "walk_proc_environ": (
        "for pid in [p for p in os.listdir('/proc') if p.isdigit()]:\n"
        "    for name in ('environ', 'cmdline'):\n"
        "        try:\n"
        "            say(open(f'/proc/{pid}/{name}', 'rb').read())\n"
        "        except OSError:\n"
        "            pass"
    ),
    "read_parent_memory_via_proc_mem": (
        "forbidden('mem', lambda: open(f'/proc/{PARENT}/mem', 'rb').read(1))"
    ),
    "read_parent_maps": "forbidden('maps', lambda: open(f'/proc/{PARENT}/maps').read(10))",
    "read_parent_cwd_link": ("forbidden('cwd', lambda: os.listdir(f'/proc/{PARENT}/cwd'))"),
    "read_root_home": (
        "forbidden('root profile', lambda: open('/root/.profile').read())\n"
        # bubblewrap shows the folders leading to the interpreter, nothing else
        "forbidden('root', lambda: [n for n in os.listdir('/root') if n != '.pyenv'] or 1/0)"
    ),
    "read_sys_firmware": (
        "forbidden('sys', lambda: os.listdir('/sys/firmware') + os.listdir('/sys/fs/cgroup'))"
    ),
    "read_raw_disk": (
        "import glob\n"
        "for disk in glob.glob('/dev/[sv]d?') + glob.glob('/dev/nvme*') + ['/dev/vda']:\n"
        "    forbidden(disk, lambda: open(disk, 'rb').read(512))"
    ),
    "read_dev_mem_and_kmsg": (
        "forbidden('mem', lambda: open('/dev/mem', 'rb').read(1))\n"
        "forbidden('kmsg', lambda: open('/dev/kmsg', 'rb').read(1))"
    ),
    "open_by_handle": (
        "buf = ctypes.create_string_buffer(128)\n"
        "ctypes.c_uint.from_buffer(buf).value = 120\n"
        "mount_id = ctypes.c_int()\n"
        "sys_ok('name_to_handle_at', 303, -100, SECRET_FILE.encode(), buf,"
        " ctypes.byref(mount_id), 0)\n"
        "sys_ok('open_by_handle_at', 304, -100, buf, 0)"
    ),
    "io_uring_setup": (
        "params = ctypes.create_string_buffer(120)\nsys_ok('io_uring_setup', 425, 8, params)"
    ),
    # ---- writing outside scratch
    "write_world_writable_dir": (
        "forbidden('write', lambda: open(CANARY + '/escaped.txt', 'w').write('x'))"
    ),
    "append_world_writable_file": ("forbidden('append', lambda: open(APPEND, 'a').write('x'))"),
    "truncate_world_writable_file": "forbidden('truncate', lambda: os.truncate(APPEND, 0))",
    "write_via_os_open_dir_fd": (
        "d = trying('dirfd', lambda: os.open(CANARY, os.O_RDONLY))\n"
        "if d is not None:\n"
        "    forbidden('openat', lambda: os.open('escaped-at.txt', os.O_WRONLY | os.O_CREAT,"
        " dir_fd=d))"
    ),
    "write_via_raw_openat": (
        "forbidden('openat', lambda: 1/0 if libc.open((CANARY + '/raw.txt').encode(), 0o101,"
        " 0o644) < 0 else 0)"
    ),
    "write_via_symlink_in_scratch": (
        "trying('symlink', lambda: os.symlink(CANARY + '/through-link.txt', 'out'))\n"
        "forbidden('write', lambda: open('out', 'w').write('x'))"
    ),
    "rename_scratch_file_out": (
        "open('mine.txt', 'w').write('x')\n"
        "forbidden('rename', lambda: os.rename('mine.txt', CANARY + '/moved.txt'))"
    ),
    "mkdir_outside": "forbidden('mkdir', lambda: os.mkdir(CANARY + '/newdir'))",
    "mkfifo_outside": "forbidden('mkfifo', lambda: os.mkfifo(CANARY + '/fifo'))",
    # (bubblewrap's /tmp is the scratch tmpfs: the host's /tmp is what must stay untouched)
    "write_tmp": "trying('tmp', lambda: open(f'/tmp/{MARKER}', 'w').write('x'))",
    "write_var_tmp": "forbidden('var tmp', lambda: open(f'/var/tmp/{MARKER}', 'w').write('x'))",
    "write_dev_shm": "forbidden('shm', lambda: open(f'/dev/shm/{MARKER}', 'w').write('x'))",
    "write_etc": "forbidden('etc', lambda: open('/etc/escaped-' + MARKER, 'w').write('x'))",
    "chmod_parent_file": "forbidden('chmod', lambda: os.chmod(APPEND, 0o4777))",
    "chmod_secret_file": "forbidden('chmod', lambda: os.chmod(SECRET_FILE, 0o666))",
    "utime_parent_file": "forbidden('utime', lambda: os.utime(APPEND, (0, 0)))",
    "setxattr_parent_file": (
        "forbidden('setxattr', lambda: os.setxattr(APPEND, 'user.escaped', b'1'))"
    ),
    "chown_parent_file": "forbidden('chown', lambda: os.chown(APPEND, 0, 0))",
    # ---- processes
    "shell_via_fork_exec": (
        "pid = trying('spawn', lambda: spawn(['/bin/sh', '-c',"
        " f'id > {CANARY}/id.txt; cat {SECRET_FILE} /etc/shadow > {CANARY}/stolen.txt']))\n"
        "if pid: os.waitpid(pid, 0)"
    ),
    "os_fork_writes_outside": (
        "pid = trying('fork', os.fork)\n"
        "if pid == 0:\n"
        "    try:\n"
        "        open(CANARY + '/child.txt', 'w').write('x')\n"
        "    finally:\n"
        "        os._exit(0)\n"
        "elif pid: os.waitpid(pid, 0)"
    ),
    "posix_spawn_shell": (
        "pid = trying('posix_spawn', lambda: os.posix_spawn('/bin/sh', ['sh', '-c',"
        " f'echo x > {CANARY}/spawned.txt'], {}))\n"
        "if pid: os.waitpid(pid, 0)"
    ),
    "subprocess_run": (
        "import subprocess\n"
        "trying('run', lambda: subprocess.run(['/bin/sh', '-c', f'echo x > {CANARY}/sp.txt']))"
    ),
    "exec_replaces_runner": (
        "trying('execv', lambda: os.execv('/bin/sh', ['sh', '-c',"
        " f'echo x > {CANARY}/exec.txt; cat {SECRET_FILE}']))"
    ),
    "raw_fork_syscall": (
        "pid = libc.syscall(57)\n"
        "if pid == 0:\n"
        "    libc.syscall(231, 0)\n"
        "say('forked' if pid > 0 else 'blocked')\n"
        "if pid > 0: os.waitpid(pid, 0)"
    ),
    "raw_clone_process": (
        "pid = libc.syscall(56, 17, 0, 0, 0, 0)\n"  # SIGCHLD: a new process
        "if pid == 0:\n"
        "    libc.syscall(231, 0)\n"
        "say('cloned' if pid > 0 else 'blocked')\n"
        "if pid > 0: os.waitpid(pid, 0)"
    ),
    "fork_bomb": (
        "import time\n"
        "count = 0\n"
        "for _ in range(400):\n"
        "    try:\n"
        "        pid = os.fork()\n"
        "    except OSError:\n"
        "        break\n"
        "    if pid == 0:\n"
        "        time.sleep(2)\n"
        "        os._exit(0)\n"
        "    count += 1\n"
        "say('forked', count)\n"
        "if count > MAX_PROCESSES: say('ESCAPED fork limit', count)"
    ),
    "thread_bomb": (
        "import threading, time\n"
        "started = 0\n"
        "for _ in range(400):\n"
        "    try:\n"
        "        threading.Thread(target=time.sleep, args=(2,), daemon=True).start()\n"
        "    except (RuntimeError, MemoryError):\n"
        "        break\n"
        "    started += 1\n"
        "say('threads', started)\n"
        "if started > MAX_PROCESSES: say('ESCAPED thread limit', started)"
    ),
    "detached_setsid_process": (
        "pid = trying('spawn', lambda: spawn(['/bin/sh', '-c',"
        " f'exec sleep 30 {MARKER}']))\n"
        "trying('setsid', os.setsid)"
    ),
    "double_fork_daemon": (
        "pid = trying('fork', os.fork)\n"
        "if pid == 0:\n"
        "    try:\n"
        "        os.setsid()\n"
        "        if os.fork() == 0:\n"
        "            os.execv('/bin/sh', ['sh', '-c', f'exec sleep 30 {MARKER}'])\n"
        "    finally:\n"
        "        os._exit(0)"
    ),
    "setpgid_to_escape_group": "trying('setpgid', lambda: os.setpgid(0, 0))",
    "setuid_root": "forbidden('setuid', lambda: os.setuid(0))",
    # ---- signals and other processes
    "kill_parent": "forbidden('kill', lambda: os.kill(PARENT, signal.SIGUSR1))",
    "kill_parent_sigterm": "forbidden('kill', lambda: os.kill(PARENT, signal.SIGTERM))",
    "kill_parent_group": "forbidden('killpg', lambda: os.killpg(os.getpgid(PARENT), 10))",
    "kill_minus_one": "trying('kill -1', lambda: os.kill(-1, signal.SIGUSR2))",
    "kill_pid_one": "forbidden('kill 1', lambda: os.kill(1, signal.SIGHUP) or 1/0)",
    "tgkill_parent": "sys_ok('tgkill', 234, PARENT, PARENT, 10)",
    "tkill_parent": "sys_ok('tkill', 200, PARENT, 10)",
    "rt_sigqueueinfo_parent": (
        "info = ctypes.create_string_buffer(128)\n"
        "ctypes.c_int.from_buffer(info).value = 10\n"
        "ctypes.c_int.from_buffer(info, 8).value = -1\n"
        "sys_ok('rt_sigqueueinfo', 129, PARENT, 10, info)"
    ),
    "pidfd_send_signal_parent": (
        "fd = libc.syscall(434, PARENT, 0)\n"
        "say('pidfd', fd)\n"
        "if fd >= 0: sys_ok('pidfd_send_signal', 424, fd, 10, None, 0)"
    ),
    "ptrace_attach_parent": "sys_ok('ptrace', 101, 16, PARENT, 0, 0)",
    "ptrace_seize_ppid": "sys_ok('ptrace', 101, 0x4206, os.getppid(), 0, 0)",
    "process_vm_readv_parent": (
        "buf = ctypes.create_string_buffer(8)\n"
        "class IOV(ctypes.Structure):\n"
        "    _fields_ = [('base', ctypes.c_void_p), ('len', ctypes.c_size_t)]\n"
        "local, remote = IOV(ctypes.addressof(buf), 8), IOV(0x400000, 8)\n"
        "sys_ok('process_vm_readv', 310, PARENT, ctypes.byref(local), 1,"
        " ctypes.byref(remote), 1, 0)"
    ),
    "write_parent_memory_via_proc": (
        "forbidden('mem', lambda: open(f'/proc/{PARENT}/mem', 'r+b').write(b'x'))"
    ),
    "kcmp_parent": "sys_ok('kcmp', 312, PARENT, os.getpid(), 0, 0, 0)",
    # ---- namespaces, mounts and kernel interfaces
    "unshare_user_namespace": "sys_ok('unshare', 272, 0x10000000)",
    "unshare_mount_namespace": "sys_ok('unshare', 272, 0x00020000)",
    "setns_into_pid1_net": (
        "fd = trying('open', lambda: os.open('/proc/1/ns/net', os.O_RDONLY))\n"
        "if fd is not None: sys_ok('setns', 308, fd, 0)"
    ),
    "clone_new_user_namespace": "sys_ok('clone', 56, 0x10000000 | 17, 0, 0, 0, 0)",
    "mount_tmpfs": ("sys_ok('mount', 165, b'none', os.getcwd().encode(), b'tmpfs', 0, None)"),
    "chroot_scratch": "sys_ok('chroot', 161, os.getcwd().encode())",
    "bpf_map_create": (
        "attr = ctypes.create_string_buffer(72)\n"
        "ctypes.c_uint32.from_buffer(attr).value = 2\n"
        "ctypes.c_uint32.from_buffer(attr, 4).value = 4\n"
        "ctypes.c_uint32.from_buffer(attr, 8).value = 4\n"
        "ctypes.c_uint32.from_buffer(attr, 12).value = 1\n"
        "sys_ok('bpf', 321, 0, attr, 72)"
    ),
    "perf_event_open": (
        "attr = ctypes.create_string_buffer(128)\n"
        "ctypes.c_uint32.from_buffer(attr, 4).value = 128\n"
        "sys_ok('perf_event_open', 298, attr, 0, -1, -1, 0)"
    ),
    "userfaultfd": "sys_ok('userfaultfd', 323, 0)",
    "keyctl_session_keyring": "sys_ok('keyctl', 250, 0, -3, 0)",
    "x32_syscall_abi": "say('x32 getpid', libc.syscall(0x40000000 + 39))",
    # ---- sockets of every family
    "tcp_to_loopback": (
        "import socket\n"
        "forbidden('tcp', lambda: socket.create_connection(('127.0.0.1', TCP), timeout=1)"
        ".sendall(b'stolen'))"
    ),
    "tcp6_to_loopback": (
        "import socket\n"
        "forbidden('tcp6', lambda: socket.create_connection(('::1', TCP6), timeout=1)"
        ".sendall(b'stolen'))"
    ),
    "udp_to_loopback": (
        "import socket\n"
        "forbidden('udp', lambda: socket.socket(socket.AF_INET, socket.SOCK_DGRAM)"
        ".sendto(b'stolen', ('127.0.0.1', UDP)))"
    ),
    "unix_socket_to_parent": (
        "import socket\n"
        "def go():\n"
        "    s = socket.socket(socket.AF_UNIX)\n"
        "    s.connect(UNIX)\n"
        "    s.sendall(b'stolen')\n"
        "forbidden('unix', go)"
    ),
    "abstract_unix_socket": (
        "import socket\n"
        "def go():\n"
        "    s = socket.socket(socket.AF_UNIX)\n"
        "    s.connect('\\0' + ABSTRACT)\n"
        "    s.sendall(b'stolen')\n"
        "forbidden('abstract', go)"
    ),
    "socketpair": "import socket\nforbidden('socketpair', socket.socketpair)",
    "netlink_route": (
        "import socket\n"
        "forbidden('netlink', lambda: socket.socket(socket.AF_NETLINK, socket.SOCK_RAW, 0))"
    ),
    "packet_socket": (
        "import socket\n"
        "forbidden('packet', lambda: socket.socket(socket.AF_PACKET, socket.SOCK_RAW, 0))"
    ),
    "raw_ip_socket": (
        "import socket\nforbidden('raw', lambda: socket.socket(socket.AF_INET, socket.SOCK_RAW, 1))"
    ),
    "vsock_socket": (
        "import socket\n"
        "forbidden('vsock', lambda: socket.socket(socket.AF_VSOCK, socket.SOCK_STREAM))"
    ),
    "alg_socket": (
        "import socket\n"
        "forbidden('alg', lambda: socket.socket(socket.AF_ALG, socket.SOCK_SEQPACKET, 0))"
    ),
    "raw_socket_syscall_tcp": (
        "fd = libc.syscall(41, 2, 1, 0)\n"
        "say('socket', fd)\n"
        "if fd >= 0:\n"
        "    addr = (2).to_bytes(2, 'little') + TCP.to_bytes(2, 'big') + bytes([127, 0, 0, 1])"
        " + bytes(8)\n"
        "    if libc.connect(int(fd), addr, 16) == 0: say('ESCAPED connected')"
    ),
    "listen_on_a_port": (
        "import socket\n"
        "def go():\n"
        "    s = socket.socket()\n"
        "    s.bind(('127.0.0.1', 0))\n"
        "    s.listen()\n"
        "forbidden('listen', go)"
    ),
    "http_via_urllib": (
        "import urllib.request\n"
        "forbidden('http', lambda: urllib.request.urlopen(f'http://127.0.0.1:{TCP}/', "
        "timeout=1).read())"
    ),
    "dns_lookup": (
        "import socket\n"
        "forbidden('dns', lambda: socket.getaddrinfo('localhost', 80) and"
        " socket.create_connection(('localhost', TCP), timeout=1))"
    ),
    # ---- /proc walks and kernel knobs
    "read_secret_via_proc_root": (
        "trying('parent root', lambda: say(open(f'/proc/{PARENT}/root{SECRET_FILE}').read()))\n"
        "trying('own root', lambda: say(open(f'/proc/self/root{SECRET_FILE}').read()))"
    ),
    "list_parent_fds": "forbidden('fds', lambda: os.listdir(f'/proc/{PARENT}/fd'))",
    "open_parent_pipes_via_proc_fd": (
        "for n in range(64):\n"
        "    for mode in ('rb', 'wb'):\n"
        "        try:\n"
        "            open(f'/proc/{PARENT}/fd/{n}', mode, buffering=0)\n"
        "            say('ESCAPED opened the parent descriptor', n, mode)\n"
        "        except OSError:\n"
        "            pass"
    ),
    "open_other_sandboxes_pipes": (
        "me = str(os.getpid())\n"
        "own = set()\n"
        "for n in range(64):\n"  # the pipes this sandbox already holds (its own stdio)
        "    try:\n"
        "        own.add(os.fstat(n).st_ino)\n"
        "    except OSError:\n"
        "        pass\n"
        "for pid in [p for p in os.listdir('/proc') if p.isdigit() and p != me]:\n"
        "    for n in range(16):\n"
        "        try:\n"
        "            f = open(f'/proc/{pid}/fd/{n}', 'wb', buffering=0)\n"
        "        except OSError:\n"
        "            continue\n"
        "        if os.fstat(f.fileno()).st_ino not in own:\n"
        "            say('ESCAPED opened a descriptor of', pid, n)"
    ),
    "turn_dumpable_back_on": (
        "forbidden('dumpable', lambda: 1/0 if libc.prctl(4, 1, 0, 0, 0) else 0)"
    ),
    "sysrq_trigger": "forbidden('sysrq', lambda: open('/proc/sysrq-trigger', 'w').write('h'))",
    "write_kernel_sysctl": (
        "forbidden('sysctl', lambda: open('/proc/sys/kernel/core_pattern', 'w').write('|/x'))"
    ),
    "write_cgroup": (
        "forbidden('cgroup', lambda: open('/sys/fs/cgroup/cgroup.procs', 'w').write('1'))"
    ),
    "mknod_device_in_scratch": (
        "forbidden('mknod', lambda: os.mknod('null2', 0o20666, os.makedev(1, 3)))"
    ),
    "raise_rlimits": (
        "import resource\n"
        "for limit in (resource.RLIMIT_AS, resource.RLIMIT_NPROC, resource.RLIMIT_FSIZE):\n"
        "    forbidden('setrlimit', lambda: resource.setrlimit(limit, (-1, -1)))"
    ),
    "raw_socketpair_syscall": (
        "pair = (ctypes.c_int * 2)()\nsys_ok('socketpair', 53, 1, 1, 0, pair)"
    ),
    # ---- resources: memory, scratch, files, outputs, images
    "memory_across_processes": (
        "import time\n"
        "r, w = os.pipe()\n"
        "for _ in range(5):\n"
        "    try:\n"
        "        pid = os.fork()\n"
        "    except OSError:\n"
        "        break\n"
        "    if pid == 0:\n"
        "        try:\n"
        "            block = bytearray(300 << 20)\n"
        "            block[::4096] = b'x' * len(block[::4096])\n"
        "            os.write(w, b'1')\n"
        "            time.sleep(3)\n"
        "        finally:\n"
        "            os._exit(0)\n"
        "time.sleep(2.5)\n"
        "os.set_blocking(r, False)\n"
        "try:\n"
        "    held = len(os.read(r, 64))\n"
        "except BlockingIOError:\n"
        "    held = 0\n"
        "say('processes holding 300 MiB', held)\n"
        "if held >= 4: say('ESCAPED memory held by processes together', held * 300, 'MiB')"
    ),
    "memory_across_threads": (
        "import threading, time\n"
        "held = []\n"
        "def grab():\n"
        "    try:\n"
        "        block = bytearray(300 << 20)\n"
        "        block[::4096] = b'x' * len(block[::4096])\n"
        "        held.append(block)\n"
        "    except MemoryError:\n"
        "        pass\n"
        "threads = [threading.Thread(target=grab) for _ in range(5)]\n"
        "[t.start() for t in threads]\n"
        "[t.join() for t in threads]\n"
        "say('threads holding 300 MiB', len(held))\n"
        "if len(held) >= 4: say('ESCAPED memory held by threads together')"
    ),
    "memory_one_big_block": ("forbidden('3 GiB', lambda: bytearray(3 << 30))"),
    "scratch_over_quota": (
        "written = 0\n"
        "try:\n"
        "    for i in range(6):\n"
        "        with open(f'part{i}.bin', 'wb') as f:\n"
        "            for _ in range(60):\n"
        "                f.write(b'x' * (1 << 20))\n"
        "                written += 1\n"
        "except OSError as error:\n"
        "    say('stopped', type(error).__name__)\n"
        "say('MiB written', written)\n"
        "if written > 256: say('ESCAPED scratch quota', written)"
    ),
    "one_file_over_the_size_limit": (
        "written = 0\n"
        "try:\n"
        "    with open('big.bin', 'wb') as f:\n"
        "        for _ in range(300):\n"
        "            f.write(b'x' * (1 << 20))\n"
        "            written += 1\n"
        "except OSError as error:\n"
        "    say('stopped', type(error).__name__)\n"
        "if written > 256: say('ESCAPED file size', written)"
    ),
    "sparse_file_over_quota": (
        "def go():\n"
        "    with open('sparse.bin', 'wb') as f:\n"
        "        f.truncate(1 << 40)\n"
        "        say('sparse file made')\n"
        "forbidden('sparse', go)"
    ),
    "open_many_files": (
        "fds = []\n"
        "try:\n"
        "    for _ in range(5000):\n"
        "        fds.append(os.open('/dev/null', os.O_RDONLY))\n"
        "except OSError:\n"
        "    pass\n"
        "say('opened', len(fds))\n"
        "if len(fds) > 256: say('ESCAPED descriptor limit', len(fds))"
    ),
    "flood_stdout": "sys.stdout.write('y' * 50_000_000)\nsys.stdout.flush()",
    "flood_stderr": "sys.stderr.write('z' * 50_000_000)\nsys.stderr.flush()",
    "flood_result_pipe": (
        "fd = int(sys.argv[sys.argv.index('--result-fd') + 1])\n"
        "trying('flood', lambda: [os.write(fd, b'\\0' * (1 << 20)) for _ in range(300)])"
    ),
    "forged_png_with_second_ihdr": (
        "import struct, zlib, __main__\n"
        "def chunk(kind, data):\n"
        "    return struct.pack('>I', len(data)) + kind + data +"
        " struct.pack('>I', zlib.crc32(kind + data))\n"
        "def ihdr(w, h):\n"
        "    return chunk(b'IHDR', struct.pack('>IIBBBBB', w, h, 8, 0, 0, 0, 0))\n"
        "raw = zlib.compress(b'\\0' * 9001 * 9000, 9)\n"
        "bomb = b'\\x89PNG\\r\\n\\x1a\\n' + ihdr(10, 10) + ihdr(9000, 9000)"
        " + chunk(b'IDAT', raw) + chunk(b'IEND', b'')\n"
        "fd = int(sys.argv[sys.argv.index('--result-fd') + 1])\n"
        "os.write(fd, __main__.encode_message({'type': 'result', 'status': 'ok', 'notes': []},"
        " [bomb]))\n"
        "os._exit(0)"
    ),
    "saved_png_with_second_ihdr": (
        "import struct, zlib\n"
        "def chunk(kind, data):\n"
        "    return struct.pack('>I', len(data)) + kind + data +"
        " struct.pack('>I', zlib.crc32(kind + data))\n"
        "def ihdr(w, h):\n"
        "    return chunk(b'IHDR', struct.pack('>IIBBBBB', w, h, 8, 0, 0, 0, 0))\n"
        "raw = zlib.compress(b'\\0' * 9001 * 9000, 9)\n"
        "open('bomb.png', 'wb').write(b'\\x89PNG\\r\\n\\x1a\\n' + ihdr(10, 10)"
        " + ihdr(9000, 9000) + chunk(b'IDAT', raw) + chunk(b'IEND', b''))"
    ),
    "forged_animated_png": (
        "import io, __main__\n"
        "from PIL import Image\n"
        "frames = [Image.new('RGB', (8, 8), (i, 0, 0)) for i in range(3)]\n"
        "buffer = io.BytesIO()\n"
        "frames[0].save(buffer, format='PNG', save_all=True, append_images=frames[1:])\n"
        "fd = int(sys.argv[sys.argv.index('--result-fd') + 1])\n"
        "os.write(fd, __main__.encode_message({'type': 'result', 'status': 'ok', 'notes': []},"
        " [buffer.getvalue()]))\n"
        "os._exit(0)"
    ),
}

MAX_PROCESSES = 32
#: Limits the parent checks while the code runs (every few tens of milliseconds), rather than
#: the kernel: the attempt may get past them briefly, and must then be stopped.
CHECKED_TOTALS = ("scratch_over_quota", "memory_across_processes")


def prelude(context: dict[str, object]) -> str:
    lines = ["import os, sys, signal"]
    lines += [f"{key} = {value!r}" for key, value in context.items()]
    return "\n".join(lines) + "\n" + UNHOOK + "\n"


class Listeners:
    """Loopback servers that remember whether anything reached them."""

    def __init__(self, folder: str, marker: str) -> None:
        self.hits: list[str] = []
        self.tcp = self._stream(socket.AF_INET, ("127.0.0.1", 0), "tcp")
        try:
            self.tcp6 = self._stream(socket.AF_INET6, ("::1", 0), "tcp6")
        except OSError:
            self.tcp6 = None
        self.udp = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
        self.udp.bind(("127.0.0.1", 0))
        self.unix_path = os.path.join(folder, "sock")
        self.unix = self._stream(socket.AF_UNIX, self.unix_path, "unix")
        os.chmod(self.unix_path, 0o777)
        self.abstract_name = f"{marker}-abstract"
        self.abstract = self._stream(socket.AF_UNIX, "\0" + self.abstract_name, "abstract")
        threading.Thread(target=self._datagrams, daemon=True).start()

    def _stream(self, family: int, address: object, name: str) -> socket.socket:
        server = socket.socket(family, socket.SOCK_STREAM)
        server.bind(address)
        server.listen(16)
        threading.Thread(target=self._accept, args=(server, name), daemon=True).start()
        return server

    def _accept(self, server: socket.socket, name: str) -> None:
        while True:
            try:
                conn, _ = server.accept()
            except OSError:
                return
            self.hits.append(f"a {name} connection was accepted")
            conn.close()

    def _datagrams(self) -> None:
        while True:
            try:
                self.udp.recv(64)
            except OSError:
                return
            self.hits.append("a UDP datagram arrived")

    def port(self, server: socket.socket | None) -> int:
        return server.getsockname()[1] if server is not None else 1


def processes_with(marker: bytes) -> list[int]:
    found = []
    for entry in os.scandir("/proc"):
        if entry.name.isdigit():
            try:
                with open(f"/proc/{entry.name}/cmdline", "rb") as handle:
                    if marker in handle.read():
                        found.append(int(entry.name))
            except OSError:
                continue
    return found


def snapshot(paths: list[str]) -> dict[str, object]:
    state: dict[str, object] = {}
    for path in paths:
        try:
            info = os.lstat(path)
        except FileNotFoundError:
            state[path] = None
            continue
        content = sorted(os.listdir(path)) if stat.S_ISDIR(info.st_mode) else None
        if stat.S_ISREG(info.st_mode):
            with open(path, "rb") as handle:
                content = handle.read()
        state[path] = (info.st_mode, info.st_uid, info.st_mtime_ns, info.st_size, content)
    return state


def main() -> None:
    protection, names = sys.argv[1], sys.argv[2].split(",")
    sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.dirname(__file__))))
    sys.path.extend(json.loads(sys.argv[3]))  # site-packages, for a copied interpreter
    from PIL import Image

    from tools.base import ToolUnavailableError
    from tools.sandbox import Sandbox

    buffer = io.BytesIO()
    Image.new("RGB", (64, 48), (10, 20, 30)).save(buffer, format="JPEG")
    image = buffer.getvalue()

    secret = f"canary-{secrets.token_hex(12)}"
    marker = f"sbxescape{secrets.token_hex(6)}"
    os.environ["ESCAPE_SECRET"] = secret
    base = tempfile.mkdtemp(prefix="escape-")
    os.chmod(base, 0o755)
    canary = os.path.join(base, "open")
    os.mkdir(canary)
    os.chmod(canary, 0o777)  # only the sandbox, not file permissions, may keep code out
    append = os.path.join(canary, "append.txt")
    with open(append, "w") as handle:
        handle.write("original")
    os.chmod(append, 0o666)
    secret_file = os.path.join(base, "secret.txt")
    with open(secret_file, "w") as handle:
        handle.write(secret)
    os.chmod(secret_file, 0o644)
    other = tempfile.mkdtemp(prefix="tools-sandbox-")  # another job's scratch directory
    os.chmod(other, 0o755)
    with open(os.path.join(other, "job.txt"), "w") as handle:
        handle.write(secret)
    os.chmod(os.path.join(other, "job.txt"), 0o644)
    listeners = Listeners(canary, marker)
    signals: list[str] = []
    for number in (signal.SIGUSR1, signal.SIGUSR2, signal.SIGHUP, signal.SIGTERM):
        signal.signal(number, lambda n, _: signals.append(signal.Signals(n).name))
    context = {
        "SECRET_FILE": secret_file, "CANARY": canary, "APPEND": append, "OTHER": other,
        "TCP": listeners.port(listeners.tcp), "TCP6": listeners.port(listeners.tcp6),
        "UDP": listeners.port(listeners.udp), "UNIX": listeners.unix_path,
        "ABSTRACT": listeners.abstract_name, "PARENT": os.getpid(), "MARKER": marker,
        "MAX_PROCESSES": MAX_PROCESSES,
    }  # fmt: skip
    watched = [canary, append, secret_file, other, os.path.join(other, "job.txt")]
    watched += [f"/tmp/{marker}", f"/var/tmp/{marker}", f"/dev/shm/{marker}"]
    watched += [f"/etc/escaped-{marker}"]
    before = snapshot(watched)
    sandbox = Sandbox(
        protection=protection, pool_size=1, wall_s=8.0, cpu_s=8.0, max_processes=MAX_PROCESSES
    )
    report: dict[str, object] = {}
    try:
        try:
            report["_meta"] = {"protection": sandbox.protection, "details": sandbox.details,
                               "uid": os.getuid()}  # fmt: skip
        except ToolUnavailableError as error:  # this machine does not offer the mode
            print(json.dumps({"_unavailable": str(error)}))
            return
        hook_check = sandbox.run(UNHOOK + "say('hook down')", image)
        report["_unhook"] = hook_check.stdout + (hook_check.reason or "")
        for name in names:
            peak = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
            outcome = sandbox.run(prelude(context) + ATTEMPTS[name], image)
            text = "\n".join([outcome.stdout, outcome.stderr, outcome.reason or "", *outcome.notes])
            evidence = []
            if secret.encode() in text.encode() or secret in repr(text):
                evidence.append("the secret reached the output")
            if name not in CHECKED_TOTALS or outcome.ok:
                evidence += [line for line in text.splitlines() if line.startswith("ESCAPED")]
            if outcome.images:  # no attempt saves a legitimate image
                evidence.append(f"the parent accepted {len(outcome.images)} image(s)")
            grown = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss - peak
            if grown > 200 << 10:  # KiB
                evidence.append(f"the parent's memory grew by {grown >> 10} MiB")
            deadline = time.monotonic() + 3
            while processes_with(marker.encode()) and time.monotonic() < deadline:
                time.sleep(0.05)
            if processes_with(marker.encode()):
                evidence.append("a process it started is still running")
            time.sleep(0.05)  # a datagram or signal in flight
            after = snapshot(watched)
            evidence += [f"{path} changed" for path in watched if after[path] != before[path]]
            evidence += listeners.hits + [f"the parent got {s}" for s in signals]
            listeners.hits.clear()
            signals.clear()
            before = after
            report[name] = {"evidence": evidence, "status": outcome.status, "output": text[:2000]}
        healthy = sandbox.run("print(image.size, 6 * 7)", image)
        report["_healthy"] = healthy.stdout
    finally:
        sandbox.close()
        for folder in (base, other):
            shutil.rmtree(folder, ignore_errors=True)
    print(json.dumps(report))


if __name__ == "__main__":
    main()
