package dev.pglock.spring;

import dev.pglock.core.HeldLock;
import dev.pglock.core.LockNotAcquiredException;
import dev.pglock.core.LockRequest;
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

    static void releaseOffThread(HeldLock lock) {
        Schedulers.boundedElastic().schedule(lock::close);
    }

    static Object invoke(LockOperation operation, LockTemplate template, LockRequest request, Call call,
            Supplier<LockNotAcquiredException> notAcquired) {
        // A suspend function's proceed() gives a publisher; its return type (Object) has no adapter.
        ReactiveAdapter adapter = ReactiveAdapterRegistry.getSharedInstance()
                .getAdapter(operation.method().getReturnType());
        Mono<HeldLock> lock = Mono.fromCallable(() -> template.tryLock(request))
                .subscribeOn(Schedulers.boundedElastic())
                .switchIfEmpty(Mono.defer(() -> {
                    if (operation.skipsWhenLocked()) {
                        log.debug("{} skipped: lock '{}' is held elsewhere", operation.description(), request.key());
                        return Mono.empty();
                    }
                    return Mono.error(notAcquired.get());
                }));
        Publisher<?> locked;
        if (adapter != null && adapter.isMultiValue()) {
            locked = Flux.usingWhen(lock, held -> Flux.from(body(call, held, adapter)), ReactiveLocking::release,
                    (held, error) -> release(held), ReactiveLocking::release);
        } else {
            locked = Mono.usingWhen(lock, held -> Mono.from(body(call, held, adapter)), ReactiveLocking::release,
                    (held, error) -> release(held), ReactiveLocking::release);
        }
        return adapter != null ? adapter.fromPublisher(locked) : locked;
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

    private static Mono<Void> release(HeldLock lock) {
        return Mono.<Void>fromRunnable(lock::close).subscribeOn(Schedulers.boundedElastic());
    }
}
