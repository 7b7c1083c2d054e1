package dev.pglock.benchmarks;

import com.zaxxer.hikari.HikariDataSource;
import dev.pglock.test.PgTestDatabase;
import dev.pglock.test.TcpProxy;
import java.sql.Connection;
import java.sql.PreparedStatement;
import java.sql.ResultSet;
import java.sql.SQLException;
import java.time.Duration;
import java.util.ArrayList;
import java.util.List;
import java.util.concurrent.Callable;
import java.util.concurrent.CountDownLatch;
import java.util.concurrent.ExecutorService;
import java.util.concurrent.Executors;
import java.util.concurrent.Future;
import java.util.concurrent.TimeUnit;
import java.util.concurrent.atomic.AtomicLong;
import org.HdrHistogram.Histogram;

/** The five scenarios. Each measurement warms up first and gets fresh tables and its own pools. */
final class Scenarios {

    /** How long and how much. */
    record Options(Duration warmup, Duration measure, int heldMany, int threads, Duration takeoverLease,
            Duration takeoverHeartbeat, Duration registryTimeToLive) {
    }

    /** One timed operation. */
    @FunctionalInterface
    interface Op {
        void run() throws Exception;
    }

    static final Duration WAIT = Duration.ofSeconds(30);

    private final PgTestDatabase db;
    private final Systems systems;
    private final Options options;

    Scenarios(PgTestDatabase db, Systems systems, Options options) {
        this.db = db;
        this.systems = systems;
        this.options = options;
    }

    // ---- 1. uncontended: one thread, acquire + release, in a loop -------------------------------

    /** A named loop body over resources that stay open across rounds. */
    record Subject(String system, Op op, AutoCloseable resources) {
    }

    /** How long each uncontended subject runs before the next one takes its turn. */
    private static final Duration SLICE = Duration.ofMillis(50);

    /**
     * Measures the subjects in interleaved slices (warm-up first, then each subject in turn for 50 ms,
     * over and over), so that drift of a shared 2-core machine hits all of them alike and the ratios hold.
     */
    List<Result> uncontendedRounds(List<Subject> subjects) throws Exception {
        try {
            for (Subject subject : subjects) {
                long warmupEnd = System.nanoTime() + options.warmup().toNanos();
                while (System.nanoTime() < warmupEnd) {
                    subject.op().run();
                }
            }
            List<Histogram> latencies = new ArrayList<>();
            long[] counts = new long[subjects.size()];
            long[] nanos = new long[subjects.size()];
            for (int i = 0; i < subjects.size(); i++) {
                latencies.add(new Histogram(TimeUnit.SECONDS.toNanos(60), 3));
            }
            // Many short slices rather than a few long ones: a shared machine's disk and CPU drift
            // within seconds (commit latency was seen to double for a second at a time), and only
            // fine interleaving lets every subject see the same mix of good and bad moments.
            int rounds = (int) Math.max(3, options.measure().toNanos() / SLICE.toNanos());
            long slice = options.measure().toNanos() / rounds;
            for (int round = 0; round < rounds; round++) {
                for (int i = 0; i < subjects.size(); i++) {
                    Histogram latency = latencies.get(i);
                    long start = System.nanoTime();
                    long now = start;
                    while (now - start < slice) {
                        subjects.get(i).op().run();
                        long after = System.nanoTime();
                        latency.recordValue(Math.min(after - now, latency.getHighestTrackableValue()));
                        now = after;
                        counts[i]++;
                    }
                    nanos[i] += now - start;
                }
            }
            List<Result> results = new ArrayList<>();
            for (int i = 0; i < subjects.size(); i++) {
                results.add(new Result("uncontended", subjects.get(i).system(), counts[i] / seconds(nanos[i]),
                        micros(latencies.get(i), 50), micros(latencies.get(i), 99), null,
                        rounds + " interleaved slices"));
            }
            return results;
        } finally {
            for (Subject subject : subjects) {
                subject.resources().close();
            }
        }
    }

    /** A lock system as an uncontended subject: take and release one free key. */
    static Subject subject(LockSystem system) {
        return new Subject(system.name(), () -> {
            LockSystem.Held held = system.tryLock("uncontended");
            if (held == null) {
                throw new IllegalStateException(system.name() + " could not take a free lock");
            }
            held.release();
        }, system);
    }

