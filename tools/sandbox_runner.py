"""The program that runs inside a sandbox: one job, then exit.

``tools.sandbox`` starts it as ``python -I -S -B -c <this file's text> ARGS`` inside bubblewrap
(or the fallback), so it must import nothing from the project: the standard library, Pillow
and numpy only. Its life, in order:

1. drop privileges (``--uid``/``--gid``: the per-sandbox user the parent leased; it refuses
   to go on as root), in the fallback set no-new-privileges and a parent-death signal, and
   put up the kernel walls (``--walls``: the text of ``tools/sandbox_walls.py``): Landlock
   and a one-process seccomp filter in the fallback, the seccomp filter in bubblewrap;
2. import Pillow: this is the "warm" part a pooled sandbox has already done;
3. say ``ready`` on the result pipe, then read one job from stdin (code, the original image,
   earlier sub-images, limits);
4. apply the rlimits (address space, CPU time, processes, file size, no core dumps) and, in the
   fallback, the audit hook;
5. run the code with ``image``, ``images`` (every original of the job), ``sub_image_1``...,
   ``sub_images`` and ``save_image`` defined;
6. collect the images saved in the scratch directory (refusing any over the pixel limit) and
   send the result on the result pipe.

Stdout and stderr are the process's own: the parent reads them directly, so output the code
writes around Python's ``sys.stdout`` is still bounded. Nothing here is trusted by the parent:
the model's code runs in this process and could rewrite any of it, so the parent re-checks
every image it gets back. This module is also imported by the parent for the message framing
(``encode_message``/``decode_message``); importing it has no side effects.
"""

from __future__ import annotations

import io
import json
import os
import struct
import sys
import time
from typing import Any

# Framing on the result pipe (and stdin): two big-endian u32 lengths (JSON header, blobs), the
# header, then the blobs back to back; ``header["blobs"]`` lists each blob's length.
_PREFIX = struct.Struct(">II")

#: Files in the scratch directory with these suffixes are returned as images.
IMAGE_SUFFIXES = (".png", ".jpg", ".jpeg", ".gif", ".bmp", ".tif", ".tiff", ".webp", ".ppm")

_PNG_SIGNATURE = b"\x89PNG\r\n\x1a\n"
_PNG_MODES = ("1", "L", "LA", "I", "I;16", "P", "RGB", "RGBA")
_SCAN_LIMIT = 1000  # directory entries looked at when collecting saved images


def encode_message(header: dict[str, Any], blobs: list[bytes] | tuple[bytes, ...] = ()) -> bytes:
    head = json.dumps({**header, "blobs": [len(b) for b in blobs]}).encode()
    tail = b"".join(blobs)
    return _PREFIX.pack(len(head), len(tail)) + head + tail


def decode_message(buffer: bytes | bytearray) -> tuple[dict[str, Any], list[bytes], int] | None:
    """The first complete message in ``buffer`` and its size in bytes, or None if incomplete.

    Raises ValueError on a malformed message.
    """
    if len(buffer) < _PREFIX.size:
        return None
    head_size, tail_size = _PREFIX.unpack_from(buffer)
    end = _PREFIX.size + head_size + tail_size
    if len(buffer) < end:
        return None
    header = json.loads(bytes(buffer[_PREFIX.size : _PREFIX.size + head_size]))
    if not isinstance(header, dict):
        raise ValueError("message header is not an object")
    lengths = header.get("blobs", [])
    if not all(isinstance(n, int) and n >= 0 for n in lengths) or sum(lengths) != tail_size:
        raise ValueError("message blob lengths do not add up")
    blobs, offset = [], _PREFIX.size + head_size
    for n in lengths:
        blobs.append(bytes(buffer[offset : offset + n]))
        offset += n
    return header, blobs, end


# --------------------------------------------------------------------------------------------
# Process hardening (before anything untrusted runs)


def _prctl(option: int, value: int) -> None:
    import ctypes

    libc = ctypes.CDLL(None, use_errno=True)
    if libc.prctl(option, value, 0, 0, 0) != 0:
        raise OSError(ctypes.get_errno(), f"prctl({option}) failed")


