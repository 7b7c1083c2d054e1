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
import java.util.LinkedHashMap;
import java.util.List;
import java.util.Locale;
import java.util.Map;
import java.util.UUID;
import java.util.concurrent.ExecutorService;
import java.util.concurrent.Executors;
import java.util.concurrent.Future;
import java.util.concurrent.TimeUnit;
import java.util.concurrent.atomic.AtomicLong;
import java.util.stream.Collectors;
import org.springframework.boot.WebApplicationType;
import org.springframework.boot.builder.SpringApplicationBuilder;
import org.springframework.context.ConfigurableApplicationContext;
import org.springframework.core.env.Environment;

/**
 * The demo: in each lock mode, several replicas of the sample (separate application contexts, each
 * with its own lock client and owner) run the scheduled job, pay the same invoices at the same time,
 * and read and rebuild one report, for a bounded time. Then it checks, in the database, that the
 * locks held: every tick ran once, no invoice was paid twice, no rebuild overlapped anything.
 */
final class Demo {

    /** What one mode's run produced, read back from the database. */
    record Result(String mode, int replicas, int seconds, long ticks, long maxRunsPerTick,
            Map<String, Long> ticksPerReplica, long invoices, long paid, long doublePayments, long attempts,
            long alreadyPaid, long gaveUp, long reads, long sharedReads, long rebuilds, long overlaps) {

        boolean exclusive() {
            return ticks > 0 && maxRunsPerTick == 1 && doublePayments == 0 && paid == invoices && overlaps == 0;
        }
    }

    private Demo() {
    }

    /** Runs the demo in both modes and prints the table; true when exclusivity held everywhere. */
    static boolean run(Map<String, Object> database, String[] args) {
        return run(database, args, System.out);
    }

    static boolean run(Map<String, Object> database, String[] args, PrintStream out) {
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
        boolean ok = results.stream().allMatch(Result::exclusive);
        out.printf("%n%s%n%n", ok ? "Exclusivity held in both modes." : "EXCLUSIVITY VIOLATED: see the table above.");
        return ok;
    }

    private static Result runMode(String mode, Map<String, Object> database, String[] args, int replicas,
            int seconds, int invoiceCount, String runId) {
        List<ConfigurableApplicationContext> contexts = new ArrayList<>();
        AtomicLong attempts = new AtomicLong();
        AtomicLong alreadyPaid = new AtomicLong();
        AtomicLong gaveUp = new AtomicLong();
        String[] connection;
        ExecutorService drivers = Executors.newFixedThreadPool(replicas * 2);
        try {
            for (int i = 1; i <= replicas; i++) {
                contexts.add(new SpringApplicationBuilder(SampleApplication.class).profiles(mode)
                        .web(WebApplicationType.NONE).logStartupInfo(false).properties(database)
                        .properties("sample.replica=replica-" + i, "sample.run-id=" + runId,
                                "pglock.namespace=pglock-sample-" + runId, "logging.level.root=warn",
                                "logging.level.dev.pglock=warn", "spring.datasource.hikari.maximum-pool-size=8")
                        .run(args));
            }
            connection = connection(contexts.get(0).getEnvironment());
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
                        try {
                            if (!invoices.pay(id)) {
                                alreadyPaid.incrementAndGet();
                            }
                        } catch (LockNotAcquiredException e) {
                            gaveUp.incrementAndGet();
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
        return measure(mode, replicas, seconds, invoiceCount, runId, connection, attempts.get(), alreadyPaid.get(),
                gaveUp.get());
    }

    private static String[] connection(Environment environment) {
        return new String[] {environment.getProperty("spring.datasource.url"),
                environment.getProperty("spring.datasource.username", ""),
                environment.getProperty("spring.datasource.password", "")};
    }

    private static Result measure(String mode, int replicas, int seconds, int invoices, String runId,
            String[] connection, long attempts, long alreadyPaid, long gaveUp) {
        try (Connection c = DriverManager.getConnection(connection[0], connection[1], connection[2])) {
            long[] ticks = longs(c, "SELECT count(*), coalesce(max(runs), 0) FROM (SELECT tick, count(*) AS runs"
                    + " FROM sample_tick WHERE run_id = ? GROUP BY tick) t", runId);
            Map<String, Long> perReplica = new LinkedHashMap<>();
            try (PreparedStatement ps = c.prepareStatement("SELECT replica, count(*) FROM sample_tick WHERE run_id = ?"
                    + " GROUP BY replica ORDER BY replica")) {
                ps.setString(1, runId);
                try (ResultSet rs = ps.executeQuery()) {
                    while (rs.next()) {
                        perReplica.put(rs.getString(1), rs.getLong(2));
                    }
                }
            }
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
            for (String table : List.of("sample_tick", "sample_invoice", "sample_payment", "sample_report",
                    "sample_report_access")) {
                try (PreparedStatement ps = c.prepareStatement("DELETE FROM " + table + " WHERE run_id = ?")) {
                    ps.setString(1, runId);
                    ps.executeUpdate();
                }
            }
            return new Result(mode, replicas, seconds, ticks[0], ticks[1], perReplica, invoices, paid, doubles,
                    attempts, alreadyPaid, gaveUp, accesses[0], sharedReads, accesses[1], overlaps);
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
        String perReplica = r.ticksPerReplica().entrySet().stream().map(e -> e.getKey() + " " + e.getValue())
                .collect(Collectors.joining(", "));
        out.printf(Locale.ROOT, """

                mode %s: %d replicas for %d s
                  scheduled ticks ............ %d (each fired on all %d replicas)
                  runs per tick (max) ........ %d   (must be 1)
                  ticks run by ............... %s
                  skipped ticks .............. %d (the other replicas, quietly)
                  invoices paid .............. %d of %d
                  double payments ............ %d   (must be 0)
                  payment attempts ........... %d: %d paid, %d waited and found it paid, %d gave up waiting
                  report reads ............... %d (%d shared the lock with another read)
                  report rebuilds ............ %d (overlapping any other access: %d, must be 0)
                  verdict .................... %s
                """, r.mode(), r.replicas(), r.seconds(), r.ticks(), r.replicas(), r.maxRunsPerTick(), perReplica,
                r.ticks() * r.replicas() - r.ticksPerReplica().values().stream().mapToLong(Long::longValue).sum(),
                r.paid(), r.invoices(), r.doublePayments(), r.attempts(), r.paid(), r.alreadyPaid(), r.gaveUp(),
                r.reads(), r.sharedReads(), r.rebuilds(), r.overlaps(), r.exclusive() ? "exclusive" : "VIOLATED");
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
