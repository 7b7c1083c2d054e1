package dev.pglock.core.advisory;

import dev.pglock.core.LockDatabaseException;
import dev.pglock.core.LockInfo;
import dev.pglock.core.LockMode;
import dev.pglock.core.LockRequest;
import dev.pglock.core.internal.AbstractLockClient;
import dev.pglock.core.internal.Jdbc;
import dev.pglock.core.internal.LockSession;
import dev.pglock.core.internal.SessionPool;
import java.sql.Connection;
import java.sql.PreparedStatement;
import java.sql.ResultSet;
import java.sql.SQLException;
import java.sql.Statement;
import java.time.Duration;
import java.util.ArrayList;
import java.util.HashMap;
import java.util.LinkedHashMap;
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
    private static final Duration SESSION_NETWORK_TIMEOUT = Duration.ofSeconds(10);
    private static final String LOCK_TIMEOUT = "55P03";
    private static final String QUERY_CANCELED = "57014";

    private final DataSource dataSource;
    private final AdvisoryKeyHasher hasher;
    private final Duration connectionWaitTimeout;
    private final Duration heartbeatInterval;
    private final String fencingSequence;
    private final SessionPool sessions;
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
        this.connector = Executors.newCachedThreadPool(r -> {
            Thread t = new Thread(r, "pglock-advisory-connect");
            t.setDaemon(true);
            return t;
        });
        // Statements on shared sessions are short; a server that stops answering fails them in time.
        Duration networkTimeout = heartbeatInterval.multipliedBy(2).compareTo(SESSION_NETWORK_TIMEOUT) > 0
                ? heartbeatInterval.multipliedBy(2) : SESSION_NETWORK_TIMEOUT;
        this.sessions = new SessionPool(dataSource, lockSessions, connectionWaitTimeout, networkTimeout, connector);
    }

    /** Opens the first session (checking it is PostgreSQL), creates the fencing sequence, starts the watchdog. */
    void start() {
        LockSession first = sessions.start();
        if (fencingSequence != null) {
            try {
                createSequence(first);
            } catch (SQLException e) {
                throw new LockDatabaseException("cannot create the fencing sequence " + fencingSequence + ": "
                        + e.getMessage(), e);
            }
        }
        every(heartbeatInterval, "the lock session watchdog", this::checkSessions);
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
    protected void validate(LockRequest request) {
        if (request.data() != null) {
            throw new IllegalArgumentException("data is stored in lease mode only: an advisory lock carries no data"
                    + " (key '" + request.key() + "')");
        }
    }

    @Override
    protected boolean isTrusted(AdvisoryLock lock) {
        return !lock.session.isEnded();
    }

    @Override
    protected String untrustedReason(AdvisoryLock lock) {
        return "its database session (backend pid " + lock.session.backendPid + ") ended";
    }

    @Override
    protected AdvisoryLock tryLockInDatabase(LockRequest request) {
        long lockId = hasher.lockId(request.key());
        String sql = fencingSequence == null
                ? (request.isShared() ? TRY_LOCK_SHARED : TRY_LOCK)
                : (request.isShared() ? TRY_LOCK_SHARED_FENCED : TRY_LOCK_FENCED);
        for (int attempt = 1; ; attempt++) {
            LockSession session = sessions.session();
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
                } else {
                    undoPossibleGrant(session, lockId, request.isShared());
                }
                throw new LockDatabaseException("trying lock '" + request.key() + "' failed: " + e.getMessage(), e);
            }
        }
    }

    /**
     * A statement failed after the lock may have been granted (nextval failing after the try-lock):
     * session-level locks survive the statement's error, so unlock once. Nothing else of this client
     * can hold the key on this session (we claimed it), so an unlock that finds nothing is harmless.
     */
    private void undoPossibleGrant(LockSession session, long lockId, boolean shared) {
        try {
            session.call(c -> {
                try (PreparedStatement ps = c.prepareStatement(shared ? UNLOCK_SHARED : UNLOCK)) {
                    ps.setLong(1, lockId);
                    ps.execute();
                }
                return null;
            });
        } catch (SQLException e) {
            sessionDied(session, e);
        }
    }

    @Override
    protected AdvisoryLock lockInDatabase(LockRequest request, long deadlineNanos) {
        // First a try on a shared session, so a free lock costs no connection of its own; skipped for
        // a key found taken within the last few seconds, where it would nearly always fail.
        if (!recentlyContended(request.key())) {
            AdvisoryLock free = tryLockInDatabase(request);
            if (free != null) {
                return free;
            }
            noteContended(request.key());
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
        boolean sent = false;
        boolean timedOut = false;
        PreparedStatement ps = null;
        try {
            prepare(connection);
            int networkTimeout = connection.getNetworkTimeout();
            // Blocked in the server for up to lock_timeout; the socket must not give up first, but must
            // not wait forever on a server that vanished either.
            connection.setNetworkTimeout(connector, (int) Math.min(Integer.MAX_VALUE, lockTimeout + 10_000));
            ps = connection.prepareStatement(sql);
            waiting.add(ps);
            if (isClosed()) { // close() may have cancelled the waiters before this one registered
                throw new IllegalStateException("the lock client was closed while waiting for '" + request.key() + "'");
            }
            ps.setString(1, Long.toString(lockTimeout));
            ps.setLong(2, lockId);
            if (fencingSequence != null) {
                ps.setString(3, fencingSequence);
            }
            sent = true;
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
                timedOut = true;
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
                if (!sent || timedOut) {
                    Jdbc.closeQuietly(connection); // no lock was granted on it
                } else {
                    // Failed after being sent: the lock may have been granted before a later part
                    // failed or was cancelled, and session-level locks outlive errors.
                    unlockAllAndClose(connection);
                }
            }
        }
    }

    private static void unlockAllAndClose(Connection connection) {
        try (Statement st = connection.createStatement()) {
            st.execute(UNLOCK_ALL);
            Jdbc.closeQuietly(connection);
        } catch (SQLException e) {
            Jdbc.abortQuietly(connection);
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
                    try {
                        unlock(lock);
                    } finally {
                        released.complete(null); // the key must become free here whatever happened
                    }
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

    /** Locks are taken outside transactions: a pool may hand out connections with autocommit off. */
    private static void prepare(Connection connection) throws SQLException {
        if (!connection.getAutoCommit()) {
            connection.setAutoCommit(true);
        }
    }

    /** The watchdog: every heartbeat, each session that holds or may hold locks must answer. */
    private void checkSessions() {
        List<LockSession> all = new ArrayList<>(dedicated);
        all.addAll(sessions.live());
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

    /** The session is gone, and every lock on it with it: report them lost and stop using it. */
    private void sessionDied(LockSession session, Throwable cause) {
        if (!session.end()) {
            return;
        }
        dedicated.remove(session);
        sessions.remove(session);
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
        return query(GET_LOCK, lockId, key).stream().findFirst();
    }

    @Override
    public List<LockInfo> list() {
        return query(LIST_LOCKS, null, null);
    }

    /** One pg_locks row: a session holding an advisory lock. */
    private record Row(long lockId, boolean shared, int pid, String applicationName) {
    }

    /** Reads pg_locks and describes each lock id once, with all its holding sessions. */
    private List<LockInfo> query(String sql, Long lockId, String knownKey) {
        ensureOpen();
        Map<Long, AdvisoryLock> mine = new HashMap<>();
        for (AdvisoryLock lock : heldLocks()) {
            mine.put(lock.lockId, lock);
        }
        Map<Long, List<Row>> byId = new LinkedHashMap<>();
        LockSession session = sessions.session();
        try {
            session.call(c -> {
                try (PreparedStatement ps = c.prepareStatement(sql)) {
                    if (lockId != null) {
                        ps.setLong(1, lockId);
                    }
                    try (ResultSet rs = ps.executeQuery()) {
                        while (rs.next()) {
                            Row row = new Row(rs.getLong("lock_id"), rs.getBoolean("shared"), rs.getInt("pid"),
                                    rs.getString("application_name"));
                            byId.computeIfAbsent(row.lockId(), id -> new ArrayList<>()).add(row);
                        }
                    }
                }
                return null;
            });
        } catch (SQLException e) {
            if (Jdbc.isConnectionFailure(e, session.connection)) {
                sessionDied(session, e);
            }
            throw new LockDatabaseException("reading pg_locks failed: " + e.getMessage(), e);
        }
        List<LockInfo> result = new ArrayList<>();
        byId.forEach((id, rows) -> {
            AdvisoryLock own = mine.get(id);
            Row ours = own == null ? null
                    : rows.stream().filter(r -> r.pid() == own.session.backendPid).findFirst().orElse(null);
            Row first = ours != null ? ours : rows.get(0);
            List<String> holders = new ArrayList<>();
            for (Row row : rows) {
                holders.add(row == ours ? owner() : "pid " + row.pid() + " (" + row.applicationName() + ")");
            }
            LockInfo.Builder info = LockInfo.builder(LockMode.ADVISORY).lockId(id).pid(first.pid())
                    .applicationName(first.applicationName()).shared(first.shared()).heldByThisClient(ours != null)
                    .holders(holders).key(ours != null ? own.key() : knownKey);
            if (ours != null) {
                info.owner(owner()).fencingToken(own.fencingToken()).acquiredAt(own.acquiredAt());
            }
            result.add(info.build());
        });
        return result;
    }

    @Override
    protected void closeDatabase(List<AdvisoryLock> held) {
        // pg_advisory_unlock_all() on each session below releases every lock, held ones included.
        for (Statement statement : waiting) {
            try {
                statement.cancel();
            } catch (SQLException e) {
                log.debug("cancelling a waiting statement failed", e);
            }
        }
        List<LockSession> all = new ArrayList<>(sessions.drain());
        all.addAll(dedicated);
        dedicated.clear();
        all.forEach(this::closeSession);
        connector.shutdownNow();
    }

    /** Unlocks everything the session holds, then gives the connection back; aborts it when that fails. */
    private void closeSession(LockSession session) {
        if (!session.end()) {
            return; // ended already, and disposed of by whoever ended it
        }
        try {
            session.callEvenIfEnded(c -> {
                unlockAllAndClose(c);
                return null;
            });
        } catch (SQLException e) {
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
