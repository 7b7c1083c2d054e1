package dev.pglock.spring;

import dev.pglock.core.HeldLock;

/**
 * Code to run while a lock is held; receives the lock (its fencing token, {@code assertHeld()}). It
 * may throw a checked exception, which {@link LockOperations} rethrows unchanged:
 *
 * <pre>{@code
 * byte[] report = lockTemplate.execute("report", lock -> Files.readAllBytes(path)); // throws IOException
 * }</pre>
 *
 * @param <T> what the code returns
 * @param <E> what it may throw; inferred, {@code RuntimeException} when it throws nothing checked
 */
@FunctionalInterface
public interface LockCallback<T, E extends Throwable> {

    T doWithLock(HeldLock lock) throws E;
}
