package dev.pglock.core.advisory;

import dev.pglock.core.LockDatabaseException;
import dev.pglock.core.LockInfo;
import dev.pglock.core.LockMode;
import dev.pglock.core.LockRequest;
import dev.pglock.core.internal.AbstractLockClient;
import dev.pglock.core.internal.Jdbc;
import java.sql.Connection;
import java.sql.PreparedStatement;
import java.sql.ResultSet;
import java.sql.SQLException;
import java.sql.Statement;
import java.time.Duration;
import java.util.ArrayList;
import java.util.HashMap;
import java.util.List;
import java.util.Map;
import java.util.Optional;
import java.util.Set;
import java.util.concurrent.CompletableFuture;
import java.util.concurrent.ConcurrentHashMap;
import java.util.concurrent.ExecutorService;
import java.util.concurrent.Executors;
import java.util.concurrent.RejectedExecutionException;
import java.util.concurrent.TimeUnit;
import java.util.concurrent.atomic.AtomicInteger;
import javax.sql.DataSource;
import org.slf4j.Logger;
import org.slf4j.LoggerFactory;

/**
 * Locks kept as PostgreSQL session-level advisory locks.
 *
 * <p>Where a lock is taken: without waiting, on one of a few shared lock sessions
 * ({@link #tryLockInDatabase}); with a wait, first the same way and then, if someone holds it, on a
 * connection of the caller's own that blocks in the server under {@code lock_timeout}
 * ({@link #lockInDatabase}), so PostgreSQL's queue hands the lock over the moment it is released.
 * A session is never given back to the pool while it may hold a lock.
 */
final class AdvisoryLockClient extends AbstractLockClient<AdvisoryLock> {

    private static final Logger log = LoggerFactory.getLogger(AdvisoryLockClient.class);

    // Session-level advisory locks: held until unlocked or until the session ends, whatever happens
    // to transactions. The key is the bigint from AdvisoryKeyHasher, always bound as a parameter.
    private static final String TRY_LOCK = "SELECT pg_try_advisory_lock(?)";
    private static final String TRY_LOCK_SHARED = "SELECT pg_try_advisory_lock_shared(?)";
    // With fencing tokens: CASE evaluates nextval only after the lock was granted, so tokens follow
    // the order in which holders got the lock.
    private static final String TRY_LOCK_FENCED =
            "SELECT CASE WHEN pg_try_advisory_lock(?) THEN nextval(?::regclass) END";
    private static final String TRY_LOCK_SHARED_FENCED =
            "SELECT CASE WHEN pg_try_advisory_lock_shared(?) THEN nextval(?::regclass) END";
    // Waiting: one round trip of several statements. The driver sends them before one Sync, so they
    // share an implicit transaction: set_config(..., true) sets lock_timeout for that transaction
    // only, and it reverts by itself whether the lock came or the timeout fired (SQLState 55P03).
    // The lock is session-level and outlives that transaction.
    private static final String WAIT_LOCK = "SELECT set_config('lock_timeout', ?, true);"
            + " SELECT pg_advisory_lock(?); SELECT pg_backend_pid(), NULL::bigint";
    private static final String WAIT_LOCK_SHARED = "SELECT set_config('lock_timeout', ?, true);"
            + " SELECT pg_advisory_lock_shared(?); SELECT pg_backend_pid(), NULL::bigint";
    private static final String WAIT_LOCK_FENCED = "SELECT set_config('lock_timeout', ?, true);"
            + " SELECT pg_advisory_lock(?); SELECT pg_backend_pid(), nextval(?::regclass)";
    private static final String WAIT_LOCK_SHARED_FENCED = "SELECT set_config('lock_timeout', ?, true);"
            + " SELECT pg_advisory_lock_shared(?); SELECT pg_backend_pid(), nextval(?::regclass)";
    private static final String UNLOCK = "SELECT pg_advisory_unlock(?)";
    private static final String UNLOCK_SHARED = "SELECT pg_advisory_unlock_shared(?)";
    private static final String UNLOCK_ALL = "SELECT pg_advisory_unlock_all()";
    private static final String BACKEND_PID = "SELECT pg_backend_pid()";
    // pg_locks shows a bigint advisory key split in two (classid: high 32 bits, objid: low 32 bits,
    // objsubid = 1); advisory locks belong to one database, so only the current one is listed.
    private static final String LIST_LOCKS = "SELECT (l.classid::bigint << 32) | l.objid::bigint AS lock_id,"
            + " l.mode = 'ShareLock' AS shared, l.pid, a.application_name"
            + " FROM pg_locks l LEFT JOIN pg_stat_activity a ON a.pid = l.pid"
            + " WHERE l.locktype = 'advisory' AND l.objsubid = 1 AND l.granted"
            + " AND l.database = (SELECT oid FROM pg_database WHERE datname = current_database())"
            + " ORDER BY l.pid";
    private static final String GET_LOCK = "SELECT * FROM (" + LIST_LOCKS + ") AS locks WHERE lock_id = ?";
    // The sequence name was checked and quoted by Identifiers; an identifier cannot be a parameter.
    private static final String CREATE_SEQUENCE = "CREATE SEQUENCE IF NOT EXISTS %s";
    private static final String LOCK_TIMEOUT = "55P03";
    private static final String QUERY_CANCELED = "57014";