    /** The floor for advisory locks: two SELECT 1 round trips on one pinned connection. */
    Subject baselineReadSubject() throws SQLException {
        HikariDataSource pool = systems.pool(systems.applicationName("baseline-read"), 1);
        Connection c = pool.getConnection();
        PreparedStatement ps = c.prepareStatement("SELECT 1");
        return new Subject("baseline-read", () -> {
            ps.executeQuery().close();
            ps.executeQuery().close();
        }, () -> {
            c.close();
            pool.close();
        });
    }

    /** The floor for a lock that writes a row: one autocommitted INSERT and one DELETE, default commit settings. */
    Subject baselineWriteSubject(String run) throws SQLException {
        String table = "bench_plain_" + run;
        HikariDataSource pool = systems.pool(systems.applicationName("baseline-write"), 1);
        Systems.execute(pool, "CREATE TABLE " + table + " (id bigint PRIMARY KEY, owner text NOT NULL)");
        Connection c = pool.getConnection();
        PreparedStatement insert = c.prepareStatement("INSERT INTO " + table + " VALUES (1, 'me')");
        PreparedStatement delete = c.prepareStatement("DELETE FROM " + table + " WHERE id = 1");
        return new Subject("baseline-write", () -> {
            insert.executeUpdate();
            delete.executeUpdate();
        }, () -> {
            c.close();
            Systems.execute(pool, "DROP TABLE " + table);
            pool.close();
        });
    }

    // ---- 2. parallel: several threads of one client on distinct keys ------------------------------

    Result parallel(LockSystem system) throws Exception {
        try (system) {
            List<Callable<long[]>> workers = new ArrayList<>();
            Histogram latency = new Histogram(TimeUnit.SECONDS.toNanos(60), 3);
            for (int t = 0; t < options.threads(); t++) {
                String key = "parallel-" + t;
                workers.add(() -> {
                    Histogram mine = new Histogram(TimeUnit.SECONDS.toNanos(60), 3);
                    long warmupEnd = System.nanoTime() + options.warmup().toNanos();
                    long end = warmupEnd + options.measure().toNanos();
                    long count = 0;
                    while (true) {
                        long before = System.nanoTime();
                        if (before >= end) {
                            break;
                        }
                        LockSystem.Held held = system.tryLock(key);
                        if (held == null) {
                            throw new IllegalStateException(system.name() + " could not take its own free key");
                        }
                        held.release();
                        if (before >= warmupEnd) {
                            mine.recordValue(Math.min(System.nanoTime() - before, mine.getHighestTrackableValue()));
                            count++;
                        }
                    }
                    synchronized (latency) {
                        latency.add(mine);
                    }
                    return new long[] {count};
                });
            }
            long total = 0;
            for (long[] count : runAll(workers)) {
                total += count[0];
            }
            return new Result("parallel", system.name(), total / seconds(options.measure().toNanos()),
                    micros(latency, 50), micros(latency, 99), null, options.threads() + " threads, distinct keys");
        }
    }

    // ---- 3. handoff: threads (one client each, like replicas) waiting for one key ------------------

    interface Factory {
        LockSystem create(int index) throws Exception;
    }

