package dev.pglock.core;

import java.util.Objects;

/**
 * A lock this process held is no longer held: its database session died, its lease ran out, its row
 * was taken over or deleted, or the client was closed. Passed to {@link HeldLock#onLost} listeners
 * and thrown by {@link HeldLock#assertHeld()}. Work done under the lock after this point is no
 * longer protected by it. {@link #reason()} says which of these happened, for metrics and alerts.
 */
public class LockLostException extends PgLockException {

    /** Why a lock was lost, in categories stable enough for a metric tag. */
    public enum Reason {
        /**
         * Lease mode: heartbeats failed (the database did not answer, or answered with an error) until
         * the holder could no longer trust its lease.
         */
        HEARTBEAT_FAILED("heartbeat-failed"),
        /**
         * The database no longer had the lock as this holder's: its lease ran out and another holder
         * took the row, or someone released or deleted it (an operator's force-release).
         */
        TAKEN_OVER("taken-over"),
        /** Advisory mode: the database session that held the lock ended (terminated, restarted, cut off). */
        SESSION_DIED("session-died"),
        /**
         * Lease mode: no heartbeat was confirmed in time although none failed (the process was paused,
         * or an answer came too late), so the holder stopped trusting its lease.
         */
        TRUST_EXPIRED("trust-expired"),
        /** The lock client was closed while the lock was still held. */
        CLIENT_CLOSED("client-closed");

        private final String tagValue;

        Reason(String tagValue) {
            this.tagValue = tagValue;
        }

        /** The reason in lower-case words joined by dashes, as metrics tag it. */
        public String tagValue() {
            return tagValue;
        }
    }

    private final String key;
    private final Reason reason;

    /**
     * @param key the lost lock's key
     * @param reason the category of the loss
     * @param detail the loss in a sentence, for the message
     * @param cause what made it, if an exception did
     */
    public LockLostException(String key, Reason reason, String detail, Throwable cause) {
        super("lock '" + key + "' was lost: " + detail, cause);
        this.key = key;
        this.reason = Objects.requireNonNull(reason, "reason must not be null");
    }

    /** The key of the lost lock. */
    public String key() {
        return key;
    }

    /** Why it was lost. */
    public Reason reason() {
        return reason;
    }
}
