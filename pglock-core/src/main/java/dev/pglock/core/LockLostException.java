package dev.pglock.core;

/**
 * A lock this process held is no longer held: its database session died, its lease ran out, its row
 * was taken over or deleted, or the client was closed. Passed to {@link HeldLock#onLost} listeners
 * and thrown by {@link HeldLock#assertHeld()}. Work done under the lock after this point is no
 * longer protected by it.
 */
public class LockLostException extends PgLockException {

    private final String key;

    public LockLostException(String key, String reason, Throwable cause) {
        super("lock '" + key + "' was lost: " + reason, cause);
        this.key = key;
    }

    /** The key of the lost lock. */
    public String key() {
        return key;
    }
}
