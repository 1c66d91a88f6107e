// A pty host the way IDEs and agent daemons run one: real node-pty, several shells, some of them
// killed. node-pty's masters are inheritable, so every shell spawned after a terminal holds a
// copy of that terminal's master; when the terminal is killed, its PTY stays allocated through
// those copies. Driven by the ptyreap tests (tests/it/nodepty.rs).
//
//   node ptyhost.js READY_FILE N KILL...   N terminals (`sh -c 'exec cat'`), then kill the listed
//                                          ones (0-based); READY_FILE gets JSON: node's pid, the
//                                          terminals' pids, which were killed.
// stdin lines "ping I": writes "ping-I\n" to terminal I and answers "pong I" on stdout once the
// echo came back.
const pty = require(process.env.NODE_PTY_PATH || 'node-pty');
const fs = require('fs');
const readline = require('readline');

const [ready, nArg, ...killArgs] = process.argv.slice(2);
const n = parseInt(nArg, 10);
const kill = killArgs.map((k) => parseInt(k, 10));
const terms = [];
const seen = [];
// Terminals are opened a little apart, as a user opens them: each shell is clearly younger than
// the masters it inherits.
const gap = parseInt(process.env.PTYHOST_SPAWN_GAP_MS || '200', 10);
function spawn(i) {
  if (i === n) return killSome();
  const t = pty.spawn('/bin/sh', ['-c', 'exec cat'], { name: 'xterm', cols: 80, rows: 24, env: {} });
  seen.push('');
  t.onData((d) => {
    seen[i] += d;
  });
  terms.push(t);
  setTimeout(() => spawn(i + 1), gap);
}
spawn(0);
function killSome() {
  let pending = kill.length;
  for (const k of kill) {
    terms[k].onExit(() => {
      if (--pending === 0) writeReady();
    });
    terms[k].kill('SIGKILL');
  }
  if (kill.length === 0) writeReady();
}

function writeReady() {
  const doc = { pid: process.pid, terminals: terms.map((t) => t.pid), killed: kill };
  fs.writeFileSync(ready + '.tmp', JSON.stringify(doc));
  fs.renameSync(ready + '.tmp', ready);
}

readline.createInterface({ input: process.stdin }).on('line', (line) => {
  const [cmd, arg] = line.split(' ');
  if (cmd !== 'ping') return;
  const i = parseInt(arg, 10);
  const want = `ping-${i}`;
  const before = seen[i].split(want).length;
  terms[i].write(want + '\n');
  const start = Date.now();
  const check = setInterval(() => {
    if (seen[i].split(want).length >= before + 2) {
      clearInterval(check);
      process.stdout.write(`pong ${i}\n`);
    } else if (Date.now() - start > 5000) {
      clearInterval(check);
      process.stdout.write(`silent ${i}\n`);
    }
  }, 20);
});
process.stdin.on('end', () => process.exit(0));
