package dev.pglock.benchmarks;

import com.zaxxer.hikari.HikariConfig;
import com.zaxxer.hikari.HikariDataSource;
import dev.pglock.core.HeldLock;
import dev.pglock.core.LockClient;
import dev.pglock.core.LockRequest;
import dev.pglock.core.PgLock;
import dev.pglock.core.advisory.AdvisoryKeyHasher;
import dev.pglock.core.internal.NotificationPoll;
import dev.pglock.test.PgTestDatabase;
import java.sql.Connection;
import java.sql.PreparedStatement;
import java.sql.ResultSet;
import java.sql.SQLException;
import java.sql.Statement;
import java.time.Duration;
import java.time.Instant;
import java.util.Optional;
import java.util.concurrent.TimeUnit;
import java.util.concurrent.locks.Lock;
import net.javacrumbs.shedlock.core.LockConfiguration;
import net.javacrumbs.shedlock.core.SimpleLock;
import net.javacrumbs.shedlock.provider.jdbctemplate.JdbcTemplateLockProvider;
import org.springframework.integration.jdbc.lock.DefaultLockRepository;
import org.springframework.integration.jdbc.lock.JdbcLockRegistry;
import org.springframework.jdbc.core.JdbcTemplate;
import org.springframework.jdbc.datasource.DataSourceTransactionManager;

/** The systems under comparison, each on a HikariCP pool of its own, named so pg_stat_activity can count it. */
final class Systems {

    /** pglock's lease mode with {@code asyncReleaseCommit(true)}: measured beside the default, never instead of it. */
    static final String LEASE_ASYNC_RELEASE = "pglock-lease-async-release";

    /** The pglock clients' bound on lock sessions: the default unless {@code --lock-sessions} says otherwise. */
    static int lockSessions = dev.pglock.core.advisory.AdvisoryLockClientBuilder.DEFAULT_LOCK_SESSIONS;

    private final PgTestDatabase db;
    private final String run;

    Systems(PgTestDatabase db, String run) {
        this.db = db;
        this.run = run;
    }

    /** A pool whose connections show {@code application_name} in pg_stat_activity; no idle connections kept. */
    HikariDataSource pool(String applicationName, int size) {
        return pool(db.jdbcUrl(), applicationName, size);
    }

    /** Every pool made here, by name (the application name its connections show). */
    private final java.util.Map<String, HikariDataSource> pools = new java.util.concurrent.ConcurrentHashMap<>();

    /**
     * How many connections the system named so has borrowed from its pool now (idle ones the pool
     * keeps open are not the system's); null when no pool of that name was made here.
     */
    Integer connectionsInUse(String applicationName) {
        HikariDataSource pool = pools.get(applicationName);
        if (pool == null || pool.isClosed() || pool.getHikariPoolMXBean() == null) {
            return null;
        }
        return pool.getHikariPoolMXBean().getActiveConnections();
    }

    HikariDataSource pool(String jdbcUrl, String applicationName, int size) {
        HikariConfig config = new HikariConfig();
        config.setJdbcUrl(jdbcUrl);
        config.setUsername(db.user());
        config.setPassword(db.password());
        config.setMaximumPoolSize(size);
        config.setMinimumIdle(0);
        config.setConnectionTimeout(10_000);
        config.setPoolName(applicationName);
        config.addDataSourceProperty("ApplicationName", applicationName);
        HikariDataSource pool = new HikariDataSource(config);
        pools.put(applicationName, pool);
        return pool;
    }

    String applicationName(String system) {
        return "bench-" + system + "-" + run;
    }

    LockSystem pglockAdvisory(String label) {
        HikariDataSource pool = pool(applicationName(label), 10);
        LockClient client = PgLock.advisory(pool).namespace(run).lockSessions(lockSessions).build();
        return pglock("pglock-advisory", client, pool);
    }

    /** The advisory client with its session check timed by {@code timer}, checking every {@code heartbeat}. */
    LockSystem pglockAdvisory(String label, Duration heartbeat, StatementTimer timer) {
        HikariDataSource pool = pool(applicationName(label), 10);
        LockClient client = PgLock.advisory(timer.wrap(pool)).namespace(run).lockSessions(lockSessions)
                .heartbeatInterval(heartbeat).build();
        return pglock("pglock-advisory", client, pool);
    }