def _drop_privileges(uid: int, gid: int) -> None:
    os.setgroups([])
    os.setresgid(gid, gid, gid)
    os.setresuid(uid, uid, uid)


def _harden_fallback(parent: int) -> None:
    """What bubblewrap would have done: no privilege gain by exec, die with the parent."""
    pr_set_pdeathsig, pr_set_no_new_privs = 1, 38
    _prctl(pr_set_no_new_privs, 1)
    # The death signal is cleared by the uid change above, so it is set after it.
    _prctl(pr_set_pdeathsig, 9)
    if os.getppid() != parent:  # the parent died before the signal was armed
        os._exit(1)


def _apply_limits(limits: dict[str, Any]) -> None:
    import resource

    used = resource.getrusage(resource.RUSAGE_SELF)
    cpu = int(used.ru_utime + used.ru_stime + float(limits["cpu_s"])) + 1
    memory = int(limits["memory_bytes"])
    file_size = int(limits["scratch_bytes"])
    settings = [
        (resource.RLIMIT_AS, memory, memory),
        # SIGXCPU at the soft limit; SIGKILL one second later if the code ignores it.
        (resource.RLIMIT_CPU, cpu, cpu + 1),
        (resource.RLIMIT_FSIZE, file_size, file_size),
        (resource.RLIMIT_CORE, 0, 0),
        (resource.RLIMIT_NOFILE, 256, 256),
        (resource.RLIMIT_MEMLOCK, 0, 0),
    ]
    if limits.get("max_processes") is not None:
        count = int(limits["max_processes"])
        settings.append((resource.RLIMIT_NPROC, count, count))
    for which, soft, hard in settings:
        _, current_hard = resource.getrlimit(which)
        if current_hard != resource.RLIM_INFINITY:
            soft, hard = min(soft, current_hard), min(hard, current_hard)
        resource.setrlimit(which, (soft, hard))


#: Devices the code may open; everything else under /dev (disks!) is refused in the fallback.
_DEVICES = ("/dev/null", "/dev/zero", "/dev/full", "/dev/random", "/dev/urandom", "/dev/fd/")
#: Readable directories hold these nonetheless.
_SECRETS = ("/etc/shadow", "/etc/gshadow", "/etc/sudoers", "/etc/ssh/")


