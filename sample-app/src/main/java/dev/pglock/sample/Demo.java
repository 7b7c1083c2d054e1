package dev.pglock.sample;

import dev.pglock.core.advisory.AdvisoryKeyHasher;
import java.io.BufferedReader;
import java.io.IOException;
import java.io.InputStream;
import java.io.InputStreamReader;
import java.io.OutputStream;
import java.io.PrintStream;
import java.nio.charset.StandardCharsets;
import java.nio.file.Files;
import java.nio.file.Path;
import java.sql.Connection;
import java.sql.DriverManager;
import java.sql.PreparedStatement;
import java.sql.ResultSet;
import java.sql.SQLException;
import java.sql.Statement;
import java.util.ArrayDeque;
import java.util.ArrayList;
import java.util.Arrays;
import java.util.Deque;
import java.util.List;
import java.util.Locale;
import java.util.Map;
import java.util.UUID;
import java.util.concurrent.CountDownLatch;
import java.util.concurrent.TimeUnit;
import java.util.jar.JarFile;

/**
 * The demo: in each lock mode, several replicas of the sample, each a JVM process of its own (the
 * same jar, its own lock client and pool), run the scheduled job, pay the same invoices at the same
 * moments, and read and rebuild one report. Midway the demo kills the replica that holds the
 * scheduled job's lock ({@code kill -9}) and later starts a replacement. Then it checks, in the
 * database, that the locks held (no two runs of the job at once, no invoice paid twice, no rebuild
 * overlapping anything), how long the job's lock stayed with the dead replica against what the mode
 * promises, prints a table per mode and writes the timeline to {@code pglock-demo.html}.
 */
final class Demo {

    /** The job's hold-at-least in the demo; two runs closer than this (less a little) would be a violation. */
    static final long HOLD_MILLIS = 800;
    /** How long the job works in the demo: long enough that the crash lands while it runs. */
    static final long WORK_MILLIS = 1500;
    /** The scheduled job's lock key: @DistributedLock's default, the method's full name. */
    static final String JOB_KEY = "dev.pglock.sample.ReportJob.tick()";
    /** Lease mode's lease and both modes' heartbeat in the demo: what the takeover promise is made of. */
    static final long LEASE_MILLIS = 4000;
    static final long HEARTBEAT_MILLIS = 1000;

    /** What the crash came to: who was killed, when (database clock), and when the job's lock was free again. */
    record Takeover(String killed, long killedAt, long freedAfter, long nextRunAfter, String nextRunBy,
            long promise) {

        /** The dead replica's lock ended within what the mode promises. */
        boolean kept() {
            return freedAfter >= 0 && freedAfter <= promise;
        }
    }

    /** What one mode's run produced, read back from the database. */
    record Result(String mode, int replicas, int seconds, long ticks, long maxRunsPerTick, long closestRunsMillis,
            String runOrder, long firings, long invoices, long paid, long doublePayments, long reads,
            long sharedReads, long rebuilds, long overlaps, Takeover takeover, DemoTimeline.Run timeline) {

        /** The locks held: no job run while the previous one held the lock, no double payment, no rebuild overlapping. */
        boolean exclusive() {
            return closestRunsMillis >= -50 && doublePayments == 0 && overlaps == 0;
        }

        /**
         * The run did what it was for: the job ran, every invoice got paid, a crash happened, the dead
         * replica's lock ended as the mode promises, and the job ran again after it.
         */
        boolean complete() {
            return ticks > 0 && paid == invoices && takeover != null && takeover.kept() && takeover.nextRunAfter() >= 0;
        }
    }

    private Demo() {
    }