    /** The lease client with its heartbeat statement timed by {@code timer}. */
    LockSystem pglockLease(String label, Duration lease, Duration heartbeat, StatementTimer timer) {
        HikariDataSource pool = pool(applicationName(label), 10);
        LockClient client = PgLock.lease(timer.wrap(pool)).tableName("bench_pglock_" + run).namespace(run).lockSessions(lockSessions).lease(lease)
                .heartbeatInterval(heartbeat).build();
        return pglock("pglock-lease", client, pool);
    }

    LockSystem pglockLease(String label, Duration lease, Duration heartbeat) {
        return pglockLease(label, pool(applicationName(label), 10), lease, heartbeat);
    }

    LockSystem pglockLease(String label, HikariDataSource pool, Duration lease, Duration heartbeat) {
        return pglock("pglock-lease", leaseClient(pool, lease, heartbeat, false), pool);
    }

    /** The lease client with the opt-in asynchronous release commit (a lost release costs one lease after a crash). */
    LockSystem pglockLeaseAsyncRelease(String label, Duration lease, Duration heartbeat) {
        HikariDataSource pool = pool(applicationName(label), 10);
        return pglock(LEASE_ASYNC_RELEASE, leaseClient(pool, lease, heartbeat, true), pool);
    }

    private LockClient leaseClient(HikariDataSource pool, Duration lease, Duration heartbeat, boolean asyncRelease) {
        return PgLock.lease(pool).tableName("bench_pglock_" + run).namespace(run).lockSessions(lockSessions).lease(lease)
                .heartbeatInterval(heartbeat).asyncReleaseCommit(asyncRelease).build();
    }

    private static LockSystem pglock(String name, LockClient client, HikariDataSource pool) {
        return new LockSystem() {
            @Override
            public String name() {
                return name;
            }

            @Override
            public Held tryLock(String key) {
                return client.tryAcquire(LockRequest.of(key)).<Held>map(held -> held::release).orElse(null);
            }

            @Override
            public Held lock(String key, Duration wait) {
                Optional<HeldLock> held = client.tryAcquire(LockRequest.of(key).waitAtMost(wait));
                return held.<Held>map(h -> h::release).orElse(null);
            }

            @Override
            public void close() {
                client.close();
                pool.close();
            }
        };
    }

    /** ShedLock's JdbcTemplate provider with usingDbTime(), on a fresh table; it never waits. */
    LockSystem shedlock(String label, Duration lockAtMostFor) throws SQLException {
        HikariDataSource pool = pool(applicationName(label), 10);
        String table = "bench_shedlock_" + run;
        execute(pool, "CREATE TABLE IF NOT EXISTS " + table + " (name VARCHAR(64) NOT NULL, lock_until TIMESTAMP NOT NULL,"
                + " locked_at TIMESTAMP NOT NULL, locked_by VARCHAR(255) NOT NULL, PRIMARY KEY (name))");
        JdbcTemplateLockProvider provider = new JdbcTemplateLockProvider(JdbcTemplateLockProvider.Configuration
                .builder().withJdbcTemplate(new JdbcTemplate(pool)).withTableName(table).usingDbTime().build());
        return new LockSystem() {
            @Override
            public String name() {
                return "shedlock";
            }

            @Override
            public Held tryLock(String key) {
                Optional<SimpleLock> lock = provider.lock(
                        new LockConfiguration(Instant.now(), key, lockAtMostFor, Duration.ZERO));
                return lock.<Held>map(l -> l::unlock).orElse(null);
            }

            @Override
            public Held lock(String key, Duration wait) {
                return tryLock(key);
            }

            @Override
            public boolean canWait() {
                return false;
            }

            @Override
            public void close() {
                pool.close();
            }
        };
    }

