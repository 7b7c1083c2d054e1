package dev.pglock.spring;

import dev.pglock.core.HeldLock;
import dev.pglock.core.LockClient;
import dev.pglock.core.LockMode;
import dev.pglock.core.LockNotAcquiredException;
import dev.pglock.core.LockRequest;
import dev.pglock.core.TransactionLock;
import java.sql.Connection;
import java.time.Duration;
import java.util.Map;
import java.util.Objects;
import java.util.concurrent.CompletableFuture;
import java.util.concurrent.CompletionStage;
import java.util.concurrent.ConcurrentHashMap;
import java.util.concurrent.atomic.AtomicInteger;
import java.util.function.Consumer;
import java.util.function.Function;
import javax.sql.DataSource;
import org.springframework.jdbc.datasource.DataSourceUtils;
import org.springframework.transaction.support.TransactionSynchronizationManager;

/**
 * Runs code while holding a distributed lock, like {@code TransactionTemplate} runs code in a
 * transaction. Inject it (or {@link LockOperations}) where {@link DistributedLock} cannot reach: a
 * call inside the same bean, a key known only in the middle of a method:
 *
 * <pre>{@code
 * Receipt receipt = lockTemplate.execute("invoice:" + id, lock -> payments.pay(id, lock.fencingToken()));
 * boolean ran = lockTemplate.tryRun("nightly-report", reports::rebuild);
 * LockOutcome<Report> outcome = lockTemplate.tryExecute("report", lock -> reports.build());
 * }</pre>
 *
 * <p>The {@code @DistributedLock} aspect runs through the same steps ({@link #tryLock} then
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
    private final Map<LockMode, LockTemplate> others = new ConcurrentHashMap<>();
    private final Duration defaultWait;
    private final Duration defaultHoldAtLeast;
    /** The lock client's DataSource, whose transaction a transaction lock joins; null when unknown. */
    private final DataSource dataSource;
    private final boolean transactional;
    /** 0: each call takes the key's lock; else one of this many permits of the key's semaphore. */
    private final int permits;
    private volatile LockTemplate inTransaction;

    /** A template on one client, with no default wait (try once) and no hold-at-least. */
    public LockTemplate(LockClient client) {
        this(client, mode -> {
            if (mode != client.mode()) {
                throw new IllegalStateException("this LockTemplate has no " + mode + " client");
            }
            return client;
        }, Duration.ZERO, Duration.ZERO, null);
    }

    /**
     * A template on {@code client}, reaching the other mode through {@code clients}, applying
     * {@code defaultWait} and {@code defaultHoldAtLeast} to {@link #request(String)}, without
     * {@link #inTransaction()} (it needs the clients' DataSource).
     */
    public LockTemplate(LockClient client, Function<LockMode, LockClient> clients, Duration defaultWait,
            Duration defaultHoldAtLeast) {
        this(client, clients, defaultWait, defaultHoldAtLeast, null);
    }

    /**
     * A template on {@code client}, reaching the other mode through {@code clients}, applying
     * {@code defaultWait} and {@code defaultHoldAtLeast} to {@link #request(String)}; {@code dataSource}
     * is the clients' DataSource, needed for {@link #inTransaction()} (null: not available).
     */
    public LockTemplate(LockClient client, Function<LockMode, LockClient> clients, Duration defaultWait,
            Duration defaultHoldAtLeast, DataSource dataSource) {
        this(client, clients, defaultWait, defaultHoldAtLeast, dataSource, false, 0);
    }

    private LockTemplate(LockClient client, Function<LockMode, LockClient> clients, Duration defaultWait,
            Duration defaultHoldAtLeast, DataSource dataSource, boolean transactional, int permits) {
        this.client = Objects.requireNonNull(client, "client must not be null");
        this.clients = Objects.requireNonNull(clients, "clients must not be null");
        this.defaultWait = Objects.requireNonNull(defaultWait, "defaultWait must not be null");
        this.defaultHoldAtLeast = Objects.requireNonNull(defaultHoldAtLeast, "defaultHoldAtLeast must not be null");
        this.dataSource = dataSource;
        this.transactional = transactional;
        this.permits = permits;
    }

    /**
     * {@inheritDoc} An advisory lock that joins a transaction ends with its commit, so the default
     * hold-at-least does not apply to it (asking for one explicitly is refused).
     */
    @Override
    public LockRequest request(String key) {
        LockRequest request = LockRequest.of(key).waitAtMost(defaultWait);
        return transactional && client.mode() == LockMode.ADVISORY ? request : request.holdAtLeast(defaultHoldAtLeast);
    }

    /** The client this template locks with. */
    public LockClient client() {
        return client;
    }

    @Override
    public <T, E extends Throwable> T execute(LockRequest request, LockCallback<T, E> action) throws E {
        Objects.requireNonNull(action, "action must not be null");
        HeldLock lock = tryLock(request);
        if (lock == null) {
            throw notAcquired(request, "");
        }
        return runHolding(lock, () -> action.doWithLock(lock));
    }

    @Override
    public <T, E extends Throwable> T execute(String key, LockCallback<T, E> action) throws E {
        return execute(request(key), action);
    }

    @Override
    public <T, E extends Throwable> LockOutcome<T> tryExecute(LockRequest request, LockCallback<T, E> action) throws E {
        Objects.requireNonNull(action, "action must not be null");
        HeldLock lock = tryLock(request);
        if (lock == null) {
            return LockOutcome.notRun();
        }
        return LockOutcome.ran(runHolding(lock, () -> action.doWithLock(lock)));
    }

    @Override
    public <T, E extends Throwable> LockOutcome<T> tryExecute(String key, LockCallback<T, E> action) throws E {
        return tryExecute(request(key), action);
    }

    @Override
    public boolean tryRun(LockRequest request, Consumer<HeldLock> action) {
        Objects.requireNonNull(action, "action must not be null");
        return tryExecute(request, lock -> {
            action.accept(lock);
            return null;
        }).ran();
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
        return others.computeIfAbsent(mode, m -> new LockTemplate(clients.apply(m), clients, defaultWait,
                defaultHoldAtLeast, dataSource, transactional, permits));
    }

    @Override
    public LockTemplate withPermits(int permits) {
        String invalid = dev.pglock.core.internal.PermitKeys.invalidPermits(permits, "withPermits");
        if (invalid != null) {
            throw new IllegalArgumentException(invalid);
        }
        if (transactional) {
            throw new IllegalStateException("a permit does not join a transaction: take it around the transaction"
                    + " (withPermits on the template itself, not on inTransaction())");
        }
        if (permits == this.permits) {
            return this;
        }
        // Not cached: a template per call is cheap, and the numbers a service uses are few.
        return new LockTemplate(client, clients, defaultWait, defaultHoldAtLeast, dataSource, false, permits);
    }

    /**
     * The exception for a call that did not get its lock (or permit) within the request's wait.
     *
     * @param context put before the message, e.g. the locked method
     */
    LockNotAcquiredException notAcquired(LockRequest request, String context) {
        if (Thread.currentThread().isInterrupted()) { // the wait ended with the interrupt, not the key's holder
            return new LockNotAcquiredException(request.key(), request.waitAtMost(), context + "interrupted while"
                    + " waiting for lock '" + request.key() + "'", new InterruptedException());
        }
        if (permits == 0) {
            return LockNotAcquiredException.of(client, request, context);
        }
        return LockNotAcquiredException.ofPermits(request, permits, context);
    }

    @Override
    public LockTemplate inTransaction() {
        if (transactional) {
            return this;
        }
        LockTemplate known = inTransaction;
        if (known == null) {
            if (permits != 0) {
                throw new IllegalStateException("a permit does not join a transaction: take it around the"
                        + " transaction instead");
            }
            known = new LockTemplate(client, clients, defaultWait, defaultHoldAtLeast, dataSource, true, 0);
            inTransaction = known;
        }
        return known;
    }

    /**
     * Step one of every locked call: the lock within the request's wait, or null when someone else
     * kept it. A transactional template takes it for the running transaction, and has it confirmed
     * before the commit and released after completion.
     */
    HeldLock tryLock(LockRequest request) {
        Objects.requireNonNull(request, "request must not be null");
        if (!transactional) {
            return (permits == 0 ? client.tryAcquire(request) : client.tryAcquirePermit(request, permits)).orElse(null);
        }
        return tryLockInTransaction(request);
    }

    private TransactionLock tryLockInTransaction(LockRequest request) {
        if (dataSource == null) {
            throw new IllegalStateException("lock '" + request.key() + "' was asked for in the transaction, but this"
                    + " LockTemplate does not know its lock client's DataSource, whose transaction the lock must join"
                    + " (a LockClient bean of the application's own may lock on another database): define a"
                    + " LockTemplate bean with new LockTemplate(client, clients::get, wait, holdAtLeast, dataSource)"
                    + " (clients: the PgLockClients bean), where every client it returns locks on that DataSource");
        }
        if (!TransactionSynchronizationManager.isActualTransactionActive()
                || !TransactionSynchronizationManager.isSynchronizationActive()
                || TransactionSynchronizationManager.getResource(dataSource) == null) {
            throw new IllegalStateException("lock '" + request.key() + "' must be taken in a transaction on pglock's"
                    + " DataSource, and none is running on this thread"
                    + (TransactionSynchronizationManager.isActualTransactionActive()
                            ? " (the running transaction is on another DataSource or resource)" : "")
                    + ": call it inside @Transactional or TransactionTemplate with the transaction manager of"
                    + " pglock's DataSource");
        }
        if (client.mode() == LockMode.LEASE && LockSynchronization.inCompletionOfCurrentTransaction()) {
            // Confirmed before the commit (an UPDATE that keeps the row until it): that has begun, and
            // a lease lost meanwhile would commit unnoticed. An advisory one is confirmed as its work
            // returns (see runHolding) and ends with the transaction.
            throw new IllegalStateException("lease lock '" + request.key() + "' was asked for in the transaction"
                    + " while that transaction completes (from a beforeCommit or afterCommit callback, such as a"
                    + " @TransactionalEventListener): it is confirmed before the commit, which has begun, so it"
                    + " could not be, and its work could commit after the lease was lost. Take it before the"
                    + " commit begins, in a transaction of its own (REQUIRES_NEW), or not in the transaction");
        }
        Connection connection = DataSourceUtils.getConnection(dataSource); // the transaction's own
        try {
            TransactionLock lock = client.tryAcquireInTransaction(connection, request).orElse(null);
            if (lock != null) {
                LockSynchronization.releaseAfterCompletion(lock);
            }
            return lock;
        } finally {
            DataSourceUtils.releaseConnection(connection, dataSource); // the transaction keeps it
        }
    }

    /**
     * Step two: runs the body with the lock visible in {@link LockContext}, then releases it whatever
     * happens: at once, or, inside a transaction that the body did not start, once that transaction
     * has completed (checking the lock before its commit). A body that answers a
     * {@link CompletionStage} keeps the lock until it completes (see {@link #releasedWhenComplete}), or
     * is refused under a lock tied to the transaction, which ends with it; one that answers a
     * publisher (Mono, Flux, ...), whose work would only begin once subscribed,
     * after the release, is refused.
     */
    <T, E extends Throwable> T runHolding(HeldLock lock, Invocation<T, E> body) throws E {
        return runHolding(lock, body, stage -> stage.getClass() == CompletableFuture.class);
    }

    /**
     * {@link #runHolding(HeldLock, Invocation)}, where {@code replace} says whether a stage the body
     * answers may be replaced by a future that completes after the release (the caller's type must
     * accept a {@link CompletableFuture}; see {@link #releasedWhenComplete}).
     */
    @SuppressWarnings("unchecked")
    <T, E extends Throwable> T runHolding(HeldLock lock, Invocation<T, E> body,
            java.util.function.Predicate<CompletionStage<?>> replace) throws E {
        boolean handedOver = false;
        LockContext.push(lock);
        try {
            T result = body.proceed();
            if (result instanceof CompletionStage<?> && lock instanceof TransactionLock) {
                throw new IllegalStateException("the work under lock '" + lock.key() + "', which is tied to the"
                        + " running transaction, returned a " + result.getClass().getName() + ": the lock ends with"
                        + " the transaction, and that work may still run after it. Finish the work before returning,"
                        + " or take a lock that is not in the transaction (it is then kept until the stage completes)");
            }
            if (result instanceof CompletionStage<?> stage) {
                CompletionStage<?> kept = keptUntilComplete(lock, stage, replace.test(stage));
                handedOver = true; // only once the stage will release it: else finish() below does
                return (T) kept;
            }
            if (result != null && !(result instanceof CompletionStage<?>) && AsyncSupport.isReactive(result.getClass())) {
                throw new IllegalStateException("the work under lock '" + lock.key() + "' returned a "
                        + result.getClass().getName() + ", whose work begins only once it is subscribed, after"
                        + " the lock was released: the lock is given back and the publisher not returned. Put"
                        + " @DistributedLock on a method that returns it (the lock is then taken on subscription"
                        + " and held until it completes), or take the lock inside the publisher");
            }
            if (result instanceof java.util.concurrent.Future<?> future && !(result instanceof CompletionStage<?>)
                    && !future.isDone() && (future.cancel(true) || !future.isDone())) {
                // An executor's submit, a scheduled task: pglock cannot follow its end without blocking (a
                // CompletionStage it can, and keeps the lock until it completes). Its work would run on
                // without the lock: cancelled, so that none runs unprotected, unless it finished meanwhile.
                throw new IllegalStateException("the work under lock '" + lock.key() + "' returned a "
                        + result.getClass().getName() + ", a Future whose end pglock cannot follow, so the lock"
                        + " would end before its work: the Future was cancelled (its work interrupted if it had"
                        + " begun) and the lock given back. Return a CompletableFuture (kept locked until it"
                        + " completes), or lock the work itself (LockTemplate inside the task)");
            }
            String mayRunLater = LockOperationSource.mayRunLater(result);
            if (mayRunLater != null) {
                org.slf4j.LoggerFactory.getLogger(LockTemplate.class).warn("the work under lock '{}' returned {}:"
                        + " if that is work still to run, the lock ended before it (said once per type)", lock.key(),
                        mayRunLater);
            }
            String later = LockOperationSource.workRunningLater(result);
            if (later != null) {
                throw new IllegalStateException("the work under lock '" + lock.key() + "' returned " + later
                        + ", so the lock would end before that work: the lock is given back and the value not"
                        + " returned. Lock the work itself (a @DistributedLock method it calls, or LockTemplate inside"
                        + " it), or return a CompletableFuture or a Mono that completes once it is done");
            }
            if (lock instanceof TransactionLock transactionLock && client.mode() == LockMode.ADVISORY) {
                // Checked as the work returns rather than before the commit: held now, it covered all
                // of the work, and it can vanish later only with a rollback to a savepoint set before
                // it (a NESTED scope that failed after the work returned), which undoes that work too.
                // So the commit of what is left must not fail on it.
                try {
                    transactionLock.confirmBeforeCommit();
                } catch (dev.pglock.core.LockDatabaseException failed) {
                    if (!"25P02".equals(failed.sqlState())) {
                        throw failed;
                    }
                    // The work failed in the database and went on (it caught the error, and rolls back):
                    // an aborted transaction commits nothing, so there is nothing to confirm.
                }
                LockSynchronization.notCheckedBeforeCommit(lock);
            }
            return result;
        } catch (Throwable failed) {
            CompletionStage<?> started = returnedInside(lock);
            if (started != null) {
                // The work returned its stage inside a transaction whose commit then failed: it runs on,
                // so the lock is kept until it completes (never released under running work: a stage
                // that only the commit would have completed keeps it until the client closes, so a
                // warning names the lock); the caller gets the failure, and logs it as it sees fit.
                if (!isDone(started) && lock.isHeld()) {
                    org.slf4j.LoggerFactory.getLogger(LockTemplate.class).warn("the transaction around the work"
                            + " under lock '{}' failed to commit ({}) after the work returned its {}: the lock is kept"
                            + " until that completes", lock.key(), failed.toString(), started.getClass().getSimpleName());
                }
                keptUntilComplete(lock, started, false);
                handedOver = true;
            }
            if (lock instanceof TransactionLock && client.mode() == LockMode.ADVISORY) {
                // An advisory transaction lock is lost only with the work it covered (a savepoint's
                // rollback, NESTED) or with the whole transaction: a NESTED scope rolled back must not
                // fail the outer commit. A lease is still checked: work that threw may yet commit.
                LockSynchronization.notCheckedBeforeCommit(lock);
            }
            throw failed;
        } finally {
            LockContext.pop();
            java.util.Map<HeldLock, CompletionStage<?>> inside = RETURNED_INSIDE.get();
            if (inside != null && inside.remove(lock) != null && inside.isEmpty()) {
                RETURNED_INSIDE.remove();
            }
            if (!handedOver) {
                finish(lock);
            }
        }
    }

    /** Hands {@code lock} over to the work behind {@code stage} (see {@link #releasedWhenComplete}). */
    private CompletionStage<?> keptUntilComplete(HeldLock lock, CompletionStage<?> stage, boolean replace) {
        if (client instanceof dev.pglock.core.internal.AbstractLockClient<?> internals) {
            internals.detach(lock); // this thread must not re-enter it while the work goes on
        }
        return releasedWhenComplete(lock, stage, replace);
    }

    /**
     * The stage a locked method returned inside the transaction that the lock, taken outside it, wraps
     * (see DistributedLockInterceptor.invokeInside): if that transaction's commit then fails, the
     * exception reaches {@link #runHolding} instead of the stage, whose work already runs.
     */
    private static final ThreadLocal<java.util.Map<HeldLock, CompletionStage<?>>> RETURNED_INSIDE =
            new ThreadLocal<>(); // by lock: a commit may run other locked calls on the same thread

    /** Records that the work under {@code lock} returned {@code stage} inside its transaction. */
    static void returnedInside(HeldLock lock, CompletionStage<?> stage) {
        java.util.Map<HeldLock, CompletionStage<?>> inside = RETURNED_INSIDE.get();
        if (inside == null) {
            inside = new java.util.IdentityHashMap<>();
            RETURNED_INSIDE.set(inside);
        }
        inside.put(lock, stage);
    }

    private static boolean isDone(CompletionStage<?> stage) {
        try {
            return stage.toCompletableFuture().isDone();
        } catch (UnsupportedOperationException notAFuture) {
            return false;
        }
    }

    /** The stage the work under {@code lock} returned inside its transaction, or null. */
    private static CompletionStage<?> returnedInside(HeldLock lock) {
        java.util.Map<HeldLock, CompletionStage<?>> inside = RETURNED_INSIDE.get();
        return inside == null ? null : inside.get(lock);
    }

    /**
     * Keeps {@code lock} until {@code stage} completes, then releases it on the thread that completed
     * it (off it, when that one must not block). Answers what the caller gets: with {@code replace},
     * a new future that completes once the lock is released, so a caller that waits for it and locks
     * again finds the key free; otherwise the stage itself. Inside a transaction the work did not
     * start, the lock is checked before that transaction commits and released once both the stage and
     * the transaction have completed (work done on the calling thread before the stage was returned
     * joined that transaction); with {@code replace} the caller then gets a new future that completes
     * with the stage, not after the release: waiting for the release inside the transaction would
     * wait for its own commit. With {@code replace}, either way, a caller that cancels (or times out)
     * the future it got never completes the stage of work that still runs; without it the caller
     * has the stage itself.
     */
    static CompletionStage<?> releasedWhenComplete(HeldLock lock, CompletionStage<?> stage, boolean replace) {
        if (LockSynchronization.active()) {
            AtomicInteger pending = new AtomicInteger(2);
            Runnable releaseAfterBoth = () -> {
                if (pending.decrementAndGet() == 0) {
                    AsyncSupport.release(lock, () -> { });
                }
            };
            LockSynchronization.afterCompletion(lock, releaseAfterBoth);
            if (!replace) {
                stage.whenComplete((value, error) -> releaseAfterBoth.run());
                return stage;
            }
            // The caller's own future, as outside a transaction: its cancel or timeout must not
            // complete the work's stage, which would release the lock while that work goes on.
            CompletableFuture<Object> outcome = new CompletableFuture<>();
            stage.whenComplete((value, error) -> {
                try {
                    releaseAfterBoth.run();
                } finally {
                    completeWith(outcome, value, error);
                }
            });
            return outcome;
        }
        if (!replace) {
            stage.whenComplete((value, error) -> AsyncSupport.release(lock, () -> { }));
            return stage;
        }
        CompletableFuture<Object> released = new CompletableFuture<>();
        stage.whenComplete((value, error) -> AsyncSupport.release(lock, () -> completeWith(released, value, error)));
        return released;
    }

    private static void completeWith(CompletableFuture<Object> future, Object value, Throwable error) {
        if (error != null) {
            future.completeExceptionally(error);
        } else {
            future.complete(value);
        }
    }

    /** Releases a lock whose work has returned, or leaves it to the surrounding transaction. */
    static void finish(HeldLock lock) {
        if (lock instanceof TransactionLock) {
            return; // its synchronization releases it after completion
        }
        if (LockSynchronization.active()) {
            LockSynchronization.releaseAfterCompletion(lock);
        } else {
            lock.close();
        }
    }
}