    /** Runs the demo in both modes, prints the table, writes the timeline, and returns the exit code. */
    static int run(Map<String, Object> database, String[] args, PrintStream out) {
        int replicas = intArg(args, "--demo.replicas=", 3);
        int seconds = intArg(args, "--demo.seconds=", 18);
        int invoices = intArg(args, "--demo.invoices=", 40);
        if (seconds < 6) {
            throw new IllegalArgumentException("--demo.seconds= needs at least 6 (a crash midway, then a takeover),"
                    + " got " + seconds);
        }
        Path html = Path.of(stringArg(args, "--demo.html=", "pglock-demo.html"));
        String run = "demo-" + UUID.randomUUID().toString().substring(0, 8);
        out.printf("%npglock demo: %d replica processes per mode, %d s each, %d invoices, run %s%n", replicas,
                seconds, invoices, run);
        List<Result> results = new ArrayList<>();
        for (String mode : List.of("advisory", "lease")) {
            out.printf("  %s: starting %d replicas...%n", mode, replicas);
            results.add(new ModeRun(mode, database, args, replicas, seconds, invoices, run + "-" + mode, out).run());
        }
        results.forEach(result -> print(result, out));
        try {
            DemoTimeline.write(html, results.stream().map(Result::timeline).toList());
            out.printf("%nThe timeline: %s%n", html.toAbsolutePath());
        } catch (IOException e) {
            out.printf("%nCould not write the timeline to %s: %s%n", html.toAbsolutePath(), e.getMessage());
        }
        if (!results.stream().allMatch(Result::exclusive)) {
            out.printf("%nEXCLUSIVITY VIOLATED: see the table above.%n%n");
            return SampleApplication.VIOLATED;
        }
        if (!results.stream().allMatch(Result::complete)) {
            out.printf("%nExclusivity held, but the run was incomplete (no tick ran, invoices stayed unpaid, or the"
                    + " crashed replica's lock outlived the promise).%n%n");
            return SampleApplication.INCOMPLETE;
        }
        out.printf("%nExclusivity held in both modes, and the crashed replica's lock ended as each mode promises.%n%n");
        return SampleApplication.HELD;
    }

    /** The Spring properties of one demo replica. */
    static String[] replicaProperties(String replica, String runId, String mode) {
        return new String[] {"sample.replica=" + replica, "sample.run-id=" + runId,
            "pglock.namespace=pglock-sample-" + runId, "pglock.owner=" + replica, "logging.level.root=warn",
            "logging.level.dev.pglock=warn", "spring.datasource.hikari.maximum-pool-size=6",
            // pg_stat_activity names the replica, so the demo can tell whose session holds an advisory lock
            "spring.datasource.hikari.data-source-properties.ApplicationName=" + replica,
            "sample.tick-hold=" + HOLD_MILLIS + "ms", "sample.tick-work=" + WORK_MILLIS + "ms", "sample.work-millis=40",
            "pglock.heartbeat-interval=" + HEARTBEAT_MILLIS + "ms", "pglock.lease=" + LEASE_MILLIS + "ms",
            "spring.lifecycle.timeout-per-shutdown-phase=5s", "spring.sql.init.mode=never"};
    }

    /** The arguments that are not the demo's own, for Spring. */
    static String[] passOn(String[] args) {
        return Arrays.stream(args).filter(a -> !a.startsWith("--demo")).toArray(String[]::new);
    }

    /** One mode's run: the replica processes, the crash, and what the database recorded. */
    private static final class ModeRun {
        private final String mode;
        private final String[] args;
        private final int replicas;
        private final int seconds;
        private final int invoices;
        private final String runId;
        private final PrintStream out;
        private final String[] connection;
        private final List<Replica> started = new ArrayList<>();

        ModeRun(String mode, Map<String, Object> database, String[] args, int replicas, int seconds, int invoices,
                String runId, PrintStream out) {
            this.mode = mode;
            this.args = args;
            this.replicas = replicas;
            this.seconds = seconds;
            this.invoices = invoices;
            this.runId = runId;
            this.out = out;
            this.connection = new String[] {String.valueOf(database.get("spring.datasource.url")),
                String.valueOf(database.getOrDefault("spring.datasource.username", "")),
                String.valueOf(database.getOrDefault("spring.datasource.password", ""))};
        }