    private final DataSource dataSource;
    private final AdvisoryKeyHasher hasher;
    private final Duration connectionWaitTimeout;
    private final Duration heartbeatInterval;
    private final String fencingSequence;
    private final LockSession[] sessions;
    private final Object[] sessionOpening;
    private final AtomicInteger nextSession = new AtomicInteger();
    private final Set<LockSession> dedicated = ConcurrentHashMap.newKeySet();
    private final Set<Statement> waiting = ConcurrentHashMap.newKeySet();
    /** Borrows connections so that the wait for one can be bounded whatever the pool does. */
    private final ExecutorService connector;

    AdvisoryLockClient(DataSource dataSource, AdvisoryKeyHasher hasher, int lockSessions,
            Duration connectionWaitTimeout, Duration heartbeatInterval, String owner, String fencingSequence) {
        super(owner, "pglock-advisory");
        this.dataSource = dataSource;
        this.hasher = hasher;
        this.connectionWaitTimeout = connectionWaitTimeout;
        this.heartbeatInterval = heartbeatInterval;
        this.fencingSequence = fencingSequence;
        this.sessions = new LockSession[lockSessions];
        this.sessionOpening = new Object[lockSessions];
        for (int i = 0; i < lockSessions; i++) {
            sessionOpening[i] = new Object();
        }
        this.connector = Executors.newCachedThreadPool(r -> {
            Thread t = new Thread(r, "pglock-advisory-connect");
            t.setDaemon(true);
            return t;
        });
    }

    /** Opens the first session (checking it is PostgreSQL), creates the fencing sequence, starts the watchdog. */
    void start() {
        Connection connection = Jdbc.borrow(dataSource, connectionWaitTimeout, connector, "checking the DataSource");
        try {
            Jdbc.requirePostgres(connection);
            sessions[0] = open(connection);
            if (fencingSequence != null) {
                createSequence(sessions[0]);
            }
        } catch (SQLException e) {
            Jdbc.closeQuietly(connection);
            throw new LockDatabaseException("cannot open a lock session: " + e.getMessage(), e);
        } catch (RuntimeException e) {
            Jdbc.closeQuietly(connection);
            throw e;
        }
        long period = heartbeatInterval.toNanos();
        scheduler.scheduleWithFixedDelay(this::checkSessions, period, period, TimeUnit.NANOSECONDS);
    }

    private void createSequence(LockSession session) throws SQLException {
        try {
            session.call(c -> c.createStatement().execute(String.format(CREATE_SEQUENCE, fencingSequence)));
        } catch (SQLException e) {
            // Two clients creating it at once: IF NOT EXISTS can still lose the race on the catalog.
            if (!"23505".equals(e.getSQLState()) && !"42P07".equals(e.getSQLState())) {
                throw e;
            }
        }
    }

    @Override
    public LockMode mode() {
        return LockMode.ADVISORY;
    }

    @Override
    protected String noFencingTokenMessage() {
        return "fencing tokens are off for this advisory lock client; turn them on with"
                + " PgLock.advisory(dataSource).fencingTokens(true) (Spring Boot: pglock.advisory.fencing-tokens=true)";
    }

