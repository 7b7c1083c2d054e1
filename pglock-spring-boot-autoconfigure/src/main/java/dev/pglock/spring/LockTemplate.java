package dev.pglock.spring;

import dev.pglock.core.HeldLock;
import dev.pglock.core.LockClient;
import dev.pglock.core.LockMode;
import dev.pglock.core.LockNotAcquiredException;
import dev.pglock.core.LockRequest;
import java.time.Duration;
import java.util.Objects;
import java.util.function.Consumer;
import java.util.function.Function;

/**
 * Runs code while holding a distributed lock, like {@code TransactionTemplate} runs code in a
 * transaction. Inject it where {@link DistributedLock} cannot reach (a call inside the same bean, a
 * key known only in the middle of a method):
 *
 * <pre>{@code
 * Receipt receipt = lockTemplate.execute("invoice:" + id, lock -> payments.pay(id, lock.fencingToken()));
 * boolean ran = lockTemplate.tryRun("nightly-report", reports::rebuild);
 * }</pre>
 *
 * <p>The {@code @DistributedLock} aspect runs through the same two steps ({@link #tryLock} then
 * {@link #runHolding}), so the annotation and the template cannot behave differently.
 */
public class LockTemplate implements LockOperations {

    /** The body of a locked call; may throw what the locked method throws. */
    @FunctionalInterface
    interface Invocation<T, E extends Throwable> {
        T proceed() throws E;
    }

    private final LockClient client;
    private final Function<LockMode, LockClient> clients;
    private final java.util.Map<LockMode, LockTemplate> others = new java.util.concurrent.ConcurrentHashMap<>();
    private final Duration defaultWait;
    private final Duration defaultHoldAtLeast;

    /** A template on one client, with no default wait (try once) and no hold-at-least. */
    public LockTemplate(LockClient client) {
        this(client, mode -> {
            if (mode != client.mode()) {
                throw new IllegalStateException("this LockTemplate has no " + mode + " client");
            }
            return client;
        }, Duration.ZERO, Duration.ZERO);
    }

    /**
     * A template on {@code client}, reaching the other mode through {@code clients}, applying
     * {@code defaultWait} and {@code defaultHoldAtLeast} to the key-only methods.
     */
    public LockTemplate(LockClient client, Function<LockMode, LockClient> clients, Duration defaultWait,
            Duration defaultHoldAtLeast) {
        this.client = Objects.requireNonNull(client, "client must not be null");
        this.clients = Objects.requireNonNull(clients, "clients must not be null");
        this.defaultWait = Objects.requireNonNull(defaultWait, "defaultWait must not be null");
        this.defaultHoldAtLeast = Objects.requireNonNull(defaultHoldAtLeast, "defaultHoldAtLeast must not be null");
    }

    /** The request for {@code key} with this template's defaults. */
    public LockRequest request(String key) {
        return LockRequest.of(key).waitAtMost(defaultWait).holdAtLeast(defaultHoldAtLeast);
    }

    /** The client this template locks with. */
    public LockClient client() {
        return client;
    }

    @Override
    public <T> T execute(LockRequest request, LockCallback<T> action) {
        Objects.requireNonNull(action, "action must not be null");
        HeldLock lock = tryLock(request);
        if (lock == null) {
            throw new LockNotAcquiredException(request.key(), request.waitAtMost());
        }
        return runHolding(lock, () -> action.doWithLock(lock));
    }

    @Override
    public <T> T execute(String key, LockCallback<T> action) {
        return execute(request(key), action);
    }

    @Override
    public boolean tryRun(LockRequest request, Consumer<HeldLock> action) {
        Objects.requireNonNull(action, "action must not be null");
        HeldLock lock = tryLock(request);
        if (lock == null) {
            return false;
        }
        runHolding(lock, () -> {
            action.accept(lock);
            return null;
        });
        return true;
    }

    @Override
    public boolean tryRun(String key, Runnable action) {
        Objects.requireNonNull(action, "action must not be null");
        return tryRun(request(key), lock -> action.run());
    }

    @Override
    public LockTemplate inMode(LockMode mode) {
        if (mode == client.mode()) {
            return this;
        }
        return others.computeIfAbsent(mode,
                m -> new LockTemplate(clients.apply(m), clients, defaultWait, defaultHoldAtLeast));
    }

    /** Step one of every locked call: the lock within the request's wait, or null when someone else kept it. */
    HeldLock tryLock(LockRequest request) {
        return client.tryAcquire(Objects.requireNonNull(request, "request must not be null")).orElse(null);
    }

    /** Step two: runs the body with the lock visible in {@link LockContext}, then releases it whatever happens. */
    <T, E extends Throwable> T runHolding(HeldLock lock, Invocation<T, E> body) throws E {
        LockContext.push(lock);
        try {
            return body.proceed();
        } finally {
            LockContext.pop();
            lock.close();
        }
    }
}
