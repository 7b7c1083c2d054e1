package dev.pglock.core.advisory;

import dev.pglock.core.HeldLock;
import dev.pglock.core.LockDatabaseException;
import dev.pglock.core.LockLostException;
import dev.pglock.core.LockRequest;
import dev.pglock.core.TransactionLock;
import java.sql.Connection;
import java.sql.PreparedStatement;
import java.sql.ResultSet;
import java.sql.SQLException;
import java.sql.Savepoint;
import java.time.Duration;
import java.time.Instant;
import java.util.Optional;
import java.util.function.Consumer;

/**
 * A {@code pg_advisory_xact_lock} on a transaction's own connection. PostgreSQL ends it with the
 * transaction, so the handle records whether its holder is done with it, and the confirmation before
 * the commit asks the server whether a rollback to a savepoint undid it.
 */
final class AdvisoryTransactionLock implements TransactionLock {

    // Whether the transaction's backend is a lock session of some advisory client (its token is set):
    // then a pooler in transaction mode sent the transaction there, and PostgreSQL would grant a
    // transaction lock on a key that session holds at session level, so two holders would be inside.
    // Nothing is taken there; the last column says why.
    private static final String SESSION_BACKEND = " FROM (SELECT coalesce(current_setting('pglock.session', true), '')"
            + " <> '' AS claimed) AS s";
    // Try: one statement; the token (with fencing) is drawn only after the grant. Parameters:
    // [sequence,] lock id. %1$s is "" or "_shared". Granted is null on a standby, where nothing is
    // taken: its advisory locks do not conflict with the primary's (see AdvisoryLockClient's claim);
    // and on a lock session's backend.
    private static final String TRY = "SELECT CASE WHEN NOT s.claimed AND NOT pg_is_in_recovery()"
            + " THEN pg_try_advisory_xact_lock%1$s(?) END, NULL::bigint, s.claimed" + SESSION_BACKEND;
    private static final String TRY_FENCED = "SELECT granted, CASE WHEN granted THEN nextval(?::regclass) END, claimed"
            + " FROM (SELECT CASE WHEN NOT s.claimed AND NOT pg_is_in_recovery() THEN pg_try_advisory_xact_lock%1$s(?)"
            + " END AS granted, s.claimed" + SESSION_BACKEND + " OFFSET 0) AS attempt";
    // Wait: under a savepoint, so that lock_timeout (55P03) undoes only the wait and the transaction
    // goes on. set_config(..., true) lasts until the transaction ends, so the old value is put back.
    // The select list is evaluated left to right: the old value is read, then the timeout set, then
    // the wait runs under it; on a standby or a lock session's backend it does not run (the third
    // column is null then).
    private static final String WAIT = "SELECT current_setting('lock_timeout'), set_config('lock_timeout', ?, true),"
            + " CASE WHEN NOT s.claimed AND NOT pg_is_in_recovery() THEN (SELECT true FROM pg_advisory_xact_lock%1$s(?))"
            + " END, s.claimed" + SESSION_BACKEND;
    private static final String TOKEN = "SELECT nextval(?::regclass)";
    private static final String RESTORE = "SELECT set_config('lock_timeout', ?, true)";
    // Whether this backend still holds the lock, in the mode it was taken: a rollback to a savepoint
    // set before it was taken drops it, and the transaction can still commit. Parameters: mode, lock id.
    private static final String HELD = "SELECT count(*) FROM pg_locks WHERE pid = pg_backend_pid()"
            + " AND locktype = 'advisory' AND objsubid = 1 AND granted AND mode = ?"
            + " AND ((classid::bigint << 32) | objid::bigint) = ?";
    private static final String LOCK_TIMEOUT = "55P03";
    private static final String QUERY_CANCELED = "57014";

    private final String key;
    private final boolean shared;
    private final Long token;
    private final String owner;
    private final Instant acquiredAt = Instant.now();
    private final Connection transaction;
    private final long lockId;
    private volatile boolean released;
    /** Set when the confirmation found the lock gone from the transaction. */
    private volatile boolean undone;

    private AdvisoryTransactionLock(String key, boolean shared, Long token, String owner, Connection transaction,
            long lockId) {
        this.lockId = lockId;
        this.key = key;
        this.shared = shared;
        this.token = token;
        this.owner = owner;
        this.transaction = transaction;
    }

