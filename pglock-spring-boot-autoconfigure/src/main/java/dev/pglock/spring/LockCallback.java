package dev.pglock.spring;

import dev.pglock.core.HeldLock;

/**
 * Code to run while a lock is held; receives the lock (its fencing token, {@code assertHeld()}).
 *
 * @param <T> what the code returns
 */
@FunctionalInterface
public interface LockCallback<T> {

    T doWithLock(HeldLock lock);
}
