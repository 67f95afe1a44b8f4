"""The code tool in real sandboxes: typical calls, isolation, limits, and escape attempts.

Every escape runs under bubblewrap and under the fallback (bubblewrap cases are skipped only
when ``bwrap`` is not installed). Each must end with a clear result for the model while the
parent is unharmed: nothing reached, written, leaked or left running, and the next call works.
"""

from __future__ import annotations

import io
import os
import shutil
import socket
import subprocess
import time

import pytest
from PIL import Image

from tools.base import ToolContext, ToolUnavailableError
from tools.code import CodeTool
from tools.sandbox import PROTECTIONS, Sandbox
from tools.sandbox_process import _kill_uid

pytestmark = pytest.mark.integration

HAVE_BWRAP = shutil.which("bwrap") is not None
PROTECTION_PARAMS = [
    pytest.param(
        "bubblewrap",
        marks=pytest.mark.skipif(
            not HAVE_BWRAP, reason="needs bubblewrap: apt-get install bubblewrap"
        ),
    ),
    "fallback",
]
# The loops and fork bombs get shorter per-call limits; these leave room for a loaded machine.
SETTINGS = {"wall_s": 6.0, "cpu_s": 6.0, "pool_size": 1}


def jpeg(width: int = 1536, height: int = 1536) -> bytes:
    image = Image.radial_gradient("L").resize((width, height)).convert("RGB")
    image.paste((200, 30, 30), (600, 600, 700, 650))
    buffer = io.BytesIO()
    image.save(buffer, format="JPEG", quality=90)
    return buffer.getvalue()


def png(image: Image.Image) -> bytes:
    buffer = io.BytesIO()
    image.save(buffer, format="PNG")
    return buffer.getvalue()


IMAGE = jpeg()
CONTEXT = ToolContext(image=IMAGE)


@pytest.fixture(scope="module", params=PROTECTION_PARAMS)
def tool(request):
    tool = CodeTool(protection=request.param, **SETTINGS)
    assert tool.protection == request.param
    yield tool
    tool.close()


def run(tool: CodeTool, code: str, context: ToolContext = CONTEXT):
    return tool.run({"code": code}, context)


def assert_healthy(tool: CodeTool) -> None:
    """The parent is unharmed: the sandbox still answers a normal call correctly."""
    result = run(tool, "print(image.size, 6 * 7)")
    assert result.ok, result.error
    assert result.text == "(1536, 1536) 42"


def wait_until(condition, timeout: float = 5.0) -> bool:
    end = time.monotonic() + timeout
    while time.monotonic() < end:
        if condition():
            return True
        time.sleep(0.05)
    return condition()


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


def processes_of_uids(low: int, high: int) -> list[int]:
    found = []
    for entry in os.scandir("/proc"):
        if entry.name.isdigit():
            try:
                if low <= os.stat(f"/proc/{entry.name}").st_uid < high:
                    found.append(int(entry.name))
            except OSError:
                continue
    return found


# --------------------------------------------------------------------------------------------
# Typical use


def test_crop_and_save_returns_the_crop(tool):
    code = (
        "crop = image.crop((500, 550, 812, 750))\n"
        "print(crop.size)\n"
        "save_image(crop)\n"
        "image.crop((0, 0, 64, 32)).save('corner.jpg')\n"
    )
    result = run(tool, code)
    assert result.ok, result.error
    assert result.text == "(312, 200)"
    assert len(result.images) == 2
    original = Image.open(io.BytesIO(IMAGE)).convert("RGB")
    first = Image.open(io.BytesIO(result.images[0]))
    assert first.format == "PNG" and first.size == (312, 200)
    assert first.convert("RGB").tobytes() == original.crop((500, 550, 812, 750)).tobytes()
    second = Image.open(io.BytesIO(result.images[1]))
    assert second.format == "PNG" and second.size == (64, 32)  # saved as JPEG, returned as PNG


