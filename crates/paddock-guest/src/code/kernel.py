# The Python side of a Paddock code context: reads one JSON request per line
# on stdin, runs the code in a namespace that persists, and writes one JSON
# result per line on the original stdout. During a run, fds 1 and 2 point at
# temporary files, so output of C extensions and child processes is caught too.
import ast, base64, io, json, os, sys, tempfile, traceback

os.environ.setdefault("MPLBACKEND", "Agg")
OUTPUT_CAP = 1 << 20
reply = os.fdopen(os.dup(1), "w", buffering=1)
namespace = {"__name__": "__main__", "__builtins__": __builtins__}


def run(code):
    res = {"stdout": "", "stderr": "", "result": "", "error": None, "outputs": [], "truncated": False}
    out_f, err_f = tempfile.TemporaryFile(), tempfile.TemporaryFile()
    saved = os.dup(1), os.dup(2)
    sys.stdout.flush(); sys.stderr.flush()
    os.dup2(out_f.fileno(), 1); os.dup2(err_f.fileno(), 2)
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
    plt = sys.modules.get("matplotlib.pyplot")
    if plt is not None:
        for num in plt.get_fignums():
            buf = io.BytesIO()
            plt.figure(num).savefig(buf, format="png")
            res["outputs"].append({"mime_type": "image/png", "data": base64.b64encode(buf.getvalue()).decode()})
        plt.close("all")
    for f, key in ((out_f, "stdout"), (err_f, "stderr")):
        f.seek(0)
        data = f.read(OUTPUT_CAP + 1)
        if len(data) > OUTPUT_CAP:
            data = data[:OUTPUT_CAP]
            res["truncated"] = True
        res[key] = data.decode(errors="replace")
        f.close()
    return res


while True:
    try:
        line = sys.stdin.readline()
        if not line:
            break
        result = run(json.loads(line)["code"])
    except KeyboardInterrupt:  # an interrupt that came between runs
        continue
    reply.write(json.dumps(result) + "\n")
