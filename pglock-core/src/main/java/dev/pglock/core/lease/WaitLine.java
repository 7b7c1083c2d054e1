package dev.pglock.core.lease;

import dev.pglock.core.internal.Jdbc;
import dev.pglock.core.internal.NotificationPoll;
import java.sql.Connection;
import java.sql.PreparedStatement;
import java.sql.SQLException;
import java.sql.Statement;
import java.util.concurrent.CompletableFuture;
import java.util.concurrent.Executor;
import java.util.concurrent.TimeUnit;
import org.postgresql.PGNotification;
import org.slf4j.Logger;
import org.slf4j.LoggerFactory;

/**
 * One client's place in the line of clients waiting for one key, kept by PostgreSQL's lock manager,
 * so that a release wakes one client instead of all of them.
 *
 * <p><b>Why.</b> PostgreSQL signals every backend that listens in the database at each notifying
 * commit, whatever the channel, and every client that hears a release tries to take the key. With
 * 32 clients waiting for one key, each hand-off woke 31 backends and made 31 claims on 2 cores, and
 * the notifying release itself took 4 – 5 times longer than with 2 clients.
 *
 * <p><b>How.</b> The waiting caller borrows a connection from the LISTEN DataSource and asks, on it,
 * for the key's line lock (a session-level advisory lock): the first client in line gets it at once,
 * the others queue behind it in the server, in the order they asked, without listening. The first
 * then listens on the channel and takes the key's waiter id (the same shared lock the LISTEN
 * connection takes, so a release notifies), in the same round trip, and attempts. Releases wake only
 * it. When it wins (or gives up), it gives the line lock back and the lock manager wakes the next
 * client alone, which gets ready while the new holder works.
 *
 * <p><b>Liveness.</b> A client behind the first does not hear releases; it asks again after at most
 * {@link #RECHECK_MILLIS} (then attempts and queues again at the end), so a first client that stopped
 * (paused, cut off, or gone with its connection still open) delays the others by about that much.
 * A first client whose process dies loses its session and the line moves on at once.
 *
 * <p><b>Failure.</b> When the line's connection fails, the caller goes on waiting through the shared
 * LISTEN connection, as callers do beyond the client's {@code waitLines}, for a
 * shared lock (shared holders do not exclude each other, so they must not queue), for a wait shorter
 * than a recheck, and in a client that found a line's session moved by a pooler.
 *
 * <p>The caller's thread uses it, then hands it to another thread for {@link #leave()} (through an
 * executor, which orders the two); {@link #abort()} may come from any thread.
 */
final class WaitLine {