def _install_audit_hook(scratch: str, readable: list[str]) -> None:
    """Fallback-mode friendly errors, mirroring what the kernel walls refuse.

    Refuses process creation, sockets other than AF_UNIX, ctypes, signals, writes outside the
    scratch directory, and reads outside ``readable`` (the directories bubblewrap would have
    mounted: system directories, the interpreter, scratch), with messages the model can act
    on. Python-level only, and code can take it down (C code is not audited; its closure can
    be rewritten): the walls are Landlock, seccomp, the unprivileged uid and the rlimits.
    """
    import socket

    root = os.path.realpath(scratch)
    roots = tuple(os.path.realpath(p).rstrip(os.sep) + os.sep for p in [*readable, root])
    own = (f"/proc/{os.getpid()}/", "/proc/self/", "/proc/thread-self/")
    blocked = (
        "os.system", "os.fork", "os.forkpty", "os.posix_spawn", "os.spawn", "os.exec",
        "os.kill", "os.killpg", "subprocess.Popen", "pty.spawn", "ctypes.",
        "socket.getaddrinfo", "socket.gethostbyname", "socket.gethostbyaddr",
        "socket.getnameinfo", "socket.sethostname", "sys.remote_exec", "os.setns",
        "os.unshare",
    )  # fmt: skip
    path_events = {
        "os.chmod": (0,), "os.chown": (0,), "os.link": (0, 1), "os.mkdir": (0,),
        "os.remove": (0,), "os.rename": (0, 1), "os.rmdir": (0,), "os.symlink": (0, 1),
        "os.truncate": (0,), "os.utime": (0,), "os.setxattr": (0,), "os.removexattr": (0,),
        "os.chflags": (0,), "os.lchflags": (0,), "os.lchown": (0,), "os.mkfifo": (0,),
        "os.mknod": (0,), "shutil.chown": (0,),
    }  # fmt: skip
    write_flags = os.O_WRONLY | os.O_RDWR | os.O_CREAT | os.O_APPEND | os.O_TRUNC

    def resolve(path: Any) -> str:
        return os.path.realpath(os.path.join(os.getcwd(), os.fsdecode(path)))

    def writable(path: Any) -> bool:
        if isinstance(path, int):  # an already open descriptor
            return True
        full = resolve(path)
        return full == root or full.startswith(root + os.sep)

    def readable_path(path: Any) -> bool:
        if isinstance(path, int):
            return True
        full = resolve(path)
        if full == "/proc":
            return True
        if full.startswith("/proc/"):
            rest = full[len("/proc/") :]
            return not rest[:1].isdigit() or (full + "/").startswith(own)
        if full.startswith("/dev/"):
            return full.startswith(_DEVICES) or full in {d.rstrip("/") for d in _DEVICES}
        if full.startswith(_SECRETS) or full in _SECRETS:
            return False
        return (full + os.sep).startswith(roots)

    def hook(event: str, args: tuple[Any, ...]) -> None:
        if event.startswith(blocked):
            if event.startswith("socket."):
                what = "network access"
            elif event.startswith("ctypes."):
                what = "ctypes"
            elif event.startswith(("os.kill", "os.killpg")):
                what = "sending signals"
            else:
                what = "starting processes"
            raise PermissionError(f"{what} is not allowed in the sandbox ({event})")
        if event == "open":
            path, mode, flags = args
            if path is None:
                return
            writing = (mode is not None and any(c in mode for c in "wax+")) or (
                mode is None and isinstance(flags, int) and flags & write_flags
            )
            if writing and not writable(path):
                raise PermissionError(
                    f"writing {os.fsdecode(path)!r} is not allowed: only the working "
                    "directory is writable"
                )
            if not writing and not readable_path(path):
                raise PermissionError(f"reading {os.fsdecode(path)!r} is not allowed here")
            if not writing and not writable(path) and os.path.isdir(resolve(path)):
                # A directory descriptor outside scratch would let os.open(..., dir_fd=fd)
                # write there (the audit event does not show dir_fd).
                raise PermissionError(
                    "opening directories outside the working directory is not allowed"
                )
        elif event in ("os.listdir", "os.scandir"):
            if args and args[0] is not None and not readable_path(args[0]):
                raise PermissionError(f"listing {os.fsdecode(args[0])!r} is not allowed here")
        elif event == "socket.__new__":
            if args[1] != socket.AF_UNIX:
                raise PermissionError("network access is not allowed in the sandbox")
        elif event in path_events:
            for index in path_events[event]:
                if index < len(args) and not writable(args[index]):
                    raise PermissionError(f"{event} outside the working directory is not allowed")
        elif event == "object.__setattr__" and args[0] is hook:
            raise PermissionError("the sandbox's audit hook cannot be changed")

    sys.addaudithook(hook)


# --------------------------------------------------------------------------------------------
# The job


def _read_exact(fd: int, size: int) -> bytes:
    chunks, left = [], size
    while left:
        chunk = os.read(fd, min(left, 1 << 20))
        if not chunk:
            raise EOFError("stdin closed before the job was complete")
        chunks.append(chunk)
        left -= len(chunk)
    return b"".join(chunks)


def _read_job(fd: int) -> tuple[dict[str, Any], list[bytes]]:
    head_size, tail_size = _PREFIX.unpack(_read_exact(fd, _PREFIX.size))
    data = _PREFIX.pack(head_size, tail_size) + _read_exact(fd, head_size + tail_size)
    decoded = decode_message(data)
    if decoded is None:  # cannot happen: exactly one whole message was read
        raise EOFError("incomplete job")
    header, blobs, _ = decoded
    return header, blobs