        Result run() {
            Takeover takeover;
            long t0;
            long end;
            try {
                prepare();
                for (int i = 1; i <= replicas; i++) {
                    started.add(launch("replica-" + i));
                }
                for (Replica replica : started) {
                    replica.awaitReady(120);
                }
                long goAt = System.currentTimeMillis() + 200;
                long payUntil = goAt + seconds * 700L;
                t0 = dbNow() + 200;
                started.forEach(replica -> replica.go(goAt, payUntil));
                sleepUntil(goAt + seconds * 400L);
                takeover = crash(goAt, payUntil);
                // Long enough after the crash for the job to run again, however short the run asked for.
                long afterCrash = takeover == null ? 0 : System.currentTimeMillis() + takeover.promise() + 2_500;
                sleepUntil(Math.max(goAt + seconds * 1000L, afterCrash));
                end = dbNow();
                takeover = withNextRun(takeover);
            } catch (IOException | SQLException | InterruptedException e) {
                stopAll();
                cleanUp();
                if (e instanceof InterruptedException) {
                    Thread.currentThread().interrupt();
                }
                throw new IllegalStateException("the " + mode + " demo failed: " + e.getMessage(), e);
            } catch (RuntimeException | Error e) {
                stopAll();
                cleanUp();
                throw e;
            }
            stopAll(); // every replica closes gracefully before the results are read
            try {
                return measure(takeover, t0, end);
            } finally {
                cleanUp();
            }
        }

        /** The sample's tables (the replicas skip their own schema script) and the run's invoices. */
        private void prepare() throws IOException, SQLException {
            String schema;
            try (InputStream in = Demo.class.getResourceAsStream("/schema.sql")) {
                if (in == null) {
                    throw new IOException("schema.sql is missing from the sample's jar");
                }
                schema = new String(in.readAllBytes(), StandardCharsets.UTF_8);
            }
            try (Connection c = connect(); Statement st = c.createStatement()) {
                st.execute(schema);
                try (PreparedStatement ps = c.prepareStatement("INSERT INTO sample_invoice (run_id, id, amount_cents)"
                        + " SELECT ?, g, 100 * g FROM generate_series(1, ?) g ON CONFLICT DO NOTHING")) {
                    ps.setString(1, runId);
                    ps.setInt(2, invoices);
                    ps.executeUpdate();
                }
            }
        }

        private Replica launch(String name) throws IOException {
            List<String> command = new ArrayList<>(javaCommand());
            command.addAll(List.of("--demo.replica=" + name, "--demo.mode=" + mode, "--demo.run=" + runId,
                    "--demo.invoices=" + invoices));
            // The database as the check found it, in the environment (a password on a command line is
            // readable by every local user), and not again as arguments (they would win over it).
            Arrays.stream(passOn(args)).filter(a -> !a.startsWith("--spring.datasource.")).forEach(command::add);
            ProcessBuilder builder = new ProcessBuilder(command).redirectErrorStream(true);
            builder.environment().put("SPRING_DATASOURCE_URL", connection[0]);
            builder.environment().put("SPRING_DATASOURCE_USERNAME", connection[1]);
            builder.environment().put("SPRING_DATASOURCE_PASSWORD", connection[2]);
            return new Replica(name, builder.start());
        }