    private static final Logger log = LoggerFactory.getLogger(WaitLine.class);
    /** How long a client behind the first waits in line before it attempts (and queues again). */
    static final long RECHECK_MILLIS = 1000;
    /** Network timeout of a line's connection: nothing it runs waits in the server longer than a recheck. */
    private static final int NETWORK_TIMEOUT_MILLIS = 4000;
    /** How long the first client waits for a notification before it checks its interrupt flag. */
    private static final int POLL_MILLIS = 500;
    /** SQLState of a lock timeout: the line lock was not had in time (but see UNLOCK_IF_HELD). */
    private static final String LOCK_NOT_AVAILABLE = "55P03";
    // One round trip. Parameters: lock timeout in ms, line lock id, session token, waiter id. The lock
    // timeout is the transaction's own (the statements up to the Sync are one), so it applies to the
    // line lock alone and never stays on the session; nothing after the line lock runs unless it was
    // had, and LISTEN and the waiter id are asked for without a lock timeout.
    // The token, a session setting, tells the session apart when it leaves (see LEAVE). Columns of
    // the first statement: pid and start of the backend, so a pooler that moved the session can be
    // told and the backend holding the line lock ended.
    private static final String JOIN = "SELECT set_config('lock_timeout', ?, true), pg_advisory_lock(?),"
            + " set_config('lock_timeout', '0', true), set_config('pglock.line', ?, false), pg_backend_pid(),"
            + " (SELECT backend_start FROM pg_stat_activity WHERE pid = pg_backend_pid());"
            + " LISTEN \"%s\"; SELECT pg_advisory_lock_shared(?)";
    // Gives back the line lock and the waiter id, only on the session that took them: a pooler that
    // multiplexes sessions (PgBouncer in transaction pooling) may run this on another client's
    // backend. Parameter: the token. Column: whether it was this line's session.
    private static final String LEAVE = "SELECT s.mine, CASE WHEN s.mine THEN pg_advisory_unlock_all()::text END,"
            + " CASE WHEN s.mine THEN set_config('pglock.line', '', false) END"
            + " FROM (SELECT coalesce(current_setting('pglock.line', true) = ?, false) AS mine OFFSET 0) AS s";
    // Ends the backend that holds a line whose session a pooler moved, when it is idle: never in the
    // middle of another client's transaction (though the pooler may hand it out the same instant).
    // Parameters: pid, backend start.
    private static final String END_MOVED = "SELECT count(pg_terminate_backend(pid)) FROM pg_stat_activity"
            + " WHERE pid = ? AND backend_start = ? AND state = 'idle'";
    // A lock timeout that fired as the line lock was granted leaves it granted (a session lock
    // survives the rollback): given back if this backend holds it, without the server's warning
    // an unlock of a lock not held logs. Parameters: line lock id, its high and low halves.
    private static final String UNLOCK_IF_HELD = "SELECT pg_advisory_unlock(?) FROM pg_locks WHERE pid = pg_backend_pid()"
            + " AND locktype = 'advisory' AND granted AND mode = 'ExclusiveLock' AND objsubid = 1"
            + " AND classid::bigint = ? AND objid::bigint = ?";
    /** How often the first client checks that its connection still answers (it only reads from it). */
    private static final long VALIDATE_NANOS = TimeUnit.SECONDS.toNanos(5);
    /** How long a caller waits for the line's connection before it waits through the LISTEN connection. */
    private static final long BORROW_MILLIS = 250;

    private final String key;
    private final long lineLockId;
    private final long waiterLockId;
    private final long deadlineNanos;
    private final long recheckMillis;
    private final String join;
    private final Connection connection;
    private final NotificationPoll poll;
    /** Set by {@link #abort()}: the client is closing. Guarded by this, with {@link #returned}. */
    private volatile boolean aborted;
    /** Set when the connection goes back to its pool: {@link #abort()} must not touch it then. */
    private boolean returned;
    /** A lock timeout ended a wait for the line lock: it may have been granted at that instant. */
    private boolean timedOut;
    private long lastValidated = System.nanoTime();
    /** The connection failed: the caller waits through the LISTEN connection instead. */
    private boolean failed;
    /** Tells this line's session from others at {@link #leave()}. */
    private final String token = Long.toHexString(java.util.concurrent.ThreadLocalRandom.current().nextLong());
    /** The backend that took the line lock, from the moment this client is first (and listens); else 0. */
    private int pid;
    private java.sql.Timestamp backendStart;
    /** Set by {@link #leave()}: the session had been moved by a pooler. */
    private boolean moved;

    private WaitLine(String key, long lineLockId, long waiterLockId, long deadlineNanos, long recheckMillis,
            String channel, Connection connection, NotificationPoll poll) {
        this.key = key;
        this.recheckMillis = recheckMillis;
        this.lineLockId = lineLockId;
        this.waiterLockId = waiterLockId;
        this.deadlineNanos = deadlineNanos;
        this.join = JOIN.formatted(channel);
        this.connection = connection;
        this.poll = poll;
    }