    /** Takes the lock on the transaction's connection within the request's wait; empty when it stayed taken. */
    static Optional<TransactionLock> acquire(Connection transaction, LockRequest request, long lockId,
            String fencingSequence, String owner) {
        if (!request.holdAtLeast().isZero()) {
            throw new IllegalArgumentException("holdAtLeast (" + request.holdAtLeast() + ") cannot apply to advisory"
                    + " lock '" + request.key() + "' taken in a transaction: the commit ends it. Ask for none, or use"
                    + " lease mode or a lock around the transaction");
        }
        if (request.data() != null) {
            throw new IllegalArgumentException("advisory lock '" + request.key() + "' cannot carry data; use lease mode");
        }
        String variant = request.isShared() ? "_shared" : "";
        try {
            if (fencingSequence != null && transaction.isReadOnly()) {
                // nextval is refused there (25006), which would abort the caller's transaction, or come
                // after the lock was taken.
                throw new IllegalStateException("advisory lock '" + request.key() + "' was asked for in a read-only"
                        + " transaction, and this client draws a fencing token for each lock, which writes. Use a"
                        + " read-write transaction, a client without fencing tokens, or a lock around the transaction");
            }
            Long token;
            if (request.waitAtMost().isZero()) {
                try (PreparedStatement ps = transaction.prepareStatement(
                        (fencingSequence == null ? TRY : TRY_FENCED).formatted(variant))) {
                    int i = 1;
                    if (fencingSequence != null) {
                        ps.setString(i++, fencingSequence);
                    }
                    ps.setLong(i, lockId);
                    try (ResultSet rs = ps.executeQuery()) {
                        rs.next();
                        if (rs.getBoolean(3)) {
                            throw onLockSession(request, transaction);
                        }
                        if (rs.getObject(1) == null) {
                            throw onStandby(request);
                        }
                        if (!rs.getBoolean(1)) {
                            return Optional.empty();
                        }
                        long t = rs.getLong(2);
                        token = rs.wasNull() ? null : t;
                    }
                }
            } else {
                if (!waitFor(transaction, WAIT.formatted(variant), lockId, request.waitAtMost(), request)) {
                    return Optional.empty();
                }
                token = fencingSequence == null ? null : drawToken(transaction, fencingSequence);
            }
            return Optional.of(new AdvisoryTransactionLock(request.key(), request.isShared(), token, owner,
                    transaction, lockId));
        } catch (SQLException e) {
            throw AdvisoryLockClient.lockFailed("taking lock '" + request.key() + "' in the transaction", e);
        }
    }

    private static LockDatabaseException onStandby(LockRequest request) {
        return new LockDatabaseException("advisory lock '" + request.key() + "' was asked for in a transaction on a"
                + " standby (in recovery): advisory locks taken there do not conflict with those taken on the primary,"
                + " so none is taken. Run the transaction on the primary", null);
    }

    /**
     * The transaction reached the backend of a lock session (its own client's or another's): a
     * pooler in transaction mode multiplexes sessions, as the advisory client's session check finds.
     */
    private static LockDatabaseException onLockSession(LockRequest request, Connection transaction) {
        String message = "advisory lock '" + request.key() + "' was asked for in a transaction that runs on the"
                + " backend of an advisory client's lock session (backend pid " + pid(transaction) + "): "
                + AdvisoryLockClient.MULTIPLEXES + ", and PostgreSQL would grant the transaction a key that session"
                + " holds, so both holders would be inside. Nothing was taken." + AdvisoryLockClient.POOLER_WAYS_OUT;
        return new LockDatabaseException(message, new SQLException(message, "08P01"));
    }

    private static String pid(Connection transaction) {
        try {
            return String.valueOf(transaction.unwrap(org.postgresql.PGConnection.class).getBackendPID());
        } catch (SQLException | RuntimeException e) {
            return "unknown";
        }
    }