    /** Spring Integration's JdbcLockRegistry with its defaults, on a fresh copy of its PostgreSQL table. */
    LockSystem jdbcLockRegistry(String label, Duration timeToLive) throws Exception {
        HikariDataSource pool = pool(applicationName(label), 10);
        String prefix = "BENCH_" + run.toUpperCase() + "_";
        execute(pool, "CREATE TABLE IF NOT EXISTS " + prefix + "LOCK (LOCK_KEY CHAR(36) NOT NULL, REGION VARCHAR(100)"
                + " NOT NULL, CLIENT_ID CHAR(36), CREATED_DATE TIMESTAMP NOT NULL, EXPIRED_AFTER TIMESTAMP NOT NULL,"
                + " CONSTRAINT " + prefix + "LOCK_PK PRIMARY KEY (LOCK_KEY, REGION))");
        DefaultLockRepository repository = new DefaultLockRepository(pool);
        repository.setPrefix(prefix);
        repository.setTransactionManager(new DataSourceTransactionManager(pool));
        repository.afterPropertiesSet();
        repository.afterSingletonsInstantiated();
        repository.start();
        JdbcLockRegistry registry = timeToLive == null ? new JdbcLockRegistry(repository)
                : new JdbcLockRegistry(repository, timeToLive);
        return new LockSystem() {
            @Override
            public String name() {
                return "jdbc-lock-registry";
            }

            @Override
            public Held tryLock(String key) {
                Lock lock = registry.obtain(key);
                return lock.tryLock() ? lock::unlock : null;
            }

            @Override
            public Held lock(String key, Duration wait) throws InterruptedException {
                Lock lock = registry.obtain(key);
                return lock.tryLock(wait.toMillis(), TimeUnit.MILLISECONDS) ? lock::unlock : null;
            }

            @Override
            public void close() {
                repository.stop();
                pool.close();
            }
        };
    }

    /** The seeds' style: one pooled connection pinned per held lock, blocking in pg_advisory_lock to wait. */
    LockSystem naiveAdvisory(String label, int poolSize) {
        return naiveAdvisory(label, poolSize, Duration.ofSeconds(10));
    }

    /**
     * The advisory client's own statements for one wait and its release, recorded from a real client
     * that waits for a key another client holds: the claim of its dedicated session (which reads the
     * backend's start from pg_stat_activity), the wait (transaction-local lock_timeout, the session
     * check, pg_advisory_lock) and the unlock (the session check, pg_advisory_unlock), after which the
     * session stays warm, claimed, for the client's next wait. See {@link #advisorySql}.
     */
    java.util.List<SqlRecorder.Recorded> recordAdvisoryWait() throws Exception {
        HikariDataSource pool = pool(applicationName("advisory-sql-recording"), 4);
        String namespace = "sql-wait-" + run;
        try (pool; LockClient holder = PgLock.advisory(pool).namespace(namespace).build()) {
            SqlRecorder recorder = new SqlRecorder();
            try (LockClient waiter = PgLock.advisory(recorder.wrap(pool)).namespace(namespace).build()) {
                HeldLock held = holder.tryAcquire(LockRequest.of("handoff")).orElseThrow();
                java.util.concurrent.CompletableFuture<java.util.List<SqlRecorder.Recorded>> recorded =
                        java.util.concurrent.CompletableFuture.supplyAsync(() -> {
                            recorder.start();
                            waiter.tryAcquire(LockRequest.of("handoff").waitAtMost(Duration.ofSeconds(30))).orElseThrow()
                                    .release();
                            return recorder.stop();
                        });
                long until = System.nanoTime() + TimeUnit.SECONDS.toNanos(30);
                while (queryCount(pool, "SELECT count(*) FROM pg_locks WHERE locktype = 'advisory' AND NOT granted"
                        + " AND database = (SELECT oid FROM pg_database WHERE datname = current_database())") == 0) {
                    if (System.nanoTime() > until || recorded.isDone()) {
                        throw new IllegalStateException("the recorded advisory client never waited for the held key");
                    }
                    Thread.onSpinWait();
                }
                held.release();
                java.util.List<SqlRecorder.Recorded> all = recorded.get(30, TimeUnit.SECONDS);
                return java.util.List.of(one(all, "coalesce(nullif(s.token"), one(all, "lock_timeout"),
                        one(all, "pg_advisory_unlock"));
            }
        }
    }

    private static SqlRecorder.Recorded one(java.util.List<SqlRecorder.Recorded> all, String containing) {
        java.util.List<SqlRecorder.Recorded> found = all.stream().filter(r -> r.sql().contains(containing)).toList();
        if (found.size() != 1) {
            throw new IllegalStateException("expected one recorded statement with " + containing + ", found " + all);
        }
        return found.get(0);
    }

