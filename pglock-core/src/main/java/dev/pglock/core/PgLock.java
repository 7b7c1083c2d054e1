package dev.pglock.core;

import dev.pglock.core.advisory.AdvisoryLockClientBuilder;
import dev.pglock.core.lease.LeaseLockClientBuilder;
import javax.sql.DataSource;

/**
 * Where lock clients are built.
 *
 * <pre>{@code
 * LockClient locks = PgLock.advisory(dataSource).namespace("billing").build();
 * }</pre>
 */
public final class PgLock {

    private PgLock() {
    }

    /**
     * A client on session-level advisory locks: no table, no writes, the lock ends with its session.
     * Needs a direct (or session-pooled) connection to PostgreSQL, not PgBouncer in transaction mode.
     */
    public static AdvisoryLockClientBuilder advisory(DataSource dataSource) {
        return new AdvisoryLockClientBuilder(dataSource);
    }

    /**
     * A client on a lease table with heartbeats: expiry by the database clock, fencing tokens, lock
     * data, and it works through PgBouncer in transaction pooling (LISTEN aside).
     */
    public static LeaseLockClientBuilder lease(DataSource dataSource) {
        return new LeaseLockClientBuilder(dataSource);
    }
}