    private static boolean waitFor(Connection c, String sql, long lockId, Duration wait, LockRequest request)
            throws SQLException {
        Savepoint savepoint = c.setSavepoint();
        String previous;
        boolean standby;
        boolean lockSession;
        try (PreparedStatement ps = c.prepareStatement(sql)) {
            // lock_timeout takes milliseconds up to INT_MAX; longer waits are capped there (24 days).
            long millis = wait.compareTo(Duration.ofMillis(Integer.MAX_VALUE)) > 0 ? Integer.MAX_VALUE : wait.toMillis();
            ps.setString(1, Long.toString(Math.max(1, millis)));
            ps.setLong(2, lockId);
            try (ResultSet rs = ps.executeQuery()) {
                rs.next();
                previous = rs.getString(1);
                standby = rs.getObject(3) == null;
                lockSession = rs.getBoolean(4);
            }
        } catch (SQLException e) {
            c.rollback(savepoint); // undoes the wait and its lock_timeout; the transaction goes on
            c.releaseSavepoint(savepoint); // and not inside a subtransaction
            if (LOCK_TIMEOUT.equals(e.getSQLState()) || QUERY_CANCELED.equals(e.getSQLState())) {
                return false; // the wait ran out (or a shorter statement_timeout cut it): not acquired
            }
            throw e;
        }
        if (standby) {
            c.rollback(savepoint); // undoes its lock_timeout; nothing was taken
            c.releaseSavepoint(savepoint);
            throw lockSession ? onLockSession(request, c) : onStandby(request);
        }
        c.releaseSavepoint(savepoint); // the lock now belongs to the transaction itself
        try (PreparedStatement ps = c.prepareStatement(RESTORE)) {
            ps.setString(1, previous);
            ps.executeQuery().close();
        }
        return true;
    }

    private static long drawToken(Connection c, String sequence) throws SQLException {
        try (PreparedStatement ps = c.prepareStatement(TOKEN)) {
            ps.setString(1, sequence);
            try (ResultSet rs = ps.executeQuery()) {
                rs.next();
                return rs.getLong(1);
            }
        }
    }

    /**
     * The lock is the transaction's own: if the transaction commits holding it, it held it throughout.
     * It can lose it before that only to a rollback to a savepoint set before it was taken (Spring: a
     * NESTED method that failed), so the server is asked whether this backend still holds it.
     */
    @Override
    public void confirmBeforeCommit() {
        assertHeld();
        long held;
        try (PreparedStatement ps = transaction.prepareStatement(HELD)) {
            ps.setString(1, shared ? "ShareLock" : "ExclusiveLock");
            ps.setLong(2, lockId);
            try (ResultSet rs = ps.executeQuery()) {
                rs.next();
                held = rs.getLong(1);
            }
        } catch (SQLException e) {
            throw new LockDatabaseException("confirming lock '" + key + "' in the transaction failed: "
                    + e.getMessage(), e);
        }
        if (held == 0) {
            undone = true;
            assertHeld();
        }
    }

    @Override
    public String key() {
        return key;
    }

    @Override
    public long fencingToken() {
        if (token == null) {
            throw new IllegalStateException(AdvisoryLockClient.NO_FENCING_TOKENS);
        }
        return token;
    }

    @Override
    public String owner() {
        return owner;
    }

    @Override
    public Instant acquiredAt() {
        return acquiredAt;
    }

    @Override
    public boolean isHeld() {
        return !released && !undone && !closed();
    }

    private boolean closed() {
        try {
            return transaction.isClosed();
        } catch (SQLException e) {
            return true;
        }
    }

    @Override
    public boolean isShared() {
        return shared;
    }

    /**
     * Never called: a transaction lock cannot be lost while its transaction can still commit (a session
     * that dies takes the transaction with it).
     */
    @Override
    public HeldLock onLost(Consumer<LockLostException> listener) {
        return this;
    }

    @Override
    public void assertHeld() {
        if (released) {
            throw new IllegalStateException("lock '" + key + "' was released by its holder");
        }
        if (undone) {
            throw new LockLostException(key, LockLostException.Reason.TAKEN_OVER, "the transaction no longer holds it:"
                    + " a rollback to a savepoint set before it was taken undid it (PostgreSQL drops the locks a"
                    + " savepoint's work took), and another holder may have had it since", null);
        }
        if (closed()) {
            throw new LockLostException(key, LockLostException.Reason.SESSION_DIED, "the transaction's connection is closed", null);
        }
    }

    @Override
    public void updateData(byte[] data) {
        throw new UnsupportedOperationException("advisory locks carry no data; use lease mode for lock data");
    }

    @Override
    public boolean release() {
        if (released) {
            throw new IllegalStateException("lock '" + key + "' was already released by this HeldLock; each"
                    + " acquisition is released once");
        }
        released = true;
        return true;
    }

    @Override
    public void close() {
        released = true;
    }

    @Override
    public String toString() {
        return "AdvisoryTransactionLock[key=" + key + (shared ? ", shared" : "") + "]";
    }
}