def open_original(data: bytes, max_pixels: int | None = None) -> Any:
    """The job image as an RGB PIL image, EXIF orientation applied, decoded lazily if possible.

    The upstream loader already rejected what cannot be read; this only has to agree with it on
    orientation and mode. An RGB image without a rotation stays a lazy ``ImageFile``, so a crop
    decodes it during the code's own run rather than before it. Raises ValueError when the
    image has more than ``max_pixels`` pixels (checked before decoding).
    """
    from PIL import Image, ImageOps

    img = Image.open(io.BytesIO(data))
    width, height = img.size
    if max_pixels is not None and width * height > max_pixels:
        raise ValueError(
            f"the image is {width}x{height}, more than the {max_pixels / 1e6:g} MP allowed"
        )
    if img.getexif().get(0x0112, 1) not in (1, None):
        img = ImageOps.exif_transpose(img)
    if getattr(img, "n_frames", 1) > 1:
        img.seek(0)
    if img.mode == "RGB":
        return img
    if img.mode in ("I;16", "I;16B", "I;16L", "I"):
        img = img.convert("I").point(lambda v: v * (1 / 256)).convert("L")
    elif img.mode in ("RGBA", "LA", "PA") or (img.mode == "P" and "transparency" in img.info):
        rgba = img.convert("RGBA")
        background = Image.new("RGBA", rgba.size, (255, 255, 255, 255))
        img = Image.alpha_composite(background, rgba)
    return img.convert("RGB")


def _open_sub_image(data: bytes) -> Any:
    from PIL import Image

    img = Image.open(io.BytesIO(data))
    return img if img.mode == "RGB" else img.convert("RGB")


class _Saver:
    """``save_image(img)``: write a PNG into the scratch directory, refusing oversize images."""

    def __init__(self, scratch: str, max_pixels: int) -> None:
        self.scratch = scratch
        self.max_pixels = max_pixels
        self.count = 0

    def __call__(self, img: Any, name: str | None = None) -> str:
        from PIL import Image

        if not isinstance(img, Image.Image):
            try:
                img = Image.fromarray(img)
            except Exception:
                raise TypeError(
                    f"save_image() needs a PIL image or a numpy array, not {type(img).__name__}"
                ) from None
        width, height = img.size
        if width * height > self.max_pixels:
            raise ValueError(
                f"save_image(): the image is {width}x{height} ({width * height / 1e6:.1f} MP), "
                f"more than the {self.max_pixels / 1e6:.1f} MP allowed per image; downscale it "
                "first, e.g. img.thumbnail((4096, 4096))"
            )
        if width == 0 or height == 0:
            raise ValueError(f"save_image(): the image is empty ({width}x{height})")
        self.count += 1
        # Always into scratch, even if the code changed directory: only scratch is collected.
        path = os.path.join(self.scratch, name or f"saved_image_{self.count}.png")
        if img.mode not in _PNG_MODES:
            img = img.convert("RGBA" if "A" in img.mode else "RGB")
        # Level 1: these PNGs are read once by the parent; speed matters more than size.
        img.save(path, format="PNG", compress_level=1)
        return path


def _saved_files(scratch: str) -> list[str]:
    import stat

    found: list[tuple[int, str]] = []
    device = os.lstat(scratch).st_dev

    def walk():
        for folder, dirs, files in os.walk(scratch, followlinks=False):
            # Only the scratch file system: an interpreter folder bound inside it (a virtual
            # environment under /tmp) is not something the code saved.
            dirs[:] = [d for d in dirs if os.lstat(os.path.join(folder, d)).st_dev == device]
            yield from (os.path.join(folder, name) for name in sorted(files))

    for seen, path in enumerate(walk()):
        if seen >= _SCAN_LIMIT:
            break
        if not path.lower().endswith(IMAGE_SUFFIXES):
            continue
        info = os.lstat(path)
        if stat.S_ISREG(info.st_mode):  # never follow a symlink out of the scratch directory
            found.append((info.st_mtime_ns, path))
    found.sort()
    return [path for _, path in found]


