#!/usr/bin/env python3
"""Issue 10's benchmark, driving the release binary as users do.

Seeds N deployments (default 1 000 000: one a minute over ~1.9 years; 80 % succeeded, 9 % failed,
5 % rolled back, 1 % rollback failed, 2 % cancelled, 3 % /rollback jobs; with the services, steps
and approvals rows the pipeline writes) through the schema that `deploybot migrate` creates — one
transaction of multi-row inserts on SQLite, COPY on PostgreSQL — then reports medians over several
runs of `history --env production --limit 20`, `stats --days 30`, `stats --days 365` (whole
processes, with peak RSS) and `GET /metrics` against a running `deploybot run`. Then the fleet
run: FLEET_ENVS environments (default 500) deploying at once on `sleep 1` command targets.

Usage: cargo build --release --bin deploybot && python3 benches/scale.py
Environment: SCALE_DEPLOYMENTS, SCALE_RUNS (7), SCALE_DIR (keeps and reuses the SQLite store),
SCALE_STORES (sqlite,postgres), SCALE_ONLY (stores|fleet), FLEET_ENVS, DEPLOYBOT_TEST_PG_URL
(required for postgres: `source scripts/services/postgres.sh && postgres_start`; the database
deploybot_scale_<N> is created there and reused).
"""
import csv
import http.client
import io
import os
import random
import socket
import sqlite3
import statistics
import subprocess
import sys
import tempfile
import time
import urllib.parse

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
BIN = os.environ.get("DEPLOYBOT_BIN") or os.path.join(
    os.environ.get("CARGO_TARGET_DIR", os.path.join(ROOT, "target")), "release", "deploybot")
ENVS = ["production", "staging", "development"]
SERVICES = ["backend", "frontend", "worker"]
PHASES = ["preflight", "backup", "migrations", "deploy", "verify", "monitor", "record"]
MINUTE = 60_000
# The single deployment the fleet is compared with varies by several ms from run to run (most of
# it is how late `sleep 1` wakes on an idle VM): its median is taken over this many.
ALONE_RUNS = 15
# The store keeps times in whole milliseconds, and an overhead of 4–6 ms rounded to the
# millisecond moves the ratio by 20 %: medians are interpolated within their millisecond
# (statistics.median_grouped, the median of data recorded in 1-ms classes).
MS = 0.001


def free_port():
    s = socket.socket()
    s.bind(("127.0.0.1", 0))
    port = s.getsockname()[1]
    s.close()
    return port


def write_config(path, url, port, envs, target):
    lines = [f'[bot]\ndatabase_url = "{url}"\nlisten = "127.0.0.1:{port}"\n\n[chat.console]\nuser = "alice"\n']
    for i, svc in enumerate(SERVICES):
        lines.append(f'[services.{svc}]\nimage = "bench/{svc}"\norder = {i + 1}\n')
    for env in envs:
        lines.append(f'[environments.{env}]\nchannel = "C0{env.upper()}"\n'
                     f'target = {{ kind = "command", deploy = {target}, rollback = ["true"], timeout = "60s" }}\n')
    with open(path, "w") as f:
        f.write("\n".join(lines))