    @Override
    protected AdvisoryLock tryLockInDatabase(LockRequest request) {
        long lockId = hasher.lockId(request.key());
        String sql = fencingSequence == null
                ? (request.isShared() ? TRY_LOCK_SHARED : TRY_LOCK)
                : (request.isShared() ? TRY_LOCK_SHARED_FENCED : TRY_LOCK_FENCED);
        for (int attempt = 1; ; attempt++) {
            LockSession session = session();
            try {
                Long token = session.call(c -> {
                    try (PreparedStatement ps = c.prepareStatement(sql)) {
                        ps.setLong(1, lockId);
                        if (fencingSequence != null) {
                            ps.setString(2, fencingSequence);
                        }
                        try (ResultSet rs = ps.executeQuery()) {
                            rs.next();
                            if (fencingSequence == null) {
                                return rs.getBoolean(1) ? 0L : null;
                            }
                            long value = rs.getLong(1);
                            return rs.wasNull() ? null : value;
                        }
                    }
                });
                if (token == null) {
                    return null;
                }
                return new AdvisoryLock(request.key(), request.isShared(), fencingSequence == null ? null : token,
                        lockId, session, holdUntil(request));
            } catch (SQLException e) {
                if (Jdbc.isConnectionFailure(e, session.connection)) {
                    sessionDied(session, e);
                    if (attempt == 1) {
                        continue; // the session died before this call: try once more on a fresh one
                    }
                }
                throw new LockDatabaseException("trying lock '" + request.key() + "' failed: " + e.getMessage(), e);
            }
        }
    }

    @Override
    protected AdvisoryLock lockInDatabase(LockRequest request, long deadlineNanos) {
        AdvisoryLock free = tryLockInDatabase(request);
        if (free != null) {
            return free;
        }
        long leftMillis = TimeUnit.NANOSECONDS.toMillis(deadlineNanos - System.nanoTime());
        if (leftMillis <= 0) {
            return null;
        }
        long lockTimeout = Math.min(leftMillis, Integer.MAX_VALUE);
        long lockId = hasher.lockId(request.key());
        String sql = fencingSequence == null
                ? (request.isShared() ? WAIT_LOCK_SHARED : WAIT_LOCK)
                : (request.isShared() ? WAIT_LOCK_SHARED_FENCED : WAIT_LOCK_FENCED);
        Connection connection = Jdbc.borrow(dataSource, connectionWaitTimeout, connector,
                "waiting for lock '" + request.key() + "'");
        boolean holding = false;
        PreparedStatement ps = null;
        try {
            prepare(connection);
            int networkTimeout = connection.getNetworkTimeout();
            // Blocked in the server for up to lock_timeout; the socket must not give up first, but must
            // not wait forever on a server that vanished either.
            connection.setNetworkTimeout(connector, (int) Math.min(Integer.MAX_VALUE, lockTimeout + 10_000));
            ps = connection.prepareStatement(sql);
            waiting.add(ps);
            ps.setString(1, Long.toString(lockTimeout));
            ps.setLong(2, lockId);
            if (fencingSequence != null) {
                ps.setString(3, fencingSequence);
            }
            ps.execute();
            ps.getMoreResults();
            ps.getMoreResults();
            int pid;
            Long token;
            try (ResultSet rs = ps.getResultSet()) {
                rs.next();
                pid = rs.getInt(1);
                long value = rs.getLong(2);
                token = rs.wasNull() ? null : value;
            }
            connection.setNetworkTimeout(connector, networkTimeout);
            LockSession session = new LockSession(connection, pid, true);
            dedicated.add(session);
            holding = true;
            if (isClosed()) {
                // close() ran while we waited and did not see this session: release it here.
                unlock(new AdvisoryLock(request.key(), request.isShared(), token, lockId, session, 0));
                throw new IllegalStateException("the lock client was closed while waiting for '" + request.key() + "'");
            }
            return new AdvisoryLock(request.key(), request.isShared(), token, lockId, session, holdUntil(request));
        } catch (SQLException e) {
            if (LOCK_TIMEOUT.equals(e.getSQLState())) {
                return null;
            }
            if (QUERY_CANCELED.equals(e.getSQLState()) && isClosed()) {
                throw new IllegalStateException("the lock client was closed while waiting for '" + request.key() + "'");
            }
            throw new LockDatabaseException("waiting for lock '" + request.key() + "' failed: " + e.getMessage(), e);
        } finally {
            if (ps != null) {
                waiting.remove(ps);
                closeQuietly(ps);
            }
            if (!holding) {
                // Nothing is held on it: the failed statement took no lock. A broken one is aborted.
                if (ps == null || isHealthy(connection)) {
                    Jdbc.closeQuietly(connection);
                } else {
                    Jdbc.abortQuietly(connection);
                }
            }
        }
    }