def _collect_images(
    scratch: str, limits: dict[str, Any]
) -> tuple[list[bytes], list[str], str | None]:
    """PNG bytes of the saved images in saving order, notes, and a refusal message if any."""
    from PIL import Image

    max_images, max_pixels = int(limits["max_images"]), int(limits["max_image_pixels"])
    # The pixel limit below is checked before any decoding, and an oversize image must be
    # refused with our message rather than Pillow's generic bomb error.
    Image.MAX_IMAGE_PIXELS = None
    budget = int(limits["max_image_bytes"])
    paths = _saved_files(scratch)
    images: list[bytes] = []
    notes: list[str] = []
    for path in paths[:max_images]:
        name = os.path.relpath(path, scratch)
        try:
            with Image.open(path) as img:
                width, height = img.size
                if width * height > max_pixels:
                    return (
                        [],
                        notes,
                        (
                            f"The saved image {name!r} is {width}x{height} "
                            f"({width * height / 1e6:.1f} MP), more than the "
                            f"{max_pixels / 1e6:.1f} MP allowed per image, so it was refused. "
                            "Downscale it before saving, e.g. img.thumbnail((4096, 4096))."
                        ),
                    )
                if img.format == "PNG":
                    with open(path, "rb") as handle:
                        data = handle.read()
                else:
                    img.seek(0)
                    frame = img if img.mode in _PNG_MODES else img.convert("RGB")
                    buffer = io.BytesIO()
                    frame.save(buffer, format="PNG", compress_level=1)
                    data = buffer.getvalue()
        except Exception as error:  # any unreadable file is reported, not fatal
            notes.append(f"{name!r} could not be read as an image ({error}); it was skipped.")
            continue
        if len(data) > budget:
            notes.append(
                f"{name!r} and later images were not returned: the images together exceed "
                f"{limits['max_image_bytes'] // (1 << 20)} MiB."
            )
            break
        budget -= len(data)
        images.append(data)
    if len(paths) > max_images:
        notes.append(
            f"{len(paths)} images were saved; only the first {max_images} are returned "
            f"(the limit per call is {max_images})."
        )
    return images, notes, None


def _run_code(code: str, namespace: dict[str, Any]) -> str | None:
    """Run the code; None when it finished, else the exception's type name."""
    import linecache
    import traceback

    filename = "<code>"
    # Registered so that tracebacks show the model its own source lines.
    linecache.cache[filename] = (len(code), None, code.splitlines(True), filename)
    try:
        compiled = compile(code, filename, "exec")
    except SyntaxError as error:
        traceback.print_exception(type(error), error, None, file=sys.stderr)
        return type(error).__name__
    try:
        exec(compiled, namespace)
    except SystemExit as error:
        if error.code in (None, 0):
            return None
        traceback.print_exception(type(error), error, error.__traceback__.tb_next)
        return "SystemExit"
    except BaseException as error:  # everything the code raises is its result
        # Skip this frame (the exec call) so the traceback starts in the model's code.
        traceback.print_exception(type(error), error, error.__traceback__.tb_next)
        return type(error).__name__
    return None


def _flush() -> None:
    import contextlib

    for stream in (sys.stdout, sys.stderr):
        with contextlib.suppress(Exception):  # a closed stream has nothing left to flush
            stream.flush()


def _write_all(fd: int, data: bytes) -> None:
    view = memoryview(data)
    while view:
        view = view[os.write(fd, view) :]


def _limit_user_tasks(extra: int) -> None:
    """RLIMIT_NPROC for a sandbox with its parent's uid: that counts all of the user's tasks,
    so the limit is their number now plus ``extra``. Read before the walls hide ``/proc``."""
    import resource

    total, me = 0, str(os.getuid())
    for entry in os.scandir("/proc"):
        if not entry.name.isdigit():
            continue
        try:
            with open(f"/proc/{entry.name}/status") as status:
                lines = dict(line.split(":", 1) for line in status if ":" in line)
        except OSError:
            continue
        if lines.get("Uid", "").split()[:1] == [me]:
            total += int(lines.get("Threads", "1").strip() or 1)
    count = total + extra
    _, hard = resource.getrlimit(resource.RLIMIT_NPROC)
    if hard != resource.RLIM_INFINITY:
        count = min(count, hard)
    resource.setrlimit(resource.RLIMIT_NPROC, (count, count))