    private static long queryCount(javax.sql.DataSource dataSource, String sql) throws SQLException {
        try (Connection c = dataSource.getConnection(); Statement st = c.createStatement();
                ResultSet rs = st.executeQuery(sql)) {
            rs.next();
            return rs.getLong(1);
        }
    }

    /**
     * The floor row {@code baseline-advisory-sql} of a hand-off: the advisory client's own claim,
     * wait and unlock statements ({@link #recordAdvisoryWait}), replayed with the recorded parameters
     * without the client. As the client's waiting session stays warm between waits, each replaying
     * client keeps one connection, claimed once, and runs the wait and the unlock on it. Every
     * replaying client waits for the recorded key's lock id; the key given is not used.
     */
    LockSystem advisorySql(String label, java.util.List<SqlRecorder.Recorded> claimWaitUnlock) {
        HikariDataSource pool = pool(applicationName(label), 2);
        return new LockSystem() {
            private Connection claimed; // one replaying client is one thread

            @Override
            public String name() {
                return "baseline-advisory-sql";
            }

            @Override
            public Held tryLock(String key) {
                throw new UnsupportedOperationException("baseline-advisory-sql only replays a wait");
            }

            @Override
            public Held lock(String key, Duration wait) throws SQLException {
                Connection c = claimed;
                try {
                    if (c == null) {
                        c = pool.getConnection();
                        claimed = c;
                        try (PreparedStatement claim = claimWaitUnlock.get(0).prepare(c)) {
                            claim.executeQuery().close();
                        }
                    }
                    try (PreparedStatement waiting = claimWaitUnlock.get(1).prepare(c); ResultSet rs = waiting.executeQuery()) {
                        if (!rs.next()) { // no row: not the claimed backend
                            throw new IllegalStateException("the recorded wait did not run on its claimed backend");
                        }
                    }
                } catch (SQLException | RuntimeException e) {
                    forget();
                    throw e;
                }
                Connection on = c;
                return () -> {
                    try (PreparedStatement ps = claimWaitUnlock.get(2).prepare(on); ResultSet rs = ps.executeQuery()) {
                        // No row: not the claimed backend; the unlock's answer is the last column.
                        if (!rs.next() || !rs.getBoolean(rs.getMetaData().getColumnCount())) {
                            throw new IllegalStateException("the recorded unlock found no lock to release");
                        }
                    } catch (SQLException | RuntimeException e) {
                        forget();
                        throw e;
                    }
                };
            }

            /** The claimed connection may hold the lock and the token: never back to the pool. */
            private void forget() {
                if (claimed != null) {
                    pool.evictConnection(claimed);
                    claimed = null;
                }
            }

            @Override
            public void close() {
                forget();
                pool.close();
            }
        };
    }

    /** The same, giving up on a pool with no free connection after {@code connectionTimeout}. */
    LockSystem naiveAdvisory(String label, int poolSize, Duration connectionTimeout) {
        HikariDataSource pool = pool(applicationName(label), poolSize);
        pool.setConnectionTimeout(connectionTimeout.toMillis());
        AdvisoryKeyHasher hasher = new AdvisoryKeyHasher("naive-" + run);
        return new LockSystem() {
            @Override
            public String name() {
                return "naive-advisory";
            }

            @Override
            public Held tryLock(String key) throws SQLException {
                return take(key, "SELECT pg_try_advisory_lock(?)");
            }

            @Override
            public Held lock(String key, Duration wait) throws SQLException {
                return take(key, "SELECT true FROM (SELECT pg_advisory_lock(?)) AS granted");
            }

            private Held take(String key, String sql) throws SQLException {
                long id = hasher.lockId(key);
                Connection c = pool.getConnection();
                try (PreparedStatement ps = c.prepareStatement(sql)) {
                    ps.setLong(1, id);
                    try (ResultSet rs = ps.executeQuery()) {
                        rs.next();
                        if (!rs.getBoolean(1)) {
                            c.close();
                            return null;
                        }
                    }
                } catch (SQLException e) {
                    c.close();
                    throw e;
                }
                return () -> {
                    try (PreparedStatement ps = c.prepareStatement("SELECT pg_advisory_unlock(?)")) {
                        ps.setLong(1, id);
                        ps.execute();
                    } finally {
                        c.close();
                    }
                };
            }

            @Override
            public void close() {
                pool.close();
            }
        };
    }