        /**
         * Kills the replica whose session or row holds the job's lock, watches the lock until it is
         * free or another replica's, and starts a replacement a second after the kill.
         */
        private Takeover crash(long goAt, long payUntil) throws SQLException, InterruptedException, IOException {
            try (Connection c = connect()) {
                Replica holder = null;
                long lookUntil = System.currentTimeMillis() + 10_000;
                while (holder == null && System.currentTimeMillis() < lookUntil) {
                    String name = midRunHolder(c);
                    holder = started.stream().filter(r -> r.name.equals(name) && r.process.isAlive()).findFirst()
                            .orElse(null);
                    if (holder == null) {
                        Thread.sleep(20);
                    }
                }
                if (holder == null) {
                    out.printf("  %s: nobody held the job's lock for 10 s; no crash%n", mode);
                    return null;
                }
                long killedAt = dbNow(c);
                holder.process.destroyForcibly(); // SIGKILL: no shutdown hook, no release, the OS closes its sockets
                holder.killedAt = killedAt;
                out.printf("  %s: killed %s (kill -9) while it held the scheduled job's lock%n", mode, holder.name);
                long promise = "advisory".equals(mode) ? HEARTBEAT_MILLIS : LEASE_MILLIS + HEARTBEAT_MILLIS;
                long freedAfter = -1;
                boolean replaced = false;
                long watchUntil = System.currentTimeMillis() + promise + 5_000;
                while (System.currentTimeMillis() < watchUntil && (freedAfter < 0 || !replaced)) {
                    long now = dbNow(c);
                    if (freedAfter < 0 && !holder.name.equals(jobHolder(c))) {
                        freedAfter = now - killedAt; // the lock was gone at the latest when this poll began
                    }
                    if (!replaced && now - killedAt >= 1000) {
                        Replica replacement = launch("replica-" + (started.size() + 1));
                        replacement.goLater(goAt, payUntil);
                        started.add(replacement);
                        replaced = true;
                    }
                    Thread.sleep(10);
                }
                return new Takeover(holder.name, killedAt, freedAfter, -1, null, promise); // next run: withNextRun
            }
        }

        /**
         * Who holds the job's lock in the middle of a run of the job (started 300 to 900 ms ago, of its
         * 1500 ms, not ended), so that a kill now lands while the lock is held, and the timeline shows
         * the run it cut short; null when nobody does.
         */
        private String midRunHolder(Connection c) throws SQLException {
            String holder = jobHolder(c);
            if (holder == null) {
                return null;
            }
            try (PreparedStatement ps = c.prepareStatement("SELECT replica FROM sample_tick WHERE run_id = ? AND replica = ?"
                    + " AND ended_at IS NULL AND ran_at BETWEEN clock_timestamp() - interval '900 milliseconds'"
                    + " AND clock_timestamp() - interval '300 milliseconds'")) {
                ps.setString(1, runId);
                ps.setString(2, holder);
                return first(ps);
            }
        }

        /** The crash with the job's first run after it, read once the run is over. */
        private Takeover withNextRun(Takeover t) throws SQLException {
            if (t == null) {
                return null;
            }
            long nextRunAfter = nextRun(t.killedAt());
            long freedAfter = t.freedAfter();
            if (freedAfter >= 0 && nextRunAfter >= 0) {
                freedAfter = Math.min(freedAfter, nextRunAfter); // the next run proves it free, whatever the poll saw
            }
            return new Takeover(t.killed(), t.killedAt(), freedAfter, nextRunAfter, nextRunBy(t.killedAt()), t.promise());
        }

        /** Who holds the job's lock now, by the database: the replica's name, or null. */
        private String jobHolder(Connection c) throws SQLException {
            String namespace = "pglock-sample-" + runId;
            if ("advisory".equals(mode)) {
                long id = AdvisoryKeyHasher.lockId(namespace, JOB_KEY);
                try (PreparedStatement ps = c.prepareStatement("SELECT a.application_name FROM pg_locks l"
                        + " JOIN pg_stat_activity a ON a.pid = l.pid WHERE l.locktype = 'advisory' AND l.granted"
                        + " AND l.objsubid = 1 AND l.classid::bigint = ? AND l.objid::bigint = ?")) {
                    ps.setLong(1, id >>> 32);
                    ps.setLong(2, id & 0xFFFF_FFFFL);
                    return first(ps);
                }
            }
            try (PreparedStatement ps = c.prepareStatement("SELECT split_part(holders[1], ':', 1) FROM pglock_locks"
                    + " WHERE namespace = ? AND lock_key = ? AND holders <> '{}' AND expires_at > clock_timestamp()")) {
                ps.setString(1, namespace);
                ps.setString(2, JOB_KEY);
                return first(ps);
            }
        }

