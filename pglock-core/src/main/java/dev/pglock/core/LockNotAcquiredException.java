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
        this(key, waited, "lock '" + key + "' is held elsewhere" + gaveUp(waited), null);
    }

    public LockNotAcquiredException(String key, Duration waited, String message, Throwable cause) {
        super(message, cause);
        this.key = key;
        this.waited = waited;
    }

    /**
     * The exception for {@code request}, which {@code client} did not get, saying what holds the lock
     * when the client knows: its own earlier acquisition, kept taken by hold-at-least, is named as
     * such rather than as "held elsewhere".
     *
     * @param context put before the message, e.g. the locked method ({@code "@DistributedLock on Jobs.run(..): "})
     */
    public static LockNotAcquiredException of(LockClient client, LockRequest request, String context) {
        String what = client.holdAtLeastUntil(request.key())
                .map(until -> "lock '" + request.key() + "' is kept taken until " + until + " by the hold-at-least of"
                        + " an earlier acquisition by this client (" + client.owner() + "), already released; it is"
                        + " not held elsewhere")
                .orElse("lock '" + request.key() + "' is held elsewhere");
        return new LockNotAcquiredException(request.key(), request.waitAtMost(),
                context + what + gaveUp(request.waitAtMost()), null);
    }

    /**
     * The exception for a permit of the semaphore {@code request.key()} with {@code permits} permits
     * that no caller got within the request's wait ({@link LockClient#acquirePermit}).
     *
     * @param context put before the message, as for {@link #of}
     */
    public static LockNotAcquiredException ofPermits(LockRequest request, int permits, String context) {
        return new LockNotAcquiredException(request.key(), request.waitAtMost(), context + "all " + permits
                + " permits of semaphore '" + request.key() + "' are held elsewhere" + gaveUp(request.waitAtMost()),
                null);
    }

    private static String gaveUp(Duration waited) {
        return "; gave up after waiting " + waited;
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