    /**
     * baseline-notify's NOTIFY delivery, apart from the rest of a hand-off: from a release's notifying
     * commit returning to its caller, to the first listener of another client receiving that release.
     * Each release names itself and its client in the payload ("sequence:client"), so a notification
     * is matched to its own commit however the two race, and a client's own listener is left out.
     * Releases whose commit returned within the measured window count. A notification that reached a
     * listener before its releaser had taken the time counts as a delay of 0, and the note says how
     * many did: PostgreSQL signals the listeners before it answers the committing client, so with a
     * prompt listener that is common (at 32 clients it was every one in a run). Also the
     * release statement alone, from the release call to its commit returning: the first commit of every
     * hand-off, made after the holder's work left its client and backend idle.
     */
    static final class NotifyDelivery {
        private static final long UNSET = Long.MIN_VALUE;
        private final java.util.concurrent.ConcurrentHashMap<Long, long[]> times = new java.util.concurrent.ConcurrentHashMap<>();
        private final java.util.concurrent.atomic.AtomicLong sequence = new java.util.concurrent.atomic.AtomicLong();
        private volatile long from = Long.MAX_VALUE;
        private volatile long until = Long.MAX_VALUE;

        /** Starts afresh: the releases whose commit returns between the two (System.nanoTime) count. */
        void measure(long fromNanos, long untilNanos) {
            times.clear();
            from = fromNanos;
            until = untilNanos;
        }

        long nextRelease() {
            return sequence.incrementAndGet();
        }

        void committed(long release, long at) {
            times.compute(release, (id, t) -> {
                long[] v = orNew(t);
                v[0] = at;
                return v;
            });
        }

        /** A release's times: [commit returned, first received elsewhere, release called]. */
        private static long[] orNew(long[] times) {
            return times == null ? new long[] {UNSET, UNSET, UNSET} : times;
        }

        void started(long release, long at) {
            times.compute(release, (id, t) -> {
                long[] v = orNew(t);
                v[2] = at;
                return v;
            });
        }

        void received(long release, long at) {
            times.compute(release, (id, t) -> {
                long[] v = orNew(t);
                v[1] = v[1] == UNSET ? at : Math.min(v[1], at);
                return v;
            });
        }

        /**
         * The release statements measured, as the floor row {@code baseline-notify-release}: from the
         * release call (after the holder's work) to its notifying commit returning.
         */
        Result releaseResult(String scenario, int clients) {
            org.HdrHistogram.Histogram took = new org.HdrHistogram.Histogram(TimeUnit.SECONDS.toNanos(60), 3);
            for (long[] t : times.values()) {
                if (t[0] != UNSET && t[2] != UNSET && t[0] >= from && t[0] <= until) {
                    took.recordValue(t[0] - t[2]);
                }
            }
            if (took.getTotalCount() == 0) {
                return Result.skipped(scenario, "baseline-notify-release", "no release was timed while measured");
            }
            return new Result(scenario, "baseline-notify-release", null, took.getValueAtPercentile(50) / 1e3,
                    took.getValueAtPercentile(99) / 1e3, null, "baseline-notify's release statement alone, from the"
                            + " release call after the holder's work to its notifying commit returning ("
                            + took.getTotalCount() + " releases): the first of a hand-off's two commits", clients, null);
        }

        /** The deliveries measured, as the floor row {@code baseline-notify-delivery}. */
        Result result(String scenario, int clients) {
            org.HdrHistogram.Histogram delays = new org.HdrHistogram.Histogram(TimeUnit.SECONDS.toNanos(60), 3);
            int early = 0;
            for (long[] t : times.values()) {
                if (t[0] == UNSET || t[1] == UNSET || t[0] < from || t[0] > until) {
                    continue;
                }
                if (t[1] < t[0]) {
                    early++;
                }
                delays.recordValue(Math.max(0, t[1] - t[0]));
            }
            if (delays.getTotalCount() == 0) {
                return Result.skipped(scenario, "baseline-notify-delivery", "no NOTIFY was delivered while measured");
            }
            return new Result(scenario, "baseline-notify-delivery", null, delays.getValueAtPercentile(50) / 1e3,
                    delays.getValueAtPercentile(99) / 1e3, null, "baseline-notify's releases alone: from the notifying"
                            + " commit returning to the first listener of another client receiving it ("
                            + delays.getTotalCount() + " releases, " + early + " of them received before the releaser"
                            + " took the time, counted as 0), before any waiter runs a statement: a lower bound of what"
                            + " the next holder waits for", clients, null);
        }
    }