        /** Milliseconds from the kill to the job's next run, or -1. */
        private long nextRun(long killedAt) throws SQLException {
            try (Connection c = connect(); PreparedStatement ps = c.prepareStatement("SELECT coalesce(extract(epoch"
                    + " FROM min(ran_at)) * 1000 - ?, -1)::bigint FROM sample_tick WHERE run_id = ?"
                    + " AND ran_at > to_timestamp(? / 1000.0)")) {
                ps.setLong(1, killedAt);
                ps.setString(2, runId);
                ps.setLong(3, killedAt);
                try (ResultSet rs = ps.executeQuery()) {
                    rs.next();
                    return rs.getLong(1);
                }
            }
        }

        private String nextRunBy(long killedAt) {
            try (Connection c = connect(); PreparedStatement ps = c.prepareStatement("SELECT replica FROM sample_tick"
                    + " WHERE run_id = ? AND ran_at > to_timestamp(? / 1000.0) ORDER BY ran_at LIMIT 1")) {
                ps.setString(1, runId);
                ps.setLong(2, killedAt);
                return first(ps);
            } catch (SQLException e) {
                return null;
            }
        }

        /** Ends every replica still running: its stdin closes, it closes its context gracefully and exits. */
        private void stopAll() {
            for (Replica replica : started) {
                replica.stop();
            }
            for (Replica replica : started) {
                replica.awaitExit();
            }
        }

        private Result measure(Takeover takeover, long t0, long end) {
            try (Connection c = connect()) {
                long[] ticks = longs(c, "SELECT count(*), coalesce(max(runs), 0) FROM (SELECT tick, count(*) AS runs"
                        + " FROM sample_tick WHERE run_id = ? GROUP BY tick) t", runId);
                List<String> order = new ArrayList<>();
                try (PreparedStatement ps = c.prepareStatement("SELECT replica FROM sample_tick WHERE run_id = ?"
                        + " ORDER BY ran_at")) {
                    ps.setString(1, runId);
                    try (ResultSet rs = ps.executeQuery()) {
                        while (rs.next()) {
                            order.add(rs.getString(1).replace("replica-", "r"));
                        }
                    }
                }
                // Each run holds the job's lock until its work ends, and at least HOLD_MILLIS: no run may
                // start before the previous one's lock ended (less 50 ms of clock reading), except after
                // the run the crash cut short (a dead holder's lock ends with it, or with its lease).
                long closest;
                try (PreparedStatement ps = c.prepareStatement("SELECT coalesce(min(gap), 999999) FROM (SELECT"
                        + " extract(epoch FROM ran_at - lag(greatest(coalesce(ended_at, ran_at), ran_at + ? * interval"
                        + " '1 millisecond')) OVER w) * 1000 AS gap, lag(replica) OVER w AS before,"
                        + " lag(ran_at) OVER w AS before_at, ran_at FROM sample_tick WHERE run_id = ? WINDOW w AS"
                        + " (ORDER BY ran_at)) g WHERE NOT (before = ? AND before_at <= to_timestamp(? / 1000.0)"
                        + " AND ran_at > to_timestamp(? / 1000.0))")) {
                    ps.setLong(1, HOLD_MILLIS);
                    ps.setString(2, runId);
                    ps.setString(3, takeover == null ? "" : takeover.killed());
                    long killed = takeover == null ? 0 : takeover.killedAt();
                    ps.setLong(4, killed);
                    ps.setLong(5, killed);
                    closest = first(ps, 999_999);
                }
                long firings = longs(c, "SELECT count(*) FROM sample_fire WHERE run_id = ?", runId)[0];
                long paid = longs(c, "SELECT count(*) FROM sample_invoice WHERE run_id = ? AND paid_by IS NOT NULL",
                        runId)[0];
                long doubles = longs(c, "SELECT count(*) FROM (SELECT invoice_id FROM sample_payment WHERE run_id = ?"
                        + " GROUP BY invoice_id HAVING count(*) > 1) d", runId)[0];
                long[] accesses = longs(c, "SELECT count(*) FILTER (WHERE kind = 'read'),"
                        + " count(*) FILTER (WHERE kind = 'write') FROM sample_report_access WHERE run_id = ?", runId);
                // A rebuild (exclusive) must overlap no other access; reads (shared) may overlap each other.
                long overlaps = longs(c, "SELECT count(*) FROM sample_report_access w JOIN sample_report_access o"
                        + " ON o.run_id = w.run_id AND o.ctid <> w.ctid AND o.started_at < w.ended_at"
                        + " AND w.started_at < o.ended_at WHERE w.run_id = ? AND w.kind = 'write'", runId)[0];
                long sharedReads = longs(c, "SELECT count(*) FROM sample_report_access r WHERE r.run_id = ?"
                        + " AND r.kind = 'read' AND EXISTS (SELECT 1 FROM sample_report_access o WHERE o.run_id = r.run_id"
                        + " AND o.kind = 'read' AND o.ctid <> r.ctid AND o.started_at < r.ended_at"
                        + " AND r.started_at < o.ended_at)", runId)[0];
                Result partial = new Result(mode, replicas, seconds, ticks[0], ticks[1], closest, String.join(" ", order),
                        firings, invoices, paid, doubles, accesses[0], sharedReads, accesses[1], overlaps, takeover, null);
                DemoTimeline.Run timeline = DemoTimeline.read(c, runId, mode, t0, end, lanes(), takeover,
                        HOLD_MILLIS, verdict(partial));
                return new Result(mode, replicas, seconds, ticks[0], ticks[1], closest, String.join(" ", order),
                        firings, invoices, paid, doubles, accesses[0], sharedReads, accesses[1], overlaps, takeover,
                        timeline);
            } catch (SQLException e) {
                throw new IllegalStateException("reading the " + mode + " demo's results failed: " + e.getMessage(), e);
            }
        }