def test_numpy_and_the_rest_of_pillow_import_on_demand(tool):
    # The warm sandbox holds only what every call needs; what the code imports beyond it
    # must still load behind the walls and within the limits.
    code = (
        "import numpy as np\n"
        "from PIL import Image, ImageDraw, ImageEnhance, ImageFilter\n"
        "crop = image.crop((0, 0, 40, 30)).filter(ImageFilter.GaussianBlur(1))\n"
        "ImageDraw.Draw(crop).rectangle((0, 0, 9, 9), fill=(0, 255, 0))\n"
        "pixels = np.asarray(ImageEnhance.Contrast(crop).enhance(1.0))\n"
        "print(pixels.shape, pixels[0, 0].tolist())\n"
        "save_image(pixels)\n"
    )
    result = run(tool, code)
    assert result.ok, result.error
    assert result.text == "(30, 40, 3) [0, 255, 0]"
    assert Image.open(io.BytesIO(result.images[0])).size == (40, 30)


def test_sub_images_are_preloaded(tool):
    subs = (png(Image.new("RGB", (30, 20), (1, 2, 3))), png(Image.new("L", (7, 5), 9)))
    code = (
        "print(sub_image_1.size, sub_image_2.size, sorted(sub_images), sub_image_2.mode)\n"
        "save_image(sub_images['sub_image_1'])"
    )
    result = run(tool, code, ToolContext(image=IMAGE, sub_images=subs))
    assert result.ok, result.error
    assert result.text == "(30, 20) (7, 5) ['sub_image_1', 'sub_image_2'] RGB"
    assert Image.open(io.BytesIO(result.images[0])).getpixel((0, 0)) == (1, 2, 3)


def test_every_job_image_is_preloaded_in_order(tool):
    second = png(Image.new("RGB", (40, 30), (4, 5, 6)))
    third = png(Image.new("RGB", (10, 10), (7, 8, 9)))
    sub = png(Image.new("RGB", (3, 3), (1, 1, 1)))
    code = (
        "print(len(images), images[0] is image, [i.size for i in images[1:]], sub_image_1.size)\n"
        "save_image(images[1].crop((0, 0, 8, 8)))"
    )
    context = ToolContext(image=IMAGE, sub_images=(sub,), more_images=(second, third))
    result = run(tool, code, context)
    assert result.ok, result.error
    assert result.text == "3 True [(40, 30), (10, 10)] (3, 3)"
    assert Image.open(io.BytesIO(result.images[0])).getpixel((0, 0)) == (4, 5, 6)
    # A single-image job has `images` too: the one original.
    alone = run(tool, "print(len(images), images[0] is image)")
    assert alone.text == "1 True"


def test_exceptions_show_the_models_own_traceback(tool):
    result = run(tool, "print('before')\nx = 1\nraise ValueError('boom')")
    assert result.error_type == "execution"
    assert result.error.startswith("before\nTraceback (most recent call last):")
    assert 'File "<code>", line 3, in <module>' in result.error
    assert "raise ValueError('boom')" in result.error  # the source line is shown
    assert "ValueError: boom" in result.error
    assert "before" in result.text

    syntax = run(tool, "def f(:\n  pass")
    assert "SyntaxError" in syntax.error and 'File "<code>", line 1' in syntax.error


def test_calls_do_not_share_state(tool):
    leak = (
        "import PIL, builtins\n"
        "PIL.leaked = 1\n"
        "builtins.LEAKED = 1\n"
        "open('leaked.txt', 'w').write('x')\n"
        "image.putpixel((0, 0), (1, 2, 3))\n"
    )
    assert run(tool, leak).ok
    check = (
        "import PIL, builtins, os\n"
        "print(hasattr(PIL, 'leaked'), hasattr(builtins, 'LEAKED'), os.path.exists('leaked.txt'),"
        " image.getpixel((0, 0)) == (1, 2, 3))"
    )
    for _ in range(2):  # a pooled sandbox and its replacement
        result = run(tool, check)
        assert result.text == "False False False False", result.error


def test_per_call_limits_from_the_context(tool):
    context = ToolContext(image=IMAGE, timeout_s=2.0, max_images=1)
    result = run(tool, "save_image(image.crop((0, 0, 9, 9)))\nsave_image(image)", context)
    assert result.ok and len(result.images) == 1
    assert "only the first 1 are returned" in result.text
    slow = run(tool, "import time\ntime.sleep(5)", context)
    assert "time limit of 2 s" in slow.error


# --------------------------------------------------------------------------------------------
# Escapes


