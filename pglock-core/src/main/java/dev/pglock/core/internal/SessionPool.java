package dev.pglock.core.internal;

import dev.pglock.core.LockDatabaseException;
import java.sql.Connection;
import java.sql.SQLException;
import java.time.Duration;
import java.util.ArrayList;
import java.util.List;
import java.util.concurrent.Executor;
import java.util.concurrent.atomic.AtomicInteger;
import java.util.concurrent.atomic.AtomicReferenceArray;
import javax.sql.DataSource;

/**
 * Up to {@code size} pinned sessions: opened when concurrent callers need them, the first free one
 * used first, replaced on next use after one ended, and given back to the pool by
 * {@link #retireIdle} once idle and holding no lock. Holding N locks costs these few connections,
 * not N; one caller at a time costs one.
 *
 * <p>Every session {@link #session()} returns is claimed for one {@link LockSession#callClaimed}:
 * a session is never retired between the moment it is handed out and the end of that call.
 */
public final class SessionPool {

    private final DataSource dataSource;
    private final Duration connectionWaitTimeout;
    private final int networkTimeoutMillis;
    private final Executor connector;
    private final LockSession.Opener opener;
    /**
     * Written under the slot's {@link #opening} lock when a session is opened into it; cleared by
     * compare-and-set alone (a retired or ended session), so clearing never waits for an opening,
     * which may be a borrow that waits for a connection: the watchdog's retirement and a dead
     * session's report of its lost locks would wait with it.
     */
    private final AtomicReferenceArray<LockSession> slots;
    private final Object[] opening;
    /** For tests: runs in {@link #retireIdle} after a session was retired, before its slot is cleared. */
    volatile Runnable afterRetiringForTests;
    private final AtomicInteger next = new AtomicInteger();
    private volatile boolean closed;

    public SessionPool(DataSource dataSource, int size, Duration connectionWaitTimeout, Duration networkTimeout,
            Executor connector, LockSession.Opener opener) {
        this.dataSource = dataSource;
        this.opener = opener;
        this.connectionWaitTimeout = connectionWaitTimeout;
        this.networkTimeoutMillis = (int) Math.min(Integer.MAX_VALUE, Math.max(1, networkTimeout.toMillis()));
        this.connector = connector;
        this.slots = new AtomicReferenceArray<>(size);
        this.opening = new Object[size];
        for (int i = 0; i < size; i++) {
            opening[i] = new Object();
        }
    }

    /**
     * Opens the first session on an already borrowed connection, checking it is PostgreSQL; the
     * client's builder calls this so a wrong or unreachable DataSource fails at build time.
     */
    public LockSession start() {
        LockSession session = open("checking the DataSource", true);
        slots.set(0, session);
        return session;
    }

    /**
     * Borrows a connection and opens a session on it. When the connection fails while the session is
     * opened (its backend ended by an operator, a restart, or behind a pooler by another client that
     * ends the server sessions it shares with this one), that connection is dropped and the session
     * opened once more on a fresh one: the caller asked for a session, not for that backend. Not after
     * a network timeout (a second one would double the wait for the same silent network), nor once
     * the pool is closing; a second failure is the caller's (with the first one suppressed in it), as
     * is every other one (not PostgreSQL, a backend already claimed, a standby).
     */
    private LockSession open(String purpose, boolean checkPostgres) {
        SQLException first = null;
        while (true) {
            Connection connection;
            try {
                connection = Jdbc.borrow(dataSource, connectionWaitTimeout, connector, purpose);
            } catch (RuntimeException e) {
                addSuppressed(e, first);
                throw e;
            }
            try {
                if (checkPostgres) {
                    Jdbc.requirePostgres(connection);
                }
                return LockSession.open(connection, networkTimeoutMillis, connector, opener);
            } catch (SQLException e) {
                boolean backendEnded = Jdbc.backendEnded(e, connection); // before the abort
                Jdbc.abortQuietly(connection);
                if (first == null && backendEnded && !closed) {
                    first = e;
                    continue;
                }
                LockDatabaseException failed = new LockDatabaseException("cannot open a lock session: " + e.getMessage(), e);
                addSuppressed(failed, first);
                throw failed;
            } catch (RuntimeException e) {
                Jdbc.abortQuietly(connection); // e.g. a backend another session claimed: never back to the pool alive
                addSuppressed(e, first);
                throw e;
            }
        }
    }

    private static void addSuppressed(Throwable to, Throwable first) {
        if (first != null) {
            to.addSuppressed(first);
        }
    }

    /** For tests: runs each time {@link #session()} looks again because a retirement was under way. */
    volatile Runnable lookingAgainForTests;

