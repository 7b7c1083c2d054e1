package dev.pglock.spring;

import dev.pglock.core.HeldLock;
import org.springframework.core.KotlinDetector;
import org.springframework.core.ReactiveAdapterRegistry;
import org.springframework.util.ClassUtils;

/**
 * What the classpath offers for asynchronous methods, without touching Reactor's classes: only
 * {@link ReactiveLocking} does, and only when {@link #REACTOR} is true.
 */
final class AsyncSupport {

    private static final ClassLoader LOADER = AsyncSupport.class.getClassLoader();

    /** Project Reactor is on the classpath. */
    static final boolean REACTOR = ClassUtils.isPresent("reactor.core.publisher.Mono", LOADER);

    /** Spring AOP hands interceptors of Kotlin suspend functions a publisher (it needs both). */
    static final boolean COROUTINES = REACTOR && KotlinDetector.isKotlinReflectPresent()
            && ClassUtils.isPresent("kotlinx.coroutines.reactor.MonoKt", LOADER);

    private AsyncSupport() {
    }

    /** Whether Spring's adapters turn the type into a Reactor publisher (Mono, Flux, RxJava, Flow...). */
    static boolean isReactive(Class<?> type) {
        return REACTOR && ReactiveAdapterRegistry.getSharedInstance().getAdapter(type) != null;
    }

    /** Whether the calling thread must not block (a Reactor or Reactor Netty event loop). */
    static boolean inNonBlockingThread() {
        return REACTOR && ReactiveLocking.inNonBlockingThread();
    }

    /** Releases the lock, off the calling thread when that one must not block, then runs {@code then}. */
    static void release(HeldLock lock, Runnable then) {
        if (inNonBlockingThread()) {
            ReactiveLocking.releaseOffThread(lock, then);
        } else {
            try {
                lock.close();
            } finally {
                then.run();
            }
        }
    }
}
