package dev.pglock.core.internal;

import java.sql.Connection;
import java.sql.ResultSet;
import java.sql.SQLException;
import java.sql.Statement;
import java.util.concurrent.Executor;
import java.util.concurrent.atomic.AtomicBoolean;
import java.util.concurrent.locks.ReentrantLock;

/**
 * One pinned database connection a lock client runs its statements on. In advisory mode it holds
 * the locks themselves: shared sessions serve every lock taken without waiting, a dedicated one
 * serves one waiting caller and then holds that caller's lock, and neither goes back to the pool
 * while it may hold a lock. In lease mode it only runs statements.
 */
public final class LockSession {

    private static final String BACKEND_PID = "SELECT pg_backend_pid()";

    /** Work on the session's connection. */
    public interface Work<T> {
        T run(Connection connection) throws SQLException;
    }

    /** Work that turns a freshly borrowed, prepared connection into a session: reads its pid and more. */
    public interface Opener {
        LockSession open(Connection connection) throws SQLException;
    }

    public final Connection connection;
    public final int backendPid;
    public final boolean dedicated;
    /**
     * Advisory mode: the random token this session wrote into its backend (setting {@code pglock.session}),
     * which every lock statement checks; null in lease mode.
     */
    public final String token;
    /** Advisory mode: when the backend started (pg_stat_activity.backend_start), to name it beyond its pid. */
    public final java.sql.Timestamp backendStart;
    /**
     * One statement at a time: the driver would serialise them anyway, but a pool's connection proxy
     * (HikariCP's statement tracking) is not safe for concurrent use.
     */
    private final ReentrantLock inUse = new ReentrantLock();
    private final AtomicBoolean ended = new AtomicBoolean();
    /** Set while a watchdog check of this session runs, so checks never pile up behind a stuck one. */
    public final AtomicBoolean checking = new AtomicBoolean();

    public LockSession(Connection connection, int backendPid, boolean dedicated) {
        this(connection, backendPid, dedicated, null, null);
    }

    public LockSession(Connection connection, int backendPid, boolean dedicated, String token,
            java.sql.Timestamp backendStart) {
        this.connection = connection;
        this.backendPid = backendPid;
        this.dedicated = dedicated;
        this.token = token;
        this.backendStart = backendStart;
    }

    /**
     * Marks the session ended: it died, was closed, or (dedicated) gave its one lock back. Returns
     * true for the one caller that ended it, who then disposes of the connection.
     */
    public boolean end() {
        return ended.compareAndSet(false, true);
    }

    public boolean isEnded() {
        return ended.get();
    }

    /** Whether a statement runs on it right now (a hint for picking a session, not a guarantee). */
    public boolean isBusy() {
        return inUse.isLocked();
    }

    /** Runs work even on an ended session (to dispose of it), still one caller at a time. */
    public <T> T callEvenIfEnded(Work<T> work) throws SQLException {
        inUse.lock();
        try {
            return work.run(connection);
        } finally {
            inUse.unlock();
        }
    }

    /**
     * Runs work on the connection only if nobody uses it now and it has not ended; returns null
     * otherwise. For checks that must never queue behind a statement in flight (that statement is
     * bounded by the network timeout and reports its own failure).
     */
    public <T> T callIfIdle(Work<T> work) throws SQLException {
        if (!inUse.tryLock()) {
            return null;
        }
        try {
            return ended.get() ? null : work.run(connection);
        } finally {
            inUse.unlock();
        }
    }

    /**
     * Runs work even on an ended session, waiting at most {@code nanos} for a statement in flight to
     * finish; returns false without running it when that statement is still running then (the caller
     * aborts the connection instead of using it from a second thread).
     */
    public boolean tryCallEvenIfEnded(Work<?> work, long nanos) throws SQLException {
        try {
            if (!inUse.tryLock(Math.max(0, nanos), java.util.concurrent.TimeUnit.NANOSECONDS)) {
                return false;
            }
        } catch (InterruptedException e) {
            Thread.currentThread().interrupt();
            return false;
        }
        try {
            work.run(connection);
            return true;
        } finally {
            inUse.unlock();
        }
    }

    /**
     * Disposes of a session that died or may hold locks it cannot release: aborts the connection at
     * once (allowed from any thread: the server ends the session, a statement in flight fails), then
     * closes it once no statement runs on it any more, so a pool never sees it closed under a user.
     */
    public void abortAndDispose(long waitNanos) {
        try {
            connection.abort(Runnable::run);
        } catch (SQLException | RuntimeException e) {
            // closing it below is all that is left to do
        }
        try {
            if (tryCallEvenIfEnded(c -> {
                Jdbc.closeQuietly(c);
                return null;
            }, waitNanos)) {
                return;
            }
        } catch (SQLException | RuntimeException e) {
            // closed below
        }
        Jdbc.closeQuietly(connection); // the aborted statement still has not returned: do not leak it
    }

    /**
     * Prepares a freshly borrowed connection as a session: autocommit on (locks and leases are taken
     * outside transactions, whatever the pool's default), a network timeout so a vanished server
     * cannot hang a statement forever, and its backend pid for pg_locks and logs.
     */
    public static LockSession open(Connection connection, int networkTimeoutMillis, Executor executor,
            Opener opener) throws SQLException {
        if (!connection.getAutoCommit()) {
            connection.setAutoCommit(true);
        }
        connection.setNetworkTimeout(executor, networkTimeoutMillis);
        return opener.open(connection);
    }

    /** The plain opener: reads the backend pid (lease mode). */
    public static LockSession withPid(Connection connection) throws SQLException {
        try (Statement st = connection.createStatement(); ResultSet rs = st.executeQuery(BACKEND_PID)) {
            rs.next();
            return new LockSession(connection, rs.getInt(1), false);
        }
    }

    /**
     * Runs work on the connection, one caller at a time. An ended session refuses (SQLState 08003),
     * so nothing can take a lock on a connection that is being aborted or given back.
     */
    public <T> T call(Work<T> work) throws SQLException {
        inUse.lock();
        try {
            if (ended.get()) {
                throw new SQLException(this + " has ended", "08003");
            }
            return work.run(connection);
        } finally {
            inUse.unlock();
        }
    }

    @Override
    public String toString() {
        return (dedicated ? "dedicated" : "shared") + " lock session (backend pid " + backendPid + ")";
    }
}