        private List<DemoTimeline.Lane> lanes() {
            return started.stream().map(r -> new DemoTimeline.Lane(r.name, r.readyAt, r.killedAt)).toList();
        }

        /** Removes the run's rows, the lease table's included, whatever happened. */
        private void cleanUp() {
            try (Connection c = connect()) {
                for (String table : List.of("sample_tick", "sample_fire", "sample_invoice", "sample_payment",
                        "sample_report", "sample_report_access")) {
                    try (PreparedStatement ps = c.prepareStatement("DELETE FROM " + table + " WHERE run_id = ?")) {
                        ps.setString(1, runId);
                        ps.executeUpdate();
                    }
                }
                try (PreparedStatement ps = c.prepareStatement("DELETE FROM pglock_locks WHERE namespace = ?")) {
                    ps.setString(1, "pglock-sample-" + runId);
                    ps.executeUpdate();
                } catch (SQLException noLeaseTable) {
                    // advisory-only runs never created it
                }
            } catch (SQLException e) {
                System.err.println("could not remove the demo's rows for run " + runId + ": " + e.getMessage());
            }
        }

        private Connection connect() throws SQLException {
            return DriverManager.getConnection(connection[0], connection[1], connection[2]);
        }

        /** The database clock, in epoch milliseconds: every time the demo shows is the database's. */
        private long dbNow() throws SQLException {
            try (Connection c = connect()) {
                return dbNow(c);
            }
        }

        private static long dbNow(Connection c) throws SQLException {
            try (Statement st = c.createStatement();
                    ResultSet rs = st.executeQuery("SELECT (extract(epoch FROM clock_timestamp()) * 1000)::bigint")) {
                rs.next();
                return rs.getLong(1);
            }
        }

        private long dbNowQuietly() {
            try {
                return dbNow();
            } catch (SQLException e) {
                return System.currentTimeMillis();
            }
        }

        /** One replica process: its output is read on a thread of its own (READY, then its log lines). */
        private final class Replica {
            final String name;
            final Process process;
            final CountDownLatch ready = new CountDownLatch(1);
            final Deque<String> lastLines = new ArrayDeque<>();
            volatile long readyAt;
            volatile long killedAt;
            private volatile long[] goLater;

