package dev.pglock.sample;

import dev.pglock.core.LockNotAcquiredException;
import java.io.PrintStream;
import java.sql.Connection;
import java.sql.DriverManager;
import java.sql.PreparedStatement;
import java.sql.ResultSet;
import java.sql.SQLException;
import java.util.ArrayList;
import java.util.Arrays;
import java.util.Collections;
import java.util.List;
import java.util.Locale;
import java.util.Map;
import java.util.UUID;
import java.util.concurrent.ExecutorService;
import java.util.concurrent.Executors;
import java.util.concurrent.Future;
import java.util.concurrent.TimeUnit;
import java.util.concurrent.atomic.AtomicLong;
import org.springframework.boot.WebApplicationType;
import org.springframework.boot.builder.SpringApplicationBuilder;
import org.springframework.context.ConfigurableApplicationContext;

/**
 * The demo: in each lock mode, several replicas of the sample (separate application contexts, each
 * with its own lock client and owner) run the scheduled job, pay the same invoices at the same time,
 * and read and rebuild one report, for a bounded time. Then it checks, in the database, that the
 * locks held: every tick ran once, no invoice was paid twice, no rebuild overlapped anything.
 */
final class Demo {

    /** The job's hold-at-least in the demo; two runs closer than this (less a little) would be a violation. */
    static final long HOLD_MILLIS = 800;

    /** What one mode's run produced, read back from the database. */
    record Result(String mode, int replicas, int seconds, long ticks, long maxRunsPerTick, long closestRunsMillis,
            String runOrder, long firings, long invoices, long paid, long doublePayments, long attempts,
            long waited, long gaveUp, long reads, long sharedReads, long rebuilds, long overlaps) {

        /** The locks held: no two job runs within the hold, no double payment, no rebuild overlapping. */
        boolean exclusive() {
            return closestRunsMillis >= HOLD_MILLIS - 50 && doublePayments == 0 && overlaps == 0;
        }

        /** The run did what it was for: the job ran and every invoice got paid. */
        boolean complete() {
            return ticks > 0 && paid == invoices;
        }
    }

    private Demo() {
    }

    /** Runs the demo in both modes, prints the table, and returns the exit code. */
    static int run(Map<String, Object> database, String[] args, PrintStream out) {
        int replicas = intArg(args, "--demo.replicas=", 3);
        int seconds = intArg(args, "--demo.seconds=", 8);
        int invoices = intArg(args, "--demo.invoices=", 40);
        String[] passOn = Arrays.stream(args).filter(a -> !a.startsWith("--demo")).toArray(String[]::new);
        String run = "demo-" + UUID.randomUUID().toString().substring(0, 8);
        out.printf("%npglock demo: %d replicas per mode, %d s each, %d invoices, run %s%n", replicas, seconds,
                invoices, run);
        List<Result> results = new ArrayList<>();
        for (String mode : List.of("advisory", "lease")) {
            out.printf("  %s: starting %d replicas...%n", mode, replicas);
            results.add(runMode(mode, database, passOn, replicas, seconds, invoices, run + "-" + mode));
        }
        results.forEach(result -> print(result, out));
        if (!results.stream().allMatch(Result::exclusive)) {
            out.printf("%nEXCLUSIVITY VIOLATED: see the table above.%n%n");
            return SampleApplication.VIOLATED;
        }
        if (!results.stream().allMatch(Result::complete)) {
            out.printf("%nExclusivity held, but the run was incomplete (no tick ran, or invoices stayed unpaid).%n%n");
            return SampleApplication.INCOMPLETE;
        }
        out.printf("%nExclusivity held in both modes.%n%n");
        return SampleApplication.HELD;
    }

