package dev.pglock.spring;

import dev.pglock.core.HeldLock;
import dev.pglock.core.LockMode;
import dev.pglock.core.LockNotAcquiredException;
import dev.pglock.core.LockRequest;
import java.util.function.Consumer;

/**
 * Runs code while holding a distributed lock; implemented by {@link LockTemplate}, the programmatic
 * twin of {@link DistributedLock}, with the same rules: the lock is released when the code returns
 * or throws (inside a transaction the code did not start, when that transaction completes), and the
 * exception passes through unchanged, checked or not. Code that returns a {@code CompletionStage}
 * keeps the lock until it completes (a {@code CompletableFuture} returned completes after the
 * release, or, inside a transaction the code did not start, with the code's own; under {@link #inTransaction()}, where the lock ends with the transaction, it is refused with
 * an {@link IllegalStateException}); code that returns a publisher (Mono, Flux), whose work would begin only once subscribed,
 * is refused with an {@link IllegalStateException} and the lock given back.
 *
 * <p>Requests: the key-only methods apply the configured defaults ({@code pglock.wait},
 * {@code pglock.hold-at-least}). To change one value and keep the others, start from
 * {@link #request(String)}, not from {@code LockRequest.of}, which has none of them:
 *
 * <pre>{@code
 * lockTemplate.execute(lockTemplate.request("invoice:" + id).waitAtMost(Duration.ofSeconds(5)), lock -> pay(id));
 * }</pre>
 */
public interface LockOperations {

    /** A request for {@code key} with the configured defaults applied, to adjust and pass to the methods below. */
    LockRequest request(String key);

    /**
     * Waits for the lock up to {@link LockRequest#waitAtMost()}, runs the callback, releases.
     *
     * @throws LockNotAcquiredException when someone else held it for the whole wait
     * @throws E what the callback throws, unchanged
     */
    <T, E extends Throwable> T execute(LockRequest request, LockCallback<T, E> action) throws E;

    /** {@link #execute(LockRequest, LockCallback)} for {@link #request(String) request(key)}. */
    <T, E extends Throwable> T execute(String key, LockCallback<T, E> action) throws E;

    /**
     * Runs the callback if the lock can be had within {@link LockRequest#waitAtMost()}; says whether it
     * ran and what it returned. Never throws {@link LockNotAcquiredException}.
     *
     * @throws E what the callback throws, unchanged
     */
    <T, E extends Throwable> LockOutcome<T> tryExecute(LockRequest request, LockCallback<T, E> action) throws E;

    /** {@link #tryExecute(LockRequest, LockCallback)} for {@link #request(String) request(key)}. */
    <T, E extends Throwable> LockOutcome<T> tryExecute(String key, LockCallback<T, E> action) throws E;

    /**
     * Runs the action if the lock can be had within {@link LockRequest#waitAtMost()}.
     *
     * @return whether the action ran
     */
    boolean tryRun(LockRequest request, Consumer<HeldLock> action);

    /** {@link #tryRun(LockRequest, Consumer)} for {@link #request(String) request(key)}. */
    boolean tryRun(String key, Runnable action);

    /** The same operations on the other lock mode's client (for code that needs both modes). */
    LockOperations inMode(LockMode mode);

    /**
     * The same operations, each taking one of {@code permits} permits of the key's semaphore instead
     * of the key's lock: at most {@code permits} callbacks run at once across every replica (see
     * {@code LockClient.tryAcquirePermit}; every user of the key must give the same number).
     *
     * @throws IllegalArgumentException when {@code permits} is not between 1 and 1000
     * @throws IllegalStateException on {@link #inTransaction()} operations: a permit does not join a transaction
     */
    LockOperations withPermits(int permits);

    /**
     * The same operations with locks tied to the running transaction on pglock's DataSource, as
     * {@code @DistributedLock(inTransaction = true)} takes them: call them inside that transaction
     * ({@code @Transactional} or {@code TransactionTemplate}). The lock ends with the transaction, and
     * a lock lost before the commit makes it roll back.
     *
     * @throws IllegalStateException from each call when no transaction on pglock's DataSource runs
     */
    LockOperations inTransaction();
}