def test_escape_network_to_a_local_server(tool):
    server = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
    server.bind(("127.0.0.1", 0))
    server.listen(8)
    server.setblocking(False)
    port = server.getsockname()[1]
    code = (
        "import socket\n"
        f"s = socket.create_connection(('127.0.0.1', {port}), timeout=1)\n"
        "s.sendall(b'stolen')\n"
        "print('CONNECTED')"
    )
    try:
        result = run(tool, code)
        assert not result.ok and "CONNECTED" not in result.text
        assert any(
            name in result.error
            for name in ("ConnectionRefusedError", "network access is not allowed", "OSError")
        ), result.error
        with pytest.raises(BlockingIOError):
            server.accept()  # nobody ever connected
    finally:
        server.close()
    assert_healthy(tool)


def test_escape_write_outside_scratch(tool, tmp_path):
    # World-writable, so only the sandbox (not file permissions) can stop the write.
    open_dir = tmp_path / "open"
    open_dir.mkdir()
    open_dir.chmod(0o777)
    targets = [open_dir / "escaped.txt", tmp_path / "escaped.txt"]
    code = (
        "import os\n"
        "for path in " + repr([str(t) for t in [*targets, "/etc/escaped.txt"]]) + ":\n"
        "    try:\n"
        "        with open(path, 'w') as f:\n"
        "            f.write('x')\n"
        "        print('WROTE', path)\n"
        "    except OSError as e:\n"
        "        print('blocked', type(e).__name__)\n"
        "try:\n"  # a directory descriptor, then a write relative to it
        "    etc = os.open('/etc', os.O_RDONLY)\n"
        "    os.close(os.open('escaped-at.txt', os.O_WRONLY | os.O_CREAT, dir_fd=etc))\n"
        "    print('WROTE /etc/escaped-at.txt')\n"
        "except OSError as e:\n"
        "    print('blocked', type(e).__name__)\n"
        "open('inside.txt', 'w').write('scratch is writable')\n"
        "print(open('inside.txt').read())\n"
    )
    result = run(tool, code)
    assert result.ok, result.error
    assert "WROTE" not in result.text
    assert result.text.count("blocked") == 4
    assert result.text.endswith("scratch is writable")
    for target in [*targets]:
        assert not target.exists()
    assert not os.path.exists("/etc/escaped.txt")
    assert not os.path.exists("/etc/escaped-at.txt")
    assert_healthy(tool)


def test_escape_read_a_secret_of_the_parent(tool, monkeypatch):
    secret = "sekrit-AKIA-1234567890"
    monkeypatch.setenv("AWS_SECRET_ACCESS_KEY", secret)
    code = (
        "import os\n"
        "print('env', os.environ.get('AWS_SECRET_ACCESS_KEY'))\n"
        "found = []\n"
        "for pid in [p for p in os.listdir('/proc') if p.isdigit()] + [str(os.getppid())]:\n"
        "    for name in ('environ', 'cmdline'):\n"
        "        try:\n"
        "            data = open(f'/proc/{pid}/{name}', 'rb').read()\n"
        "        except OSError:\n"
        "            continue\n"
        f"        if b'{secret}' in data:\n"
        "            found.append(pid)\n"
        "print('found', found)\n"
    )
    # A sandbox created after the secret was set: nothing inherited at start either.
    fresh = CodeTool(protection=tool.protection, pool_size=0, wall_s=5)
    try:
        result = run(fresh, code)
    finally:
        fresh.close()
    assert result.ok, result.error
    assert result.text == "env None\nfound []"
    assert secret not in result.text


def test_escape_read_a_secret_file(tool, tmp_path):
    # Readable by everyone on the host: only the sandbox can keep it from the code.
    secret = tmp_path / "credentials"
    secret.write_text("aws_secret_access_key = sekrit")
    secret.chmod(0o644)
    tmp_path.chmod(0o755)
    code = (
        "for path in " + repr([str(secret), "/etc/shadow", "/root/.bashrc"]) + ":\n"
        "    try:\n"
        "        print('READ', open(path).read())\n"
        "    except OSError as e:\n"
        "        print('blocked', type(e).__name__)\n"
    )
    result = run(tool, code)
    assert result.ok, result.error
    assert "sekrit" not in result.text and "READ" not in result.text
    assert result.text.count("blocked") == 3


def test_escape_infinite_loop(tool):
    started = time.monotonic()
    result = run(tool, "while True:\n    pass", ToolContext(image=IMAGE, timeout_s=1.0))
    assert time.monotonic() - started < 2.5
    assert result.error_type == "execution"
    assert "did not finish within the time limit of 1 s" in result.error
    assert_healthy(tool)


