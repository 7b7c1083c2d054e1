package dev.pglock.core;

import java.time.Duration;

/**
 * Thrown by {@link LockClient#acquire(LockRequest)} when another holder kept the lock for the whole
 * wait. This is the normal outcome of contention, not a failure of pglock or the database.
 */
public class LockNotAcquiredException extends PgLockException {

    private final String key;
    private final Duration waited;

    public LockNotAcquiredException(String key, Duration waited) {
        this(key, waited, "lock '" + key + "' is held elsewhere; gave up after waiting " + waited, null);
    }

    public LockNotAcquiredException(String key, Duration waited, String message, Throwable cause) {
        super(message, cause);
        this.key = key;
        this.waited = waited;
    }

    /** The key that could not be locked. */
    public String key() {
        return key;
    }

    /** How long the caller was willing to wait ({@link LockRequest#waitAtMost()}). */
    public Duration waited() {
        return waited;
    }
}
