package dev.pglock.benchmarks;

import com.zaxxer.hikari.HikariDataSource;
import dev.pglock.core.LockClient;
import dev.pglock.core.LockRequest;
import dev.pglock.core.PgLock;
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

    /**
     * How long and how much.
     *
     * @param heldLease locks the lease client holds at once in held-N
     * @param heldAdvisory locks the advisory client holds at once (PostgreSQL's shared lock table bounds it)
     * @param handoffClients the client counts of the handoff-N scenarios
     * @param holdMillis how long each holder works in handoff-N before it releases
     * @param heldHeartbeat the heartbeat interval of the clients in held-N (lease: four times as long)
     */
    record Options(Duration warmup, Duration measure, int heldLease, int heldAdvisory, int threads,
            List<Integer> handoffClients, long holdMillis, Duration heldHeartbeat, Duration takeoverLease,
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
            Exception failed = null;
            for (Subject subject : subjects) {
                try {
                    subject.resources().close();
                } catch (Exception e) { // the others are closed all the same
                    if (failed == null) {
                        failed = e;
                    } else {
                        failed.addSuppressed(e);
                    }
                }
            }
            if (failed != null) {
                throw failed;
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

    /**
     * The floor row {@code baseline-write-after-work} of a hand-off: baseline-write's INSERT and DELETE
     * on a pinned connection, each pair made after the holder's work (a park of {@code --hold-ms}, as a
     * hand-off's holders work), timed from the INSERT's call to the DELETE's return. A hand-off of a
     * lock that lives in a row commits twice, the release after the holder's work and the claim after
     * the waiter woke; here the second commit follows the first at once, so this is less than those two
     * cost. Back to back (baseline-write, the lease hand-off target's measure) the same pair is cheaper:
     * on the VMs here a commit after an idle 10 ms took about twice as long.
     */
    Result writeAfterWork(String scenario, String run) throws SQLException {
        String table = "bench_afterwork_" + run;
        Histogram took = new Histogram(3);
        try (HikariDataSource pool = systems.pool(systems.applicationName("baseline-write-after-work"), 1)) {
            Systems.execute(pool, "CREATE TABLE " + table + " (id bigint PRIMARY KEY, owner text NOT NULL)");
            try (Connection c = pool.getConnection();
                    PreparedStatement insert = c.prepareStatement("INSERT INTO " + table + " VALUES (1, 'me')");
                    PreparedStatement delete = c.prepareStatement("DELETE FROM " + table + " WHERE id = 1")) {
                long holdNanos = TimeUnit.MILLISECONDS.toNanos(options.holdMillis());
                for (int i = 0; i < 20; i++) { // warm-up: statements prepared server-side, code compiled
                    insert.executeUpdate();
                    delete.executeUpdate();
                }
                long end = System.nanoTime() + handoffMeasure().toNanos();
                while (System.nanoTime() < end) {
                    java.util.concurrent.locks.LockSupport.parkNanos(holdNanos);
                    long start = System.nanoTime();
                    insert.executeUpdate();
                    delete.executeUpdate();
                    took.recordValue(System.nanoTime() - start);
                }
            } finally {
                Systems.execute(pool, "DROP TABLE " + table);
            }
        }
        if (took.getTotalCount() == 0) {
            return Result.skipped(scenario, "baseline-write-after-work", "no pair was timed while measured");
        }
        return new Result(scenario, "baseline-write-after-work", null, took.getValueAtPercentile(50) / 1e3,
                took.getValueAtPercentile(99) / 1e3, null, "baseline-write's INSERT and DELETE, each pair after "
                        + options.holdMillis() + " ms of the holder's work; " + took.getTotalCount() + " pairs");
    }

    /**
     * The lease client's own SQL without the client: the statements of one tryAcquire + release of a
     * free key, recorded from a real lease client (its default settings, its own table), then run again
     * with the same parameters on one pinned connection, as baseline-write runs its INSERT and DELETE.
     * The same holder entry each time is the same work: the row is free again after each release.
     */
    Subject baselineLeaseSqlSubject(String run) throws SQLException {
        String table = "bench_leasesql_" + run;
        HikariDataSource pool = systems.pool(systems.applicationName("baseline-lease-sql"), 2);
        AutoCloseable cleanUp = () -> {
            try {
                dropLeaseTable(pool, table);
            } finally {
                pool.close();
            }
        };
        try {
            SqlRecorder recorder = new SqlRecorder();
            List<SqlRecorder.Recorded> pair;
            try (LockClient client = PgLock.lease(recorder.wrap(pool)).tableName(table).namespace(run)
                    .lease(Duration.ofSeconds(30)).heartbeatInterval(Duration.ofSeconds(5)).build()) {
                client.tryAcquire(LockRequest.of("warm")).orElseThrow().release();
                recorder.start();
                client.tryAcquire(LockRequest.of("uncontended")).orElseThrow().release();
                pair = recorder.stop();
            }
            if (pair.size() != 2) {
                throw new IllegalStateException("expected the lease client to run one acquire and one release statement"
                        + " for a free key, recorded " + pair.size());
            }
            Connection c = pool.getConnection();
            List<PreparedStatement> statements = new ArrayList<>();
            for (SqlRecorder.Recorded recorded : pair) {
                statements.add(recorded.prepare(c));
            }
            return new Subject("baseline-lease-sql", () -> {
                for (int i = 0; i < statements.size(); i++) {
                    PreparedStatement ps = statements.get(i);
                    if (ps.execute()) {
                        try (ResultSet rs = ps.getResultSet()) {
                            if (!rs.next() && i == 0) {
                                throw new IllegalStateException("the recorded acquisition found the key taken");
                            }
                        }
                    }
                }
            }, () -> {
                try {
                    c.close();
                } finally {
                    cleanUp.close();
                }
            });
        } catch (SQLException | RuntimeException e) {
            try {
                cleanUp.close();
            } catch (Exception suppressed) {
                e.addSuppressed(suppressed);
            }
            throw e;
        }
    }

    /**
     * The advisory client's own SQL without the client: the two statements of one tryAcquire + release
     * of a free key (a try and an unlock, each checking that the backend is the lock session's),
     * recorded from a real advisory client, then run again with the same parameters on one pinned
     * connection that carries the same session token, so the try takes the lock as the client's does.
     */
    Subject baselineAdvisorySqlSubject(String run) throws SQLException {
        HikariDataSource pool = systems.pool(systems.applicationName("baseline-advisory-sql"), 2);
        try {
            SqlRecorder recorder = new SqlRecorder();
            List<SqlRecorder.Recorded> pair;
            try (LockClient client = PgLock.advisory(recorder.wrap(pool)).namespace("sql-" + run).build()) {
                client.tryAcquire(LockRequest.of("warm")).orElseThrow().release();
                recorder.start();
                client.tryAcquire(LockRequest.of("uncontended")).orElseThrow().release();
                pair = recorder.stop();
            }
            if (pair.size() != 2 || !pair.get(0).sql().contains("pglock.session")) {
                throw new IllegalStateException("expected the advisory client to run one try and one unlock statement"
                        + " for a free key on its lock session, recorded " + pair);
            }
            Object token = pair.get(0).parameters().stream().filter(p -> p.method().getName().equals("setString"))
                    .findFirst().orElseThrow(() -> new IllegalStateException("no session token in " + pair.get(0)))
                    .args()[1];
            Connection c = pool.getConnection();
            try (PreparedStatement claim = c.prepareStatement("SELECT set_config('pglock.session', ?, false)")) {
                claim.setString(1, (String) token);
                claim.executeQuery().close();
            }
            List<PreparedStatement> statements = new ArrayList<>();
            for (SqlRecorder.Recorded recorded : pair) {
                statements.add(recorded.prepare(c));
            }
            return new Subject("baseline-advisory-sql", () -> {
                for (int i = 0; i < statements.size(); i++) {
                    try (ResultSet rs = statements.get(i).executeQuery()) {
                        if (!rs.next() || !rs.getBoolean(1)) {
                            throw new IllegalStateException("the recorded " + (i == 0 ? "try" : "unlock") + " did not"
                                    + " succeed on the replaying connection");
                        }
                    }
                }
            }, () -> {
                try {
                    c.close();
                } finally {
                    pool.close();
                }
            });
        } catch (SQLException | RuntimeException e) {
            pool.close();
            throw e;
        }
    }

    // ---- 2. parallel: several threads of one client on distinct keys ------------------------------

    /** The floor for parallel row locks: each thread INSERTs and DELETEs a row of its own on a pinned connection. */
    LockSystem baselineWriteParallel(String run) throws SQLException {
        String table = "bench_parallel_" + run;
        HikariDataSource pool = systems.pool(systems.applicationName("baseline-write-parallel"), 10);
        Systems.execute(pool, "CREATE TABLE " + table + " (id text PRIMARY KEY, owner text NOT NULL)");
        List<Connection> pinned = new java.util.concurrent.CopyOnWriteArrayList<>();
        ThreadLocal<PreparedStatement[]> statements = ThreadLocal.withInitial(() -> {
            try {
                Connection c = pool.getConnection();
                pinned.add(c);
                return new PreparedStatement[] {c.prepareStatement("INSERT INTO " + table + " VALUES (?, 'me')"),
                        c.prepareStatement("DELETE FROM " + table + " WHERE id = ?")};
            } catch (SQLException e) {
                throw new IllegalStateException(e);
            }
        });
        return new LockSystem() {
            @Override
            public String name() {
                return "baseline-write-parallel";
            }

            @Override
            public Held tryLock(String key) throws SQLException {
                PreparedStatement[] ps = statements.get();
                ps[0].setString(1, key);
                ps[0].executeUpdate();
                return () -> {
                    ps[1].setString(1, key);
                    ps[1].executeUpdate();
                };
            }

            @Override
            public Held lock(String key, Duration wait) throws SQLException {
                return tryLock(key);
            }

            @Override
            public void close() throws SQLException {
                for (Connection c : pinned) {
                    c.close();
                }
                Systems.execute(pool, "DROP TABLE " + table);
                pool.close();
            }
        };
    }

    /** A system in the parallel scenario, with the application name its connections show. */
    record Parallel(LockSystem system, String applicationName) {
    }

    /** How long each system's threads run in the parallel scenario before the next system's turn. */
    private static final Duration PARALLEL_SLICE = Duration.ofMillis(250);

    /**
     * {@link Options#threads} threads of one client, each on a key of its own, acquire and release in
     * a loop. The systems take turns in 250 ms slices (after a warm-up each), like the uncontended
     * scenario, so that the drift of a shared machine hits them alike; connections are the most the
     * system had borrowed from its pool at once while it ran.
     */
    List<Result> parallel(List<Parallel> subjects) throws Exception {
        ExecutorService threads = Executors.newFixedThreadPool(options.threads());
        java.util.concurrent.ScheduledExecutorService sampler = Executors.newSingleThreadScheduledExecutor();
        try {
            int n = subjects.size();
            long[] counts = new long[n];
            java.util.concurrent.atomic.AtomicInteger[] most = new java.util.concurrent.atomic.AtomicInteger[n];
            List<Histogram> latencies = new ArrayList<>();
            for (int i = 0; i < n; i++) {
                latencies.add(new Histogram(TimeUnit.SECONDS.toNanos(60), 3));
                most[i] = new java.util.concurrent.atomic.AtomicInteger();
                runSlice(threads, subjects.get(i).system(), options.warmup(), null); // warm-up, not counted
            }
            int rounds = (int) Math.max(2, options.measure().toNanos() / PARALLEL_SLICE.toNanos());
            Duration slice = options.measure().dividedBy(rounds);
            java.util.concurrent.atomic.AtomicInteger running = new java.util.concurrent.atomic.AtomicInteger(-1);
            sampler.scheduleWithFixedDelay(() -> {
                int i = running.get();
                if (i >= 0) {
                    try {
                        most[i].accumulateAndGet(connections(subjects.get(i).applicationName()), Math::max);
                    } catch (SQLException e) {
                        // a missed sample
                    }
                }
            }, 0, 50, TimeUnit.MILLISECONDS);
            for (int round = 0; round < rounds; round++) {
                for (int i = 0; i < n; i++) {
                    running.set(i);
                    counts[i] += runSlice(threads, subjects.get(i).system(), slice, latencies.get(i));
                    running.set(-1);
                }
            }
            List<Result> results = new ArrayList<>();
            for (int i = 0; i < n; i++) {
                results.add(new Result("parallel", subjects.get(i).system().name(),
                        counts[i] / seconds(options.measure().toNanos()), micros(latencies.get(i), 50),
                        micros(latencies.get(i), 99), most[i].get(), options.threads() + " threads of one client,"
                                + " distinct keys, " + rounds + " interleaved slices; connections: the most borrowed from"
                                + " its pool at once", options.threads(), null));
            }
            return results;
        } finally {
            sampler.shutdownNow();
            threads.shutdownNow();
            for (Parallel subject : subjects) {
                subject.system().close();
            }
        }
    }

    /** Runs the threads on {@code system} for {@code length}; returns the operations they completed. */
    private long runSlice(ExecutorService threads, LockSystem system, Duration length, Histogram latency)
            throws Exception {
        long end = System.nanoTime() + length.toNanos();
        List<Callable<Long>> workers = new ArrayList<>();
        for (int t = 0; t < options.threads(); t++) {
            String key = "parallel-" + t;
            workers.add(() -> {
                Histogram mine = new Histogram(TimeUnit.SECONDS.toNanos(60), 3);
                long count = 0;
                long before;
                while ((before = System.nanoTime()) < end) {
                    LockSystem.Held held = system.tryLock(key);
                    if (held == null) {
                        throw new IllegalStateException(system.name() + " could not take its own free key");
                    }
                    held.release();
                    mine.recordValue(Math.min(System.nanoTime() - before, mine.getHighestTrackableValue()));
                    count++;
                }
                if (latency != null) {
                    synchronized (latency) {
                        latency.add(mine);
                    }
                }
                return count;
            });
        }
        long total = 0;
        for (Future<Long> done : threads.invokeAll(workers)) {
            total += done.get();
        }
        return total;
    }

    // ---- 3. handoff: threads (one client each, like replicas) waiting for one key ------------------

    interface Factory {
        LockSystem create(int index) throws Exception;
    }

    /** How long each system runs in a handoff-N scenario: 40% of the measurement time. */
    Duration handoffMeasure() {
        return options.measure().multipliedBy(2).dividedBy(5);
    }

    /** What a hand-off row's numbers are. */
    private String handoffNote(int clients) {
        return clients + " clients waiting for one key, each holder working " + options.holdMillis() + " ms; ops/s are"
                + " hand-offs to another client per second, latencies the delay from release to the next holder";
    }

    /** A system in an interleaved hand-off: its name and how each of its clients is made. */
    record Contender(String name, Factory factory) {
    }

    /** How long each contender of an interleaved hand-off has the key before the next one's turn. */
    private static final Duration HANDOFF_SLICE = Duration.ofMillis(200);

    /**
     * {@link #handoff} for several systems at once, taking turns: every contender's {@code clients}
     * clients are made first, then the contenders wait for the key in turn for 200 ms each, over and
     * over, so that the drift of a shared 2-core machine (one system's hand-off p50 was seen to move by
     * a factor of two between runs a minute apart) hits them alike, and their ratios hold. Between two
     * turns every client of the last contender lets go (the waiters left take the key and release it at
     * once, not counted) before the next contender starts, every other round in reverse order. Hand-offs are counted from two holds (and 5 ms) into a turn, about when its third
     * holder starts and every client of it waits. Ops/s: hand-offs per second of counted time.
     */
    List<Result> handoffRounds(int clients, List<Contender> contenders) throws Exception {
        String scenario = "handoff-" + clients;
        int n = contenders.size();
        List<List<LockSystem>> started = new ArrayList<>();
        ExecutorService threads = Executors.newFixedThreadPool(n * clients);
        try {
            for (Contender contender : contenders) {
                List<LockSystem> its = new ArrayList<>();
                started.add(its);
                for (int t = 0; t < clients; t++) {
                    its.add(contender.factory().create(t));
                }
            }
            Turns turns = new Turns(n);
            long holdNanos = TimeUnit.MILLISECONDS.toNanos(options.holdMillis());
            List<Future<?>> workers = new ArrayList<>();
            for (int k = 0; k < n; k++) {
                for (int index = 0; index < clients; index++) {
                    int contender = k;
                    long me = index;
                    LockSystem client = started.get(k).get(index);
                    workers.add(threads.submit(() -> {
                        while (turns.enter(contender)) {
                            try {
                                turns.take(contender, me, client);
                            } finally {
                                turns.leave(contender);
                            }
                        }
                        return null;
                    }));
                }
            }
            // A warm-up turn each (statements prepared, sessions open), longer with more clients. Its
            // holders do not work: with a 10 ms hold a turn ran some fifty hand-offs, too few for the JIT
            // to compile a system's waiting and releasing code, which then ran partly interpreted in the
            // measured turns, as it no longer does in a service that has run for a while. Measured with
            // the thread's CPU clock, pglock's own code on each side of a hand-off took 52 - 58 µs before
            // this warm-up and 31 - 40 after it (2 - 4 µs with no hold, when its caches stay warm).
            Duration warmup = options.warmup().multipliedBy(Math.max(1, clients / 8));
            turns.holdNanos = 0;
            for (int k = 0; k < n; k++) {
                turns.run(k, warmup, Long.MAX_VALUE, workers);
            }
            turns.holdNanos = holdNanos;
            Duration measure = clients >= 32 ? handoffMeasure().multipliedBy(3).dividedBy(4) : handoffMeasure();
            int rounds = (int) Math.max(2, measure.toNanos() / HANDOFF_SLICE.toNanos());
            Duration slice = measure.dividedBy(rounds);
            // Counted from two holds (and 5 ms) into a turn, about when the third holder starts: by then
            // every client of the turn waits in line.
            long lead = 2 * holdNanos + TimeUnit.MILLISECONDS.toNanos(5);
            for (int round = 0; round < rounds; round++) {
                for (int i = 0; i < n; i++) {
                    // Every other round in reverse order, so a system follows a different one in turn.
                    int k = round % 2 == 0 ? i : n - 1 - i;
                    turns.run(k, slice.plusNanos(lead), lead, workers);
                }
            }
            turns.finish();
            for (Future<?> worker : workers) {
                worker.get(WAIT.toSeconds() * 2, TimeUnit.SECONDS);
            }
            List<Result> results = new ArrayList<>();
            for (int k = 0; k < n; k++) {
                Handoffs measured = turns.handoffs[k];
                results.add(new Result(scenario, contenders.get(k).name(), measured.count.get() / seconds(turns.counted[k]),
                        micros(measured.delays, 50), micros(measured.delays, 99), null, handoffNote(clients) + "; " + rounds
                                + " turns of " + slice.toMillis() + " ms interleaved with " + (n - 1) + " other system(s)",
                        clients, null));
            }
            return results;
        } finally {
            threads.shutdownNow();
            for (List<LockSystem> its : started) {
                for (LockSystem client : its) {
                    client.close(); // ends a wait that a failed scenario left behind
                }
            }
            threads.awaitTermination(WAIT.toSeconds(), TimeUnit.SECONDS);
        }
    }

    /** One system's hand-offs: who held the key last and since when, and what was counted. */
    private static final class Handoffs {
        final AtomicLong lastRelease = new AtomicLong();
        final AtomicLong lastHolder = new AtomicLong(-1);
        final AtomicLong count = new AtomicLong();
        final Histogram delays = new Histogram(TimeUnit.SECONDS.toNanos(60), 3);

        /** Nobody has held the key yet: the next holder's start is no hand-off. */
        void reset() {
            lastRelease.set(0);
            lastHolder.set(-1);
        }

        /**
         * Client {@code me} takes the key, works {@code holdNanos} and releases it, then steps back
         * until another client holds it. A change of holder that starts within [from, until) is
         * counted. While {@code on} is false the key is released at once, uncounted, and nobody steps back.
         */
        void take(LockSystem client, long me, long holdNanos, long from, long until,
                java.util.function.BooleanSupplier on) throws Exception {
            LockSystem.Held held = client.lock("handoff", WAIT);
            if (held == null) {
                return;
            }
            long heldFrom = System.nanoTime();
            if (!on.getAsBoolean()) {
                held.release(); // let the other waiters through, uncounted
                return;
            }
            long released = lastRelease.get();
            // Only a change of holder is a hand-off: a client re-taking the lock it just released
            // (unfair systems do) hands nothing over.
            boolean handedOver = lastHolder.getAndSet(me) != me;
            if (handedOver && released != 0 && heldFrom >= from && heldFrom < until) {
                synchronized (delays) {
                    delays.recordValue(Math.min(heldFrom - released, delays.getHighestTrackableValue()));
                }
                count.incrementAndGet();
            }
            // The holder's work: the lock is held while it runs, as in a real service.
            java.util.concurrent.locks.LockSupport.parkNanos(holdNanos);
            lastRelease.set(System.nanoTime());
            held.release();
            // Step back until another client has the lock (or 200 ms pass): what is measured is how
            // fast a release reaches a waiter, not how fast a releaser can take it back.
            long stepBackUntil = System.nanoTime() + TimeUnit.MILLISECONDS.toNanos(200);
            while (lastHolder.get() == me && System.nanoTime() < stepBackUntil && on.getAsBoolean()) {
                java.util.concurrent.locks.LockSupport.parkNanos(20_000);
            }
        }
    }

    /** Whose turn it is in {@link #handoffRounds}, and what each contender's turns measured. */
    private static final class Turns {
        private final Object gate = new Object();
        /** How long a holder works: none in the warm-up turns. */
        volatile long holdNanos;
        private int active = -1; // guarded by gate
        private boolean over; // guarded by gate
        private volatile long countFrom;
        private volatile long countUntil;
        private final java.util.concurrent.atomic.AtomicInteger[] inside;
        private final Handoffs[] handoffs;
        private final long[] counted;

        Turns(int n) {
            inside = new java.util.concurrent.atomic.AtomicInteger[n];
            handoffs = new Handoffs[n];
            counted = new long[n];
            for (int k = 0; k < n; k++) {
                inside[k] = new java.util.concurrent.atomic.AtomicInteger();
                handoffs[k] = new Handoffs();
            }
        }

        /** Waits for the contender's turn; false once the scenario is over. Counted inside until leave(). */
        boolean enter(int k) throws InterruptedException {
            synchronized (gate) {
                while (!over && active != k) {
                    gate.wait();
                }
                if (over) {
                    return false;
                }
                inside[k].incrementAndGet(); // under the gate: once the turn moved on, nobody of k comes in
                return true;
            }
        }

        void leave(int k) {
            inside[k].decrementAndGet();
        }

        private boolean isTurnOf(int k) {
            synchronized (gate) {
                return active == k && !over;
            }
        }

        /** One lock, work and release by a client of contender k, as in handoff(); at once after its turn. */
        void take(int k, long me, LockSystem client) throws Exception {
            // The window is the turn's: run() sets it before the turn starts and not again until every
            // client of it has let go.
            handoffs[k].take(client, me, holdNanos, countFrom, countUntil, () -> isTurnOf(k));
        }

        /**
         * Gives contender k a turn of {@code length}, counting hand-offs after {@code lead} (none with
         * Long.MAX_VALUE), then waits until every client of it has let go.
         */
        void run(int k, Duration length, long lead, List<Future<?>> workers) throws Exception {
            failed(workers);
            long start = System.nanoTime();
            long end = start + length.toNanos();
            handoffs[k].reset();
            countFrom = lead == Long.MAX_VALUE ? Long.MAX_VALUE : start + lead;
            countUntil = end;
            synchronized (gate) {
                active = k;
                gate.notifyAll();
            }
            long left;
            while ((left = end - System.nanoTime()) > 0) {
                TimeUnit.NANOSECONDS.sleep(left); // the turn's length: a time, not a synchronisation
            }
            synchronized (gate) {
                active = -1;
            }
            if (lead != Long.MAX_VALUE) {
                counted[k] += end - (start + lead);
            }
            long giveUp = System.nanoTime() + WAIT.toNanos();
            while (inside[k].get() > 0) { // the last holder works, then the waiters pass the key on
                failed(workers);
                if (System.nanoTime() > giveUp) {
                    throw new IllegalStateException("the clients of a hand-off did not let go within " + WAIT);
                }
                java.util.concurrent.locks.LockSupport.parkNanos(100_000);
            }
        }

        /** Throws what a client that stopped failed with: its exception ends the scenario. */
        private static void failed(List<Future<?>> workers) throws Exception {
            for (Future<?> worker : workers) {
                if (worker.isDone()) {
                    worker.get();
                }
            }
        }

        void finish() {
            synchronized (gate) {
                over = true;
                gate.notifyAll();
            }
        }
    }

    /**
     * {@code clients} clients, each with a pool of its own like a replica, wait for one key; each
     * holder works {@code holdMillis} before it releases, then steps back until another client holds
     * the key. Latencies are release-to-next-holder delays, ops/s hand-offs to another client per second.
     */
    Result handoff(String name, int clients, Factory factory) throws Exception {
        String scenario = "handoff-" + clients;
        List<LockSystem> started = new ArrayList<>();
        try {
            for (int t = 0; t < clients; t++) {
                started.add(factory.create(t));
            }
            if (!started.get(0).canWait()) {
                return Result.skipped(scenario, name, name + " never waits: a caller that finds the lock taken"
                        + " gives up at once, so there is no hand-off to measure");
            }
            Handoffs handoffs = new Handoffs();
            // Less than the usual time: a hand-off takes about 11 ms, so each second measured still gives
            // ~90 samples, and five systems at three client counts keep the default run short.
            // The warm-up grows with the clients: each must have taken the lock a few times (statements
            // prepared, LISTEN registered) before anything counts; with 32 clients a short warm-up
            // measured cold clients and halved the hand-offs per second.
            Duration measure = clients >= 32 ? handoffMeasure().multipliedBy(3).dividedBy(4) : handoffMeasure();
            long warmupEnd = System.nanoTime() + options.warmup().multipliedBy(Math.max(1, clients / 8)).toNanos();
            long end = warmupEnd + measure.toNanos();
            systems.notifyDelivery.measure(warmupEnd, end);
            long holdNanos = TimeUnit.MILLISECONDS.toNanos(options.holdMillis());
            List<Callable<Void>> workers = new ArrayList<>();
            for (int index = 0; index < started.size(); index++) {
                LockSystem client = started.get(index);
                long me = index;
                workers.add(() -> {
                    while (System.nanoTime() < end) {
                        handoffs.take(client, me, holdNanos, warmupEnd, end, () -> true);
                    }
                    return null;
                });
            }
            runAll(workers);
            return new Result(scenario, name, handoffs.count.get() / seconds(measure.toNanos()),
                    micros(handoffs.delays, 50), micros(handoffs.delays, 99), null, handoffNote(clients), clients, null);
        } finally {
            for (LockSystem client : started) {
                client.close();
            }
        }
    }

    // ---- 4. held-N: one client takes many distinct keys and holds them ---------------------------------

    /**
     * One client takes {@code count} keys ({@link Options#threads} threads, each its own range) and
     * holds them for two and a half heartbeats. Reports the time to take them all, the client's heap per held
     * lock (measured after a GC, including the caller's handles), the connections while holding (at
     * the end of the hold, and the most while taking them in the note), and the duration of the
     * client's periodic statement while holding them ({@code timer}: lease heartbeat, advisory
     * session check) as p50/p99.
     */
    Result held(LockSystem system, String applicationName, int count, StatementTimer timer) throws Exception {
        String scenario = "held-" + count;
        try (system) {
            long heapBefore = usedHeap();
            List<LockSystem.Held> held = java.util.Collections.synchronizedList(new ArrayList<>(count));
            java.util.concurrent.atomic.AtomicInteger mostConnections = new java.util.concurrent.atomic.AtomicInteger();
            java.util.concurrent.ScheduledExecutorService sampler = Executors.newSingleThreadScheduledExecutor();
            sampler.scheduleWithFixedDelay(() -> {
                try {
                    mostConnections.accumulateAndGet(connections(applicationName), Math::max);
                } catch (SQLException e) {
                    // a missed sample
                }
            }, 0, 100, TimeUnit.MILLISECONDS);
            long start = System.nanoTime();
            String failure = null;
            try {
                int threads = Math.max(1, Math.min(options.threads(), count));
                List<Callable<Void>> takers = new ArrayList<>();
                for (int t = 0; t < threads; t++) {
                    int first = t;
                    takers.add(() -> {
                        for (int i = first; i < count; i += threads) {
                            LockSystem.Held h = system.tryLock("many-" + i);
                            if (h == null) {
                                throw new IllegalStateException("key many-" + i + " was taken");
                            }
                            held.add(h);
                        }
                        return null;
                    });
                }
                runAll(takers);
            } catch (Exception e) {
                failure = "gave up after " + held.size() + " of " + count + " locks: " + firstLine(e);
            } finally {
                sampler.shutdownNow();
            }
            long elapsed = System.nanoTime() - start;
            if (failure != null) {
                return new Result(scenario, system.name(), held.size() / seconds(elapsed), null, null,
                        mostConnections.get(), failure, 1, null);
            }
            double heapPerLock = (usedHeap() - heapBefore) / (double) count;
            int takingConnections = mostConnections.get();
            // Holding: two and a half heartbeats, so idle sessions are given back (after one idle
            // heartbeat) and the periodic statement runs at least twice.
            timer.reset();
            Thread.sleep(options.heldHeartbeat().multipliedBy(5).dividedBy(2).toMillis());
            int holdingConnections = connections(applicationName);
            Histogram periodic = timer.snapshot();
            return new Result(scenario, system.name(), count / seconds(elapsed), micros(periodic, 50),
                    micros(periodic, 99), holdingConnections, count + " locks taken in "
                            + TimeUnit.NANOSECONDS.toMillis(elapsed) + " ms by " + Math.min(options.threads(), count)
                            + " threads (ops/s: locks taken per second; at most " + takingConnections
                            + " connections while taking them); connections: borrowed from its pool while holding; p50/p99: the "
                            + timer.what() + " while holding (" + periodic.getTotalCount() + " rounds, " + timer.statements()
                            + " statements in all, a round every "
                            + options.heldHeartbeat().toMillis() + " ms)", 1, heapPerLock);
        }
    }

    /** Keys per statement of the floor's renewal: the lease client's heartbeat batch (LeaseLockClient.BATCH). */
    private static final int RENEW_BATCH = 5_000;

    /**
     * The floor of renewing every lease in its row, beside held-N's heartbeat: {@code count} rows of the
     * lease client's own table (created by a client with its DDL, then filled directly with the keys
     * held-N takes, one holder each), renewed by a plain UPDATE of each batch of 5,000 keys in the
     * client's order, two statements at a time on two connections, as the heartbeat runs them, but
     * with no locking pass in key order and no check of who holds a row. One round to warm up, then
     * {@code rounds} rounds; p50/p99: a round, from its first statement's start to its last one's end.
     */
    Result baselineRenew(String run, int count, int rounds) throws Exception {
        String scenario = "held-" + count;
        String table = "bench_renew_" + run;
        HikariDataSource pool = systems.pool(systems.applicationName("baseline-renew"), 2);
        ExecutorService second = Executors.newSingleThreadExecutor();
        try {
            PgLock.lease(pool).tableName(table).namespace(run).build().close(); // the lease table, as the client makes it
            try (Connection c = pool.getConnection(); PreparedStatement ps = c.prepareStatement("INSERT INTO " + table
                    + " (namespace, lock_key, holders, shared, fencing_token, acquired_at, expires_at, lease_millis)"
                    + " SELECT ?, 'many-' || i, ARRAY['baseline-renew#' || i], false, i, now(), now() + interval '1 hour',"
                    + " 3600000 FROM generate_series(0, ? - 1) AS i")) {
                ps.setString(1, run);
                ps.setInt(2, count);
                ps.executeUpdate();
            }
            List<String> keys = new ArrayList<>(count);
            for (int i = 0; i < count; i++) {
                keys.add("many-" + i);
            }
            java.util.Collections.sort(keys);
            List<String[]> batches = new ArrayList<>();
            for (int i = 0; i < count; i += RENEW_BATCH) {
                batches.add(keys.subList(i, Math.min(count, i + RENEW_BATCH)).toArray(String[]::new));
            }
            String update = "UPDATE " + table + " SET expires_at = statement_timestamp() + lease_millis * interval"
                    + " '1 millisecond', record_version = record_version + 1 WHERE namespace = ? AND lock_key = ANY (?)";
            Histogram histogram = new Histogram(TimeUnit.MINUTES.toNanos(1), 3);
            try (Connection a = pool.getConnection(); Connection b = pool.getConnection()) {
                for (int round = 0; round <= rounds; round++) {
                    java.util.concurrent.atomic.AtomicInteger next = new java.util.concurrent.atomic.AtomicInteger();
                    long start = System.nanoTime();
                    Future<Void> other = second.submit(() -> renewBatches(b, update, run, batches, next));
                    renewBatches(a, update, run, batches, next);
                    other.get();
                    if (round > 0) { // the first round warms up
                        histogram.recordValue(System.nanoTime() - start);
                    }
                }
            }
            return new Result(scenario, "baseline-renew", null, micros(histogram, 50), micros(histogram, 99), 2,
                    count + " rows like the lease table's, renewed by a plain UPDATE of " + RENEW_BATCH + " keys per statement,"
                            + " two at a time on two connections, without the heartbeat's locking pass in key order or its"
                            + " holder check: the floor of renewing every lease in its row (p50/p99: a round of "
                            + batches.size() + " statements, " + rounds + " rounds after one to warm up)", 1, null);
        } finally {
            second.shutdownNow();
            try {
                dropLeaseTable(pool, table);
            } finally {
                pool.close();
            }
        }
    }

    /** Renews batches, taking the next one from {@code next}, until none is left. */
    private static Void renewBatches(Connection c, String update, String namespace, List<String[]> batches,
            java.util.concurrent.atomic.AtomicInteger next) throws SQLException {
        try (PreparedStatement ps = c.prepareStatement(update)) {
            for (int i; (i = next.getAndIncrement()) < batches.size(); ) {
                ps.setString(1, namespace);
                ps.setArray(2, c.createArrayOf("text", batches.get(i)));
                ps.executeUpdate();
            }
        }
        return null;
    }

    /** Drops a lease table a subject made, with its fencing sequence. */
    private static void dropLeaseTable(HikariDataSource pool, String table) throws SQLException {
        Systems.execute(pool, "DROP TABLE IF EXISTS " + table + "; DROP SEQUENCE IF EXISTS " + table + "_fencing_seq");
    }

    /** Heap in use after the collector ran (several times, so that finalisation and soft references settle). */
    private static long usedHeap() throws InterruptedException {
        java.lang.management.MemoryMXBean memory = java.lang.management.ManagementFactory.getMemoryMXBean();
        for (int i = 0; i < 3; i++) {
            System.gc();
            Thread.sleep(50);
        }
        return memory.getHeapMemoryUsage().getUsed();
    }

    /** Connections the system has borrowed from its pool now, else (a pool not made here) its backends. */
    private int connections(String applicationName) throws SQLException {
        Integer inUse = systems.connectionsInUse(applicationName);
        if (inUse != null) {
            return inUse;
        }
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