@pytest.mark.parametrize("protection", PROTECTION_PARAMS)
def test_escape_cpu_time_limit(protection):
    # Wall clock well above the CPU limit: the kernel's RLIMIT_CPU is what stops the loop.
    with CodeTool(protection=protection, pool_size=0, cpu_s=1, wall_s=20).sandbox as sandbox:
        tool = CodeTool(sandbox=sandbox)
        result = run(tool, "while True:\n    pass")
    assert "more than 1 s of CPU time" in result.error


@pytest.mark.parametrize(
    "code",
    ["x = bytearray(10 * 2**30)", "import numpy as np\nx = np.ones(10 * 2**30, dtype=np.uint8)"],
)
def test_escape_allocate_10_gib(tool, code):
    result = run(tool, code)
    assert result.error_type == "execution"
    assert "MemoryError" in result.error
    assert "The memory limit is 1 GiB." in result.error
    assert_healthy(tool)


@pytest.mark.parametrize("protection", PROTECTION_PARAMS)
def test_escape_fork_bomb(protection):
    # Own uid range, so that anything left running afterwards would be found by uid.
    low, count = 63000, 40
    sandbox = Sandbox(protection=protection, pool_size=0, wall_s=2, uid_base=low, uid_count=count)
    tool = CodeTool(sandbox=sandbox)
    try:
        started = time.monotonic()
        result = run(tool, "import os\nwhile True:\n    os.fork()")
        assert time.monotonic() - started < 4
        assert not result.ok
        assert any(
            text in result.error
            for text in ("BlockingIOError", "starting processes is not allowed", "time limit")
        ), result.error
        assert_healthy(tool)
    finally:
        sandbox.close()
    assert processes_of_uids(low, low + count) == []


@pytest.mark.skipif(os.geteuid() != 0, reason="needs root: run the tests as root")
def test_uid_sweep_kills_what_a_sandbox_user_left_running():
    # What fallback-sandboxed code detached from its process group is found by its uid.
    uid = 63100
    detach = "setsid sleep 27.1828 </dev/null >/dev/null 2>&1 &"
    subprocess.run(["sh", "-c", detach], user=uid, group=uid, extra_groups=[], check=True)
    assert wait_until(lambda: processes_with(b"27.1828")), "the detached process did not start"
    assert _kill_uid(uid)
    assert wait_until(lambda: not processes_with(b"27.1828")), "the uid sweep left it running"
    assert _kill_uid(uid)  # nothing left: still True


def test_escape_spawn_a_subprocess(tool):
    code = (
        "import subprocess\n"
        "p = subprocess.Popen(['sleep', '31.4159'], start_new_session=True)\n"
        "print('spawned')\n"
        "print(subprocess.run(['sh', '-c', 'touch /etc/spawned; echo $AWS_SECRET_ACCESS_KEY'],"
        " capture_output=True, text=True))\n"
    )
    result = run(tool, code)
    if tool.protection == "fallback":
        # The fallback refuses process creation outright.
        assert "starting processes is not allowed in the sandbox" in result.error
    else:
        # Inside bubblewrap a child process is as confined as the code itself.
        assert result.ok, result.error
        assert "Read-only file system" in result.text
    assert not os.path.exists("/etc/spawned")
    # Whatever was started, nothing survives the call (pid namespace / uid sweep).
    assert wait_until(lambda: not processes_with(b"31.4159")), "a sandbox child survived"
    assert_healthy(tool)


def test_escape_10_mb_of_stdout(tool):
    result = run(tool, "import sys\nsys.stdout.write('x' * 10_000_000)\nprint('end')")
    assert result.ok, result.error
    assert result.text.startswith("x" * 4096 + "\n[output truncated: 10000004 bytes were written")
    assert "only the first 4096 are shown]" in result.text
    assert len(result.text) < 4300
    assert_healthy(tool)


def test_escape_10_mb_of_stderr_on_error(tool):
    result = run(tool, "import sys\nsys.stderr.write('e' * 10_000_000)\nraise KeyError('k')")
    assert "[error output truncated" in result.error
    assert "only the last 4096 are shown]" in result.error
    assert result.error.rstrip().endswith("The code raised KeyError.")
    assert "KeyError: 'k'" in result.error  # the tail, where the traceback is, is kept


