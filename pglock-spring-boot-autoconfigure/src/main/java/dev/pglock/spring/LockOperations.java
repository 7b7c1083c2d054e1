package dev.pglock.spring;

import dev.pglock.core.HeldLock;
import dev.pglock.core.LockMode;
import dev.pglock.core.LockNotAcquiredException;
import dev.pglock.core.LockRequest;
import java.util.function.Consumer;

/**
 * Runs code while holding a distributed lock; implemented by {@link LockTemplate}, the programmatic
 * twin of {@link DistributedLock}. The lock is released when the code returns or throws, and the
 * exception passes through unchanged.
 */
public interface LockOperations {

    /**
     * Waits for the lock up to {@link LockRequest#waitAtMost()}, runs the callback, releases.
     *
     * @throws LockNotAcquiredException when someone else held it for the whole wait
     */
    <T> T execute(LockRequest request, LockCallback<T> action);

    /** {@link #execute(LockRequest, LockCallback)} with the key and the configured defaults ({@code pglock.wait}, {@code pglock.hold-at-least}). */
    <T> T execute(String key, LockCallback<T> action);

    /**
     * Runs the action if the lock can be had within {@link LockRequest#waitAtMost()}.
     *
     * @return whether the action ran
     */
    boolean tryRun(LockRequest request, Consumer<HeldLock> action);

    /** {@link #tryRun(LockRequest, Consumer)} with the key and the configured defaults. */
    boolean tryRun(String key, Runnable action);

    /** The same operations on the other lock mode's client (for code that needs both modes). */
    LockOperations inMode(LockMode mode);
}
