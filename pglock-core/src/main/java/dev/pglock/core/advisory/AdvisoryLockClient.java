package dev.pglock.core.advisory;

import dev.pglock.core.LockDatabaseException;
import dev.pglock.core.LockInfo;
import dev.pglock.core.LockMode;
import dev.pglock.core.LockLostException.Reason;
import dev.pglock.core.LockRequest;
import dev.pglock.core.TransactionLock;
import dev.pglock.core.internal.AbstractLockClient;
import dev.pglock.core.internal.Jdbc;
import dev.pglock.core.internal.LockSession;
import dev.pglock.core.internal.PermitKeys;
import dev.pglock.core.internal.PlatformThreads;
import dev.pglock.core.internal.Sequences;
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
    //
    // Whose backend: a session claims its backend when it opens, by writing a random token into the
    // session setting pglock.session (CLAIM_BACKEND), and every statement that takes or drops a lock
    // first reads that setting (once, before anything else of the statement: in an OFFSET 0 subquery
    // such as OWN, a CASE condition, or a one-time filter) and does nothing unless it finds the
    // session's own token. Behind a pooler that
    // multiplexes sessions (PgBouncer in transaction pooling) a statement can reach another server
    // session, or two clients' sessions can share one; a pid check alone misses the second case, where
    // a lock would stack on a backend that already holds it for someone else. This way no lock is ever
    // taken or dropped on a backend that is not the session's own, and the client notices at the first
    // such statement, at no extra round trip (see multiplexed()). The pid it ran on, for the message,
    // comes with the answer or, where that would cost the common case a column, from a second statement.
    private static final String OWN = " FROM (SELECT current_setting('pglock.session', true) = ? AS mine,"
            + " pg_backend_pid() AS pid OFFSET 0) AS s";
    // Claims the backend unless another lock session has (then its token stays), or the server is a
    // standby: advisory locks there are the standby's own and do not conflict with the primary's (they
    // are not replicated), so two replicas whose pools reach the primary and a standby (a multi-host
    // URL after a failover) would both be granted one key. Parameter: token. Columns: pid, the token
    // found before (null or empty: nobody's), -, backend start, whether the server is in recovery.
    private static final String CLAIM_BACKEND = "SELECT s.pid, s.token,"
            + " set_config('pglock.session', CASE WHEN s.standby THEN coalesce(s.token, '')"
            + " ELSE coalesce(nullif(s.token, ''), ?) END, false),"
            + " (SELECT backend_start FROM pg_stat_activity WHERE pid = s.pid), s.standby"
            + " FROM (SELECT pg_backend_pid() AS pid, current_setting('pglock.session', true) AS token,"
            + " pg_is_in_recovery() AS standby OFFSET 0) AS s";
    // Ends the backends of sessions that a pooler has taken away from their clients, so the locks they
    // hold end with them (nothing else can reach them: an unlock lands on whichever backend is free).
    // A backend is named by pid and start time, so a pid reused since is never hit. Parameters: pids,
    // start times.
    private static final String TERMINATE = "SELECT count(pg_terminate_backend(a.pid)) FROM pg_stat_activity AS a"
            + " JOIN unnest(?::int[], ?::timestamptz[]) AS s(pid, started) ON a.pid = s.pid AND a.backend_start = s.started";
    // Ends the backends of sessions the client gave up on as their network went silent: such a
    // backend lives on, with the session's locks, until the server's TCP keepalive gives up (two
    // hours by default). (A connection that failed otherwise, closed or reset, was heard of by the
    // backend, or by a pooler, which resets that server session, advisory locks included.) Only a
    // backend, named by pid and start time, whose last statement is still one of the session's own,
    // tagged with its token (see LockSession.tagged): a server session a pooler has reset since, or
    // given to another client, shows the reset or that client's statement there, and is left alone.
    // Parameters: pids, start times, tags.
    private static final String TERMINATE_GIVEN_UP = "SELECT count(pg_terminate_backend(a.pid)) FROM pg_stat_activity AS a"
            + " JOIN unnest(?::int[], ?::timestamptz[], ?::text[]) AS s(pid, started, tag)"
            + " ON a.pid = s.pid AND a.backend_start = s.started"
            + " WHERE strpos(a.query, s.tag) > 0";
    // Templates: %1$s is "" for an exclusive lock, "_shared" for a shared one; the variants below are
    // built from them once.
    //
    // Try without fencing. One column: granted, null when the backend is not the session's (then a
    // second statement reads its pid for the error). Parameters: token, lock id. The token is read
    // once, in the CASE that guards the try, so no subquery is needed (CASE evaluates its condition
    // first). One column rather than three: each column costs the driver and the wire, about 3% of a
    // parallel try-release pair here.
    private static final String TRY = "SELECT CASE WHEN current_setting('pglock.session', true) = ?"
            + " THEN pg_try_advisory_lock%1$s(?) END";
    // With fencing tokens: nextval only after the lock was granted, so tokens follow the order in which
    // holders got the lock. OFFSET 0 keeps the try a subquery evaluated once.
    private static final String TRY_FENCED = "SELECT granted, CASE WHEN granted THEN nextval(?::regclass) END, pid"
            + " FROM (SELECT CASE WHEN current_setting('pglock.session', true) = ? THEN pg_try_advisory_lock%1$s(?)"
            + " END AS granted, pg_backend_pid() AS pid OFFSET 0) AS attempt";
    // Waiting: one statement, in its own implicit transaction. set_config(..., true) sets lock_timeout
    // for that transaction only (it reverts by itself whether the lock came or the timeout fired,
    // SQLState 55P03); the lock is session-level and outlives it. A WHERE clause of a SELECT without
    // FROM is one filter that PostgreSQL evaluates once, before the select list: the token is read
    // and the timeout set first, and the lock is only asked for on the session's own backend. The
    // planner orders the two conditions by cost (set_config comes first, on a foreign backend too,
    // where it lasts the statement's transaction only, as it always did): either order is harmless. The select list runs in order, so with
    // fencing the token is drawn after the grant. lock_timeout covers the whole statement, so 55P03 can
    // come after the grant (PostgreSQL can also grant at the instant the timeout fires): a failed wait
    // always cleans its connection. One statement rather than three before one Sync: after the grant
    // the server has no further statement to parse and run, which was about a third of the hand-off
    // delay pglock added to a bare pg_advisory_lock. One row when the backend is the session's, none
    // when it is not (then a second statement reads its pid for the error): the form with a subquery
    // that also returned the pid and whether the backend was the session's cost about 3 % more of a
    // hand-off (StatementPairs, 120 rounds). %2$s is NO_TOKEN or DRAW_TOKEN. Parameters: lock id,
    // [sequence,] token, timeout. Columns: -, [token].
    private static final String WAIT = "SELECT pg_advisory_lock%1$s(?)%2$s WHERE current_setting('pglock.session', true) = ?"
            + " AND set_config('lock_timeout', ?, true) IS NOT NULL";
    private static final String NO_TOKEN = "";
    private static final String DRAW_TOKEN = ", nextval(?::regclass)";
    // Unlock on a dedicated session. One row when the backend is the session's, none when it is not
    // (then a second statement reads its pid for the error). The token is compared in the WHERE clause
    // of a SELECT without FROM, which PostgreSQL evaluates once, before the select list. Two forms: the
    // session stays warm for the next wait (it only unlocks), or it retires and gives its backend back
    // unclaimed in the same statement. There the select list, evaluated in order, clears the token
    // before the unlock, which comes last: it wakes the next waiter's backend, which then does not
    // share the CPU with this one's set_config (a hand-off of these statements between two clients
    // took 4 - 7 % less, paired runs on 2 vCPUs). Two texts rather than one whose CASE on a parameter
    // chose: the warm form's hand-off took about 3 % less (StatementPairs). PostgreSQL never drops a
    // volatile set_config. Clearing the token before the unlock is safe: an unlock that finds nothing
    // ends the session within the same call (see unlock()), so neither the watchdog nor a pool sees a
    // cleared backend that still holds anything. Parameters: lock id, token. Column: unlocked (the
    // last).
    private static final String UNLOCK_KEEPING = "SELECT pg_advisory_unlock%1$s(?)"
            + " WHERE current_setting('pglock.session', true) = ?";
    private static final String UNLOCK_RETIRING = "SELECT set_config('pglock.session', '', false),"
            + " pg_advisory_unlock%1$s(?) WHERE current_setting('pglock.session', true) = ?";
    // Unlock on a shared session, which never retires: no subquery (one cost about 12% of an
    // uncontended acquire-release pair). One column: unlocked, null when the backend is not the
    // session's (then a second statement reads its pid for the error). Parameters: token, lock id.
    private static final String UNLOCK_SHARED_SESSION = "SELECT CASE WHEN current_setting('pglock.session', true) = ?"
            + " THEN pg_advisory_unlock%1$s(?) END";
    private static final String BACKEND_PID = "SELECT pg_backend_pid()";
    private static final String TRY_LOCK = TRY.formatted("");
    private static final String TRY_LOCK_SHARED = TRY.formatted("_shared");
    private static final String TRY_LOCK_FENCED = TRY_FENCED.formatted("");
    private static final String TRY_LOCK_SHARED_FENCED = TRY_FENCED.formatted("_shared");
    private static final String WAIT_LOCK = WAIT.formatted("", NO_TOKEN);
    private static final String WAIT_LOCK_SHARED = WAIT.formatted("_shared", NO_TOKEN);
    private static final String WAIT_LOCK_FENCED = WAIT.formatted("", DRAW_TOKEN);
    private static final String WAIT_LOCK_SHARED_FENCED = WAIT.formatted("_shared", DRAW_TOKEN);
    private static final String UNLOCK_KEEP = UNLOCK_KEEPING.formatted("");
    private static final String UNLOCK_SHARED_KEEP = UNLOCK_KEEPING.formatted("_shared");
    private static final String UNLOCK_RETIRE = UNLOCK_RETIRING.formatted("");
    private static final String UNLOCK_SHARED_RETIRE = UNLOCK_RETIRING.formatted("_shared");
    private static final String UNLOCK_ON_SHARED_SESSION = UNLOCK_SHARED_SESSION.formatted("");
    private static final String UNLOCK_SHARED_ON_SHARED_SESSION = UNLOCK_SHARED_SESSION.formatted("_shared");
    // Before a session's connection goes back to its pool: nothing locked, backend unclaimed. On the
    // session's own backend (its token, or its pid and no token: a dedicated session unclaims it in its
    // release) everything is unlocked. Its pid with another token is another session's backend now (a
    // pooler handed it on, and that session claimed it): its locks are not touched. Parameters: pid,
    // token. Columns: -, -, mine, pid.
    private static final String UNLOCK_ALL = "SELECT CASE WHEN s.mine OR (s.pid = ?"
            + " AND coalesce(current_setting('pglock.session', true), '') = '') THEN pg_advisory_unlock_all() END,"
            + " CASE WHEN s.mine THEN set_config('pglock.session', '', false) END, s.mine, s.pid" + OWN;
    // The watchdog's check. Parameter: token. Columns: mine, pid.
    private static final String CHECK = "SELECT s.mine, s.pid" + OWN;
    // pg_locks shows a bigint advisory key split in two (classid: high 32 bits, objid: low 32 bits,
    // objsubid = 1); advisory locks belong to one database, so only the current one is listed.
    private static final String LIST_LOCKS = "SELECT (l.classid::bigint << 32) | l.objid::bigint AS lock_id,"
            + " l.mode = 'ShareLock' AS shared, l.pid, a.application_name"
            + " FROM pg_locks l LEFT JOIN pg_stat_activity a ON a.pid = l.pid"
            + " WHERE l.locktype = 'advisory' AND l.objsubid = 1 AND l.granted"
            + " AND l.database = (SELECT oid FROM pg_database WHERE datname = current_database())"
            + " ORDER BY l.pid";
    private static final String GET_LOCK = "SELECT * FROM (" + LIST_LOCKS + ") AS locks WHERE lock_id = ?";
    private static final String GET_LOCKS = "SELECT * FROM (" + LIST_LOCKS + ") AS locks WHERE lock_id = ANY (?)";
    // A semaphore's markers (see AdvisoryKeyHasher): the high 32 bits of the semaphore key's own id,
    // and the number of permits (1 to 1000) as the low 32 bits. A lock on the key itself shares the
    // high bits and is not left out: when the key's own low bits are a number of permits (about one
    // key in four million), that number's marker is the key's own id, and leaving it out let callers
    // asking for it and for another number both in. Such a lock on the key then reads as a marker,
    // which only refuses callers. Parameter: high 32 bits (unsigned).
    private static final String SEMAPHORE_SIZES = "SELECT DISTINCT l.objid::bigint FROM pg_locks l"
            + " WHERE l.locktype = 'advisory' AND l.objsubid = 1 AND l.granted AND l.classid::bigint = ?"
            + " AND l.objid::bigint BETWEEN 1 AND " + PermitKeys.MAX_PERMITS
            + " AND l.database = (SELECT oid FROM pg_database WHERE datname = current_database())";
    // The sequence name was checked and quoted by Identifiers; an identifier cannot be a parameter.
    private static final String CREATE_SEQUENCE = "CREATE SEQUENCE IF NOT EXISTS %s";
    /** The least network timeout of a session: below it, a busy server could be taken for a dead one. */
    private static final Duration MIN_NETWORK_TIMEOUT = Duration.ofSeconds(5);
    private static final String LOCK_TIMEOUT = "55P03";
    private static final String OUT_OF_SHARED_MEMORY = "53200";
    /** What fencingToken() says when tokens are off, for every advisory lock. */
    static final String NO_FENCING_TOKENS = "fencing tokens are off for this advisory lock client; turn them on with"
            + " PgLock.advisory(dataSource).fencingTokens(true) (Spring Boot: pglock.advisory.fencing-tokens=true)";

    private final DataSource dataSource;
    private final AdvisoryKeyHasher hasher;
    private final Duration connectionWaitTimeout;
    private final Duration heartbeatInterval;
    /**
     * The fencing sequence's quoted name, or null without tokens: as configured, then, from start(),
     * schema-qualified as the first session resolved it (see Identifiers.qualified).
     */
    private volatile String fencingSequence;
    private final SessionPool sessions;
    private final Set<LockSession> dedicated = ConcurrentHashMap.newKeySet();
    /** Connections of callers waiting in the server; close() aborts them, whether or not their wait was sent. */
    private final Map<Connection, Wait> waiting = new ConcurrentHashMap<>();

    /**
     * A caller's wait, listed under its connection; also the lock stopWaits() takes so the waiter does
     * not give the connection back meanwhile. Its session once claimed: a refusal ends that backend too.
     */
    private static final class Wait {
        volatile LockSession session;

        Wait(LockSession session) {
            this.session = session;
        }
    }
    /**
     * Bounds every statement on a lock session, the watchdog's check included: a session whose
     * network is gone is found dead within this (max(2 heartbeats, 5s)).
     */
    private final Duration networkTimeout;
    private final int networkTimeoutMillis;
    /** How long a lock session beyond the first stays open with nothing on it: max(heartbeat, 1 s). */
    private final long idleNanos;
    /**
     * How long a waiting caller's session stays warm after its lock was released: as long as a pool
     * trusts an idle connection without testing it (HikariCP's default alive-bypass window).
     */
    static final long WARM_NANOS = TimeUnit.MILLISECONDS.toNanos(500);
    /** {@link #WARM_NANOS}; tests lengthen it. */
    volatile long warmNanos = WARM_NANOS;
    /**
     * Waiting callers' sessions whose lock was released, still claimed and holding nothing, kept for
     * the next waiting caller for {@link #warmNanos}, the most recent last; at most lockSessions of
     * them (with those reserved by releases under way). A warm session spares the next wait a
     * connection borrow and the claim's round trip, and its release the unclaim and the connection's
     * return: on a key that passes between replicas every few milliseconds, the work of the release
     * then no longer competes for the CPU with the next holder's wake-up. Guarded by itself.
     */
    private final java.util.ArrayDeque<Warm> warm = new java.util.ArrayDeque<>();
    private final int warmBound;
    private int warmReserved; // guarded by warm
    /** Set while a sweep of the warm sessions is scheduled, so at most one or two are ever pending. */
    private final java.util.concurrent.atomic.AtomicBoolean coolingScheduled = new java.util.concurrent.atomic.AtomicBoolean();
    /** For tests: runs on a waiting caller's thread just before its wait statement is sent. */
    volatile Runnable beforeWaitForTests;
    /** For tests: runs on the session's connection just before the backends of a multiplexed client are ended. */
    volatile java.util.function.Consumer<Connection> beforeEndingBackendsForTests;
    /** For tests: runs on the watchdog's check of a session, on the checking thread, before it takes the session. */
    volatile java.util.function.Consumer<LockSession> beforeCheckForTests;
    /** For tests: runs in sessionEnded after the session was ended and before its holds are reported. */
    volatile java.util.function.Consumer<LockSession> beforeSessionReportedForTests;
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
        // Statements on lock sessions are short; a server that stops answering fails them in time.
        this.networkTimeout = heartbeatInterval.multipliedBy(2).compareTo(MIN_NETWORK_TIMEOUT) > 0
                ? heartbeatInterval.multipliedBy(2) : MIN_NETWORK_TIMEOUT;
        this.networkTimeoutMillis = (int) Math.min(Integer.MAX_VALUE, networkTimeout.toMillis());
        this.idleNanos = Math.max(heartbeatInterval.toNanos(), TimeUnit.SECONDS.toNanos(1));
        this.warmBound = lockSessions;
        this.sessions = new SessionPool(dataSource, lockSessions, connectionWaitTimeout, networkTimeout, connector,
                connection -> claimBackend(connection, false));
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
            session.call(c -> {
                try (Statement st = c.createStatement()) {
                    return st.execute(String.format(CREATE_SEQUENCE, fencingSequence));
                }
            });
        } catch (SQLException e) {
            // Two clients creating it at once: IF NOT EXISTS can still lose the race on the catalog.
            if (!"23505".equals(e.getSQLState()) && !"42P07".equals(e.getSQLState())) {
                throw e;
            }
        }
        fencingSequence = session.call(c -> {
            Sequences.requireUncached(c, fencingSequence, fencingSequence);
            return dev.pglock.core.internal.Identifiers.qualified(c, fencingSequence);
        });
    }

    @Override
    protected Duration inFlightBound() {
        return networkTimeout;
    }

    @Override
    public LockMode mode() {
        return LockMode.ADVISORY;
    }

    @Override
    protected String noFencingTokenMessage() {
        return NO_FENCING_TOKENS;
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

    /**
     * An advisory lock stops being trusted only when its session ended: a holder that asks between
     * the end and the report (a session a check found on another backend stays ended while its
     * client ends the backends) hears the session died, as the report would have said.
     */
    @Override
    protected Reason untrustedCategory(AdvisoryLock lock) {
        return Reason.SESSION_DIED;
    }

    /** What a try answered: granted (null: it ran on another backend), the token, the backend it ran on. */
    private record Attempt(Boolean granted, Long token, int pid) {
    }

    @Override
    protected Optional<TransactionLock> acquireInTransaction(Connection transaction, LockRequest request) {
        return AdvisoryTransactionLock.acquire(transaction, request, hasher.lockId(request.key()), fencingSequence,
                owner());
    }

    @Override
    protected AdvisoryLock tryLockInDatabase(LockRequest request) {
        long lockId = hasher.lockId(request.key());
        String sql = fencingSequence == null
                ? (request.isShared() ? TRY_LOCK_SHARED : TRY_LOCK)
                : (request.isShared() ? TRY_LOCK_SHARED_FENCED : TRY_LOCK_FENCED);
        for (int attempt = 1; ; attempt++) {
            LockSession session = sessions.session();
            Attempt answer;
            try {
                answer = session.callClaimed(c -> {
                    if (isClosed()) { // close() waits only for statements already running
                        throw new IllegalStateException("the lock client was closed before lock '" + request.key()
                                + "' was taken");
                    }
                    { // kept open on the session: see LockSession.prepared
                        PreparedStatement ps = session.prepared(session.tagged(sql));
                        int i = 1;
                        if (fencingSequence != null) {
                            ps.setString(i++, fencingSequence);
                        }
                        ps.setString(i++, session.token);
                        ps.setLong(i, lockId);
                        Boolean grantedOrNull;
                        Long tokenOrNull = null;
                        int pid = session.backendPid;
                        try (ResultSet rs = ps.executeQuery()) {
                            rs.next();
                            boolean granted = rs.getBoolean(1);
                            grantedOrNull = rs.wasNull() ? null : granted;
                            if (fencingSequence != null) {
                                long token = rs.getLong(2);
                                tokenOrNull = rs.wasNull() ? null : token;
                                pid = rs.getInt(3);
                            }
                            if (granted) {
                                session.lockTaken(); // counted under the session's lock: it is not retired now
                            }
                        }
                        if (grantedOrNull == null && fencingSequence == null) {
                            pid = foreignBackendPid(c); // not the session's backend: which one, for the error
                        }
                        return new Attempt(grantedOrNull, tokenOrNull, pid);
                    }
                });
            } catch (SQLException e) {
                if (Jdbc.isConnectionFailure(e, session.connection)) {
                    sessionDied(session, e);
                    if (attempt == 1) {
                        continue; // the session died before this call: try once more on a fresh one
                    }
                } else {
                    undoPossibleGrant(session, lockId, request.isShared());
                }
                throw lockFailed("trying lock '" + request.key() + "'", e);
            }
            if (answer.granted() == null) {
                throw multiplexed(session, answer.pid());
            }
            if (!answer.granted()) {
                return null;
            }
            return new AdvisoryLock(request.key(), request.isShared(), answer.token(), lockId, session,
                    holdUntil(request));
        }
    }

    /**
     * Why taking a lock failed. PostgreSQL keeps advisory locks in its shared lock table, sized by
     * max_locks_per_transaction x (max_connections + max_prepared_transactions) for the whole server;
     * when it is full, the error says so and names what to change, rather than "out of shared memory".
     */
    static LockDatabaseException lockFailed(String what, SQLException e) {
        if (OUT_OF_SHARED_MEMORY.equals(e.getSQLState())) {
            return new LockDatabaseException(what + " failed: PostgreSQL's shared lock table is full (" + e.getMessage()
                    + "). Every advisory lock held on the server takes a slot of it; it is sized by"
                    + " max_locks_per_transaction x (max_connections + max_prepared_transactions), 64 x 100 by default,"
                    + " and shared by every session. Raise max_locks_per_transaction (a server restart), hold fewer locks,"
                    + " or use lease mode, whose locks are rows and take no slot", e);
        }
        return new LockDatabaseException(what + " failed: " + e.getMessage(), e);
    }

    /**
     * A statement failed after the lock may have been granted (nextval failing after the try-lock):
     * session-level locks survive the statement's error, so unlock once. Nothing else of this client
     * can hold the key on this session (we claimed it), so an unlock that finds nothing is harmless.
     */
    private void undoPossibleGrant(LockSession session, long lockId, boolean shared) {
        try {
            session.call(c -> {
                try (PreparedStatement ps = c.prepareStatement(shared ? UNLOCK_SHARED_KEEP : UNLOCK_KEEP)) {
                    ps.setLong(1, lockId);
                    ps.setString(2, session.token);
                    ps.execute();
                }
                return null;
            });
        } catch (SQLException e) {
            sessionDied(session, e);
        }
    }

    /**
     * A statement of {@code session} ran on another backend: the DataSource multiplexes sessions, so
     * no advisory lock can be kept on it. Every session's locks are reported lost and the sessions
     * aborted (the pid checks kept any lock from being taken or dropped on a foreign backend), and
     * the client refuses further use with what to do instead.
     */
    /** Why a pooler refuses advisory locks, and what to do instead: said by every such refusal. */
    static final String MULTIPLEXES = "the DataSource multiplexes sessions, as PgBouncer (or another pooler) in"
            + " transaction pooling mode does";
    static final String POOLER_WAYS_OUT = " Give advisory locks a direct connection to PostgreSQL or one through"
            + " session pooling (Spring Boot: a @PgLockDataSource), or use lease mode, which works through"
            + " transaction pooling";

    private LockDatabaseException multiplexed(LockSession session, int pid) {
        return multiplexed(session, null, "a statement of the lock session on backend pid " + session.backendPid
                + " ran on a backend that is not the session's own (" + (pid < 0 ? "pid unknown" : "pid " + pid) + ")");
    }

    /**
     * @param session the session that noticed, or null when a new one was being opened
     * @param opening the connection being opened then (used by this thread alone), else null
     */
    private LockDatabaseException multiplexed(LockSession session, Connection opening, String what) {
        String message = what + ": " + MULTIPLEXES + ", and session-level advisory locks cannot be kept through it."
                + POOLER_WAYS_OUT;
        refuseFurtherUse(message);
        SQLException cause = new SQLException(message, "08P01");
        // The locks on the backends this client claimed can only be ended with those backends, waiters'
        // too. (A waiter whose claim ends after its wait was aborted takes no lock, as it sees the
        // refusal before it sends its wait, though its backend may stay claimed until the pooler
        // closes that server connection.)
        // A wait granted from now on would be handed out after every lock was reported lost.
        List<LockSession> waitedOn = stopWaitsListingSessions();
        List<LockSession> claimed = new ArrayList<>(dedicated);
        waitedOn.stream().filter(s -> !claimed.contains(s)).forEach(claimed::add);
        claimed.addAll(sessions.live());
        List<LockSession> warmOnes = drainWarm(); // no lock on them, but their backends are claimed
        claimed.addAll(warmOnes);
        if (session != null && !claimed.contains(session)) {
            claimed.add(session);
        }
        claimed.removeIf(s -> s != session && s.isEnded()); // ended ones were unclaimed or disposed of
        // but for those whose holders are still being told: their backends are alive, and end too
        abortWhenTold.stream().filter(s -> !claimed.contains(s)).forEach(claimed::add);
        // Ended, and their holds marked lost, before their backends are: from then on another client
        // may hold their keys, and isHeld() must already say no. Their connections are disposed of
        // after the backends ended (below): aborting a connection to a pooler does not end its backend.
        // Not a waiter's session that holds nothing yet: its wait was aborted above, and the waiter
        // disposes of its connection itself. The noticing session's holds are reported here too when
        // the check that found it ended it first (that check then finds nothing left to report).
        List<LockSession> endedHere = new ArrayList<>();
        for (LockSession s : claimed) {
            boolean waiterOnly = waitedOn.contains(s) && !dedicated.contains(s) && s != session;
            boolean endedNow = !waiterOnly && s.end();
            if (endedNow) {
                endedHere.add(s);
            }
            if (endedNow || s == session) { // logged after the backends ended, which comes first
                reportSessionLost(s, cause);
            }
        }
        try {
            if (opening != null) {
                terminateBackends(opening, claimed);
            } else if (session != null) {
                session.callEvenIfEnded(c -> {
                    java.util.function.Consumer<Connection> hook = beforeEndingBackendsForTests;
                    if (hook != null) {
                        hook.accept(c);
                    }
                    return terminateBackends(c, claimed);
                });
            }
        } catch (SQLException | RuntimeException e) {
            // Behind a pooler this connection's server session may itself have been a backend another
            // client just ended (they share the pooler's sessions): once more, on a connection of its own.
            try (Connection fresh = Jdbc.borrow(dataSource, connectionWaitTimeout, connector,
                    "ending the backends of this client's lock sessions")) {
                terminateBackends(fresh, claimed);
            } catch (SQLException | RuntimeException again) {
                log.warn("ending the backends of this client's lock sessions failed ({}; then {}); their locks end"
                        + " when the pooler closes those server connections", e.getMessage(), again.getMessage());
            }
        }
        endedHere.forEach(s -> logSessionLost(s, cause));
        if (session != null && endedHere.remove(session)) {
            disposeEnded(session);
        }
        // Every other session too (their statements may have been misrouted as well), but not on this
        // thread: it may be opening a session inside the pool's lock for that slot. One opened since
        // the list above is ended there.
        try {
            connector.execute(() -> {
                endedHere.forEach(this::disposeEnded);
                List<LockSession> all = new ArrayList<>(dedicated);
                all.addAll(sessions.live());
                all.forEach(s -> sessionDied(s, cause));
            });
        } catch (RejectedExecutionException closing) {
            endedHere.forEach(this::disposeEnded); // close() no longer sees them: they are ended
        }
        return new LockDatabaseException(message, cause);
    }

    /**
     * Claims the connection's backend for a new lock session (see CLAIM_BACKEND). A backend already
     * claimed by another lock session means two clients' sessions share it: refused, nothing claimed.
     */
    private LockSession claimBackend(Connection connection, boolean dedicated) throws SQLException {
        String token = java.util.UUID.randomUUID().toString();
        try (PreparedStatement ps = connection.prepareStatement(CLAIM_BACKEND)) {
            ps.setString(1, token);
            try (ResultSet rs = ps.executeQuery()) {
                rs.next();
                int pid = rs.getInt(1);
                String before = rs.getString(2);
                if (rs.getBoolean(5)) {
                    throw new LockDatabaseException("the server of backend pid " + pid + " is a standby (in recovery):"
                            + " advisory locks taken there do not conflict with those taken on the primary, so no lock"
                            + " is taken on it. Point pglock's DataSource at the primary (with several hosts in the"
                            + " URL: targetServerType=primary)", null);
                }
                if (before != null && !before.isEmpty()) {
                    // Not ended here: its owner may still be alive and trusting its locks. They stay until
                    // the backend ends, which the message says how to do once nothing uses the pooler.
                    throw multiplexed(null, connection, "backend pid " + pid + " is already the lock session of"
                            + " another client (or another session of this one), whose advisory locks stay until"
                            + " that backend ends (the pooler closes it, or SELECT pg_terminate_backend(" + pid + ")"
                            + " once no client takes advisory locks through the pooler)");
                }
                return new LockSession(connection, pid, dedicated, token, rs.getTimestamp(4));
            }
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
        if (deadlineNanos - System.nanoTime() < TimeUnit.MILLISECONDS.toNanos(1)) {
            return null; // no time to wait: a warm session stays warm
        }
        LockSession reused = takeWarm();
        if (reused != null) {
            try {
                return waitInDatabase(request, deadlineNanos, reused, false);
            } catch (WarmSessionGone gone) {
                // Its first stretch ran out (the session answered; the wait lost its place in the
                // server's queue and takes a new one), or its backend ended or its network went while it
                // was warm: the wait goes on, once, on a connection from the pool. A lock granted on the
                // old session was unlocked by its cleaning, or ends with its backend; behind a silent
                // network that backend keeps it until the server notices, and the new wait queues behind it.
                log.debug("waiting on a new lock session after a warm one's wait ended ({})", gone.getMessage());
                ensureOpen(); // a client that refused further use (or closed) meanwhile does not wait again
            }
        }
        boolean firstFresh = true;
        while (true) {
            try {
                return waitInDatabase(request, deadlineNanos, null, firstFresh);
            } catch (WarmSessionGone again) {
                // A wait longer than lock_timeout can say (Integer.MAX_VALUE ms, about 24.8 days) ran
                // that long, or the first fresh connection's backend ended before the wait was sent: it
                // goes on, on a fresh connection, for what is left.
                ensureOpen();
                firstFresh = false;
            }
        }
    }

    /** The longest lock_timeout one wait statement sets; longer waits run as several. Lowered by tests. */
    long maxLockTimeoutMillis = Integer.MAX_VALUE;

    /**
     * A wait on a warm session ran out of its first stretch or failed as its connection did, a wait
     * on a fresh one ran out of {@link #maxLockTimeoutMillis}, or the backend of a fresh connection
     * ended before the wait was sent: the caller waits on a fresh one.
     */
    private static final class WarmSessionGone extends Exception {
        WarmSessionGone(SQLException cause) {
            super(cause.getMessage(), cause, false, false);
        }
    }

    /**
     * Waits in the server on {@code reused}, a warm session, or else on a connection borrowed for
     * this wait and claimed; the session then holds the lock, or is cleaned and given back. With
     * {@code retryClaim}, a borrowed connection whose backend ends before the wait is sent is given
     * up for another (WarmSessionGone), as {@link SessionPool} opens a lock session once more.
     */
    private AdvisoryLock waitInDatabase(LockRequest request, long deadlineNanos, LockSession reused,
            boolean retryClaim) throws WarmSessionGone {
        long leftMillis = TimeUnit.NANOSECONDS.toMillis(deadlineNanos - System.nanoTime());
        if (leftMillis <= 0) {
            if (reused != null) {
                closeSession(reused);
            }
            return null;
        }
        // On a warm session the wait is its first statement since the release, and its network may have
        // gone meanwhile: the first stretch of the wait is cut to half a network timeout, and its socket
        // keeps the network timeout, so a dead network is found (and the wait goes on elsewhere) within
        // one, as the claim on a fresh connection would find it. A wait that outlasts the stretch goes
        // on on a fresh connection.
        long lockTimeout = reused != null ? Math.min(leftMillis, Math.max(1, networkTimeoutMillis / 2))
                : Math.min(leftMillis, maxLockTimeoutMillis);
        boolean cut = lockTimeout < leftMillis;
        long lockId = hasher.lockId(request.key());
        String sql = fencingSequence == null
                ? (request.isShared() ? WAIT_LOCK_SHARED : WAIT_LOCK)
                : (request.isShared() ? WAIT_LOCK_SHARED_FENCED : WAIT_LOCK_FENCED);
        Connection connection = reused != null ? reused.connection : Jdbc.borrow(dataSource, connectionWaitTimeout,
                connector, "waiting for lock '" + request.key() + "'");
        // The statements run on a platform thread when this one is virtual (see PlatformThreads): an
        // interrupt then leaves the wait to end as on a platform thread, not by closing its connection.
        // The borrow stays here, so a crowd of virtual callers waiting for connections holds no threads.
        return PlatformThreads.run(() -> waitOn(request, reused, connection, sql, lockId, lockTimeout, cut, retryClaim));
    }

    /** {@link #waitInDatabase}'s statements on its connection, {@code reused} or borrowed for it. */
    private AdvisoryLock waitOn(LockRequest request, LockSession reused, Connection connection, String sql,
            long lockId, long lockTimeout, boolean cut, boolean retryClaim) throws WarmSessionGone {
        Wait waitingGuard = new Wait(reused);
        waiting.put(connection, waitingGuard);
        LockSession session = reused;
        boolean holding = false;
        try {
            if (isClosed()) { // close() aborts the waiting connections: this one may have come too late for it
                throw closedWhileWaiting(request);
            }
            // So does a refusal (see multiplexed()): it sets its reason before it aborts the waits, and this
            // wait was listed before it reads the reason, so either the refusal aborts it or it stops here.
            ensureOpen();
            if (session == null) {
                prepare(connection);
                // A pooled connection may be one whose network is already gone: bounded from the first statement.
                connection.setNetworkTimeout(connector, networkTimeoutMillis);
                session = claimBackend(connection, true);
                synchronized (waitingGuard) {
                    // A refusal's stopWaits() either lists this session (and ends its backend after
                    // aborting the wait) or has set its reason first, and the wait stops here.
                    waitingGuard.session = session;
                    ensureOpen();
                }
            }
            // Blocked in the server for up to lock_timeout; the socket must not give up first, but must
            // not wait forever on a server that vanished either. A warm session's stretch (at most half
            // a network timeout) ends within the network timeout its connection already has, with half
            // of it to spare for the answer: nothing to change there, nor to put back after the grant,
            // which is on the path from a release to the next holder.
            boolean raised = reused == null;
            if (raised) {
                connection.setNetworkTimeout(connector, (int) Math.min(Integer.MAX_VALUE, lockTimeout + networkTimeoutMillis));
            }
            boolean mine;
            Long token = null;
            try (PreparedStatement ps = connection.prepareStatement(session.tagged(sql))) {
                int i = 1;
                ps.setLong(i++, lockId);
                if (fencingSequence != null) {
                    ps.setString(i++, fencingSequence);
                }
                ps.setString(i++, session.token);
                ps.setString(i, Long.toString(lockTimeout));
                Runnable hook = beforeWaitForTests;
                if (hook != null) {
                    hook.run();
                }
                try (ResultSet rs = ps.executeQuery()) {
                    mine = rs.next(); // no row: not the session's backend
                    if (mine && fencingSequence != null) {
                        token = rs.getLong(2);
                    }
                }
            } catch (SQLException | RuntimeException | Error e) {
                // A wait that ended without the lock (timed out, cancelled, failed) is cleaned below on this
                // connection: bounded like every lock session first, or a network gone right after the
                // timeout would hold the caller, unlisted for close(), for about the whole wait again.
                if (raised) {
                    boundQuietly(connection);
                }
                throw e;
            }
            // Bounded like every lock session from here on, the pid read below included: under the wait's
            // timeout a network gone right after the answer would hold up the refusal for the whole wait.
            if (raised) {
                connection.setNetworkTimeout(connector, networkTimeoutMillis);
            }
            if (!mine) {
                // the token check kept the lock from being taken there
                throw multiplexed(session, foreignBackendPid(connection));
            }
            dedicated.add(session);
            holding = true;
            return new AdvisoryLock(request.key(), request.isShared(), token, lockId, session, holdUntil(request));
        } catch (SQLException e) {
            if (session != null) {
                session.noteIfSilent(e); // the wait may have been granted on a backend that lives on (see below)
            }
            if (LOCK_TIMEOUT.equals(e.getSQLState())) {
                if (cut) {
                    throw new WarmSessionGone(e); // the wait goes on on a fresh connection; the finally cleans this one
                }
                return null; // the finally below cleans the session: the grant may have come with the timeout
            }
            if (isClosed()) {
                throw closedWhileWaiting(request);
            }
            if (reused != null && Jdbc.isConnectionFailure(e, connection)) {
                throw new WarmSessionGone(e); // the finally below aborts it
            }
            if (session == null && retryClaim && Jdbc.backendEnded(e, connection)) {
                // Nothing was claimed or locked on it (a pooler's other client, an operator or a restart
                // ended its backend): once more on another. Aborted, so no pool hands it out again.
                Jdbc.abortQuietly(connection);
                throw new WarmSessionGone(e);
            }
            throw lockFailed("waiting for lock '" + request.key() + "'", e);
        } finally {
            synchronized (waitingGuard) { // stopWaits() never touches it once it is no longer listed
                waiting.remove(connection);
            }
            if (!holding) {
                if (session == null) {
                    Jdbc.closeQuietly(connection); // the backend was not claimed, and no lock statement ran
                } else {
                    // Failed, timed out or cancelled after the claim: the lock may have been granted
                    // (session-level locks outlive errors, and 55P03 can follow the grant), so the
                    // session is cleaned and unclaimed, or aborted, before the pool gets it back.
                    unlockAllAndClose(connection, session);
                    if (givenUp(session)) {
                        // Aborted, but behind a silent network its backend never hears of it: a lock
                        // granted to it stays until the server gives up on the connection, and the
                        // next wait (this caller's, on a fresh connection) would queue behind it.
                        endGivenUpBackend(session);
                    }
                }
            }
        }
    }

    /** Puts the session's network timeout back on a wait's connection; one that fails now fails the cleaning fast. */
    private void boundQuietly(Connection connection) {
        try {
            connection.setNetworkTimeout(connector, networkTimeoutMillis);
        } catch (SQLException | RuntimeException e) {
            log.debug("could not bound a wait's connection before cleaning it", e);
        }
    }

    private IllegalStateException closedWhileWaiting(LockRequest request) {
        return new IllegalStateException("the lock client was closed while waiting for '" + request.key() + "'");
    }

    /**
     * Unlocks everything the session holds and unclaims its backend, then gives the connection back.
     * When the statement reached another backend (a pooler moved the session), the session's own
     * backend is ended instead, with its locks; when it fails, the connection is aborted (and, behind
     * a network that went silent, noted so on the session: see {@link #endGivenUpBackend}).
     */
    static void unlockAllAndClose(Connection connection, LockSession session) {
        boolean mine;
        try (PreparedStatement ps = connection.prepareStatement(session.tagged(UNLOCK_ALL))) {
            ps.setInt(1, session.backendPid);
            ps.setString(2, session.token);
            try (ResultSet rs = ps.executeQuery()) {
                rs.next();
                mine = rs.getBoolean(3) || rs.getInt(4) == session.backendPid; // cleaned, or claimed since
            }
            if (!mine) {
                terminateBackends(connection, List.of(session));
            }
        } catch (SQLException e) {
            session.noteIfSilent(e);
            Jdbc.abortQuietly(connection);
            return;
        }
        if (mine) {
            Jdbc.closeQuietly(connection);
        } else {
            Jdbc.abortQuietly(connection);
        }
    }

    /** Ends the claimed backends of {@code claimed} (see TERMINATE); returns how many were ended. */
    private static int terminateBackends(Connection connection, List<LockSession> claimed) throws SQLException {
        List<LockSession> named = claimed.stream().filter(s -> s.backendStart != null).toList();
        if (named.isEmpty()) {
            return 0;
        }
        try (PreparedStatement ps = connection.prepareStatement(TERMINATE)) {
            bindBackends(connection, ps, named);
            try (ResultSet rs = ps.executeQuery()) {
                rs.next();
                int ended = rs.getInt(1);
                if (ended > 0) {
                    log.warn("ended {} backend(s) that held this client's advisory locks and that a pooler no longer"
                            + " routes this client to", ended);
                }
                return ended;
            }
        }
    }

    /** Binds the backends of {@code sessions}, by pid (1) and start time (2), for TERMINATE and its forms. */
    private static void bindBackends(Connection connection, PreparedStatement ps, List<LockSession> sessions)
            throws SQLException {
        ps.setArray(1, connection.createArrayOf("integer", sessions.stream().map(s -> s.backendPid).toArray()));
        ps.setArray(2, connection.createArrayOf("timestamptz", sessions.stream().map(s -> s.backendStart).toArray()));
    }

    @Override
    protected void stopWaits() {
        stopWaitsListingSessions();
    }

    /**
     * Cancels and aborts every wait still listed; answers the sessions those waits had claimed. Behind
     * a pooler an abort leaves the server session running, and the waiter's own cleaning then fails on
     * the aborted connection: a refusal ends those backends (see multiplexed()).
     */
    private List<LockSession> stopWaitsListingSessions() {
        List<LockSession> claimed = new ArrayList<>();
        waiting.forEach((connection, guard) -> {
            synchronized (guard) { // the waiter does not give the connection back meanwhile
                if (!waiting.containsKey(connection)) {
                    return;
                }
                if (guard.session != null) {
                    claimed.add(guard.session);
                }
                // A cancel takes the backend out of the lock queue at once (a backend blocked on a lock
                // does not notice its client is gone); the abort ends a wait that had not reached the server.
                try {
                    connection.unwrap(org.postgresql.PGConnection.class).cancelQuery();
                } catch (SQLException | RuntimeException e) {
                    log.debug("cancelling a waiting statement failed", e);
                }
                try {
                    connection.abort(Runnable::run);
                } catch (SQLException | RuntimeException e) {
                    log.debug("aborting a waiting connection failed", e);
                }
            }
        });
        return claimed;
    }

    /**
     * Computed after the grant, so it must not throw: a hold-at-least beyond what nanoseconds can say
     * (about 292 years) is held for "ever", until the client closes (see Durations).
     */
    private long holdUntil(LockRequest request) {
        return request.holdAtLeast().isZero() ? 0
                : System.nanoTime() + dev.pglock.core.internal.Durations.nanosAtMost(request.holdAtLeast());
    }

    @Override
    protected CompletableFuture<Released> releaseInDatabase(AdvisoryLock lock) {
        long holdNanos = lock.holdUntilNanos - System.nanoTime();
        // A grant never handed out (see DatabaseLock.markUnused) had no work under it: no hold-at-least.
        if (lock.holdUntilNanos != 0 && holdNanos > 0 && !isClosed() && !lock.isUnused()) {
            // Hold-at-least: the session keeps the lock until then; no thread waits for it. But first
            // the release says whether the lock was still there: the unlock that comes later finds out
            // too late to tell the holder (whose release() has returned) that its work was unprotected.
            Released now = stillHeld(lock);
            if (now != Released.HELD) {
                return CompletableFuture.completedFuture(now);
            }
            CompletableFuture<Released> released = new CompletableFuture<>();
            try {
                // The unlock runs off the scheduler thread, so a session that hangs cannot delay the watchdog.
                scheduler.schedule(() -> {
                    try {
                        connector.execute(() -> {
                            Released found = Released.HELD;
                            try {
                                found = unlock(lock);
                            } finally {
                                released.complete(found); // the key must become free here whatever happened
                            }
                        });
                    } catch (RejectedExecutionException closing) {
                        released.complete(Released.HELD); // close() unlocks everything itself
                    }
                }, holdNanos, TimeUnit.NANOSECONDS);
                return released;
            } catch (RejectedExecutionException closing) {
                // the client is closing: it unlocks everything itself
            }
        }
        return CompletableFuture.completedFuture(unlock(lock));
    }

    /** A live session keeps its locks: confirmed by the session's check (one statement). */
    @Override
    protected Released confirmHeld(AdvisoryLock lock) {
        return stillHeld(lock);
    }

    @Override
    protected boolean confirmsHolds() {
        return true;
    }

    /**
     * Whether the lock's session still has it: its backend answers, with the session's token. A live
     * backend keeps its advisory locks, and only this session's own unlocks drop them.
     */
    private Released stillHeld(AdvisoryLock lock) {
        LockSession session = lock.session;
        int[] found;
        try {
            found = session.call(c -> runCheck(c, session));
        } catch (SQLException e) {
            return endedBeforeRelease(session, e);
        }
        return found[0] == 0 ? movedBeforeRelease(session, found[1]) : Released.HELD;
    }

    /** CHECK on the session's connection: {whether the backend is the session's (1) or not (0), its pid}. */
    private static int[] runCheck(Connection c, LockSession session) throws SQLException {
        try (PreparedStatement ps = c.prepareStatement(session.tagged(CHECK))) {
            ps.setString(1, session.token);
            try (ResultSet rs = ps.executeQuery()) {
                rs.next();
                return new int[] {rs.getBoolean(1) ? 1 : 0, rs.getInt(2)};
            }
        }
    }

    /**
     * A release found the session's backend gone (ended by the server, or cut off): the lock was not
     * confirmed to the end, and with a server-side end it was gone while its holder worked.
     */
    private Released endedBeforeRelease(LockSession session, SQLException e) {
        sessionDied(session, e);
        return Released.gone(Reason.SESSION_DIED, "its database session (backend pid " + session.backendPid
                + ") ended before the release: " + e.getMessage(), e);
    }

    /** A release ran on a backend that is not the session's (pid): the client refuses further use. */
    private Released movedBeforeRelease(LockSession session, int pid) {
        LockDatabaseException refused = multiplexed(session, pid);
        return Released.gone(Reason.SESSION_DIED, refused.getMessage(), refused);
    }

    /** What an unlock answered: whether it unlocked (null: it ran on another backend), and where it ran. */
    private record Unlocked(boolean unlocked, int pid, boolean mine, boolean retired) {
    }

    /** Unlocks on the lock's session; says whether the lock was still there, on its own backend. */
    private Released unlock(AdvisoryLock lock) {
        LockSession session = lock.session;
        // A waiting caller's session stays warm for the next wait when there is room: then it keeps its claim.
        boolean keep = session.dedicated && reserveWarm();
        LockSession unlockedAndClaimed = null;
        try {
            Released found = unlock(lock, keep);
            if (keep && found == Released.HELD) {
                unlockedAndClaimed = session; // left open and claimed by the unlock below
            }
            return found;
        } finally {
            if (keep && !endWarmReservation(unlockedAndClaimed) && unlockedAndClaimed != null) {
                closeSession(unlockedAndClaimed); // the client is closing: given back unclaimed
            }
        }
    }

    /** Reserves room for one more warm session; false when there is none or the client is closed. */
    private boolean reserveWarm() {
        synchronized (warm) {
            if (isClosed() || warm.size() + warmReserved >= warmBound) {
                return false;
            }
            warmReserved++;
            return true;
        }
    }

    /**
     * Ends a reservation, keeping {@code session} (unless null) warm in it; false when it was not kept
     * because the client is closed or closing (close() takes the warm sessions after it is marked
     * closed, so a session is either kept before that or refused here).
     */
    private boolean endWarmReservation(LockSession session) {
        synchronized (warm) {
            warmReserved--;
            if (session == null || isClosed() || refused() || session.isEnded()) {
                return false;
            }
            warm.addLast(new Warm(session, System.nanoTime()));
        }
        if (coolingScheduled.compareAndSet(false, true)) {
            scheduleCooling(warmNanos);
        }
        return true;
    }

    /** The most recently warmed session that is still warm, taken out of the warm ones; null if none. */
    private LockSession takeWarm() {
        synchronized (warm) {
            Warm last = warm.peekLast();
            if (last == null || System.nanoTime() - last.sinceNanos() >= warmNanos) {
                return null; // older ones are colder still: the sweep gives them back
            }
            warm.removeLast();
            return last.session();
        }
    }

    private record Warm(LockSession session, long sinceNanos) {
    }

    private void scheduleCooling(long delayNanos) {
        try {
            scheduler.schedule(this::coolWarm, delayNanos, TimeUnit.NANOSECONDS);
        } catch (RejectedExecutionException closing) {
            coolingScheduled.set(false); // close() gives the warm sessions back
        }
    }

    /** Gives back the warm sessions that have cooled; runs again when the oldest left would cool. */
    private void coolWarm() {
        coolingScheduled.set(false);
        List<LockSession> cold = new ArrayList<>();
        long oldestLeft = -1;
        long warmFor = warmNanos;
        synchronized (warm) {
            long now = System.nanoTime();
            while (!warm.isEmpty() && now - warm.peekFirst().sinceNanos() >= warmFor) {
                cold.add(warm.removeFirst().session());
            }
            if (!warm.isEmpty()) {
                oldestLeft = warm.peekFirst().sinceNanos();
            }
        }
        for (LockSession session : cold) {
            try {
                connector.execute(() -> closeSession(session));
            } catch (RejectedExecutionException closing) {
                closeSession(session);
            }
        }
        if (oldestLeft != -1 && coolingScheduled.compareAndSet(false, true)) {
            scheduleCooling(Math.max(0, oldestLeft + warmFor - System.nanoTime()));
        }
    }

    /** The warm sessions, taken out (close() and a client that refuses further use dispose of them). */
    private List<LockSession> drainWarm() {
        synchronized (warm) {
            List<LockSession> all = new ArrayList<>();
            warm.forEach(w -> all.add(w.session()));
            warm.clear();
            return all;
        }
    }

    private Released unlock(AdvisoryLock lock, boolean keep) {
        LockSession session = lock.session;
        Unlocked answer;
        try {
            answer = session.call(c -> {
                Unlocked result;
                String sql = session.dedicated
                        ? (keep ? (lock.isShared() ? UNLOCK_SHARED_KEEP : UNLOCK_KEEP)
                                : (lock.isShared() ? UNLOCK_SHARED_RETIRE : UNLOCK_RETIRE))
                        : (lock.isShared() ? UNLOCK_SHARED_ON_SHARED_SESSION : UNLOCK_ON_SHARED_SESSION);
                // A dedicated session unlocks once, then retires: only a shared one keeps the statement.
                String tagged = session.tagged(sql);
                PreparedStatement ps = session.dedicated ? c.prepareStatement(tagged) : session.prepared(tagged);
                try {
                    if (session.dedicated) {
                        ps.setLong(1, lock.lockId);
                        ps.setString(2, session.token);
                    } else {
                        ps.setString(1, session.token);
                        ps.setLong(2, lock.lockId);
                    }
                    try (ResultSet rs = ps.executeQuery()) {
                        boolean unlocked;
                        boolean mine;
                        if (session.dedicated) {
                            mine = rs.next(); // no row: not the session's backend
                            unlocked = mine && rs.getBoolean(keep ? 1 : 2);
                        } else {
                            rs.next();
                            unlocked = rs.getBoolean(1);
                            mine = !rs.wasNull(); // null: not the session's backend
                        }
                        int pid = mine ? session.backendPid : foreignBackendPid(c);
                        // Retired in the same turn, so the watchdog never checks a returned connection;
                        // if close() ended the session first, close() disposes of it. An unlock that found
                        // nothing has cleared the token too: the session ends in the same turn, so the
                        // watchdog never takes the cleared backend for one a pooler swapped.
                        boolean retired = session.dedicated && mine && !keep && session.end();
                        if (keep && mine && unlocked) {
                            // Unwatched from inside the session's lock, so a check that takes it later skips
                            // the session, which the next waiter may be using by then (see check()).
                            dedicated.remove(session);
                        }
                        if (unlocked && mine && !session.dedicated) {
                            session.lockReleased();
                        }
                        result = new Unlocked(unlocked, pid, mine, retired);
                    }
                } finally {
                    if (session.dedicated) {
                        ps.close();
                    }
                }
                return result;
            });
        } catch (SQLException e) {
            if (!Jdbc.isConnectionFailure(e, session.connection) && !session.isEnded()) {
                log.warn("releasing lock '{}' failed; ending its session so the server drops it", lock.key(), e);
            }
            return endedBeforeRelease(session, e);
        }
        if (!answer.mine()) {
            return movedBeforeRelease(session, answer.pid());
        } else if (!answer.unlocked()) {
            log.warn("lock '{}' (id {}) was not held by {} when released; ending the session", lock.key(),
                    lock.lockId, session);
            SQLException notHeld = new SQLException("a lock could not be released on this session");
            if (answer.retired()) {
                sessionEnded(session, notHeld); // ended in the unlock's turn (above)
            } else {
                sessionDied(session, notHeld);
            }
            return Released.gone(Reason.SESSION_DIED, "the database no longer had it on its session (backend pid "
                    + session.backendPid + ")", notHeld);
        } else if (answer.retired()) {
            dedicated.remove(session);
            Jdbc.closeQuietly(session.connection); // clean: autocommit on, lock_timeout was transaction-local
        }
        return Released.HELD; // kept warm by the caller when keep, still claimed
    }

    /**
     * The backend a statement that found another session's token ran on, for the error only; -1 when
     * reading it fails. What decides is that the token was not the session's: a failure here must not
     * turn a multiplexed session (whose own backend is then ended, with its locks) into one that merely died.
     */
    private static int foreignBackendPid(Connection c) {
        try {
            return backendPid(c);
        } catch (SQLException | RuntimeException e) {
            log.debug("reading the pid of a backend that is not the lock session's failed", e);
            return -1;
        }
    }

    /** The backend a connection talks to now. */
    private static int backendPid(Connection c) throws SQLException {
        try (PreparedStatement ps = c.prepareStatement(BACKEND_PID); ResultSet rs = ps.executeQuery()) {
            rs.next();
            return rs.getInt(1);
        }
    }

    /** Locks are taken outside transactions: a pool may hand out connections with autocommit off. */
    private static void prepare(Connection connection) throws SQLException {
        if (!connection.getAutoCommit()) {
            connection.setAutoCommit(true);
        }
    }

    /**
     * The watchdog: every heartbeat, each session that holds or may hold locks must answer, on the
     * backend it was opened on. Each check runs on its own thread under the session's network
     * timeout, so one session whose network is gone delays no other check, and a session busy with a
     * statement is skipped (that statement is bounded by the same timeout and reports its own failure).
     */
    private void checkSessions() {
        lastRoundNanos = System.nanoTime();
        // Sessions that concurrent callers opened and that hold nothing now go back to the pool.
        sessions.retireIdle(idleNanos, session -> {
            try {
                connector.execute(() -> disposeRetired(session));
            } catch (RejectedExecutionException closing) {
                disposeRetired(session);
            }
        });
        List<LockSession> all = new ArrayList<>(dedicated);
        all.addAll(sessions.live());
        if (sessions.live().isEmpty() && !isClosed() && reopening.compareAndSet(false, true)) {
            // Every shared session died and nobody has taken a lock since: open one again in the
            // background, so the client is ready (and its health says so) once the database is back.
            try {
                connector.execute(() -> {
                    try {
                        reopenFirstSession();
                    } finally {
                        reopening.set(false);
                    }
                });
            } catch (RejectedExecutionException closing) {
                reopening.set(false);
                return;
            }
        }
        for (LockSession session : all) {
            if (session.isEnded() || !session.checking.compareAndSet(false, true)) {
                continue;
            }
            try {
                connector.execute(() -> {
                    try {
                        check(session);
                    } finally {
                        session.checking.set(false);
                    }
                });
            } catch (RejectedExecutionException closing) {
                session.checking.set(false);
                return;
            }
        }
    }

    private void check(LockSession session) {
        int[] answer;
        java.util.function.Consumer<LockSession> hook = beforeCheckForTests;
        if (hook != null) {
            hook.accept(session);
        }
        long started = System.nanoTime();
        // A session that fails its check is ended before the check lets go of it: what is done about it
        // afterwards (the observer told, its locks reported lost, its connection aborted) then concerns
        // this session alone. Ended only after, a release could come in between, keep it warm, and the
        // next waiter's lock on it would be reported lost and dropped for this session's failure.
        boolean[] endedHere = new boolean[1];
        try {
            answer = session.callIfIdle(c -> {
                if (session.dedicated && !dedicated.contains(session)) {
                    // Released since the round began (under this lock, see unlock()): it may be warm, or
                    // in the hands of a waiter whose wait runs on it without this lock. Nothing to watch.
                    return null;
                }
                int[] found;
                try {
                    found = runCheck(c, session);
                } catch (SQLException | RuntimeException e) {
                    endedHere[0] = session.end();
                    throw e;
                }
                if (found[0] == 0) {
                    endedHere[0] = session.end();
                }
                return found;
            });
        } catch (SQLException | RuntimeException e) {
            checkFailure = session + " did not answer: " + e.getMessage();
            // Its locks are reported lost, with this cause, before the observer hears of it; a session some
            // other thread ended first (the only way the work leaves it not ended here) is reported by that thread.
            if (endedHere[0]) {
                sessionEnded(session, e);
            }
            observeHeartbeat(started, false);
            return;
        }
        if (answer != null && answer[0] == 0) {
            checkFailure = session + " answered from another backend (pid " + answer[1] + ")";
            observeHeartbeat(started, false);
            LockDatabaseException refusal = multiplexed(session, answer[1]); // ends the other sessions too
            if (endedHere[0]) {
                // multiplexed() reported its holds and ended its backend: nothing to wait for
                logSessionLost(session, refusal.getCause());
                disposeEnded(session);
            }
        } else if (answer != null) {
            checkFailure = null;
            lastCheckNanos = System.nanoTime();
            observeHeartbeat(started, true);
        }
    }

    /** Set while {@link #reopenFirstSession} runs, so attempts never pile up while the database is down. */
    private final java.util.concurrent.atomic.AtomicBoolean reopening = new java.util.concurrent.atomic.AtomicBoolean();

    private void reopenFirstSession() {
        long started = System.nanoTime();
        try {
            ensureOpen(); // a client that refuses further use opens nothing
            sessions.session().callClaimed(c -> {
                try (java.sql.Statement st = c.createStatement()) {
                    st.execute("SELECT 1"); // the session answers, not merely exists
                }
                return null;
            });
            checkFailure = null;
            lastCheckNanos = System.nanoTime();
            observeHeartbeat(started, true);
        } catch (SQLException | RuntimeException e) {
            checkFailure = "no lock session can be opened: " + e.getMessage();
            observeHeartbeat(started, false);
        }
    }

    /** Why the last session check failed, until one succeeds; null while they succeed. */
    private volatile String checkFailure;
    /** When a session check last succeeded (System.nanoTime); 0 if none has. */
    private volatile long lastCheckNanos;

    @Override
    protected int lockSessionsOpen() {
        int warmNow;
        synchronized (warm) {
            warmNow = warm.size();
        }
        return sessions.live().size() + dedicated.size() + warmNow;
    }

    @Override
    protected int waitingConnections() {
        return waiting.size();
    }

    @Override
    protected long lastCheckNanos() {
        return lastCheckNanos;
    }

    /** When the watchdog last ran (System.nanoTime): one that stops running is a stalled client. */
    private volatile long lastRoundNanos = System.nanoTime();

    /**
     * The watchdog not running for three intervals, else the last session check's failure while no
     * check has succeeded since.
     */
    @Override
    protected String problem() {
        long idle = System.nanoTime() - lastRoundNanos;
        if (idle > heartbeatInterval.toNanos() * 3) {
            return "the lock session watchdog has not run for " + Duration.ofNanos(idle).toMillis()
                    + " ms (it runs every " + heartbeatInterval + "): lost sessions would go unnoticed";
        }
        return checkFailure;
    }

    /** An idle lock session that does not answer; a check that succeeds now clears an old failure. */
    @Override
    protected String probeProblem() {
        return Jdbc.pingIdle(sessions.live());
    }

    /** The session is gone, and every lock on it with it: report them lost and stop using it. */
    private void sessionDied(LockSession session, Throwable cause) {
        if (!session.end()) {
            return;
        }
        sessionEnded(session, cause);
    }

    /**
     * {@link #sessionDied}, for a session this thread has just ended itself. Nothing uses it from
     * now on, but its connection is aborted only once its holders were told, as a lease this client
     * stopped trusting is given back: when its backend is still alive (a check or an unlock failed
     * with an error of the statement, not of the connection), its locks stay in the database until
     * then, so a leader's onRevoked pauses its work before another candidate can be elected.
     */
    private void sessionEnded(LockSession session, Throwable cause) {
        dedicated.remove(session);
        sessions.remove(session);
        logSessionLost(session, cause);
        if (cause instanceof SQLException failure && Jdbc.isConnectionFailure(failure, session.connection)) {
            // Its backend is gone or out of reach, and aborting frees nothing on the server: the
            // connection goes at once, so a pool sized near the sessions is not kept short of one.
            if (givenUp(session)) {
                // Behind a network that went silent (noted on the session where the failure was seen)
                // the backend may live on, holding the locks, until the server's TCP keepalive gives up
                // on it (hours by default): once the holders were told, it is ended from a connection of
                // its own, when one can be had.
                Runnable endBackend = () -> endGivenUpBackend(session); // off the calling thread itself
                reportThen(session, cause, endBackend, endBackend);
            } else {
                reportSessionLost(session, cause);
            }
            session.abortAndDispose(networkTimeout.toNanos());
            return;
        }
        abortWhenTold.add(session);
        reportThen(session, cause, () -> {
            try {
                connector.execute(() -> abortOnce(session)); // off the event and scheduler threads
            } catch (RejectedExecutionException closing) {
                abortOnce(session);
            }
        }, () -> abortOnce(session));
    }

    /**
     * Reports the holds of {@code session}, which has ended, lost, then runs {@code then} once its
     * holders were told (see AbstractLockClient.lost, the form with a `then`), or {@code atOnce} on
     * this thread when there was nobody to tell: what frees its locks in the database waits for them.
     */
    private void reportThen(LockSession session, Throwable cause, Runnable then, Runnable atOnce) {
        java.util.function.Consumer<LockSession> hook = beforeSessionReportedForTests;
        if (hook != null) {
            hook.accept(session);
        }
        if (!lost(lock -> lock.session == session, Reason.SESSION_DIED, sessionLostReason(session, cause), cause,
                then)) {
            if (session.holdsMarkedLost()) {
                // Nothing left to tell here, but a holder that asked isHeld() since the end (or a caller
                // joining the key) found the session ended and marked its hold lost first, queueing its
                // telling in the same turn of the client's lock: `then` waits behind it, bounded.
                afterQueuedTells(then);
            } else {
                atOnce.run(); // nobody to tell
            }
        }
    }

    /**
     * Sessions given up on as their network went silent, whose backends are still to be ended (see
     * TERMINATE_GIVEN_UP): by {@link #endGivenUpBackend} once their holders were told, or by close()
     * for those left.
     */
    private final Set<LockSession> givenUp = ConcurrentHashMap.newKeySet();
    /** Set by close() before it ends the sessions in {@link #givenUp}: those given up after end themselves. */
    private volatile boolean givenUpDraining;

    /**
     * Notes {@code session} as given up on when its network went silent (see {@link #givenUp});
     * whether it was (without a start time or a token it cannot be told from another backend).
     */
    private boolean givenUp(LockSession session) {
        return session.wentSilent() && session.backendStart != null && session.token != null && givenUp.add(session);
    }

    /**
     * Ends the backend of {@code session}, given up on ({@link #givenUp(LockSession)}), from a
     * connection borrowed for it, off the calling thread (the event or the scheduler thread): best
     * effort, as the server may be out of reach too. Once: a session close() ended is not ended again.
     */
    private void endGivenUpBackend(LockSession session) {
        if (!givenUp.remove(session)) {
            return;
        }
        List<LockSession> one = List.of(session);
        try {
            connector.execute(() -> endGivenUpBackendsNow(one, connector));
        } catch (RejectedExecutionException closed) {
            // After close() shut the connector down: on a thread of its own (this one may be a connector
            // thread that shutdownNow() interrupted), borrowing on another, so the wait stays bounded.
            java.util.concurrent.Executor ownThread = task -> {
                Thread t = new Thread(task, "pglock-advisory-end-given-up");
                t.setDaemon(true);
                t.start();
            };
            ownThread.execute(() -> endGivenUpBackendsNow(one, ownThread));
        }
    }

    /** Ends the backends of {@code sessions} (see TERMINATE_GIVEN_UP) from a connection borrowed on {@code borrowing}. */
    void endGivenUpBackendsNow(List<LockSession> sessions, java.util.concurrent.Executor borrowing) {
        if (sessions.isEmpty()) {
            return;
        }
        try (Connection fresh = Jdbc.borrow(dataSource, connectionWaitTimeout, borrowing,
                "ending the backends of lock sessions whose network went silent")) {
            fresh.setNetworkTimeout(borrowing, networkTimeoutMillis);
            try (PreparedStatement ps = fresh.prepareStatement(TERMINATE_GIVEN_UP)) {
                bindBackends(fresh, ps, sessions);
                ps.setArray(3, fresh.createArrayOf("text", sessions.stream().map(LockSession::tag).toArray()));
                try (ResultSet rs = ps.executeQuery()) {
                    rs.next();
                    int ended = rs.getInt(1);
                    if (ended > 0) {
                        log.warn("ended {} backend(s) of lock sessions whose network went silent and that still held"
                                + " on to their locks", ended);
                    }
                }
            }
        } catch (SQLException | RuntimeException e) {
            log.warn("could not end the backends of {} ({}); their locks end when the server gives up on those"
                    + " connections (tcp_keepalives_*)", sessions, e.getMessage());
        }
    }

    /** Noted on the session, so that {@link #sessionEnded} knows whether anyone else is telling its holders. */
    @Override
    protected void markedLost(AdvisoryLock lock) {
        lock.session.markHoldsLost();
    }

    /**
     * Sessions ended by {@link #sessionEnded} whose connections are not aborted yet (their holders are
     * being told): close() aborts those left.
     */
    private final Set<LockSession> abortWhenTold = ConcurrentHashMap.newKeySet();

    /** Aborts a session of {@link #abortWhenTold}, unless that was done already. */
    private void abortOnce(LockSession session) {
        if (abortWhenTold.remove(session)) {
            session.abortAndDispose(networkTimeout.toNanos());
        }
    }

    private void logSessionLost(LockSession session, Throwable cause) {
        if (!isClosed()) {
            log.warn("{} ended ({}); every lock it held is lost, and a new session replaces it on next use",
                    session, cause.getMessage());
        }
    }

    /** Marks the holds of {@code session}, which has ended, lost, and has them told. */
    private void reportSessionLost(LockSession session, Throwable cause) {
        lost(lock -> lock.session == session, Reason.SESSION_DIED, sessionLostReason(session, cause), cause);
    }

    private static String sessionLostReason(LockSession session, Throwable cause) {
        return "its database session (backend pid " + session.backendPid + ") ended: " + cause.getMessage();
    }

    /** The rest of {@link #sessionEnded}, for a session whose holds multiplexed() reported before ending its backend. */
    private void disposeEnded(LockSession session) {
        dedicated.remove(session);
        sessions.remove(session);
        session.abortAndDispose(networkTimeout.toNanos());
    }

    @Override
    public Optional<LockInfo> get(String key) {
        LockRequest.of(key); // the same checks as for acquiring
        long lockId = hasher.lockId(key);
        return query(GET_LOCK, ps -> ps.setLong(1, lockId), Map.of(lockId, key)).stream().findFirst();
    }

    @Override
    public List<LockInfo> list() {
        return query(LIST_LOCKS, ps -> { }, Map.of());
    }

    @Override
    public Set<Integer> semaphoreSizes(String key) {
        ensureOpen();
        long keyId = hasher.lockId(key);
        long classId = keyId >>> 32;
        LockSession session = sessions.session();
        try {
            return session.callClaimed(c -> {
                try (PreparedStatement ps = c.prepareStatement(SEMAPHORE_SIZES)) {
                    ps.setLong(1, classId);
                    Set<Integer> sizes = new java.util.TreeSet<>();
                    try (ResultSet rs = ps.executeQuery()) {
                        while (rs.next()) {
                            sizes.add((int) rs.getLong(1));
                        }
                    }
                    return sizes;
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
    public List<LockInfo> permitHolders(String key) {
        Map<Long, String> permitKeys = new HashMap<>();
        for (int permits : semaphoreSizes(key)) {
            if (permits < 1 || permits > PermitKeys.MAX_PERMITS) {
                continue; // no marker says so: an unrelated lock whose id shares the high 32 bits
            }
            for (int i = 0; i < permits; i++) {
                String permitKey = PermitKeys.permit(key, i, permits);
                permitKeys.put(hasher.lockIdOnce(permitKey), permitKey);
            }
        }
        if (permitKeys.isEmpty()) {
            return List.of();
        }
        Long[] ids = permitKeys.keySet().toArray(Long[]::new);
        return query(GET_LOCKS, ps -> ps.setArray(1, ps.getConnection().createArrayOf("bigint", ids)), permitKeys);
    }

    /** Binds a pg_locks query's parameters. */
    private interface Binder {
        void bind(PreparedStatement ps) throws SQLException;
    }

    /** One pg_locks row: a session holding an advisory lock. */
    private record Row(long lockId, boolean shared, int pid, String applicationName) {
    }

    /**
     * Reads pg_locks and describes each lock id once, with all its holding sessions; {@code knownKeys}
     * names the ids whose keys the caller knows (another process's lock shows only its id otherwise).
     */
    private List<LockInfo> query(String sql, Binder binder, Map<Long, String> knownKeys) {
        ensureOpen();
        Map<Long, AdvisoryLock> mine = new HashMap<>();
        for (AdvisoryLock lock : locksInDatabase()) { // a hold-at-least release still pending is ours too
            mine.put(lock.lockId, lock);
        }
        Map<Long, List<Row>> byId = new LinkedHashMap<>();
        LockSession session = sessions.session();
        try {
            session.callClaimed(c -> {
                try (PreparedStatement ps = c.prepareStatement(sql)) {
                    binder.bind(ps);
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
            if (own != null && PermitKeys.isMarker(own.key())) {
                return; // a semaphore's bookkeeping, not a lock anyone asked for
            }
            Row ours = own == null ? null
                    : rows.stream().filter(r -> r.pid() == own.session.backendPid).findFirst().orElse(null);
            Row first = ours != null ? ours : rows.get(0);
            List<String> holders = new ArrayList<>();
            for (Row row : rows) {
                holders.add(row == ours ? owner() : "pid " + row.pid() + " (" + row.applicationName() + ")");
            }
            LockInfo.Builder info = LockInfo.builder(LockMode.ADVISORY).lockId(id).pid(first.pid())
                    .applicationName(first.applicationName()).shared(first.shared()).heldByThisClient(ours != null)
                    .holders(holders).storedKey(ours != null ? own.key() : knownKeys.get(id));
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
        List<LockSession> all = new ArrayList<>(sessions.drain());
        all.addAll(dedicated);
        dedicated.clear();
        all.addAll(drainWarm());
        all.forEach(this::closeSession);
        List.copyOf(abortWhenTold).forEach(this::abortOnce); // holders still being told: close() does not wait longer
        givenUpDraining = true; // those given up from now on (a connector task finishing) end themselves
        List<LockSession> left = new ArrayList<>();
        for (LockSession session : List.copyOf(givenUp)) {
            if (givenUp.remove(session)) {
                left.add(session);
            }
        }
        endGivenUpBackendsNow(left, connector); // in one statement, before the connector goes
        connector.shutdownNow();
    }

    /**
     * Unlocks everything the session holds, then gives the connection back; aborts it when that fails,
     * or when a statement still runs on it after the network timeout (never used by two threads).
     */
    private void closeSession(LockSession session) {
        if (!session.end()) {
            return; // ended already, and disposed of by whoever ended it
        }
        disposeRetired(session);
    }

    /** Gives back the connection of a session this thread ended (it holds no lock: unlocked anyway). */
    private void disposeRetired(LockSession session) {
        try {
            if (session.tryCallEvenIfEnded(c -> {
                unlockAllAndClose(c, session);
                return null;
            }, networkTimeout.toNanos())) {
                // Aborted: behind a silent network its backend lives on. Unless close() ends it with the others.
                if (givenUp(session) && (!isClosed() || givenUpDraining)) {
                    endGivenUpBackend(session);
                }
                return;
            }
        } catch (SQLException | RuntimeException e) {
            log.debug("closing {} failed", session, e);
        }
        Jdbc.abortQuietly(session.connection);
    }

}