def _put_up_walls(source: str, scratch: str, readable: list[str] | None) -> None:
    """The kernel walls of ``tools/sandbox_walls.py`` (whose text the parent passed).

    In the fallback (``readable`` given): Landlock, and a seccomp filter that keeps the
    sandbox one process. In bubblewrap (None), which has its own file system and pid
    namespace: the seccomp filter that allows processes.
    """
    import types

    walls = types.ModuleType("sandbox_walls")
    exec(compile(source, "sandbox_walls.py", "exec"), walls.__dict__)
    if readable is None:
        walls.restrict_syscalls(None)
        return
    walls.make_undumpable()  # other sandboxes of this uid cannot open its pipes via /proc
    own = f"/proc/{os.getpid()}"
    walls.restrict_files([*readable, own], [scratch], _DEVICES[:-1], listable=["/proc"])
    walls.restrict_syscalls(os.getpid())


def main(argv: list[str]) -> None:
    options = dict(zip(argv[0::2], argv[1::2], strict=False))
    result_fd = int(options["--result-fd"])
    scratch = options["--scratch"]
    if "--uid" in options:
        _drop_privileges(int(options["--uid"]), int(options["--gid"]))
    if os.getuid() == 0 or os.geteuid() == 0:
        raise SystemExit("the sandbox refuses to run code as root")
    sys.path.extend(p for p in json.loads(options.get("--path", "[]")) if p not in sys.path)
    fallback = options.get("--fallback") == "1"
    if fallback:
        _harden_fallback(int(options["--parent"]))
    if "--nproc-above-user" in options:
        _limit_user_tasks(int(options["--nproc-above-user"]))
    if "--walls" in options:
        readable = json.loads(options["--readable"]) if fallback else None
        _put_up_walls(options["--walls"], scratch, readable)
    os.chdir(scratch)

    # The warm part: what every call needs, imported before the job exists (socket: for the
    # fallback's audit hook, which refers to its constants; Pillow's common formats). NumPy and
    # the rest of Pillow are imported by the code that uses them: each sandbox runs one call,
    # so anything imported here costs CPU on every call, used or not (NumPy alone ~90 ms).
    import socket  # noqa: F401

    from PIL import Image, ImageOps  # noqa: F401

    Image.preinit()
    _write_all(result_fd, encode_message({"type": "ready"}))
    if options.get("--probe") == "1":
        os._exit(0)

    header, blobs = _read_job(0)
    received = time.perf_counter()
    # Exec'd programs must not inherit the result pipe (forks still do; the parent copes).
    os.set_inheritable(result_fd, False)
    limits = header["limits"]
    _apply_limits(limits)
    if fallback:
        _install_audit_hook(scratch, json.loads(options["--readable"]))

    saver = _Saver(scratch, int(limits["max_image_pixels"]))
    namespace: dict[str, Any] = {"__name__": "__main__", "save_image": saver}
    error_type: str | None = None
    originals = int(header.get("originals", 1))  # the job's images, then the sub-images
    try:
        job_images = [open_original(b) for b in blobs[:originals]]
        namespace["image"], namespace["images"] = job_images[0], job_images
        subs = {
            f"sub_image_{i}": _open_sub_image(b) for i, b in enumerate(blobs[originals:], start=1)
        }
    except Exception as error:  # reported to the model like any failure
        print(f"The input images could not be opened: {error}", file=sys.stderr)
        error_type = type(error).__name__
    else:
        namespace.update(subs)
        namespace["sub_images"] = dict(subs)
        error_type = _run_code(header["code"], namespace)
    _flush()
    ran = time.perf_counter()
    message = None
    images: list[bytes] = []
    notes: list[str] = []
    if error_type is None:
        images, notes, message = _collect_images(scratch, limits)
    status = "ok" if error_type is None and message is None else "error"
    # Informational only (the code could have changed them): where the time went, in seconds.
    timings = {"code_s": ran - received, "collect_s": time.perf_counter() - ran}
    result = {"type": "result", "status": status, "exception": error_type, "message": message,
              "notes": notes, "timings": timings}  # fmt: skip
    _write_all(result_fd, encode_message(result, images))
    os._exit(0)


if __name__ == "__main__":
    main(sys.argv[1:])