            Replica(String name, Process process) {
                this.name = name;
                this.process = process;
                Thread reader = new Thread(this::read, "demo-" + name + "-output");
                reader.setDaemon(true);
                reader.start();
            }

            private void read() {
                try (BufferedReader in = new BufferedReader(new InputStreamReader(process.getInputStream(),
                        StandardCharsets.UTF_8))) {
                    for (String line; (line = in.readLine()) != null; ) {
                        if (line.startsWith("READY ") && ready.getCount() > 0) {
                            readyAt = dbNowQuietly();
                            ready.countDown();
                            long[] go = goLater;
                            if (go != null) {
                                go(go[0], go[1]);
                            }
                            continue;
                        }
                        synchronized (lastLines) {
                            lastLines.addLast(line);
                            if (lastLines.size() > 40) {
                                lastLines.removeFirst();
                            }
                        }
                    }
                } catch (IOException e) {
                    // the process ended
                }
            }

            void awaitReady(int timeoutSeconds) throws InterruptedException {
                long until = System.nanoTime() + TimeUnit.SECONDS.toNanos(timeoutSeconds);
                while (!ready.await(200, TimeUnit.MILLISECONDS) && process.isAlive() && System.nanoTime() < until) {
                    // a replica that exits (a bad argument, no database) is reported at once, not after the timeout
                }
                if (ready.getCount() > 0) {
                    process.waitFor(2, TimeUnit.SECONDS); // let its last lines arrive
                    String output;
                    synchronized (lastLines) {
                        output = String.join("\n    ", lastLines);
                    }
                    throw new IllegalStateException(name + " (" + mode + ") did not start within " + timeoutSeconds
                            + " s" + (process.isAlive() ? "" : ", it exited with " + process.exitValue())
                            + "; its last output:\n    " + output);
                }
            }

            /** Tells the replica to start its work: the invoices' pace is the same for every replica. */
            void go(long goAt, long payUntil) {
                try {
                    OutputStream in = process.getOutputStream();
                    in.write(("GO " + goAt + " " + payUntil + "\n").getBytes(StandardCharsets.UTF_8));
                    in.flush();
                } catch (IOException e) {
                    // it died; the results will show it
                }
            }

            /** A replacement goes as soon as it is ready. */
            void goLater(long goAt, long payUntil) {
                goLater = new long[] {goAt, payUntil};
                if (ready.getCount() == 0) {
                    go(goAt, payUntil);
                }
            }

            void stop() {
                try {
                    process.getOutputStream().close(); // end of input: the replica closes gracefully
                } catch (IOException e) {
                    process.destroy();
                }
            }

            void awaitExit() {
                try {
                    if (!process.waitFor(30, TimeUnit.SECONDS)) {
                        process.destroyForcibly();
                        process.waitFor(10, TimeUnit.SECONDS);
                    }
                } catch (InterruptedException e) {
                    process.destroyForcibly();
                    Thread.currentThread().interrupt();
                }
            }
        }
    }

    /**
     * How to start this same program again: the same java, and either the same Spring Boot jar or the
     * same class path (a build or a test run), with options that favour a quick start over peak speed.
     */
    static List<String> javaCommand() {
        String java = ProcessHandle.current().info().command()
                .orElse(Path.of(System.getProperty("java.home"), "bin", "java").toString());
        List<String> command = new ArrayList<>(List.of(java, "-XX:TieredStopAtLevel=1", "-XX:+UseSerialGC",
                "-Xmx256m"));
        String classPath = System.getProperty("java.class.path");
        if (isBootJar(classPath)) {
            command.addAll(List.of("-jar", classPath));
        } else {
            command.addAll(List.of("-cp", classPath, SampleApplication.class.getName()));
        }
        return command;
    }

    private static boolean isBootJar(String classPath) {
        if (classPath == null || classPath.contains(java.io.File.pathSeparator) || !classPath.endsWith(".jar")
                || !Files.isRegularFile(Path.of(classPath))) {
            return false;
        }
        try (JarFile jar = new JarFile(classPath)) {
            return jar.getManifest() != null && jar.getManifest().getMainAttributes().getValue("Start-Class") != null;
        } catch (IOException e) {
            return false;
        }
    }

