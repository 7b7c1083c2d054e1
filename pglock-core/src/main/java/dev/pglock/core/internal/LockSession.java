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
 * serves one waiting caller at a time and then holds that caller's lock (after the release it may
 * stay warm, claimed and holding nothing, for the next waiting caller), and neither goes back to
 * the pool while it may hold a lock. In lease mode it only runs statements.
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
    /**
     * Callers that {@link SessionPool#session()} handed this session to and that have not finished
     * their {@link #callClaimed} yet. A session is retired only while this is zero: see {@link #retireIfIdle}.
     */
    private final java.util.concurrent.atomic.AtomicInteger claims = new java.util.concurrent.atomic.AtomicInteger();
    /** For tests: runs inside {@link #retireIfIdle} while it holds the session and has not decided yet. */
    volatile Runnable whileDecidingForTests;
    /** Set while {@link #retireIfIdle} runs, from before it takes the session until after it lets go. */
    private volatile boolean deciding;
    /** Set by {@link #retireIfIdle} once it means to retire; a claim that sees it backs off and looks again. */
    private volatile boolean retiring;
    /** When the last statement on it ended (System.nanoTime). */
    private volatile long lastUsedNanos = System.nanoTime();
    /** Advisory mode: set when the holds of a lock on this session were marked lost, by any thread. */
    private volatile boolean holdsMarkedLost;
    /** Advisory mode: locks held on this session now. Changed and read only under {@link #inUse}. */
    private int locksHeld;

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

    /** {@link #tagged} statements, by their untagged SQL (constants: the lookup hashes nothing new). */
    private final java.util.Map<String, String> tagged = new java.util.concurrent.ConcurrentHashMap<>();

    /**
     * Advisory mode: {@code sql} with this session's token in a comment at its end, which
     * pg_stat_activity shows as the backend's statement while it runs and after, until the next one:
     * a backend whose last statement carries it has run nothing of anyone else's since (not a pooler's
     * reset, not another client's statement). The SQL unchanged when the session has no token.
     */
    public String tagged(String sql) {
        if (token == null) {
            return sql;
        }
        return tagged.computeIfAbsent(sql, s -> s + " " + tag());
    }

    /** The comment {@link #tagged} adds: the token is a UUID, which cannot end the comment. */
    public String tag() {
        return "/* pglock session " + token + " */";
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

    /** Advisory mode: the holds of a lock on this session were marked lost (see AbstractLockClient.markedLost). */
    public void markHoldsLost() {
        holdsMarkedLost = true;
    }

    /** Whether {@link #markHoldsLost} was called. */
    public boolean holdsMarkedLost() {
        return holdsMarkedLost;
    }

    /**
     * Claims the session for one {@link #callClaimed}; false when it is being retired (the caller picks
     * another). A volatile write then read here, a write then read the other way round in
     * {@link #retireIfIdle}: of a claim and a retirement racing, at least one sees the other and backs off.
     */
    boolean claim() {
        claims.incrementAndGet();
        if (retiring) {
            claims.decrementAndGet();
            return false;
        }
        return true;
    }

    /**
     * {@link #claim}, only when it looks free: no caller has claimed it (handed out by
     * {@link SessionPool#session()}, its statement running or about to) and no statement runs on it
     * (the client's own statements that are not handed out, such as an advisory unlock on the lock's
     * session or the watchdog's check, run without a claim). How {@link SessionPool} spreads
     * concurrent callers over sessions; a hint, not a guarantee: a statement may start right after.
     *
     * @return {@link #CLAIMED}; {@link #BUSY}; or {@link #RETIRING} when it is not free because
     *     {@link #retireIfIdle} is deciding about it (then it is free or ended in a moment)
     */
    int claimIfFree() {
        if (inUse.isLocked()) {
            return deciding ? RETIRING : BUSY;
        }
        if (!claims.compareAndSet(0, 1)) {
            return BUSY;
        }
        if (retiring) {
            claims.decrementAndGet();
            return RETIRING;
        }
        return CLAIMED;
    }

    /** What {@link #claimIfFree} found. */
    static final int CLAIMED = 1;
    static final int BUSY = 0;
    static final int RETIRING = -1;

    /**
     * Runs work on the connection for a caller that {@link SessionPool#session()} handed it to, and
     * gives the claim back. An ended session refuses (SQLState 08003), like {@link #call}.
     */
    public <T> T callClaimed(Work<T> work) throws SQLException {
        try {
            return call(work);
        } finally {
            claims.decrementAndGet(); // after the statement: until then retireIfIdle refuses
        }
    }

    /** Statements kept open on the connection, by SQL; touched only by work running on this session. */
    private final java.util.Map<String, java.sql.PreparedStatement> prepared = new java.util.HashMap<>(4);

    /**
     * A statement prepared on the session's connection once and kept open for the next uses: for the
     * few statements that every acquire and release on a shared session runs, which then skip
     * preparing and closing a statement (and the pool's wrappers) each time. Call only inside work
     * running on this session; never close it, and close its result sets. It closes with the
     * connection: HikariCP, DBCP2 and Agroal close a connection's statements when it goes back; with
     * a pool that does not, pgjdbc frees them once they are collected, with the session.
     */
    public java.sql.PreparedStatement prepared(String sql) throws SQLException {
        if (working != Thread.currentThread()) {
            throw new IllegalStateException("a kept statement is used outside the work of " + this);
        }
        java.sql.PreparedStatement ps = prepared.get(sql);
        if (ps == null || ps.isClosed()) {
            ps = connection.prepareStatement(sql);
            prepared.put(sql, ps);
        }
        return ps;
    }

    /** Advisory mode: a lock was taken on this session. Call inside the work that took it. */
    public void lockTaken() {
        locksHeld++;
    }

    /** Advisory mode: a lock on this session was released. Call inside the work that released it. */
    public void lockReleased() {
        locksHeld = Math.max(0, locksHeld - 1);
    }

    /**
     * Ends the session if nobody runs or is about to run a statement on it, it holds no lock and no
     * statement ran on it for {@code idleNanos}; true for the one call that ended it, which then
     * disposes of the connection. A caller that was handed the session before holds a claim and
     * keeps it alive; one that comes after sees it retiring and looks again (see SessionPool#session).
     */
    boolean retireIfIdle(long idleNanos) {
        deciding = true;
        try {
            if (!inUse.tryLock()) {
                return false;
            }
            try {
                Runnable hook = whileDecidingForTests;
                if (hook != null) {
                    hook.run();
                }
                if (ended.get() || locksHeld > 0 || System.nanoTime() - lastUsedNanos < idleNanos) {
                    return false;
                }
                retiring = true;
                if (claims.get() > 0) {
                    retiring = false;
                    return false;
                }
                return ended.compareAndSet(false, true);
            } finally {
                inUse.unlock();
            }
        } finally {
            deciding = false;
        }
    }

    /**
     * The thread running work on the connection now, while {@link #inUse} is held: the holder itself,
     * or the platform thread that runs a virtual holder's work (see {@link PlatformThreads}).
     */
    private volatile Thread working;

    /**
     * Runs work on the connection while this thread holds {@link #inUse}: here, or on a platform
     * thread when this one is virtual, so that no caller's interrupt closes the connection under the
     * other callers' locks (see {@link PlatformThreads}). Work that calls back into this session
     * runs at once, as the lock's re-entry would let it.
     */
    private <T> T runWork(Work<T> work) throws SQLException {
        return PlatformThreads.run(() -> {
            Thread previous = working;
            working = Thread.currentThread();
            try {
                return work.run(connection);
            } catch (SQLException e) {
                noteIfSilent(e);
                throw e;
            } finally {
                working = previous;
            }
        });
    }

    /**
     * Whether the network under this session went silent: a read on its connection waited the
     * socket's timeout out. pgjdbc closes the connection then, so whoever fails on it next sees only
     * that it is closed; its backend may live on.
     */
    private volatile boolean wentSilent;

    /** Notes that the network went silent when {@code e} says a read timed out on this session's connection. */
    public void noteIfSilent(SQLException e) {
        if (!wentSilent && Jdbc.wentSilent(e, connection)) {
            wentSilent = true;
        }
    }

    /** See {@link #wentSilent}: as far as this client saw. */
    public boolean wentSilent() {
        return wentSilent;
    }

    /** Whether this thread runs work on this session now: a call from inside it must not queue behind itself. */
    private boolean inWork() {
        return working == Thread.currentThread();
    }

    /** Runs work even on an ended session (to dispose of it), still one caller at a time. */
    public <T> T callEvenIfEnded(Work<T> work) throws SQLException {
        if (inWork()) {
            return work.run(connection);
        }
        inUse.lock();
        try {
            return runWork(work);
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
        if (inWork() || !inUse.tryLock()) {
            return null;
        }
        try {
            return ended.get() ? null : runWork(work);
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
        if (inWork()) {
            work.run(connection);
            return true;
        }
        try {
            if (!inUse.tryLock(Math.max(0, nanos), java.util.concurrent.TimeUnit.NANOSECONDS)) {
                return false;
            }
        } catch (InterruptedException e) {
            Thread.currentThread().interrupt();
            return false;
        }
        try {
            runWork(work);
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
        return PlatformThreads.run(() -> { // its statements, like every session's (see runWork)
            if (!connection.getAutoCommit()) {
                connection.setAutoCommit(true);
            }
            connection.setNetworkTimeout(executor, networkTimeoutMillis);
            return opener.open(connection);
        });
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
        if (inWork()) {
            if (ended.get()) {
                throw new SQLException(this + " has ended", "08003");
            }
            return work.run(connection);
        }
        inUse.lock();
        try {
            if (ended.get()) {
                throw new SQLException(this + " has ended", "08003");
            }
            return runWork(work);
        } finally {
            lastUsedNanos = System.nanoTime();
            inUse.unlock();
        }
    }

    @Override
    public String toString() {
        return (dedicated ? "dedicated" : "shared") + " lock session (backend pid " + backendPid + ")";
    }
}