    private long holdUntil(LockRequest request) {
        return request.holdAtLeast().isZero() ? 0 : System.nanoTime() + request.holdAtLeast().toNanos();
    }

    @Override
    protected CompletableFuture<Void> releaseInDatabase(AdvisoryLock lock) {
        long holdNanos = lock.holdUntilNanos - System.nanoTime();
        if (lock.holdUntilNanos != 0 && holdNanos > 0 && !isClosed()) {
            // Hold-at-least: the session keeps the lock until then; no thread waits for it.
            CompletableFuture<Void> released = new CompletableFuture<>();
            try {
                scheduler.schedule(() -> {
                    unlock(lock);
                    released.complete(null);
                }, holdNanos, TimeUnit.NANOSECONDS);
                return released;
            } catch (RejectedExecutionException closing) {
                // the client is closing: it unlocks everything itself
            }
        }
        unlock(lock);
        return CompletableFuture.completedFuture(null);
    }

    private void unlock(AdvisoryLock lock) {
        LockSession session = lock.session;
        Boolean unlocked;
        try {
            unlocked = session.call(c -> {
                if (session.isEnded()) {
                    return null; // the lock ended with its session
                }
                boolean result;
                try (PreparedStatement ps = c.prepareStatement(lock.isShared() ? UNLOCK_SHARED : UNLOCK)) {
                    ps.setLong(1, lock.lockId);
                    try (ResultSet rs = ps.executeQuery()) {
                        rs.next();
                        result = rs.getBoolean(1);
                    }
                }
                if (session.dedicated) {
                    session.end(); // retired in the same turn, so the watchdog never checks a returned connection
                }
                return result;
            });
        } catch (SQLException e) {
            if (!Jdbc.isConnectionFailure(e, session.connection)) {
                log.warn("releasing lock '{}' failed; ending its session so the server drops it", lock.key(), e);
            }
            sessionDied(session, e);
            return;
        }
        if (unlocked == null) {
            return;
        }
        if (!unlocked) {
            log.warn("lock '{}' (id {}) was not held by {} when released; ending the session", lock.key(),
                    lock.lockId, session);
            sessionDied(session, new SQLException("a lock could not be released on this session"));
        } else if (session.dedicated) {
            dedicated.remove(session);
            Jdbc.closeQuietly(session.connection); // clean: autocommit on, lock_timeout was transaction-local
        }
    }

    /** A shared lock session, opened when needed; sessions are used in turn. */
    private LockSession session() {
        int slot = Math.floorMod(nextSession.getAndIncrement(), sessions.length);
        LockSession session = sessions[slot];
        if (session != null && !session.isEnded()) {
            return session;
        }
        synchronized (sessionOpening[slot]) {
            session = sessions[slot];
            if (session != null && !session.isEnded()) {
                return session;
            }
            ensureOpen();
            Connection connection = Jdbc.borrow(dataSource, connectionWaitTimeout, connector, "a lock session");
            try {
                session = open(connection);
            } catch (SQLException e) {
                Jdbc.abortQuietly(connection);
                throw new LockDatabaseException("cannot open a lock session: " + e.getMessage(), e);
            }
            sessions[slot] = session;
            if (isClosed()) {
                closeSession(session);
                ensureOpen();
            }
            return session;
        }
    }

    private LockSession open(Connection connection) throws SQLException {
        prepare(connection);
        try (Statement st = connection.createStatement(); ResultSet rs = st.executeQuery(BACKEND_PID)) {
            rs.next();
            return new LockSession(connection, rs.getInt(1), false);
        }
    }

    /** Locks are taken outside transactions: a pool may hand out connections with autocommit off. */
    private static void prepare(Connection connection) throws SQLException {
        if (!connection.getAutoCommit()) {
            connection.setAutoCommit(true);
        }
    }

    /** The watchdog: every heartbeat, each session that holds or may hold locks must answer. */
    private void checkSessions() {
        List<LockSession> all = new ArrayList<>(dedicated);
        for (LockSession session : sessions) {
            if (session != null && !session.isEnded()) {
                all.add(session);
            }
        }
        int timeoutSeconds = (int) Math.max(1, heartbeatInterval.toSeconds());
        for (LockSession session : all) {
            try {
                boolean valid = session.call(c -> session.isEnded() || c.isValid(timeoutSeconds));
                if (!valid) {
                    sessionDied(session, new SQLException("the session did not answer its health check", "08006"));
                }
            } catch (SQLException | RuntimeException e) {
                sessionDied(session, e);
            }
        }
    }