    private static String first(PreparedStatement ps) throws SQLException {
        try (ResultSet rs = ps.executeQuery()) {
            return rs.next() ? rs.getString(1) : null;
        }
    }

    private static long first(PreparedStatement ps, long fallback) throws SQLException {
        try (ResultSet rs = ps.executeQuery()) {
            return rs.next() ? rs.getLong(1) : fallback;
        }
    }

    private static long[] longs(Connection c, String sql, String runId) throws SQLException {
        try (PreparedStatement ps = c.prepareStatement(sql)) {
            ps.setString(1, runId);
            try (ResultSet rs = ps.executeQuery()) {
                rs.next();
                long[] values = new long[rs.getMetaData().getColumnCount()];
                for (int i = 0; i < values.length; i++) {
                    values[i] = rs.getLong(i + 1);
                }
                return values;
            }
        }
    }

    private static void sleepUntil(long epochMillis) throws InterruptedException {
        long wait = epochMillis - System.currentTimeMillis();
        if (wait > 0) {
            Thread.sleep(wait);
        }
    }

    /** The verdict in words, as the table and the timeline show it. */
    static String verdict(Result r) {
        return !r.exclusive() ? "VIOLATED" : r.complete() ? "exclusive" : "exclusive, but incomplete";
    }

    private static void print(Result r, PrintStream out) {
        Takeover t = r.takeover();
        String crash;
        if (t == null) {
            crash = "no crash (nobody held the job's lock)";
        } else {
            String freed = t.freedAfter() < 0 ? "not within " + (t.promise() + 5000) + " ms" : t.freedAfter() + " ms";
            String promise = "advisory".equals(r.mode()) ? "the session ends at once, seen within " + t.promise() + " ms"
                    : "lease + one heartbeat = " + t.promise() + " ms";
            String next = t.nextRunAfter() < 0 ? "the job did not run again before the end"
                    : "the job ran again after " + t.nextRunAfter() + " ms, on " + t.nextRunBy();
            crash = t.killed() + " killed; its lock ended after " + freed + " (promise: " + promise + "), " + next;
        }
        out.printf(Locale.ROOT, """

                mode %s: %d replica processes for %d s
                  crash ...................... %s
                  job runs ................... %d, by %s
                  runs per tick (max) ........ %d
                  closest two runs ........... %d ms from one run's lock ending to the next run (must be >= 0;
                                               a run holds the lock while it works, and at least %d ms)
                  skipped firings ............ %d of %d (the replicas that found the job's lock taken, quietly)
                  invoices paid .............. %d of %d
                  double payments ............ %d   (must be 0)
                  report reads ............... %d (%d shared the lock with another read)
                  report rebuilds ............ %d (overlapping any other access: %d, must be 0)
                  verdict .................... %s
                """, r.mode(), r.replicas(), r.seconds(), crash, r.ticks(), r.runOrder(), r.maxRunsPerTick(),
                Math.min(r.closestRunsMillis(), 99_999), HOLD_MILLIS, Math.max(0, r.firings() - r.ticks()), r.firings(),
                r.paid(), r.invoices(), r.doublePayments(), r.reads(), r.sharedReads(), r.rebuilds(), r.overlaps(),
                verdict(r));
    }

    static String stringArg(String[] args, String prefix, String fallback) {
        for (String arg : args) {
            if (arg.startsWith(prefix)) {
                return arg.substring(prefix.length());
            }
        }
        return fallback;
    }

    static int intArg(String[] args, String prefix, int fallback) {
        for (String arg : args) {
            if (arg.startsWith(prefix)) {
                try {
                    int value = Integer.parseInt(arg.substring(prefix.length()));
                    if (value > 0) {
                        return value;
                    }
                } catch (NumberFormatException e) {
                    // fall through to the message
                }
                throw new IllegalArgumentException(prefix + " needs a positive whole number, got '" + arg + "'");
            }
        }
        return fallback;
    }
}