    Result handoff(String name, Factory factory) throws Exception {
        List<LockSystem> clients = new ArrayList<>();
        try {
            for (int t = 0; t < options.threads(); t++) {
                clients.add(factory.create(t));
            }
            if (!clients.get(0).canWait()) {
                return Result.skipped("handoff", name, name + " never waits: a caller that finds the lock taken"
                        + " gives up at once, so there is no hand-off to measure");
            }
            AtomicLong lastRelease = new AtomicLong();
            AtomicLong lastHolder = new AtomicLong(-1);
            Histogram delays = new Histogram(TimeUnit.SECONDS.toNanos(60), 3);
            long warmupEnd = System.nanoTime() + options.warmup().toNanos();
            long end = warmupEnd + options.measure().toNanos();
            List<Callable<long[]>> workers = new ArrayList<>();
            for (int index = 0; index < clients.size(); index++) {
                LockSystem client = clients.get(index);
                long me = index;
                workers.add(() -> {
                    long handoffs = 0;
                    while (System.nanoTime() < end) {
                        LockSystem.Held held = client.lock("handoff", WAIT);
                        if (held == null) {
                            continue;
                        }
                        long started = System.nanoTime();
                        long released = lastRelease.get();
                        // Only a change of holder is a hand-off: a client re-taking the lock it just
                        // released (unfair systems do) hands nothing over.
                        boolean handedOver = lastHolder.getAndSet(me) != me;
                        if (handedOver && started >= warmupEnd && started < end && released != 0) {
                            synchronized (delays) {
                                delays.recordValue(Math.min(started - released, delays.getHighestTrackableValue()));
                            }
                            handoffs++;
                        }
                        lastRelease.set(System.nanoTime());
                        held.release();
                        // Step back until another client has the lock (or 200 ms pass): what is measured is
                        // how fast a release reaches a waiter, not how fast a releaser can take it back.
                        long stepBackUntil = System.nanoTime() + TimeUnit.MILLISECONDS.toNanos(200);
                        while (lastHolder.get() == me && System.nanoTime() < stepBackUntil) {
                            java.util.concurrent.locks.LockSupport.parkNanos(20_000);
                        }
                    }
                    return new long[] {handoffs};
                });
            }
            long total = 0;
            for (long[] count : runAll(workers)) {
                total += count[0];
            }
            return new Result("handoff", name, total / seconds(options.measure().toNanos()), micros(delays, 50),
                    micros(delays, 99), null, options.threads() + " clients waiting for one key; ops/s are hand-offs"
                            + " to another client per second, latencies the delay from release to the next holder");
        } finally {
            for (LockSystem client : clients) {
                client.close();
            }
        }
    }

    // ---- 4. held-many: one client holds many distinct keys ------------------------------------------

    Result heldMany(LockSystem system, String applicationName) throws Exception {
        try (system) {
            List<LockSystem.Held> held = new ArrayList<>();
            long start = System.nanoTime();
            String note = null;
            try {
                for (int i = 0; i < options.heldMany(); i++) {
                    LockSystem.Held h = system.tryLock("many-" + i);
                    if (h == null) {
                        throw new IllegalStateException("key many-" + i + " was taken");
                    }
                    held.add(h);
                }
            } catch (Exception e) {
                note = "gave up after " + held.size() + " of " + options.heldMany() + " locks: " + firstLine(e);
            }
            long elapsed = System.nanoTime() - start;
            int connections = connections(applicationName);
            for (LockSystem.Held h : held) {
                h.release();
            }
            return new Result("held-many", system.name(), held.size() / seconds(elapsed), null, null, connections,
                    note != null ? note : held.size() + " locks held at once, acquired in "
                            + TimeUnit.NANOSECONDS.toMillis(elapsed) + " ms; connections from pg_stat_activity");
        }
    }

    private int connections(String applicationName) throws SQLException {
        try (Connection c = db.connect(); PreparedStatement ps = c.prepareStatement(
                "SELECT count(*) FROM pg_stat_activity WHERE application_name = ?")) {
            ps.setString(1, applicationName);
            try (ResultSet rs = ps.executeQuery()) {
                rs.next();
                return rs.getInt(1);
            }
        }
    }

    // ---- 5. takeover: a holder dies; how long until another client holds the lock -----------------

    /** The holder's backend is terminated (advisory locks end with their session). */
    Result takeoverByTermination(LockSystem holder, String holderApplication, LockSystem taker) throws Exception {
        try (holder; taker) {
            if (holder.tryLock("takeover") == null) {
                throw new IllegalStateException("the holder could not take the lock");
            }
            ExecutorService pool = Executors.newSingleThreadExecutor();
            try {
                CountDownLatch waiting = new CountDownLatch(1);
                Future<Long> taken = pool.submit(() -> {
                    waiting.countDown();
                    LockSystem.Held held = taker.lock("takeover", WAIT);
                    long at = System.nanoTime();
                    if (held != null) {
                        held.release();
                    }
                    return held == null ? -1 : at;
                });
                waiting.await();
                long died = terminate(holderApplication);
                long at = taken.get(WAIT.toSeconds() + 10, TimeUnit.SECONDS);
                return takeover(taker.name(), at < 0 ? -1 : at - died, "holder's backend terminated");
            } finally {
                pool.shutdownNow();
            }
        }
    }

