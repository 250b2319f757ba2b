# Host memory per idle session disk: N session filesystems (clone + loop + mount,
# as session_fs.rs does) vs N btrfs subvolumes with a qgroup limit, in one btrfs image.
import ctypes, fcntl, os, struct, subprocess, sys, time
libc = ctypes.CDLL(None, use_errno=True)
N = int(sys.argv[1]); mnt = os.path.abspath("mnt")
def meminfo():
    d = {}
    for l in open("/proc/meminfo"):
        k, v = l.split(":"); d[k] = int(v.split()[0])
    return d
def settle():
    subprocess.run("sync; echo 3 > /proc/sys/vm/drop_caches", shell=True); time.sleep(2)
    subprocess.run("sync; echo 3 > /proc/sys/vm/drop_caches", shell=True)
    return meminfo()
KEYS = ["SUnreclaim", "SReclaimable", "Percpu", "KernelStack", "Buffers", "MemFree"]
def report(name, a, b):
    print(name, " ".join(f"{k}={(b[k]-a[k])/N:+.1f}" for k in KEYS), "KiB/session")
def ficlone(src, dst):
    s = os.open(src, os.O_RDONLY); d = os.open(dst, os.O_WRONLY|os.O_CREAT|os.O_EXCL, 0o600)
    fcntl.ioctl(d, 0x40049409, s); os.close(s); os.close(d)
def attach(path):
    ctl = os.open("/dev/loop-control", os.O_RDWR); n = fcntl.ioctl(ctl, 0x4C82); os.close(ctl)
    dev = f"/dev/loop{n}"; fd = os.open(dev, os.O_RDWR); b = os.open(path, os.O_RDWR)
    info = struct.pack("QQQQQIIII64s64s32sQQ", 0,0,0,0,0, 0,0,0, 4, b"", b"", b"", 0,0)
    fcntl.ioctl(fd, 0x4C0A, struct.pack("II", b, 0) + info + b"\0"*64); os.close(b)
    return dev, fd
a = settle()
for i in range(N):
    img, tgt = f"{mnt}/c{i}.img", f"{mnt}/m{i}"; os.makedirs(tgt, exist_ok=True)
    ficlone(f"{mnt}/tpl.img", img); dev, fd = attach(img)
    if libc.mount(dev.encode(), tgt.encode(), b"ext4", 2|4, b"noinit_itable,discard") != 0: raise OSError(ctypes.get_errno(), "mount")
    os.close(fd)
    for d in ("sandbox", "sandbox/upper", "sandbox/work", "files", "files/outputs", "files/uploads"): os.mkdir(f"{tgt}/{d}")
    with open(f"{tgt}/sandbox/upper/f", "w") as f: f.write("x")
b = settle(); report("fs per session", a, b)
for i in range(N):
    libc.umount2(f"{mnt}/m{i}".encode(), 0); os.unlink(f"{mnt}/c{i}.img")
a = settle()
for i in range(N):
    subprocess.run(["btrfs", "-q", "subvolume", "create", f"{mnt}/s{i}"], check=True, stdout=subprocess.DEVNULL)
    subprocess.run(["btrfs", "qgroup", "limit", "10G", f"{mnt}/s{i}"], check=True)
    for d in ("sandbox", "sandbox/upper", "sandbox/work", "files", "files/outputs", "files/uploads"): os.mkdir(f"{mnt}/s{i}/{d}")
    with open(f"{mnt}/s{i}/sandbox/upper/f", "w") as f: f.write("x")
b = settle(); report("qgroup subvolume", a, b)
