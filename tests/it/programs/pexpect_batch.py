"""A pexpect batch runner (issue 17): starts N short jobs, waits until every one has exited,
writes DIR/ready (its pid, then each job's master fd), waits for DIR/go, then collects each
job's output the standard way (child.expect(pexpect.EOF); child.before) and prints one line per
job: `job I: <repr of before>` or `job I: error <exception>`. Exits 0 when it got that far.

Usage: python3 pexpect_batch.py DIR N
"""

import os
import sys
import time

import pexpect

DEADLINE_S = 20


def main():
    out_dir, n = sys.argv[1], int(sys.argv[2])
    jobs = [pexpect.spawn("sh", ["-c", f"echo result-{i}"]) for i in range(n)]
    deadline = time.monotonic() + DEADLINE_S
    # wait for the jobs' exit without reading: the output waits in each master
    while any(j.isalive() for j in jobs):
        if time.monotonic() > deadline:
            sys.exit("the jobs did not exit")
        time.sleep(0.02)
    tmp = os.path.join(out_dir, "ready.tmp")
    with open(tmp, "w") as f:
        f.write(" ".join([str(os.getpid())] + [str(j.child_fd) for j in jobs]))
    os.rename(tmp, os.path.join(out_dir, "ready"))
    go = os.path.join(out_dir, "go")
    while not os.path.exists(go):
        if time.monotonic() > deadline + 60:
            sys.exit("no go file")
        time.sleep(0.02)
    for i, j in enumerate(jobs):
        try:
            j.expect(pexpect.EOF, timeout=5)
            print(f"job {i}: {j.before!r}", flush=True)
        except Exception as e:  # noqa: BLE001 - every failure is a result line
            print(f"job {i}: error {type(e).__name__}: {e}".replace("\n", " "), flush=True)


if __name__ == "__main__":
    main()
