package dev.pglock.spring;

import dev.pglock.core.HeldLock;
import dev.pglock.core.LockClient;
import dev.pglock.core.LockNotAcquiredException;
import dev.pglock.core.LockRequest;
import java.util.concurrent.atomic.AtomicReference;
import java.util.function.Supplier;
import org.reactivestreams.Publisher;
import org.slf4j.Logger;
import org.slf4j.LoggerFactory;
import org.springframework.core.ReactiveAdapter;
import org.springframework.core.ReactiveAdapterRegistry;
import reactor.core.publisher.Flux;
import reactor.core.publisher.Mono;
import reactor.core.scheduler.Schedulers;

/**
 * Locks around a reactive method: the lock is taken when the returned publisher is subscribed to,
 * on Reactor's bounded-elastic scheduler (never on the subscribing thread, which may be an event
 * loop), the method's publisher runs while it is held, and the lock is released when that publisher
 * completes, fails or is cancelled. Each subscription takes the lock anew. Loaded only when Reactor
 * is on the classpath ({@link AsyncSupport#REACTOR}).
 *
 * <p>The method's publisher sees its lock in the Reactor context under {@link LockContext#REACTOR_KEY}.
 */
final class ReactiveLocking {

    private static final Logger log = LoggerFactory.getLogger(ReactiveLocking.class);

    /** The locked method's invocation, once per subscription. */
    @FunctionalInterface
    interface Call {
        Object proceed() throws Throwable;
    }

    private ReactiveLocking() {
    }

    static boolean inNonBlockingThread() {
        return Schedulers.isInNonBlockingThread();
    }

    /**
     * Where a release runs when the thread that completed the work must not block: threads of its own,
     * not Reactor's shared bounded-elastic ones, where subscriptions waiting for a lock each keep a
     * thread for up to their waitAtMost (and the application's blocking tasks others): a release
     * queued behind them kept its lock held until one of them ended. A plain executor, so that no
     * Reactor scheduler factory (a test's virtual time) replaces it; daemon threads, gone when idle.
     */
    private static final java.util.concurrent.ExecutorService RELEASES = java.util.concurrent.Executors
            .newCachedThreadPool(new java.util.concurrent.ThreadFactory() {
                private final java.util.concurrent.atomic.AtomicInteger count = new java.util.concurrent.atomic.AtomicInteger();

                @Override
                public Thread newThread(Runnable r) {
                    Thread t = new Thread(r, "pglock-release-" + count.incrementAndGet());
                    t.setDaemon(true);
                    return t;
                }
            });

    /**
     * Releases the lock on pglock's release threads, then runs {@code then} (the subscriber's
     * completion, the caller's future) on Reactor's bounded-elastic scheduler, as before: not on the
     * release threads, which the application's code that follows must not hold.
     */
    static void releaseOffThread(HeldLock lock, Runnable then) {
        releaseOffThread(lock::close, then);
    }

    /** {@link #releaseOffThread(HeldLock, Runnable)} with the release given as {@code close}. */
    private static void releaseOffThread(Runnable close, Runnable then) {
        Runnable release = () -> {
            try {
                close.run();
            } finally {
                try {
                    Schedulers.boundedElastic().schedule(then);
                } catch (RuntimeException rejected) { // no thread to be had: here rather than never
                    then.run();
                }
            }
        };
        try {
            RELEASES.execute(release);
        } catch (java.util.concurrent.RejectedExecutionException rejected) {
            release.run();
        }
    }

