"""Audited deletes measured side by side, in one run: the plain proxy, the gateway, the gateway
with its audit switched off (``bench/unaudited.py``, a benchmark-only build, never a product
mode), the stub alone, and nginx when installed.

For each concurrency it starts a fresh stub (``gateway stub --generate``), then each target in
turn, drives it with wrk (DELETEs of distinct tokens with Basic auth), and prints requests/s,
p50/p99 latency and the CPU seconds the target process spent per 10,000 requests, with ratios
to the plain proxy measured in the same round. After every audited gateway run it checks that
the audit log holds exactly one ``deleted`` record per 200 response, and an outcome for every
intent. Every figure of the table is the median of ``--rounds`` rounds (3 by default).

Two more columns say what limits each run: how busy the target's busiest thread was (for
the Python targets, usually the event loop: near 100% means one core's worth of Python is the
ceiling), and how many of the host's cores target, stub and wrk kept busy together (near the
core count means the host itself is the ceiling). When neither is near its limit, the run
waits on something else: for the gateway, its audit commits.

    pip install -e '.[speed]' && sudo apt-get install wrk   # nginx is optional
    python bench/run.py [--duration 10] [--rounds 3] [--concurrency 1 16 64] [--rss-seconds 60]
    python bench/run.py --duration 3 --rounds 1 --concurrency 16 --rss-seconds 0   # a quick look
"""

from __future__ import annotations

import argparse
import base64
import json
import os
import resource
import shutil
import signal
import socket
import sqlite3
import subprocess
import sys
import tempfile
import time
from dataclasses import dataclass
from pathlib import Path
from statistics import median

HERE = Path(__file__).resolve().parent
TARGETS = {
    "proxy": "plain proxy",
    "gateway": "gateway (audited)",
    "unaudited": "gateway (audit off)",
    "stub": "direct to stub",
    "nginx": "nginx",
}
"""The ``--targets`` names and the rows they give, in the table's order."""
AUTH = "Basic " + base64.b64encode(b"myname:mypass").decode()
TOKEN_PATH = "/v1/o/myorg/oauth2/accesstokens/load"
GENERATED = 1_000_000_000
RSS_SAMPLES = 6
RSS_CHUNK_TOKENS = 10_000_000
WARMUP_OFFSET = 500_000_000
CLOCK_TICKS = os.sysconf("SC_CLK_TCK")


@dataclass
class Result:
    target: str
    concurrency: int
    rps: float
    p50_ms: float
    p99_ms: float
    cpu_per_10k: float
    ok: int
    failed: int
    busiest_thread: float
    """Share of the run's wall time that the target's busiest thread (usually its event loop) was on a CPU."""
    cores_busy: float
    """CPU seconds of target, stub and wrk together per wall second (the host has os.cpu_count())."""
    audit_check: str = ""


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def wait_listening(port: int, process: subprocess.Popen[bytes], timeout: float = 30) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if process.poll() is not None:
            raise SystemExit(f"process {process.args} exited with {process.returncode}")
        try:
            socket.create_connection(("127.0.0.1", port), timeout=1).close()
            return
        except OSError:
            time.sleep(0.05)
    raise SystemExit(f"nothing listening on {port} after {timeout} s")


def _stat_cpu(stat: Path) -> float:
    """utime + stime from a /proc stat file (a process's covers all its threads, ended ones too)."""
    fields = stat.read_text().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / CLOCK_TICKS


def cpu_seconds(pids: list[int]) -> float:
    return sum(_stat_cpu(Path(f"/proc/{pid}/stat")) for pid in pids)


def thread_cpu(pids: list[int]) -> dict[int, float]:
    """CPU seconds of every thread of ``pids``, by thread id."""
    seconds = {}
    for pid in pids:
        for task in Path(f"/proc/{pid}/task").iterdir():
            try:
                seconds[int(task.name)] = _stat_cpu(task / "stat")
            except (FileNotFoundError, ProcessLookupError):  # the thread ended meanwhile
                continue
    return seconds


def rss_mb(pid: int) -> float:
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("VmRSS:"):
            return int(line.split()[1]) / 1024
    return 0.0


def start(command: list[str], port: int, log: Path) -> subprocess.Popen[bytes]:
    process = subprocess.Popen(command, stdout=subprocess.DEVNULL, stderr=log.open("wb"))
    wait_listening(port, process)
    return process


