package dev.pglock.benchmarks;

import java.time.Duration;

/** One lock implementation, seen the same way by every scenario. */
interface LockSystem extends AutoCloseable {

    /** A lock this system holds. */
    interface Held {
        void release() throws Exception;
    }

    String name();

    /** One attempt; null when someone else holds it. */
    Held tryLock(String key) throws Exception;

    /** Waits up to {@code wait}; null when the wait ran out. */
    Held lock(String key, Duration wait) throws Exception;

    /** Whether {@link #lock} really waits (ShedLock only ever tries once). */
    default boolean canWait() {
        return true;
    }

    @Override
    void close() throws Exception;
}