    private long terminate(String applicationName) throws SQLException {
        try (Connection c = db.connect(); PreparedStatement ps = c.prepareStatement(
                "SELECT count(pg_terminate_backend(pid)) FROM pg_stat_activity WHERE application_name = ?")) {
            ps.setString(1, applicationName);
            long at = System.nanoTime();
            ps.executeQuery().close();
            return at;
        }
    }

    /** pglock lease: the holder's heartbeats stop reaching the database (a partition or a dead process). */
    Result takeoverLease() throws Exception {
        try (TcpProxy proxy = TcpProxy.forJdbcUrl(db.jdbcUrl())) {
            LockSystem holder = systems.pglockLease("lease-holder", systems.pool(proxy.jdbcUrl(db.jdbcUrl()),
                    systems.applicationName("lease-holder"), 4), options.takeoverLease(), options.takeoverHeartbeat());
            LockSystem taker = systems.pglockLease("lease-taker", options.takeoverLease(), options.takeoverHeartbeat());
            try (taker) {
                if (holder.tryLock("takeover") == null) {
                    throw new IllegalStateException("the holder could not take the lock");
                }
                proxy.setPaused(true);
                long died = System.nanoTime();
                LockSystem.Held held = taker.lock("takeover", WAIT);
                long at = System.nanoTime();
                held.release();
                return takeover(taker.name(), at - died, "holder stopped renewing; lease "
                        + options.takeoverLease().toMillis() + " ms, heartbeat " + options.takeoverHeartbeat().toMillis()
                        + " ms");
            } finally {
                proxy.setPaused(false);
                holder.close();
            }
        }
    }

    /** A holder that takes the lock and is never heard of again (no release, no renewal). */
    Result takeoverByExpiry(LockSystem holder, LockSystem taker, String note) throws Exception {
        try (holder; taker) {
            if (holder.tryLock("takeover") == null) {
                throw new IllegalStateException("the holder could not take the lock");
            }
            long died = System.nanoTime();
            LockSystem.Held held = null;
            while (held == null && System.nanoTime() - died < WAIT.toNanos()) {
                held = taker.canWait() ? taker.lock("takeover", WAIT) : taker.tryLock("takeover");
                if (held == null && !taker.canWait()) {
                    Thread.sleep(10); // ShedLock cannot wait: poll as a scheduler would
                }
            }
            long at = System.nanoTime();
            if (held != null) {
                held.release();
            }
            return takeover(taker.name(), held == null ? -1 : at - died, note);
        }
    }

    private static Result takeover(String system, long nanos, String note) {
        if (nanos < 0) {
            return Result.skipped("takeover", system, "no takeover within " + WAIT.toSeconds() + " s: " + note);
        }
        double micros = nanos / 1000.0;
        return new Result("takeover", system, null, micros, micros, null,
                "took over after " + Math.round(micros / 1000) + " ms; " + note);
    }

    // ---- helpers ------------------------------------------------------------------------------------

    private static <T> List<T> runAll(List<Callable<T>> tasks) throws Exception {
        ExecutorService pool = Executors.newFixedThreadPool(tasks.size());
        try {
            List<T> results = new ArrayList<>();
            for (Future<T> future : pool.invokeAll(tasks)) {
                results.add(future.get());
            }
            return results;
        } finally {
            pool.shutdownNow();
        }
    }

    private static double seconds(long nanos) {
        return nanos / 1e9;
    }

    private static Double micros(Histogram histogram, double percentile) {
        return histogram.getTotalCount() == 0 ? null : histogram.getValueAtPercentile(percentile) / 1000.0;
    }

    private static String firstLine(Exception e) {
        String message = String.valueOf(e.getMessage());
        int newline = message.indexOf('\n');
        return newline < 0 ? message : message.substring(0, newline);
    }
}