def stop(process: subprocess.Popen[bytes]) -> None:
    if process.poll() is None:
        process.send_signal(signal.SIGTERM)
        try:
            process.wait(30)
        except subprocess.TimeoutExpired:
            process.kill()
            process.wait()


def wrk(port: int, concurrency: int, seconds: float, offset: int) -> dict[str, float]:
    """wrk's summary, plus ``cpu_seconds``: what wrk itself used (it shares the host)."""
    command = [
        "wrk",
        "-t1",
        f"-c{concurrency}",
        f"-d{round(seconds)}s",
        "--latency",
        "--timeout",
        "10s",
        "-s",
        str(HERE / "delete.lua"),
        f"http://127.0.0.1:{port}",
        "--",
        str(offset),
        TOKEN_PATH,
        AUTH,
    ]
    before = resource.getrusage(resource.RUSAGE_CHILDREN)
    output = subprocess.run(command, capture_output=True, text=True, check=True).stdout
    after = resource.getrusage(resource.RUSAGE_CHILDREN)
    summary: dict[str, float] = json.loads(next(line for line in output.splitlines() if line.startswith("{")))
    summary["cpu_seconds"] = after.ru_utime + after.ru_stime - before.ru_utime - before.ru_stime
    return summary


class Bench:
    def __init__(self, workdir: Path, duration: float) -> None:
        self.workdir = workdir
        self.duration = duration
        self.python = sys.executable
        password_hash = subprocess.run(
            [self.python, "-m", "gateway", "hash-password"],
            input="mypass\n",
            capture_output=True,
            text=True,
            check=True,
        ).stdout.strip()
        self.password_hash = password_hash

    def stub(self) -> tuple[subprocess.Popen[bytes], str, int]:
        port = free_port()
        process = start(
            [self.python, "-m", "gateway", "stub", "--port", str(port), "--generate", str(GENERATED)],
            port,
            self.workdir / "stub.log",
        )
        return process, f"http://127.0.0.1:{port}", port

    def gateway(self, upstream: str, port: int, database: Path, *, audited: bool = True) -> subprocess.Popen[bytes]:
        """``gateway serve``; not ``audited``: the same, through ``bench/unaudited.py``."""
        config = self.workdir / "gateway.toml"
        config.write_text(
            f'[server]\nport = {port}\n[upstream]\nurl = "{upstream}"\n'
            f'[audit]\ndatabase = "{database}"\n[logging]\nformat = "json"\n'
            f'[[users]]\nname = "myname"\npassword_hash = "{self.password_hash}"\norgs = ["myorg"]\n'
        )
        program = ["-m", "gateway"] if audited else [str(HERE / "unaudited.py")]
        return start([self.python, *program, "serve", "--config", str(config)], port, self.workdir / "gateway.log")

    def proxy(self, upstream: str, port: int) -> subprocess.Popen[bytes]:
        return start([self.python, str(HERE / "plain_proxy.py"), upstream, str(port)], port, self.workdir / "proxy.log")

    def nginx(self, upstream_port: int, port: int) -> subprocess.Popen[bytes]:
        conf = self.workdir / "nginx.conf"
        conf.write_text(
            f"worker_processes 1; daemon off; pid {self.workdir}/nginx.pid; error_log {self.workdir}/nginx.err;\n"
            "events { worker_connections 1024; }\n"
            f"http {{ access_log off; upstream stub {{ server 127.0.0.1:{upstream_port}; keepalive 128; }}\n"
            f"  server {{ listen 127.0.0.1:{port}; location / {{ proxy_pass http://stub; "
            'proxy_http_version 1.1; proxy_set_header Connection ""; } } }\n'
        )
        return start(["nginx", "-c", str(conf), "-p", str(self.workdir)], port, self.workdir / "nginx.log")

    def measure(self, target: str, concurrency: int) -> Result:
        stub, upstream, stub_port = self.stub()
        database = self.workdir / f"audit-{concurrency}.db"
        database.unlink(missing_ok=True)
        port = free_port()
        try:
            if target == "direct to stub":
                process, port = stub, stub_port
            elif target == "plain proxy":
                process = self.proxy(upstream, port)
            elif target == "nginx":
                process = self.nginx(stub_port, port)
            else:
                process = self.gateway(upstream, port, database, audited=target == TARGETS["gateway"])
            pids = [process.pid, *_children(process.pid)]
            others = [] if process is stub else [stub.pid]
            warm = wrk(port, concurrency, 2, WARMUP_OFFSET)
            before, threads_before, others_before = cpu_seconds(pids), thread_cpu(pids), cpu_seconds(others)
            run = wrk(port, concurrency, self.duration, 0)
            used = cpu_seconds(pids) - before
            threads = thread_cpu(pids)
            busiest = max(seconds - threads_before.get(tid, 0.0) for tid, seconds in threads.items())
            host = used + cpu_seconds(others) - others_before + run["cpu_seconds"]
            if process is not stub:
                stop(process)
        finally:
            stop(stub)
        ok = int(run["requests"] - run["status_errors"])
        failed = int(
            run["status_errors"] + run["connect_errors"] + run["read_errors"] + run["write_errors"] + run["timeouts"]
        )
        wall = run["duration_us"] / 1e6
        result = Result(
            target,
            concurrency,
            run["requests"] / wall,
            run["p50_us"] / 1000,
            run["p99_us"] / 1000,
            used / max(run["requests"], 1) * 10_000,
            ok,
            failed,
            busiest / wall,
            host / wall,
        )
        if target == TARGETS["gateway"]:
            responses = ok + int(warm["requests"] - warm["status_errors"])
            result.audit_check = audit_check(database, responses, in_flight_bound=2 * concurrency)
        return result

    def rss(self, seconds: float) -> str:
        """Drive the gateway at concurrency 64 and compare its memory after warm-up and at the end."""
        stub, upstream, _ = self.stub()
        port = free_port()
        database = self.workdir / "audit-rss.db"
        database.unlink(missing_ok=True)
        gateway = self.gateway(upstream, port, database)
        try:
            wrk(port, 64, 5, WARMUP_OFFSET)
            samples = [rss_mb(gateway.pid)]
            for chunk in range(RSS_SAMPLES):  # samples along the way tell a filling cache from a leak
                wrk(port, 64, seconds / RSS_SAMPLES, chunk * RSS_CHUNK_TOKENS)
                samples.append(rss_mb(gateway.pid))
        finally:
            stop(gateway)
            stop(stub)
        start_mb, end_mb = samples[0], samples[-1]
        growth = (end_mb - start_mb) / start_mb * 100
        second_half = (end_mb - samples[RSS_SAMPLES // 2]) / samples[RSS_SAMPLES // 2] * 100
        return (
            f"gateway RSS over {seconds:.0f} s at concurrency 64: {start_mb:.1f} MB -> {end_mb:.1f} MB ({growth:+.1f}%; "
            f"second half {second_half:+.1f}%); every {seconds / RSS_SAMPLES:.0f} s: {' '.join(f'{mb:.1f}' for mb in samples)}"
        )


def _children(pid: int) -> list[int]:
    path = Path(f"/proc/{pid}/task/{pid}/children")
    return [int(child) for child in path.read_text().split()] if path.exists() else []


def audit_check(database: Path, responses_200: int, in_flight_bound: int) -> str:
    """Every 200 wrk counted has its deleted record, and every intent its outcome.

    wrk stops counting at the deadline while up to one request per connection is still in
    flight; the gateway completes and records those, so they are the only allowed surplus.
    """
    with sqlite3.connect(database) as db:
        counts = dict(db.execute("SELECT outcome, count(*) FROM audit_events GROUP BY outcome").fetchall())
    deleted, intents = counts.get("deleted", 0), counts.pop("pending", 0)
    outcomes = sum(counts.values())
    surplus = deleted - responses_200
    verdict = "OK" if 0 <= surplus <= in_flight_bound and intents == outcomes else "MISMATCH"
    return (
        f"{verdict}: {deleted} deleted records = {responses_200} responses 200 counted by wrk + {surplus} in flight "
        f"at its deadline (at most {in_flight_bound}); {intents} intents, {outcomes} outcomes"
    )


def print_table(rounds: list[list[Result]]) -> None:
    """Medians over the rounds; ratios are medians of each round's own ratio to the plain proxy,
    so that a slow moment of a shared host weighs on both sides of a comparison alike."""
    cells: dict[tuple[int, str], list[Result]] = {}
    ratios: dict[tuple[int, str], list[tuple[float, float, float]]] = {}
    for round_results in rounds:
        proxy = {r.concurrency: r for r in round_results if r.target == "plain proxy"}
        for r in round_results:
            cells.setdefault((r.concurrency, r.target), []).append(r)
            base = proxy.get(r.concurrency)
            if base is not None:
                ratios.setdefault((r.concurrency, r.target), []).append(
                    (
                        r.rps / base.rps,
                        r.cpu_per_10k / base.cpu_per_10k if base.cpu_per_10k else 0,
                        r.p50_ms - base.p50_ms,
                    )
                )
    print(f"Medians of {len(rounds)} round(s).")
    print(
        "| concurrency | target | req/s | p50 ms | p99 ms | CPU s / 10k req | req/s vs proxy | CPU/req vs proxy "
        f"| busiest thread | host cores busy (of {os.cpu_count()}) | failed | audit check |"
    )
    print("|---|---|---|---|---|---|---|---|---|---|---|---|")
    order = list(TARGETS.values())
    for (concurrency, target), group in sorted(cells.items(), key=lambda cell: (cell[0][0], order.index(cell[0][1]))):
        checked = [r for r in group if r.audit_check]
        passed = sum(r.audit_check.startswith("OK") for r in checked)
        check = f"{passed} of {len(checked)} OK" if checked else "-"
        pairs = ratios.get((concurrency, target))
        rps_ratio = f"{median(p[0] for p in pairs):.2f}" if pairs else "-"
        cpu_ratio = f"{median(p[1] for p in pairs):.2f}" if pairs else "-"
        print(
            f"| {concurrency} | {target} | {median(r.rps for r in group):,.0f} | {median(r.p50_ms for r in group):.2f} | "
            f"{median(r.p99_ms for r in group):.2f} | {median(r.cpu_per_10k for r in group):.2f} | {rps_ratio} | "
            f"{cpu_ratio} | {median(r.busiest_thread for r in group):.0%} | {median(r.cores_busy for r in group):.2f} | "
            f"{sum(r.failed for r in group)} | {check} |"
        )
    checks = [r for group in cells.values() for r in group if r.audit_check]
    failed = [r for r in checks if not r.audit_check.startswith("OK")]
    print(
        f"audit check: {len(checks) - len(failed)} of {len(checks)} gateway runs OK (every 200 has its deleted record, every intent its outcome)"
    )
    for r in failed:
        print(f"  concurrency {r.concurrency}: {r.audit_check}")
    added = ratios.get((1, TARGETS["gateway"]))
    if added:
        print(f"added p50 latency at concurrency 1: {median(p[2] for p in added) * 1000:.0f} us")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--duration", type=float, default=10, help="seconds per measured run (default 10)")
    parser.add_argument("--concurrency", type=int, nargs="+", default=[1, 16, 64])
    parser.add_argument("--rss-seconds", type=float, default=60, help="length of the memory run; 0 skips it")
    parser.add_argument("--targets", nargs="+", choices=list(TARGETS), default=None, help="default: all of them")
    parser.add_argument(
        "--rounds",
        "--repeat",
        type=int,
        default=3,
        help="rounds of every measurement, interleaved; medians are shown (default 3)",
    )
    args = parser.parse_args()
    if shutil.which("wrk") is None:
        raise SystemExit("wrk is not installed: sudo apt-get install wrk")
    chosen = args.targets or list(TARGETS)
    if "nginx" in chosen and shutil.which("nginx") is None:
        print("nginx is not installed: skipping the C baseline (sudo apt-get install nginx-light)")
        chosen.remove("nginx")
    with tempfile.TemporaryDirectory(prefix="gateway-bench-") as workdir:
        bench = Bench(Path(workdir), args.duration)
        rounds: list[list[Result]] = []
        for round_number in range(args.rounds):
            results = []
            for concurrency in args.concurrency:
                for name in chosen:
                    result = bench.measure(TARGETS[name], concurrency)
                    print(
                        f"  round {round_number + 1}  {result.target:<19} c={concurrency:<3} {result.rps:8,.0f} req/s  "
                        f"p50 {result.p50_ms:.2f} ms  p99 {result.p99_ms:.2f} ms  {result.cpu_per_10k:.2f} CPU s/10k  "
                        f"busiest thread {result.busiest_thread:.0%}  cores {result.cores_busy:.2f}  "
                        f"{result.audit_check}",
                        flush=True,
                    )
                    results.append(result)
            rounds.append(results)
        print()
        print_table(rounds)
        if args.rss_seconds and "gateway" in chosen:
            print(bench.rss(args.rss_seconds))


if __name__ == "__main__":
    main()