    /** The NOTIFY deliveries of the baseline-notify systems this creates. */
    final NotifyDelivery notifyDelivery = new NotifyDelivery();

    /**
     * The floor for a lock that lives in a row and wakes its waiters with NOTIFY: a claim is an
     * autocommitted {@code UPDATE ... WHERE holder IS NULL}, a release an {@code UPDATE} that sends
     * NOTIFY, and a waiter waits on a LISTEN connection of its client's own, polled as pglock polls its
     * own ({@link NotificationPoll}: without pgjdbc's 1 ms look for more after each notification). No
     * leases, no fencing, no crash safety: only the two round trips and the wake-up every such lock pays.
     */
    LockSystem baselineNotify(String label) throws SQLException {
        HikariDataSource pool = pool(applicationName(label), 2);
        String table = "bench_notify_" + run;
        execute(pool, "CREATE TABLE IF NOT EXISTS " + table + " (id text PRIMARY KEY, holder text)");
        java.util.concurrent.Semaphore released = new java.util.concurrent.Semaphore(0);
        Connection listen = pool.getConnection();
        try (Statement st = listen.createStatement()) {
            st.execute("LISTEN " + table);
        }
        NotificationPoll poll = NotificationPoll.of(listen);
        Thread listener = new Thread(() -> {
            try {
                while (!Thread.currentThread().isInterrupted()) {
                    org.postgresql.PGNotification[] got = poll.poll(500);
                    if (got != null && got.length > 0) {
                        long at = System.nanoTime();
                        for (org.postgresql.PGNotification n : got) {
                            String[] release = n.getParameter().split(":", 2);
                            if (!release[1].equals(label)) { // another client's release
                                notifyDelivery.received(Long.parseLong(release[0]), at);
                            }
                        }
                        released.release();
                    }
                }
            } catch (SQLException e) {
                // closed
            }
        }, label + "-listen");
        listener.setDaemon(true);
        listener.start();
        String me = label;
        return new LockSystem() {
            @Override
            public String name() {
                return "baseline-notify";
            }

            @Override
            public Held tryLock(String key) throws SQLException {
                try (Connection c = pool.getConnection()) {
                    try (PreparedStatement ps = c.prepareStatement("INSERT INTO " + table + " VALUES (?, NULL)"
                            + " ON CONFLICT DO NOTHING")) {
                        ps.setString(1, key);
                        ps.executeUpdate();
                    }
                    try (PreparedStatement ps = c.prepareStatement("UPDATE " + table + " SET holder = ?"
                            + " WHERE id = ? AND holder IS NULL")) {
                        ps.setString(1, me);
                        ps.setString(2, key);
                        if (ps.executeUpdate() == 0) {
                            return null;
                        }
                    }
                }
                return () -> {
                    long release = notifyDelivery.nextRelease();
                    notifyDelivery.started(release, System.nanoTime());
                    try (Connection c = pool.getConnection(); PreparedStatement ps = c.prepareStatement("UPDATE "
                            + table + " SET holder = NULL WHERE id = ? RETURNING pg_notify('" + table + "', ?)")) {
                        ps.setString(1, key);
                        ps.setString(2, release + ":" + me);
                        ResultSet rs = ps.executeQuery();
                        notifyDelivery.committed(release, System.nanoTime()); // before any close
                        rs.close();
                    }
                };
            }

            @Override
            public Held lock(String key, Duration wait) throws Exception {
                long deadline = System.nanoTime() + wait.toNanos();
                released.drainPermits();
                Held held;
                while ((held = tryLock(key)) == null && System.nanoTime() < deadline) {
                    released.tryAcquire(100, TimeUnit.MILLISECONDS);
                }
                return held;
            }

            @Override
            public void close() throws SQLException {
                listener.interrupt();
                poll.close();
                listen.close();
                execute(pool, "DROP TABLE IF EXISTS " + table);
                pool.close();
            }
        };
    }

    static void execute(javax.sql.DataSource dataSource, String sql) throws SQLException {
        try (Connection c = dataSource.getConnection(); Statement st = c.createStatement()) {
            st.execute(sql);
        }
    }
}