def test_escape_save_100_images(tool):
    code = (
        "from PIL import Image\n"
        "for i in range(100):\n"
        "    save_image(Image.new('RGB', (8, 8), (i, 0, 0)))\n"
    )
    result = run(tool, code)
    assert result.ok, result.error
    assert len(result.images) == 8
    reds = [Image.open(io.BytesIO(data)).getpixel((0, 0))[0] for data in result.images]
    assert reds == list(range(8))  # the first eight, in saving order
    assert "100 images were saved; only the first 8 are returned" in result.text
    assert_healthy(tool)


@pytest.mark.parametrize(
    ("code", "fragment"),
    [
        (
            "from PIL import Image\nsave_image(Image.new('L', (20000, 20000)))",
            "save_image(): the image is 20000x20000 (400.0 MP), more than the 16.8 MP allowed",
        ),
        (
            "from PIL import Image\nImage.new('1', (20000, 20000)).save('huge.png')",
            "The saved image 'huge.png' is 20000x20000 (400.0 MP), more than the 16.8 MP",
        ),
        ("from PIL import Image\nImage.new('RGB', (20000, 20000))", "MemoryError"),
    ],
)
def test_escape_save_a_20000_square_image(tool, code, fragment):
    result = run(tool, code)
    assert result.error_type == "execution" and result.images == ()
    assert fragment in result.error
    assert_healthy(tool)


def test_escape_forged_results_are_refused(tool):
    # The runner shares the process with the code, so the code can write to the result pipe
    # itself; the parent checks what it gets instead of trusting it.
    forged_png = b"\x89PNG\r\n\x1a\n" + b"\x00\x00\x00\rIHDR" + (20000).to_bytes(4, "big") * 2
    code = (
        "import __main__, os, sys\n"
        "fd = int(sys.argv[sys.argv.index('--result-fd') + 1])\n"
        "message = __main__.encode_message({'type': 'result', 'status': 'ok', 'notes': []},"
        f" [{forged_png!r}])\n"
        "os.write(fd, message)\n"
    )
    result = run(tool, code)
    assert result.error == (
        "The sandbox was stopped because it returned an image of 20000x20000 pixels, over the "
        "limit."
    )
    garbage = run(tool, "import os, sys\nos.write(int(sys.argv[2]), b'\\xff' * 64)\nos._exit(0)")
    assert garbage.error == (
        "The sandbox was stopped because its result pipe held bytes that are not a result."
    )
    assert_healthy(tool)


def test_pool_keeps_fresh_sandboxes_ready_and_close_stops_them():
    sandbox = Sandbox(pool_size=2)
    try:
        assert sandbox.wait_warm(timeout_s=60)
        idle = [worker.proc.pid for worker in sandbox._idle]
        assert len(idle) == 2
        assert sandbox.run("print(1)", IMAGE).stdout == "1\n"
        assert sandbox.wait_warm(timeout_s=60)
        now = [worker.proc.pid for worker in sandbox._idle]
        assert len(now) == 2 and len(set(now) - set(idle)) == 1  # one used, one replaced
    finally:
        sandbox.close()
    assert wait_until(lambda: not any(os.path.exists(f"/proc/{pid}") for pid in now))
    with pytest.raises(ToolUnavailableError, match="closed"):
        sandbox.run("print(1)", IMAGE)


# --------------------------------------------------------------------------------------------
# Protection levels


def test_protection_is_reported():
    tool = CodeTool(pool_size=0)
    try:
        assert tool.protection in PROTECTIONS
        if HAVE_BWRAP:
            assert tool.protection == "bubblewrap"
            assert tool.sandbox.details.startswith("bubblewrap, no network")
    finally:
        tool.close()


def test_require_strong_refuses_without_bubblewrap():
    with pytest.raises(ValueError, match="contradicts"):
        Sandbox(protection="fallback", require_strong=True)
    missing = CodeTool(bwrap="/nonexistent/bwrap", require_strong=True)
    with pytest.raises(ToolUnavailableError, match="needs bubblewrap here but bwrap is not"):
        missing.run({"code": "print(1)"}, CONTEXT)
    with pytest.raises(ToolUnavailableError):  # and keeps refusing
        _ = missing.protection
    # Without require_strong the same machine falls back, and says so.
    weak = CodeTool(bwrap="/nonexistent/bwrap", pool_size=0)
    try:
        assert weak.protection == "fallback"
        assert run(weak, "print('ok')").text == "ok"
    finally:
        weak.close()
