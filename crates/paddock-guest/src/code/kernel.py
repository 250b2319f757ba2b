# The Python side of a Paddock code context: reads one JSON request per line
# on stdin, runs the code in a namespace that persists, and writes JSON lines
# on the original stdout: {"stream": "stdout"|"stderr", "text": ...} while the
# code runs, as it writes, then one result (a line without "stream"). During a
# run, fds 1 and 2 point at pipes, so output of C extensions and child
# processes is caught too.
import ast, base64, codecs, io, json, os, select, sys, threading, traceback

os.environ.setdefault("MPLBACKEND", "Agg")
OUTPUT_CAP = 1 << 20
reply = os.fdopen(os.dup(1), "w", buffering=1)
reply_lock = threading.Lock()
namespace = {"__name__": "__main__", "__builtins__": __builtins__}


def send(message):
    with reply_lock:
        reply.write(json.dumps(message) + "\n")


def discard(fd):
    """Reads a pipe to its end: a child the cell left running may still write
    to it, and must neither block nor die of SIGPIPE."""
    os.set_blocking(fd, True)
    try:
        while os.read(fd, 65536):
            pass
    finally:
        os.close(fd)


class Capture:
    """A pipe for fd 1 or 2 during a run, and a thread that sends what comes
    out of it as it comes (the first OUTPUT_CAP bytes), by whole lines: a
    line's end that follows within LINE_WAIT goes with it (print writes the
    text and the newline apart)."""

    LINE_WAIT = 0.02
    PIECE_MAX = 1 << 16

    def __init__(self, name):
        self.name = name
        self.read_fd, self.write_fd = os.pipe()
        self.wake_r, self.wake_w = os.pipe()
        os.set_blocking(self.read_fd, False)
        self.size = 0
        self.truncated = False
        self.pending = ""
        self.decoder = codecs.getincrementaldecoder("utf-8")(errors="replace")
        self.thread = threading.Thread(target=self.pump, daemon=True)
        self.thread.start()

    def forward(self, data):
        room = OUTPUT_CAP - self.size
        if len(data) > room:
            self.truncated = True
            data = data[:max(room, 0)]
        self.size += len(data)
        self.pending += self.decoder.decode(data)
        cut = self.pending.rfind("\n") + 1
        if len(self.pending) >= self.PIECE_MAX:
            cut = len(self.pending)
        if cut:
            send({"stream": self.name, "text": self.pending[:cut]})
            self.pending = self.pending[cut:]

    def flush(self, final=False):
        text = self.pending + (self.decoder.decode(b"", final=True) if final else "")
        self.pending = ""
        if text:
            send({"stream": self.name, "text": text})

    def drain(self):
        """Reads what the pipe holds now; True at its end (no writer left)."""
        while True:
            try:
                data = os.read(self.read_fd, 65536)
            except BlockingIOError:
                return False
            if not data:
                return True
            self.forward(data)

    def pump(self):
        while True:
            wait = self.LINE_WAIT if self.pending else None
            ready, _, _ = select.select([self.read_fd, self.wake_r], [], [], wait)
            if not ready:  # a partial line that waited long enough
                self.flush()
                continue
            ended = self.drain()
            # The wake-up comes after the run's last write: once it is seen,
            # one more drain has everything the run wrote.
            if ended or self.wake_r in ready:
                break
        self.flush(final=True)
        if ended:
            os.close(self.read_fd)
        else:
            threading.Thread(target=discard, args=(self.read_fd,), daemon=True).start()

    def finish(self):
        """Called once fd 1 or 2 no longer points at the pipe."""
        os.close(self.write_fd)
        os.write(self.wake_w, b"x")  # the pump closes no wake-up end: this cannot fail
        while True:
            try:
                self.thread.join()
                break
            except KeyboardInterrupt:  # a timeout's interrupt, come late: the run is over
                continue
        os.close(self.wake_w)
        os.close(self.wake_r)


def run(code):
    res = {"result": "", "error": None, "outputs": [], "truncated": False}
    sys.stdout.flush(); sys.stderr.flush()
    out, err = Capture("stdout"), Capture("stderr")
    saved = os.dup(1), os.dup(2)
    os.dup2(out.write_fd, 1); os.dup2(err.write_fd, 2)
    try:
        tree = ast.parse(code, "<cell>", "exec")
        last = None
        if tree.body and isinstance(tree.body[-1], ast.Expr):
            last = ast.Expression(tree.body.pop().value)
        exec(compile(tree, "<cell>", "exec"), namespace)
        if last is not None:
            value = eval(compile(last, "<cell>", "eval"), namespace)
            if value is not None:
                res["result"] = repr(value)
                if len(res["result"]) > OUTPUT_CAP:
                    res["result"] = res["result"][:OUTPUT_CAP]
                    res["truncated"] = True
    except BaseException as e:  # KeyboardInterrupt from a timeout too
        res["error"] = {
            "name": type(e).__name__,
            "value": str(e),
            "traceback": "".join(traceback.format_exception(type(e), e, e.__traceback__)),
        }
    finally:
        try:
            sys.stdout.flush(); sys.stderr.flush()
        except BaseException:
            pass
        os.dup2(saved[0], 1); os.dup2(saved[1], 2)
        os.close(saved[0]); os.close(saved[1])
        out.finish(); err.finish()
    plt = sys.modules.get("matplotlib.pyplot")
    if plt is not None:
        for num in plt.get_fignums():
            buf = io.BytesIO()
            plt.figure(num).savefig(buf, format="png")
            res["outputs"].append({"mime_type": "image/png", "data": base64.b64encode(buf.getvalue()).decode()})
        plt.close("all")
    res["truncated"] = res["truncated"] or out.truncated or err.truncated
    return res


while True:
    try:
        line = sys.stdin.readline()
        if not line:
            break
        result = run(json.loads(line)["code"])
    except KeyboardInterrupt:  # an interrupt that came between runs
        continue
    send(result)
