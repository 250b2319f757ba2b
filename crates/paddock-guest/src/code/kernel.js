// The Node.js side of a Paddock code context: reads one JSON request per line
// on stdin, runs the code in a vm context that persists, and writes JSON
// lines on stdout: {"stream": "stdout"|"stderr", "text": ...} as the code
// writes (console output and process.stdout/stderr writes), then one result.
// Writes to a pipe are synchronous on Linux, so each piece leaves at once.
'use strict';
const vm = require('vm');
const util = require('util');
const readline = require('readline');

const OUTPUT_CAP = 1 << 20;
const realStdoutWrite = process.stdout.write.bind(process.stdout);
const sandbox = { require, process, Buffer, setTimeout, clearTimeout, setInterval, clearInterval, URL };
sandbox.globalThis = sandbox;
const context = vm.createContext(sandbox);

function run(code, timeoutMs) {
  const out = { name: 'stdout', size: 0 };
  const err = { name: 'stderr', size: 0 };
  let truncated = false;
  // Sends the first OUTPUT_CAP characters: a loop that prints until the
  // timeout must not flood the answer.
  const capture = (sink) => (chunk, ...rest) => {
    const text = typeof chunk === 'string' ? chunk : Buffer.from(chunk).toString();
    const room = OUTPUT_CAP - sink.size;
    if (text.length > room) truncated = true;
    if (room > 0) {
      const kept = text.length > room ? text.slice(0, room) : text;
      sink.size += kept.length;
      if (kept) realStdoutWrite(JSON.stringify({ stream: sink.name, text: kept }) + '\n');
    }
    const cb = rest.find((a) => typeof a === 'function');
    if (cb) cb();
    return true;
  };
  const savedOut = process.stdout.write;
  const savedErr = process.stderr.write;
  process.stdout.write = capture(out);
  process.stderr.write = capture(err);
  context.console = new console.Console({ stdout: process.stdout, stderr: process.stderr });
  const res = { result: '', error: null, outputs: [], timed_out: false, truncated: false };
  try {
    const value = vm.runInContext(code, context, { filename: '<cell>', timeout: timeoutMs });
    if (value !== undefined) res.result = util.inspect(value);
  } catch (e) {
    const timedOut = e && e.code === 'ERR_SCRIPT_EXECUTION_TIMEOUT';
    res.timed_out = timedOut;
    res.error = {
      name: timedOut ? 'TimeoutError' : (e && e.name) || 'Error',
      value: (e && e.message) || String(e),
      traceback: (e && e.stack) || String(e),
    };
  } finally {
    process.stdout.write = savedOut;
    process.stderr.write = savedErr;
  }
  if (res.result.length > OUTPUT_CAP) {
    res.result = res.result.slice(0, OUTPUT_CAP);
    truncated = true;
  }
  res.truncated = truncated;
  return res;
}

const lines = readline.createInterface({ input: process.stdin, terminal: false });
lines.on('line', (line) => {
  const req = JSON.parse(line);
  realStdoutWrite(JSON.stringify(run(req.code, req.timeout_ms || undefined)) + '\n');
});