    /**
     * Borrows the line's connection, waiting for it at most 250 ms (less when the connection wait
     * timeout or the caller's deadline is nearer); null (logged) when none was had, and the caller
     * waits through the LISTEN connection (an interrupt stays set).
     *
     * @param channel the checked table name: letters, digits and _ only, so quoting is enough
     * @param recheckMillis how long a client behind the first waits in line before it attempts
     * @param late completed with the connection when a borrow that ran out gets it after all: the
     *     caller then owns it (see {@link #of}); back to the pool at once if {@code late} is done
     */
    static WaitLine open(javax.sql.DataSource dataSource, java.time.Duration connectionWaitTimeout,
            Executor connector, String channel, String key, long lineLockId, long waiterLockId, long deadlineNanos,
            long recheckMillis, CompletableFuture<Connection> late) {
        Connection c;
        try {
            long borrowNanos = Math.min(Math.min(connectionWaitTimeout.toNanos(),
                    TimeUnit.MILLISECONDS.toNanos(BORROW_MILLIS)), deadlineNanos - System.nanoTime());
            c = Jdbc.borrow(dataSource, java.time.Duration.ofNanos(Math.max(1, borrowNanos)), connector,
                    "a wait line connection", late);
        } catch (RuntimeException e) {
            log.debug("no wait line connection for '{}' ({}); waiting through the LISTEN connection", key,
                    e.getMessage());
            return null;
        }
        return of(c, connector, channel, key, lineLockId, waiterLockId, deadlineNanos, recheckMillis);
    }

    /**
     * A line on a connection borrowed already (one that came late, see {@link #open}); null (logged,
     * the connection aborted) when it cannot be set up.
     */
    static WaitLine of(Connection c, Executor connector, String channel, String key, long lineLockId,
            long waiterLockId, long deadlineNanos, long recheckMillis) {
        try {
            if (!c.getAutoCommit()) {
                c.setAutoCommit(true);
            }
            // A server that stops answering fails what runs on it within this (its waits are at most a
            // recheck), and the caller waits through the LISTEN connection.
            c.setNetworkTimeout(connector, (int) Math.max(NETWORK_TIMEOUT_MILLIS, recheckMillis * 4));
            return new WaitLine(key, lineLockId, waiterLockId, deadlineNanos, recheckMillis, channel, c,
                    NotificationPoll.of(c));
        } catch (SQLException | RuntimeException e) {
            log.debug("no wait line connection for '{}' ({}); waiting through the LISTEN connection", key,
                    e.getMessage());
            Jdbc.abortQuietly(c);
            return null;
        }
    }

    /**
     * Waits until the caller should attempt: behind the first, until this client is first (or
     * recheck or the deadline passed: {@code nanos} does not apply there); first, until a
     * release of the key was heard or {@code nanos} passed.
     *
     * @return false when the line's connection failed: nothing was waited for, and the caller waits
     *     through the LISTEN connection from now on
     */
    boolean await(long nanos) throws InterruptedException {
        if (failed) {
            return false;
        }
        try {
            if (pid != 0) {
                awaitRelease(nanos);
            } else {
                awaitFirst();
            }
            if (Thread.interrupted()) {
                throw new InterruptedException();
            }
            return true;
        } catch (SQLException e) {
            if (!aborted) {
                log.info("the wait line connection for '{}' failed ({}); waiting through the LISTEN connection",
                        key, e.getMessage());
            }
            failed = true;
            dispose(true);
            return false;
        }
    }

    /** Asks for the line lock for at most a recheck; sets {@link #pid} when this client is first now. */
    private void awaitFirst() throws SQLException {
        long millis = Math.min(recheckMillis, TimeUnit.NANOSECONDS.toMillis(deadlineNanos - System.nanoTime()));
        try (PreparedStatement ps = connection.prepareStatement(join)) {
            ps.setString(1, Long.toString(Math.max(1, millis)));
            ps.setLong(2, lineLockId);
            ps.setString(3, token);
            ps.setLong(4, waiterLockId);
            ps.execute();
            try (java.sql.ResultSet rs = ps.getResultSet()) {
                rs.next();
                backendStart = rs.getTimestamp(6);
                pid = rs.getInt(5);
            }
        } catch (SQLException e) {
            if (aborted || !LOCK_NOT_AVAILABLE.equals(e.getSQLState())) {
                throw e; // any other failure drops the connection, and whatever its session took with it
            }
            timedOut = true; // not had in time, but maybe granted as the timeout fired: see leave()
        }
    }