    private static Result runMode(String mode, Map<String, Object> database, String[] args, int replicas,
            int seconds, int invoiceCount, String runId) {
        List<ConfigurableApplicationContext> contexts = new ArrayList<>();
        AtomicLong attempts = new AtomicLong();
        AtomicLong waited = new AtomicLong();
        AtomicLong gaveUp = new AtomicLong();
        String[] connection = {String.valueOf(database.get("spring.datasource.url")),
                String.valueOf(database.getOrDefault("spring.datasource.username", "")),
                String.valueOf(database.getOrDefault("spring.datasource.password", ""))};
        ExecutorService drivers = Executors.newFixedThreadPool(replicas * 2);
        try {
            for (int i = 1; i <= replicas; i++) {
                contexts.add(new SpringApplicationBuilder(SampleApplication.class).profiles(mode, "demo")
                        .web(WebApplicationType.NONE).logStartupInfo(false).properties(database)
                        .properties("sample.replica=replica-" + i, "sample.run-id=" + runId,
                                "pglock.namespace=pglock-sample-" + runId, "logging.level.root=warn",
                                "logging.level.dev.pglock=warn", "spring.datasource.hikari.maximum-pool-size=8",
                                "sample.tick-hold=" + HOLD_MILLIS + "ms")
                        .run(args));
            }
            contexts.get(0).getBean(Invoices.class).create(invoiceCount);
            long deadline = System.nanoTime() + TimeUnit.SECONDS.toNanos(seconds);
            List<Future<?>> work = new ArrayList<>();
            for (ConfigurableApplicationContext context : contexts) {
                Invoices invoices = context.getBean(Invoices.class);
                Reports reports = context.getBean(Reports.class);
                work.add(drivers.submit(() -> {
                    List<Long> ids = new ArrayList<>();
                    for (long id = 1; id <= invoiceCount; id++) {
                        ids.add(id);
                    }
                    Collections.shuffle(ids);
                    for (long id : ids) { // every replica tries to pay every invoice
                        attempts.incrementAndGet();
                        long start = System.nanoTime();
                        try {
                            invoices.pay(id);
                        } catch (LockNotAcquiredException e) {
                            gaveUp.incrementAndGet();
                        }
                        if (System.nanoTime() - start > TimeUnit.MILLISECONDS.toNanos(10)) {
                            waited.incrementAndGet(); // far longer than a payment: it queued for the lock
                        }
                    }
                }));
                work.add(drivers.submit(() -> {
                    while (System.nanoTime() < deadline) {
                        for (int r = 0; r < 3; r++) {
                            try {
                                reports.read();
                            } catch (LockNotAcquiredException e) {
                                // a long rebuild queue; counted by what was recorded
                            }
                        }
                        reports.rebuild();
                    }
                }));
            }
            for (Future<?> future : work) {
                future.get(seconds + 60L, TimeUnit.SECONDS);
            }
            long left = deadline - System.nanoTime();
            if (left > 0) {
                TimeUnit.NANOSECONDS.sleep(left); // the scheduled job keeps ticking for the whole run
            }
        } catch (Exception e) {
            throw new IllegalStateException("the " + mode + " demo failed: " + e.getMessage(), e);
        } finally {
            drivers.shutdownNow();
            contexts.forEach(ConfigurableApplicationContext::close);
        }
        try {
            return measure(mode, replicas, seconds, invoiceCount, runId, connection, attempts.get(), waited.get(),
                    gaveUp.get());
        } finally {
            cleanUp(connection, runId);
        }
    }

    /** Removes the run's rows, the lease table's included, whatever happened. */
    private static void cleanUp(String[] connection, String runId) {
        try (Connection c = DriverManager.getConnection(connection[0], connection[1], connection[2])) {
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

    private static Result measure(String mode, int replicas, int seconds, int invoices, String runId,
            String[] connection, long attempts, long waited, long gaveUp) {
        try (Connection c = DriverManager.getConnection(connection[0], connection[1], connection[2])) {
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
            // The lock keeps the job's lock at least HOLD_MILLIS after each run starts: no two runs closer.
            long closest = longs(c, "SELECT coalesce(min(gap), 999999) FROM (SELECT extract(epoch FROM ran_at -"
                    + " lag(ran_at) OVER (ORDER BY ran_at)) * 1000 AS gap FROM sample_tick WHERE run_id = ?) g", runId)[0];
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
            return new Result(mode, replicas, seconds, ticks[0], ticks[1], closest, String.join(" ", order), firings,
                    invoices, paid, doubles, attempts, waited, gaveUp, accesses[0], sharedReads, accesses[1], overlaps);
        } catch (SQLException e) {
            throw new IllegalStateException("reading the " + mode + " demo's results failed: " + e.getMessage(), e);
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

    private static void print(Result r, PrintStream out) {
        out.printf(Locale.ROOT, """

                mode %s: %d replicas for %d s
                  ticks run .................. %d, by %s
                  runs per tick (max) ........ %d
                  closest two runs ........... %d ms   (the lock holds %d ms: must be at least that)
                  skipped firings ............ %d of %d (the replicas that found the job's lock taken, quietly)
                  invoices paid .............. %d of %d
                  double payments ............ %d   (must be 0)
                  payment attempts ........... %d: %d paid, %d queued for the lock (took > 10 ms), %d gave up
                  report reads ............... %d (%d shared the lock with another read)
                  report rebuilds ............ %d (overlapping any other access: %d, must be 0)
                  verdict .................... %s
                """, r.mode(), r.replicas(), r.seconds(), r.ticks(), r.runOrder(), r.maxRunsPerTick(),
                Math.min(r.closestRunsMillis(), 99_999), HOLD_MILLIS, Math.max(0, r.firings() - r.ticks()), r.firings(),
                r.paid(), r.invoices(), r.doublePayments(), r.attempts(), r.paid(), r.waited(), r.gaveUp(), r.reads(),
                r.sharedReads(), r.rebuilds(), r.overlaps(),
                !r.exclusive() ? "VIOLATED" : r.complete() ? "exclusive" : "exclusive, but incomplete");
    }

    private static int intArg(String[] args, String prefix, int fallback) {
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