    /**
     * A session for the next statement, claimed for it: the thread's last one if it is free (see
     * {@link LockSession#claimIfFree}), else the first free open one, else a slot not opened yet
     * (opened now), else the next in turn, shared. Preferring the first free session keeps a lone
     * caller on one warm backend: alternating between backends costs each statement a wake-up of a
     * process that was asleep, about 10% of an uncontended lease acquire + release on 2 cores.
     * Concurrent callers spread over the sessions; only when none is free and none can be opened do
     * they share one. A session handed to a caller who has not started its statement yet counts as
     * taken: judged by the running statement alone, two callers asking at the same moment were both
     * given the same session, and the lease heartbeat's two workers could stay paired on one for a
     * whole round. A session the watchdog is deciding whether to retire is waited for (a moment)
     * rather than counted as taken, so a caller does not borrow a connection beside an idle one; a
     * best effort: a decision that ends between the caller's two looks at it still counts as taken.
     */
    public LockSession session() {
        while (true) {
            LockSession session = pick();
            if (session != null) {
                return session;
            }
            // The one chosen was being retired, or looked at for retirement, right now: pick again.
            Runnable hook = lookingAgainForTests;
            if (hook != null) {
                hook.run();
            }
            Thread.yield(); // on 2 cores the thread that decides may need this one's
        }
    }

    /**
     * The session each thread ran its last statement on. A thread goes back to it while it is free,
     * so concurrent callers settle on a session each, as a connection pool's thread affinity does,
     * instead of all trying the first free one at once.
     */
    private final ThreadLocal<LockSession> lastUsed = new ThreadLocal<>();

    /** A session claimed for the caller, or null when the one chosen was being retired. */
    private LockSession pick() {
        LockSession last = lastUsed.get();
        if (last != null && !last.isEnded() && last.claimIfFree() == LockSession.CLAIMED) {
            return last;
        }
        LockSession chosen = scan();
        if (chosen != null) {
            lastUsed.set(chosen);
        }
        return chosen;
    }

    private LockSession scan() {
        int unopened = -1;
        boolean retirementUnderWay = false;
        for (int i = 0; i < slots.length(); i++) {
            LockSession session = slots.get(i);
            if (session == null || session.isEnded()) {
                if (unopened < 0) {
                    unopened = i;
                }
            } else {
                int found = session.claimIfFree();
                if (found == LockSession.CLAIMED) {
                    return session;
                }
                retirementUnderWay |= found == LockSession.RETIRING;
            }
        }
        if (retirementUnderWay) {
            // Decided in a moment: that session is free then, or its slot empty. Opening another
            // session now would borrow a connection beside it (and wait for one from a full pool).
            return null;
        }
        int slot = unopened >= 0 ? unopened : Math.floorMod(next.getAndIncrement(), slots.length());
        LockSession session = slots.get(slot);
        if (session != null && !session.isEnded()) {
            return session.claim() ? session : null;
        }
        synchronized (opening[slot]) {
            session = slots.get(slot);
            if (session != null && !session.isEnded()) {
                return session.claim() ? session : null; // opened by another caller meanwhile
            }
            if (closed) {
                throw new IllegalStateException("the lock client is closed");
            }
            session = open("a lock session", false);
            session.claim(); // before it is published: nobody can be retiring it yet
            slots.set(slot, session);
            return session;
        }
    }

    /** The sessions open now. */
    public List<LockSession> live() {
        List<LockSession> live = new ArrayList<>();
        for (int i = 0; i < slots.length(); i++) {
            LockSession session = slots.get(i);
            if (session != null && !session.isEnded()) {
                live.add(session);
            }
        }
        return live;
    }

    /**
     * Retires sessions that hold no lock, run nothing and were idle for {@code idleNanos}, and hands
     * each to {@code dispose} (which gives its connection back). Slots are visited from the last one
     * down, and at least one live session always stays open; which one is not fixed: slot 0 can be
     * retired when a higher slot is busy, and the next caller that needs a session reopens it.
     */
    public void retireIdle(long idleNanos, java.util.function.Consumer<LockSession> dispose) {
        int live = live().size();
        for (int i = slots.length() - 1; i >= 0 && live > 1; i--) {
            LockSession session = slots.get(i);
            if (session == null || session.isEnded() || !session.retireIfIdle(idleNanos)) {
                continue;
            }
            Runnable hook = afterRetiringForTests;
            if (hook != null) {
                hook.run();
            }
            slots.compareAndSet(i, session, null); // a replacement opened meanwhile stays
            live--;
            dispose.accept(session);
        }
    }

    /** Forgets an ended session so its slot opens a new one on next use. */
    public void remove(LockSession session) {
        for (int i = 0; i < slots.length(); i++) {
            slots.compareAndSet(i, session, null); // never wipes a replacement stored meanwhile
        }
    }

    /** Stops opening sessions and hands back those that are open, for the client to close. */
    public List<LockSession> drain() {
        closed = true;
        List<LockSession> all = new ArrayList<>();
        for (int i = 0; i < slots.length(); i++) {
            synchronized (opening[i]) { // a session being opened now is handed back too
                LockSession session = slots.getAndSet(i, null);
                if (session != null) {
                    all.add(session);
                }
            }
        }
        return all;
    }
}
