package dev.pglock.core;

/**
 * The root of every exception pglock throws. Unchecked: a lock that cannot be taken or was lost is
 * a condition the caller decides about, not a signature to thread through every layer.
 */
public class PgLockException extends RuntimeException {

    public PgLockException(String message) {
        super(message);
    }

    public PgLockException(String message, Throwable cause) {
        super(message, cause);
    }
}