    /** Polls the line's connection until a release of the key is heard or {@code nanos} passed. */
    private void awaitRelease(long nanos) throws SQLException, InterruptedException {
        long until = System.nanoTime() + nanos;
        for (long left = nanos; left > 0 && !aborted; left = until - System.nanoTime()) {
            int millis = (int) Math.max(1, Math.min(POLL_MILLIS, TimeUnit.NANOSECONDS.toMillis(left)));
            PGNotification[] heard = poll.poll(millis);
            if (heard != null) {
                for (PGNotification n : heard) {
                    if (key.equals(n.getParameter())) {
                        return;
                    }
                }
            }
            if (Thread.currentThread().isInterrupted()) {
                throw new InterruptedException();
            }
            // A half-open connection (a failover, a cut without a reset) would only ever be silent.
            if (System.nanoTime() - lastValidated > VALIDATE_NANOS) {
                lastValidated = System.nanoTime();
                if (!connection.isValid(2)) {
                    throw new SQLException("the wait line connection did not answer", "08006");
                }
            }
        }
    }

    /**
     * Leaves the line, so the next client becomes first, and gives the connection back to its pool
     * clean (or aborts it when that fails). When a pooler had moved the session, the backend that
     * holds the line is ended instead and {@link #moved()} turns true.
     */
    void leave() {
        poll.close();
        if (failed) {
            return;
        }
        try {
            if (pid == 0 && timedOut) {
                try (PreparedStatement ps = connection.prepareStatement(UNLOCK_IF_HELD)) {
                    ps.setLong(1, lineLockId);
                    ps.setLong(2, lineLockId >>> 32);
                    ps.setLong(3, lineLockId & 0xffffffffL);
                    ps.executeQuery().close();
                }
            }
            if (pid != 0) {
                boolean mine;
                try (PreparedStatement ps = connection.prepareStatement(LEAVE)) {
                    ps.setString(1, token);
                    try (java.sql.ResultSet rs = ps.executeQuery()) {
                        rs.next();
                        mine = rs.getBoolean(1);
                    }
                }
                if (mine) {
                    try (Statement st = connection.createStatement()) {
                        st.execute("UNLISTEN *");
                    }
                    connection.unwrap(org.postgresql.PGConnection.class).getNotifications(); // none for the next borrower
                } else {
                    moved = true;
                    connection.unwrap(org.postgresql.PGConnection.class).getNotifications();
                    long ended;
                    try (PreparedStatement ps = connection.prepareStatement(END_MOVED)) {
                        ps.setInt(1, pid);
                        ps.setTimestamp(2, backendStart);
                        try (java.sql.ResultSet rs = ps.executeQuery()) {
                            rs.next();
                            ended = rs.getLong(1);
                        }
                    }
                    if (ended == 0) {
                        log.warn("the wait line lock for '{}' stays on server backend {}, which a pooler gave to"
                                + " another client, until that backend ends (SELECT pg_terminate_backend({}) when it"
                                + " is idle); waiters of that key ask again every second meanwhile", key, pid, pid);
                    }
                }
            }
            dispose(false);
        } catch (SQLException | RuntimeException e) {
            log.debug("leaving the wait line for '{}' failed; the connection is dropped: {}", key, e.getMessage());
            dispose(true);
        }
    }

    /** Gives the connection back (aborted when asked), once; {@link #abort()} leaves it alone from then on. */
    private void dispose(boolean abort) {
        synchronized (this) {
            if (returned) {
                return;
            }
            returned = true;
            abort |= aborted; // aborted meanwhile: its session may be gone, and the pool must not reuse it
        }
        if (abort) {
            Jdbc.abortQuietly(connection);
        } else {
            Jdbc.closeQuietly(connection);
        }
    }

    /** The client is closing: ends the wait at once (the session, and its place in line, end with the connection). */
    void abort() {
        synchronized (this) {
            if (returned) {
                return; // another borrower's now
            }
            aborted = true;
        }
        try {
            // Only ends the session: the caller's thread, which owns the connection, then fails and
            // closes it (two threads closing one pooled connection at once can break the pool).
            connection.abort(Runnable::run);
        } catch (SQLException | RuntimeException e) {
            log.debug("aborting the wait line connection for '{}' failed", key, e);
        }
    }

    /** Whether {@link #leave()} found that a pooler had moved the line's session to another backend. */
    boolean moved() {
        return moved;
    }
}
