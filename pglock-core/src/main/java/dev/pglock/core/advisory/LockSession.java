package dev.pglock.core.advisory;

import java.sql.Connection;
import java.sql.SQLException;
import java.util.concurrent.atomic.AtomicBoolean;
import java.util.concurrent.locks.ReentrantLock;

/**
 * One physical database session that holds advisory locks. Shared sessions serve every lock taken
 * without waiting; a dedicated one served one waiting caller and holds that caller's lock. A session
 * is never given back to the pool while it may hold a lock.
 */
final class LockSession {

    /** Work on the session's connection. */
    interface Work<T> {
        T run(Connection connection) throws SQLException;
    }

    final Connection connection;
    final int backendPid;
    final boolean dedicated;
    /**
     * One statement at a time: the driver would serialise them anyway, but a pool's connection proxy
     * (HikariCP's statement tracking) is not safe for concurrent use.
     */
    private final ReentrantLock inUse = new ReentrantLock();
    private final AtomicBoolean ended = new AtomicBoolean();

    LockSession(Connection connection, int backendPid, boolean dedicated) {
        this.connection = connection;
        this.backendPid = backendPid;
        this.dedicated = dedicated;
    }

    /**
     * Marks the session ended: it died, was closed, or (dedicated) gave its one lock back. Returns
     * true for the one caller that ended it, who then disposes of the connection.
     */
    boolean end() {
        return ended.compareAndSet(false, true);
    }

    boolean isEnded() {
        return ended.get();
    }

    <T> T call(Work<T> work) throws SQLException {
        inUse.lock();
        try {
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
