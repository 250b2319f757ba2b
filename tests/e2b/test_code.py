"""e2b-code-interpreter's run_code on the code-interpreter-v1 template."""

import base64
import time

import pytest
from e2b_code_interpreter import Sandbox


@pytest.fixture(scope="module")
def ci():
    sbx = Sandbox.create()
    yield sbx
    sbx.kill()


def test_state_across_cells_and_main_result(ci):
    ci.run_code("x = 40")
    execution = ci.run_code("x + 2")
    assert execution.text == "42"
    assert execution.error is None
    assert ci.run_code("'a string'").text == "a string"


def test_stdout_and_stderr(ci):
    out, err = [], []
    execution = ci.run_code(
        "import sys\nprint('to out')\nprint('to err', file=sys.stderr)",
        on_stdout=lambda m: out.append(m.line),
        on_stderr=lambda m: err.append(m.line),
    )
    assert execution.logs.stdout == ["to out\n"]
    assert execution.logs.stderr == ["to err\n"]
    assert out == ["to out\n"] and err == ["to err\n"]


def test_errors_have_name_value_and_traceback(ci):
    execution = ci.run_code("1 / 0")
    assert execution.error.name == "ZeroDivisionError"
    assert "division by zero" in execution.error.value
    assert "ZeroDivisionError" in execution.error.traceback


def test_matplotlib_figure_is_a_png(ci):
    execution = ci.run_code(
        """
        import matplotlib
        matplotlib.use("Agg")
        import matplotlib.pyplot as plt
        plt.plot([1, 2, 3], [3, 1, 2])
        plt.show()
        """
    )
    assert execution.error is None, execution.error
    pngs = [r.png for r in execution.results if r.png]
    assert pngs, execution.results
    assert base64.b64decode(pngs[0]).startswith(b"\x89PNG\r\n\x1a\n")


def test_contexts(ci):
    ctx = ci.create_code_context(cwd="/tmp")
    assert ctx.cwd == "/tmp"
    ci.run_code("y = 'in ctx'", context=ctx)
    assert ci.run_code("y", context=ctx).text == "in ctx"
    assert ci.run_code("import os; os.getcwd()", context=ctx).text == "/tmp"
    # The default context does not see it, and starts in the home directory.
    assert ci.run_code("'y' in globals()").text == "False"
    assert ci.run_code("import os; os.getcwd()").text == "/home/user"
    assert ctx.id in [c.id for c in ci.list_code_contexts()]
    ci.restart_code_context(ctx)
    assert ci.run_code("'y' in globals()", context=ctx).text == "False"
    ci.remove_code_context(ctx)
    assert ctx.id not in [c.id for c in ci.list_code_contexts()]


def test_env_vars_for_one_run(ci):
    assert ci.run_code("import os; os.environ.get('ONLY_NOW')", envs={"ONLY_NOW": "1"}).text == "1"
    assert ci.run_code("import os; os.environ.get('ONLY_NOW') is None").text == "True"


def test_javascript(ci):
    ci.run_code("const z = 20", language="javascript")
    assert ci.run_code("z * 2 + 2", language="js").text == "42"
    with pytest.raises(Exception) as e:
        ci.run_code("1", language="r")
    assert "python, javascript and bash" in str(e.value)


def test_output_streams_while_the_cell_runs(ci):
    """on_stdout/on_stderr are called as the cell prints (the /execute stream),
    not once it is done: the first line comes a second before the last."""
    t0 = time.monotonic()
    seen = []
    execution = ci.run_code(
        """
        import sys, time
        print("first", flush=True)
        time.sleep(1)
        print("to err", file=sys.stderr, flush=True)
        time.sleep(1)
        print("last")
        "done"
        """,
        on_stdout=lambda m: seen.append(("out", m.line, time.monotonic() - t0)),
        on_stderr=lambda m: seen.append(("err", m.line, time.monotonic() - t0)),
        on_result=lambda r: seen.append(("result", r.text, time.monotonic() - t0)),
    )
    ended = time.monotonic() - t0
    assert [(kind, text) for kind, text, _ in seen] == [
        ("out", "first\n"),
        ("err", "to err\n"),
        ("out", "last\n"),
        ("result", "done"),
    ], seen
    first, err, last = seen[0][2], seen[1][2], seen[2][2]
    print(f"first stdout at {first:.3f} s, stderr at {err:.3f} s, last at {last:.3f} s, cell ended at {ended:.3f} s")
    # The cell sleeps 2 s in all: the first line must not wait for the end.
    assert ended - first > 1.5, seen
    assert 0.7 < err - first < 1.5 and 0.7 < last - err < 1.5, seen
    assert execution.logs.stdout == ["first\n", "last\n"]
    assert execution.logs.stderr == ["to err\n"]
    assert execution.text == "done"


def test_a_child_process_output_streams_too(ci):
    """Output written to fd 1 by a subprocess (not through sys.stdout) is
    caught and streamed as well."""
    seen = []
    t0 = time.monotonic()
    ci.run_code(
        "import subprocess, time\nsubprocess.run(['echo', 'from a child'])\ntime.sleep(1)",
        on_stdout=lambda m: seen.append((m.line, time.monotonic() - t0)),
    )
    ended = time.monotonic() - t0
    assert [line for line, _ in seen] == ["from a child\n"], seen
    assert ended - seen[0][1] > 0.7, (seen, ended)
