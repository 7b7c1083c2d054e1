package dev.pglock.spring;

import java.lang.reflect.Method;

/**
 * Hears each call of a {@link DistributedLock} method that was skipped because its lock was held
 * elsewhere (a {@code @Scheduled} method, or {@code whenLocked = SKIP}), or because the application
 * is shutting down. Every bean of this type is told, in order, on the calling thread; the starter
 * registers one that counts skips in Micrometer ({@code pglock.skipped}) when it is on the classpath.
 * A listener that throws is logged and ignored: a skip never fails because of it.
 */
@FunctionalInterface
public interface LockSkipListener {

    /**
     * @param method the annotated method that did not run
     * @param key the lock key it asked for
     */
    void skipped(Method method, String key);
}