    private boolean isHealthy(Connection connection) {
        try {
            return !connection.isClosed() && connection.isValid(1);
        } catch (SQLException e) {
            return false;
        }
    }

    /** The session is gone, and every lock on it with it: report them lost and stop using it. */
    private void sessionDied(LockSession session, Throwable cause) {
        if (!session.end()) {
            return;
        }
        dedicated.remove(session);
        for (int i = 0; i < sessions.length; i++) {
            if (sessions[i] == session) {
                sessions[i] = null;
            }
        }
        if (!isClosed()) {
            log.warn("{} ended ({}); every lock it held is lost, and a new session replaces it on next use",
                    session, cause.getMessage());
        }
        lost(lock -> lock.session == session, "its database session (backend pid " + session.backendPid
                + ") ended: " + cause.getMessage(), cause);
        Jdbc.abortQuietly(session.connection);
    }

    @Override
    public Optional<LockInfo> get(String key) {
        LockRequest.of(key); // the same checks as for acquiring
        long lockId = hasher.lockId(key);
        List<LockInfo> found = query(GET_LOCK, lockId, Map.of(lockId, key));
        return found.stream().filter(LockInfo::isHeldByThisClient).findFirst().or(() -> found.stream().findFirst());
    }

    @Override
    public List<LockInfo> list() {
        return query(LIST_LOCKS, null, Map.of());
    }

    private List<LockInfo> query(String sql, Long lockId, Map<Long, String> knownKeys) {
        ensureOpen();
        Map<Long, AdvisoryLock> mine = new HashMap<>();
        for (AdvisoryLock lock : heldLocks()) {
            mine.put(lock.lockId, lock);
        }
        LockSession session = session();
        try {
            return session.call(c -> {
                try (PreparedStatement ps = c.prepareStatement(sql)) {
                    if (lockId != null) {
                        ps.setLong(1, lockId);
                    }
                    List<LockInfo> result = new ArrayList<>();
                    try (ResultSet rs = ps.executeQuery()) {
                        while (rs.next()) {
                            long id = rs.getLong("lock_id");
                            int pid = rs.getInt("pid");
                            AdvisoryLock own = mine.get(id);
                            boolean ours = own != null && own.session.backendPid == pid;
                            LockInfo.Builder info = LockInfo.builder(LockMode.ADVISORY).lockId(id).pid(pid)
                                    .applicationName(rs.getString("application_name"))
                                    .shared(rs.getBoolean("shared")).heldByThisClient(ours)
                                    .key(ours ? own.key() : knownKeys.get(id));
                            if (ours) {
                                info.owner(owner()).fencingToken(own.fencingToken()).acquiredAt(own.acquiredAt());
                            }
                            result.add(info.build());
                        }
                    }
                    return result;
                }
            });
        } catch (SQLException e) {
            if (Jdbc.isConnectionFailure(e, session.connection)) {
                sessionDied(session, e);
            }
            throw new LockDatabaseException("reading pg_locks failed: " + e.getMessage(), e);
        }
    }

    @Override
    protected void closeDatabase() {
        for (Statement statement : waiting) {
            try {
                statement.cancel();
            } catch (SQLException e) {
                log.debug("cancelling a waiting statement failed", e);
            }
        }
        List<LockSession> all = new ArrayList<>(dedicated);
        dedicated.clear();
        for (int i = 0; i < sessions.length; i++) {
            synchronized (sessionOpening[i]) {
                if (sessions[i] != null) {
                    all.add(sessions[i]);
                    sessions[i] = null;
                }
            }
        }
        all.forEach(this::closeSession);
        connector.shutdownNow();
    }

    /** Unlocks everything the session holds, then gives the connection back; aborts it when that fails. */
    private void closeSession(LockSession session) {
        try {
            boolean endedHere = session.call(c -> {
                if (!session.end()) {
                    return false; // ended already, and disposed of by whoever ended it
                }
                try (Statement st = c.createStatement()) {
                    st.execute(UNLOCK_ALL);
                }
                return true;
            });
            if (endedHere) {
                Jdbc.closeQuietly(session.connection);
            }
        } catch (SQLException e) {
            log.debug("unlocking {} failed; aborting it so the server drops its locks", session, e);
            Jdbc.abortQuietly(session.connection);
        }
    }

    private static void closeQuietly(Statement statement) {
        try {
            statement.close();
        } catch (SQLException ignored) {
            // the connection is closed or aborted next anyway
        }
    }
}