    static Object invoke(LockOperation operation, LockTemplate template, LockRequest request, Call call,
            Supplier<LockNotAcquiredException> notAcquired, Runnable skipped) {
        // A suspend function's proceed() gives a publisher; its return type (Object) has no adapter.
        ReactiveAdapter adapter = ReactiveAdapterRegistry.getSharedInstance()
                .getAdapter(operation.method().getReturnType());
        Mono<Handover> lock = acquire(operation, template, request)
                .switchIfEmpty(Mono.defer(() -> {
                    if (operation.skipsWhenLocked()) {
                        log.debug("{} skipped: lock '{}' is held elsewhere", operation.description(), request.key());
                        skipped.run();
                        return Mono.empty();
                    }
                    return Mono.error(notAcquired.get());
                }));
        Publisher<?> locked;
        if (adapter != null ? adapter.isMultiValue() : SUSPEND_FLOWS.computeIfAbsent(operation.method(),
                ReactiveLocking::suspendReturnsFlow)) {
            locked = Flux.usingWhen(lock,
                    held -> held.take() ? Flux.from(body(call, held.lock, adapter)) : Flux.empty(),
                    held -> release(held.lock), (held, error) -> release(held.lock), held -> release(held.lock));
        } else {
            locked = Mono.usingWhen(lock,
                    held -> held.take() ? Mono.from(body(call, held.lock, adapter)) : Mono.empty(),
                    held -> release(held.lock), (held, error) -> release(held.lock), held -> release(held.lock));
        }
        return adapter != null ? adapter.fromPublisher(locked) : locked;
    }

    /** Soft references: a restarted application's methods (and class loaders) are not kept. */
    private static final java.util.Map<java.lang.reflect.Method, Boolean> SUSPEND_FLOWS =
            new org.springframework.util.ConcurrentReferenceHashMap<>();

    /**
     * Whether a Kotlin suspend function is declared to return a Flow: Spring AOP hands interceptors a
     * Flux for it (a Mono for any other result), which must be relayed whole. Its JVM signature ends
     * with a {@code Continuation<? super R>} parameter that names the declared result R.
     */
    static boolean suspendReturnsFlow(java.lang.reflect.Method method) {
        Class<?> result = suspendResult(method);
        return result != null && isFlow(result);
    }

    /**
     * The declared result of a Kotlin suspend function: its JVM signature ends with a
     * {@code Continuation<? super R>} parameter that names it. Null when it cannot be told.
     */
    static Class<?> suspendResult(java.lang.reflect.Method method) {
        java.lang.reflect.Type[] parameters = method.getGenericParameterTypes();
        if (parameters.length == 0
                || !(parameters[parameters.length - 1] instanceof java.lang.reflect.ParameterizedType continuation)
                || !continuation.getRawType().getTypeName().equals("kotlin.coroutines.Continuation")) {
            return null;
        }
        java.lang.reflect.Type result = continuation.getActualTypeArguments()[0];
        if (result instanceof java.lang.reflect.WildcardType wildcard && wildcard.getLowerBounds().length == 1) {
            result = wildcard.getLowerBounds()[0];
        }
        if (result instanceof java.lang.reflect.ParameterizedType parameterized) {
            result = parameterized.getRawType();
        }
        return result instanceof Class<?> type ? type : null;
    }

    /**
     * The type Spring's adapter hands the caller of a method declared to return {@code type}, when
     * that is not a {@code type}: the adapter of a supertype (Flux for ConnectableFlux, Flow for
     * StateFlow, Publisher for a class of its own) makes its supertype, and the call would fail with
     * a ClassCastException every time. Null when the caller gets what it declared. Asks the adapter
     * for what {@link #invoke} gets from it, with an empty publisher.
     */
    static Class<?> handsBackInstead(Class<?> type) {
        ReactiveAdapter adapter = ReactiveAdapterRegistry.getSharedInstance().getAdapter(type);
        if (adapter == null || adapter.getReactiveType() == type) {
            return null;
        }
        Object handedBack = adapter.fromPublisher(adapter.isMultiValue() ? Flux.empty() : Mono.empty());
        return type.isInstance(handedBack) ? null : adapter.getReactiveType();
    }

    static boolean isFlow(Class<?> type) {
        if (type.getName().equals("kotlinx.coroutines.flow.Flow")) {
            return true;
        }
        for (Class<?> implemented : type.getInterfaces()) {
            if (isFlow(implemented)) {
                return true;
            }
        }
        return type.getSuperclass() != null && isFlow(type.getSuperclass());
    }