def history(n, end):
    """The synthetic history: yields (deployment, steps, services, approvals) rows."""
    rng = random.Random(10)
    first = end - n * MINUTE
    max_dur = MINUTE * len(ENVS) - 2_000
    last = {}
    for i in range(n):
        did = i + 1
        env = ENVS[i % len(ENVS)]
        created = first + i * MINUTE
        started = created + 1_000
        dur = min(max_dur // 4 + rng.randrange(max_dur * 3 // 4), max_dur)
        finished = started + dur
        roll = rng.randrange(1000)
        prev = last.get(env)
        if roll < 800: kind, state = "deploy", "succeeded"
        elif roll < 890: kind, state = "deploy", "failed"
        elif roll < 940: kind, state = "deploy", "rolled_back"
        elif roll < 950: kind, state = "deploy", "rollback_failed"
        elif roll < 970: kind, state = "deploy", "cancelled"
        elif prev: kind, state = "rollback", "succeeded"
        else: kind, state = "deploy", "succeeded"
        version = prev[1] if kind == "rollback" else f"v{1 + i // 100000}.{(i // 1000) % 100}.{i % 1000}"
        rollback_of = prev[0] if kind == "rollback" else None
        failed_at = started + dur // 2 if state in ("failed", "rolled_back", "rollback_failed") else None
        k = 1 + rng.randrange(3)
        s0 = rng.randrange(3)
        chosen = [SERVICES[(s0 + j) % 3] for j in range(k)]
        prod = env == "production"
        fails_at = {"failed": "deploy" if rng.randrange(2) == 0 else "verify", "rolled_back": "verify",
                    "rollback_failed": "verify", "cancelled": "migrations"}.get(state)
        phase = dur // (len(PHASES) + 1)
        steps = []
        for j, name in enumerate(PHASES):
            s, f = started + j * phase, started + (j + 1) * phase
            if name == fails_at:
                st, detail = ("interrupted", "cancelled by Alice") if state == "cancelled" else ("failed", f"{name} failed: exit status 1")
            elif name == "backup" and not prod:
                st, detail = "skipped", "disabled in this environment (skip_steps)"
            elif name == "migrations" and rng.randrange(10) == 0:
                st, detail = "succeeded", f"Migrations: applied 1 ({i % 10000:04d}_change)"
            else:
                st, detail = "succeeded", None
            steps.append((did, j + 1, name, 1, st, detail, s, f))
            if name == fails_at:
                break
        if state in ("rolled_back", "rollback_failed"):
            ok = state == "rolled_back"
            steps.append((did, 8, "rollback", 1, "succeeded" if ok else "failed",
                          None if ok else "rollback failed: exit status 1", finished - phase, finished))
        sstate = {"succeeded": "deployed", "rolled_back": "rolled_back", "cancelled": "pending"}.get(state, "failed")
        services = [(did, svc, prev[1] if prev else None, f"image:{svc}:{prev[1]}" if prev else None, version,
                     f"image:{svc}:{version}", sstate, finished) for svc in chosen]
        approvals = [(did, "U0CAROL", "Carol", "approve", created + 30_000)] if prod else []
        error = {"failed": f"{fails_at} failed: exit status 1", "rolled_back": "verify failed: smoke test returned 503; rolled back",
                 "rollback_failed": "verify failed, and the rollback failed too"}.get(state)
        if kind == "deploy" and state == "succeeded":
            last[env] = (did, version)
        dep = (did, env, kind, version, "[" + ",".join(f'"{c}"' for c in chosen) + "]", state, "U0ALICE", "Alice",
               f"C0{env.upper()}", rollback_of, 1 if prod else 0, error, 3, created, started, failed_at, finished, finished)
        yield dep, steps, services, approvals


DEP_COLS = "id, env, kind, version, services, state, requested_by, requested_by_name, channel, rollback_of, approvals_required, error, rev, created_at, started_at, failed_at, finished_at, updated_at"
STEP_COLS = "deployment_id, seq, name, attempt, state, detail, started_at, finished_at"
SVC_COLS = "deployment_id, service, from_version, from_ref, to_version, to_ref, state, updated_at"
APP_COLS = "deployment_id, user_id, user_name, vote, created_at"


def seed_sqlite(path, n, end):
    con = sqlite3.connect(path)
    if con.execute("SELECT COUNT(*) FROM deployments").fetchone()[0] == n:
        return False
    con.execute("PRAGMA journal_mode = WAL")
    con.execute("BEGIN IMMEDIATE")
    batch = {"d": [], "s": [], "v": [], "a": []}

    def flush():
        con.executemany(f"INSERT INTO deployments ({DEP_COLS}) VALUES ({','.join('?' * 18)})", batch["d"])
        con.executemany(f"INSERT INTO deployment_steps ({STEP_COLS}) VALUES ({','.join('?' * 8)})", batch["s"])
        con.executemany(f"INSERT INTO deployment_services ({SVC_COLS}) VALUES ({','.join('?' * 8)})", batch["v"])
        con.executemany(f"INSERT INTO approvals ({APP_COLS}) VALUES ({','.join('?' * 5)})", batch["a"])
        for v in batch.values():
            v.clear()

    for dep, steps, services, approvals in history(n, end):
        batch["d"].append(dep)
        batch["s"].extend(steps)
        batch["v"].extend(services)
        batch["a"].extend(approvals)
        if len(batch["d"]) >= 20_000:
            flush()
    flush()
    con.commit()
    con.close()
    return True


def psql(url, *args, stdin=None):
    return subprocess.run(["psql", "-X", "-q", "-v", "ON_ERROR_STOP=1", url, *args], input=stdin, check=True,
                          capture_output=True, text=True).stdout


def seed_postgres(url, n, end):
    have = psql(url, "-t", "-c", "SELECT COUNT(*) FROM deployments").strip()
    if int(have or 0) == n:
        return False
    bufs = {k: io.StringIO() for k in "dsva"}
    writers = {k: csv.writer(b) for k, b in bufs.items()}
    for dep, steps, services, approvals in history(n, end):
        writers["d"].writerow(["\\N" if x is None else x for x in dep])
        writers["s"].writerows([["\\N" if x is None else x for x in r] for r in steps])
        writers["v"].writerows([["\\N" if x is None else x for x in r] for r in services])
        writers["a"].writerows(approvals)
    for table, cols, k in (("deployments", DEP_COLS, "d"), ("deployment_steps", STEP_COLS, "s"),
                           ("deployment_services", SVC_COLS, "v"), ("approvals", APP_COLS, "a")):
        psql(url, "-c", f"\\copy {table} ({cols}) FROM STDIN WITH (FORMAT csv, NULL '\\N')", stdin=bufs[k].getvalue())
    psql(url, "-c", "SELECT setval(pg_get_serial_sequence('deployments', 'id'), (SELECT MAX(id) FROM deployments))")
    psql(url, "-c", "VACUUM ANALYZE")
    return True


def run_cli(config, args):
    """Wall time and peak RSS (KiB) of one run. The peak is the process's own VmHWM, read until it
    exits: rusage's maxrss would include this (large, seeding) Python process's, inherited at fork."""
    t0 = time.perf_counter()
    p = subprocess.Popen([BIN, "--config", config, *args], stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)
    peak = 0
    while True:
        try:
            with open(f"/proc/{p.pid}/status") as f:
                for line in f:
                    if line.startswith("VmHWM:"):
                        peak = max(peak, int(line.split()[1]))
        except OSError:
            pass
        pid, status = os.waitpid(p.pid, os.WNOHANG)
        if pid:
            break
        time.sleep(0.001)
    elapsed = time.perf_counter() - t0
    if status != 0:
        raise SystemExit(f"deploybot {args} failed: {p.stderr.read().decode()}")
    return elapsed, peak


def scrape(port):
    t0 = time.perf_counter()
    c = http.client.HTTPConnection("127.0.0.1", port, timeout=60)
    c.request("GET", "/metrics")
    body = c.getresponse().read().decode()
    c.close()
    return time.perf_counter() - t0, body


def stop_bot(bot):
    bot.stdin.close()
    bot.send_signal(2)
    try:
        bot.wait(20)
    except subprocess.TimeoutExpired:
        bot.kill()
        bot.wait()


def start_bot(config, port):
    bot = subprocess.Popen([BIN, "--config", config, "run", "--chat", "console"], stdin=subprocess.PIPE,
                           stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, text=True)
    t0 = time.time()
    while True:
        try:
            socket.create_connection(("127.0.0.1", port), timeout=1).close()
            return bot
        except OSError:
            if time.time() - t0 > 120:
                bot.kill()
                raise SystemExit("deploybot run did not listen within 2 minutes")
            time.sleep(0.05)


def measure(name, url, workdir, runs, rows):
    port = free_port()
    config = os.path.join(workdir, f"{name}.toml")
    write_config(config, url, port, ENVS, '["true"]')
    for measure_name, args, target in (("history --env production --limit 20", ["history", "--env", "production", "--limit", "20"], 50),
                                       ("stats --days 30", ["stats", "--days", "30"], 100),
                                       ("stats --days 365", ["stats", "--days", "365"], 100)):
        run_cli(config, args)  # warm the file cache, as on a server that runs them
        samples = [run_cli(config, args) for _ in range(runs)]
        rows.append((name, measure_name, statistics.median(s[0] for s in samples), max(s[0] for s in samples), target,
                     max(s[1] for s in samples)))
    bot = start_bot(config, port)
    try:
        _, first = scrape(port)
        assert 'deploybot_deployments{outcome="succeeded"}' in first, first
        samples = [scrape(port)[0] for _ in range(max(runs, 5) * 3)]
        rows.append((name, "GET /metrics", statistics.median(samples), max(samples), 50, None))
    finally:
        stop_bot(bot)


def fleet(workdir, envs):
    db = os.path.join(workdir, "fleet.db")
    for suffix in ("", "-wal", "-shm"):
        if os.path.exists(db + suffix):
            os.remove(db + suffix)
    port = free_port()
    config = os.path.join(workdir, "fleet.toml")
    names = [f"env{i:03d}" for i in range(envs)]
    write_config(config, f"sqlite://{db}", port, names, '["sleep", "1"]')
    bot = start_bot(config, port)
    con = sqlite3.connect(db)

    def wait_for(version, count, limit):
        t0 = time.time()
        while True:
            rows = con.execute("SELECT state, created_at, finished_at FROM deployments WHERE version = ?", (version,)).fetchall()
            done = [r for r in rows if r[0] in ("succeeded", "failed", "rolled_back", "rollback_failed", "cancelled", "denied", "rejected", "expired", "interrupted")]
            if len(rows) == count and len(done) == count:
                bad = [r for r in done if r[0] != "succeeded"]
                assert not bad, f"fleet deployments did not succeed: {bad[:5]}"
                return [(r[2] - r[1]) / 1000 for r in done]
            if time.time() - t0 > limit:
                raise SystemExit(f"{len(done)} of {count} deployments of {version} ended within {limit} s")
            time.sleep(0.2)

    try:
        alone = []
        for r in range(ALONE_RUNS):
            bot.stdin.write(f"/deploy v0.0.{r} env000 --services backend\n")
            bot.stdin.flush()
            alone += wait_for(f"v0.0.{r}", 1, 120)
        t0 = time.time()
        for name in names:
            bot.stdin.write(f"/deploy v1.0.0 {name} --services backend\n")
        bot.stdin.flush()
        times = sorted(wait_for("v1.0.0", envs, 900))
        wall = time.time() - t0
        phase_sql = ("SELECT d.started_at - d.created_at, s.started_at - d.started_at, s.finished_at - s.started_at - 1000, d.finished_at - s.finished_at "
                     "FROM deployments d JOIN deployment_steps s ON s.deployment_id = d.id AND s.name = 'deploy' WHERE d.version {}")
        phases = con.execute(phase_sql.format("= 'v1.0.0'")).fetchall()
        alone_phases = con.execute(phase_sql.format("LIKE 'v0.0.%'")).fetchall()
        cpu = sum(int(x) for x in open(f"/proc/{bot.pid}/stat").read().rsplit(")", 1)[1].split()[11:13]) / os.sysconf("SC_CLK_TCK")
        status = open(f"/proc/{bot.pid}/status").read()
        field = lambda k: int(next(l for l in status.splitlines() if l.startswith(k)).split()[1]) / 1024
        peak, rss = field("VmHWM:"), field("VmRSS:")
    finally:
        stop_bot(bot)
    base = statistics.median_grouped(alone, interval=MS)
    p50 = statistics.median_grouped(times, interval=MS)
    p90 = times[min(len(times) - 1, len(times) * 90 // 100)]
    print(f"\nfleet: {envs} environments deploying at once (command target `sleep 1`, one service), SQLite; all ended {wall:.1f} s after the first request")
    print(f"| measure | one alone (median of {ALONE_RUNS}) | {envs} at once: p50 | p90 | max |")
    print("|---|---|---|---|---|")
    print(f"| request → succeeded | {base * 1000:.0f} ms | {p50 * 1000:.0f} ms | {p90 * 1000:.0f} ms | {times[-1] * 1000:.0f} ms |")
    over = lambda t: max(t - 1.0, 0.0) * 1000
    print(f"| overhead (minus the 1 s target) | {over(base):.1f} ms | {over(p50):.1f} ms | {over(p90):.0f} ms | {over(times[-1]):.0f} ms |")
    print(f"overhead p50 / alone: {over(p50) / max(over(base), 1):.2f} (target ≤ 2); bot peak RSS {peak:.1f} MB, at the end {rss:.1f} MB (target < 100 MB)")
    for label, rows in (("alone", alone_phases), (f"{envs} at once", phases)):
        med = lambda i: statistics.median(p[i] for p in rows)
        print(f"where the overhead is, {label} (medians, ms): request → claimed and started {med(0):.0f}; started → deploy step {med(1):.0f}; "
              f"deploy step beyond its 1 s {med(2):.0f}; deploy step → succeeded {med(3):.0f}")
    print(f"bot CPU time over the whole run (start, {ALONE_RUNS} alone, {envs} at once): {cpu:.1f} s, {cpu * 1000 / (envs + ALONE_RUNS):.1f} ms per deployment")


def main():
    if not os.access(BIN, os.X_OK):
        raise SystemExit(f"{BIN} not found: cargo build --release --bin deploybot (or set DEPLOYBOT_BIN)")
    n = int(os.environ.get("SCALE_DEPLOYMENTS", "1000000"))
    runs = int(os.environ.get("SCALE_RUNS", "7"))
    only = os.environ.get("SCALE_ONLY", "")
    tmp = tempfile.TemporaryDirectory()
    workdir = os.environ.get("SCALE_DIR") or tmp.name
    os.makedirs(workdir, exist_ok=True)
    if only != "fleet":
        which = os.environ.get("SCALE_STORES", "sqlite,postgres").split(",")
        stores = []
        if "sqlite" in which:
            stores.append(("sqlite", "sqlite://" + os.path.join(workdir, f"scale-{n}.db")))
        if "postgres" in which:
            admin = os.environ.get("DEPLOYBOT_TEST_PG_URL")
            if not admin:
                raise SystemExit("DEPLOYBOT_TEST_PG_URL is not set: source scripts/services/postgres.sh && postgres_start (or SCALE_STORES=sqlite)")
            db = f"deploybot_scale_{n}"
            if psql(admin, "-t", "-c", f"SELECT 1 FROM pg_database WHERE datname = '{db}'").strip() != "1":
                psql(admin, "-c", f'CREATE DATABASE "{db}"')
            u = urllib.parse.urlsplit(admin)
            stores.append(("postgres", urllib.parse.urlunsplit((u.scheme, u.netloc, "/" + db, u.query, ""))))
        end = int(time.time() * 1000)
        rows = []
        for name, url in stores:
            port = free_port()
            config = os.path.join(workdir, f"{name}-migrate.toml")
            write_config(config, url, port, ENVS, '["true"]')
            subprocess.run([BIN, "--config", config, "migrate"], check=True, stdout=subprocess.DEVNULL)
            t0 = time.time()
            seeded = seed_sqlite(url[len("sqlite://"):], n, end) if name == "sqlite" else seed_postgres(url, n, end)
            print(f"{name}: {n} deployments {'seeded in %.0f s' % (time.time() - t0) if seeded else 'already seeded'}", file=sys.stderr, flush=True)
            measure(name, url, workdir, runs, rows)
        print(f"\nscale: {n} deployments, medians of {runs} runs (whole processes; /metrics: {max(runs, 5) * 3} scrapes of a running bot)")
        print("| store | measure | median | max | target | peak RSS |")
        print("|---|---|---|---|---|---|")
        missed = []
        for store, m, med, mx, target, rss in rows:
            ok = med * 1000 < target
            if not ok:
                missed.append(f"{store} {m}")
            print(f"| {store} | `{m}` | {med * 1000:.1f} ms | {mx * 1000:.1f} ms | < {target} ms {'✓' if ok else '✗'} | {'' if rss is None else '%.1f MB' % (rss / 1024)} |")
        print("every target met" if not missed else "targets missed: " + ", ".join(missed))
    if only != "stores":
        fleet(workdir, int(os.environ.get("FLEET_ENVS", "500")))


if __name__ == "__main__":
    main()