    /**
     * A lock on its way to the work: offered by the acquirer, then taken by the usingWhen closure. A
     * cancel before it is taken releases it; Reactor drops a value that arrives after a cancel
     * without telling anyone, so the hand-over cannot rely on Reactor.
     */
    static final class Handover {
        private static final Object CANCELLED = new Object();
        private static final Object TAKEN = new Object();
        private final AtomicReference<Object> cell = new AtomicReference<>();
        private final LockClient client;
        private HeldLock lock;

        Handover() {
            this(null);
        }

        /** @param client the client that grants the lock, which gives back one never used unused */
        Handover(LockClient client) {
            this.client = client;
        }

        /** Offers the lock; false (and the lock released) when the subscriber has already cancelled. */
        boolean offer(HeldLock held) {
            lock = held;
            if (cell.compareAndSet(null, held)) {
                return true;
            }
            giveBackUnused(held);
            return false;
        }

        void cancel() {
            if (cell.getAndSet(CANCELLED) instanceof HeldLock offered) {
                // Offered, never taken. A cancel may come from an event loop (a client that went away, a
                // timeout on a parallel thread): the release, a database call, runs off it.
                releaseOffThread(() -> giveBackUnused(offered), () -> { });
            }
        }

        /**
         * No work ran under a lock its subscriber never took: given back without its hold-at-least, as
         * the core gives back a grant it never handed out.
         */
        private void giveBackUnused(HeldLock held) {
            if (client instanceof dev.pglock.core.internal.AbstractLockClient<?> internals) {
                internals.closeUnused(held);
            } else {
                held.close();
            }
        }

        /** The work may run under the lock: false when a cancel released it first. */
        boolean take() {
            return cell.compareAndSet(lock, TAKEN);
        }
    }

    /**
     * The lock, taken off the subscribing thread (the acquisition may wait), handed over so that a
     * subscriber that cancels meanwhile never leaves it held.
     */
    private static Mono<Handover> acquire(LockOperation operation, LockTemplate template, LockRequest request) {
        return Mono.<Handover>create(sink -> {
            Handover handover = new Handover(template.client());
            sink.onCancel(handover::cancel);
            HeldLock held;
            try {
                held = template.tryLock(request);
            } catch (IllegalStateException e) {
                // Shutting down: the client grants nothing more. A method that skips when the lock is
                // taken skips quietly here too, as a synchronous one does (DistributedLockInterceptor).
                if (template.client().isClosed() && operation.skipsWhenLocked()) {
                    log.debug("{} skipped: the lock client is closed (the application is shutting down)",
                            operation.description());
                    sink.success();
                } else {
                    sink.error(e);
                }
                return;
            } catch (Throwable t) {
                sink.error(t);
                return;
            }
            if (held == null) {
                sink.success();
            } else if (handover.offer(held)) {
                sink.success(handover);
            }
        }).subscribeOn(Schedulers.boundedElastic());
    }

    /** Calls the method with its lock in LockContext (for code that runs while it assembles its publisher). */
    private static Publisher<?> body(Call call, HeldLock lock, ReactiveAdapter adapter) {
        Object result;
        LockContext.push(lock);
        try {
            result = call.proceed();
        } catch (Throwable t) {
            return Mono.error(t);
        } finally {
            LockContext.pop();
        }
        if (result == null) {
            return Mono.empty();
        }
        Publisher<?> publisher = adapter != null ? adapter.toPublisher(result) : (Publisher<?>) result;
        return Flux.from(publisher).contextWrite(context -> context.put(LockContext.REACTOR_KEY, lock));
    }

    /** Releases off the completing thread, which may be one that must not block (see {@link #RELEASES}). */
    private static Mono<Void> release(HeldLock lock) {
        return Mono.<Void>create(sink -> releaseOffThread(lock, sink::success));
    }
}
