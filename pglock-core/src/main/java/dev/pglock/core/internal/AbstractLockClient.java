package dev.pglock.core.internal;

import dev.pglock.core.HeldLock;
import dev.pglock.core.LockClient;
import dev.pglock.core.LockClientStatus;
import dev.pglock.core.LockDatabaseException;
import dev.pglock.core.LockLostException;
import dev.pglock.core.LockLostException.Reason;
import dev.pglock.core.LockObserver;
import dev.pglock.core.LockNotAcquiredException;
import dev.pglock.core.LockRequest;
import dev.pglock.core.TransactionLock;
import java.time.Duration;
import java.time.Instant;
import java.util.ArrayList;
import java.util.HashMap;
import java.util.List;
import java.util.Map;
import java.util.Objects;
import java.util.Optional;
import java.util.concurrent.CompletableFuture;
import java.util.concurrent.ConcurrentHashMap;
import java.util.concurrent.ExecutorService;
import java.util.concurrent.Executors;
import java.util.concurrent.RejectedExecutionException;
import java.util.concurrent.ScheduledExecutorService;
import java.util.concurrent.TimeUnit;
import java.util.concurrent.atomic.AtomicInteger;
import java.util.concurrent.locks.Condition;
import java.util.concurrent.locks.ReentrantLock;
import java.util.function.Consumer;
import java.util.function.Predicate;
import org.slf4j.Logger;
import org.slf4j.LoggerFactory;

/**
 * The routine both modes share. A mode only says how to take, release and describe one lock in the
 * database; everything about threads of this JVM is decided here, once:
 *
 * <ul>
 *   <li>one entry per key held or being taken, so two threads of this client never both talk to the
 *       database about the same key (they share sessions, and PostgreSQL would stack their advisory
 *       locks instead of excluding them);
 *   <li>re-entry: the holding thread takes the key again without a round trip, and the key is
 *       released in the database when its last hold is released;
 *   <li>shared holds: threads asking for a shared lock join a shared lock already held here;
 *   <li>lost locks: every hold of a lost lock hears about it once.
 * </ul>
 *
 * <p>No database call is made while {@link #state} is held.
 *
 * @param <D> what the mode keeps about a lock it holds in the database
 */
public abstract class AbstractLockClient<D extends DatabaseLock> implements LockClient {

    private static final Logger log = LoggerFactory.getLogger(AbstractLockClient.class);
    private static final AtomicInteger clientCounter = new AtomicInteger();
    /** SQLState of a statement cancelled by the server, such as by statement_timeout. */
    private static final String QUERY_CANCELED = "57014";

    private final ReentrantLock state = new ReentrantLock();
    /** Signalled whenever a hold ends or a database call of an acquire or release finishes: close() waits on it. */
    private final Condition settled = state.newCondition();
    private final Map<String, Entry> entries = new HashMap<>();
    /** Acquires and releases talking to the database right now; guarded by {@link #state}. */
    private int inFlight;
    private final String owner;
    /** A test hook run after the database granted a lock and before the grant is published here. */
    private volatile Runnable afterGrant;
    /** Runs heartbeats, watchdog checks and delayed releases; one daemon thread per client. */
    protected final ScheduledExecutorService scheduler;
    /** Calls onLost listeners, so that slow user code never delays a watchdog or heartbeat. */
    private final java.util.concurrent.ThreadPoolExecutor events;
    /** The thread {@link #events} runs on now (a listener may close the client from it). */
    private volatile Thread eventThread;
    private volatile boolean closed;
    /** Set when the client must not be used any more, with why; see {@link #refuseFurtherUse}. */
    private volatile String refused;
    /** Hears acquisitions, held sections, heartbeats and losses; see {@link #observeWith}. */
    private volatile LockObserver observer = LockObserver.NONE;
    /** Holds reported lost since the client was built. */
    private final java.util.concurrent.atomic.AtomicLong lostCount = new java.util.concurrent.atomic.AtomicLong();

    protected AbstractLockClient(String owner, String threadNamePrefix) {
        this.owner = owner;
        int number = clientCounter.incrementAndGet();
        this.scheduler = Executors.newSingleThreadScheduledExecutor(r -> {
            Thread t = new Thread(r, threadNamePrefix + "-" + number);
            t.setDaemon(true);
            return t;
        });
        // One thread, tasks in order (as Executors.newSingleThreadExecutor), with its queue in reach:
        // a listener that closes the client runs what is queued behind it first (awaitQueuedEvents).
        this.events = new java.util.concurrent.ThreadPoolExecutor(1, 1, 0, TimeUnit.MILLISECONDS,
                new java.util.concurrent.LinkedBlockingQueue<>(), r -> {
                    Thread t = new Thread(r, threadNamePrefix + "-" + number + "-events");
                    t.setDaemon(true);
                    eventThread = t;
                    return t;
                });
    }

    /**
     * Keys whose last attempt without waiting found them taken, with when (System.nanoTime). A caller
     * that is going to wait anyway skips that attempt for such a key and goes straight to waiting:
     * under contention the attempt nearly always fails, and it costs a round trip (lease mode: a row
     * lock and a durable commit) while the lock is being handed over. The hint lasts five seconds, and
     * the map is emptied when it grows past {@link #CONTENDED_MAX} keys.
     */
    private final ConcurrentHashMap<String, Long> contended = new ConcurrentHashMap<>();
    private static final long CONTENDED_NANOS = TimeUnit.SECONDS.toNanos(5);
    private static final int CONTENDED_MAX = 1024;

    /** Keys this client released while their hold-at-least still keeps them taken, with until when. */
    private final ConcurrentHashMap<String, Instant> keptUntil = new ConcurrentHashMap<>();

    @Override
    public final Optional<Instant> holdAtLeastUntil(String key) {
        Instant until = keptUntil.get(key);
        if (until == null) {
            return Optional.empty();
        }
        if (!until.isAfter(Instant.now())) {
            keptUntil.remove(key, until);
            return Optional.empty();
        }
        return Optional.of(until);
    }

    /** Whether an attempt on {@code key} found it taken within the last five seconds. */
    protected final boolean recentlyContended(String key) {
        Long seen = contended.get(key);
        if (seen == null) {
            return false;
        }
        if (System.nanoTime() - seen < CONTENDED_NANOS) {
            return true;
        }
        contended.remove(key, seen);
        return false;
    }

    /** Records that an attempt on {@code key} found it taken. */
    protected final void noteContended(String key) {
        if (contended.size() >= CONTENDED_MAX) {
            contended.clear();
        }
        contended.put(key, System.nanoTime());
    }

    @Override
    public final Optional<TransactionLock> tryAcquireInTransaction(java.sql.Connection transaction,
            LockRequest request) {
        Objects.requireNonNull(transaction, "transaction must not be null");
        Objects.requireNonNull(request, "request must not be null");
        ensureOpen();
        boolean autoCommit;
        int isolation;
        try {
            autoCommit = transaction.getAutoCommit();
            isolation = transaction.getTransactionIsolation();
        } catch (java.sql.SQLException e) {
            throw new LockDatabaseException("cannot use the transaction's connection for lock '" + request.key()
                    + "': " + e.getMessage(), e);
        }
        if (autoCommit) {
            throw new IllegalStateException("lock '" + request.key() + "' was asked for in a transaction, but the"
                    + " connection is in auto-commit mode: a transaction lock needs an open transaction (auto-commit"
                    + " off, e.g. inside @Transactional on pglock's DataSource)");
        }
        if (isolation > java.sql.Connection.TRANSACTION_READ_COMMITTED) {
            // Under REPEATABLE READ or SERIALIZABLE the transaction reads one snapshot, which may be
            // older than the lock (the next holder would not see the last one's commit), and a lease
            // renewed since the snapshot could not be confirmed (a serialization failure at commit).
            throw new IllegalStateException("lock '" + request.key() + "' was asked for in a transaction with"
                    + " isolation level " + (isolation == java.sql.Connection.TRANSACTION_SERIALIZABLE ? "SERIALIZABLE"
                            : "REPEATABLE READ") + ": a transaction lock needs READ COMMITTED, where each statement"
                    + " sees what the previous holder committed. Take the lock around the transaction instead");
        }
        Optional<TransactionLock> taken = acquireInTransaction(transaction, request);
        if (taken.isPresent() && closed) {
            // Granted after close() began (a wait outlives it): refused as any acquire after close is,
            // so no work starts under a closed client. Its hold here is given back (lease mode keeps
            // one); the lock itself ends with the caller's transaction, which cannot give it back earlier.
            taken.get().close();
            ensureOpen();
        }
        return taken;
    }

    /** Takes the lock for the transaction on {@code transaction} (auto-commit off, checked). */
    protected abstract Optional<TransactionLock> acquireInTransaction(java.sql.Connection transaction,
            LockRequest request);

    /**
     * A transaction lock made of an ordinary detached acquisition that {@code confirm} confirms in the
     * transaction, answering null, or why the lock is gone; a lock found gone is reported lost to its
     * holders before the confirmation throws. For each confirmation that answered null (and so may
     * have left something in place for the transaction's sake), {@code transactionEnded} runs once,
     * when this transaction lock is released or closed: after its transaction, as its holder must.
     * The acquisition itself may outlive the transaction (another hold of this client keeps it).
     */
    protected final Optional<TransactionLock> confirmedInTransaction(LockRequest request,
            java.util.function.Function<D, String> confirm, java.util.function.Consumer<D> transactionEnded) {
        return tryAcquire(request.detached()).map(held -> {
            Hold hold = (Hold) held;
            return new ConfirmedHold(hold, () -> {
                hold.assertHeld();
                D lock = hold.entry.lock;
                String gone = confirm.apply(lock);
                if (gone != null) {
                    lost(l -> l == lock, Reason.TAKEN_OVER, gone, null);
                    hold.assertHeld(); // throws, unless the entry was busy: then say it here
                    throw new LockLostException(lock.key(), Reason.TAKEN_OVER, gone, null);
                }
                return () -> transactionEnded.accept(lock);
            });
        });
    }

    /** A hold that a mode confirms inside a transaction before it commits. */
    private static final class ConfirmedHold implements TransactionLock {
        private final HeldLock hold;
        /** Confirms; answers what to run once the transaction has ended. */
        private final java.util.function.Supplier<Runnable> confirm;
        /** What the confirmations made so far leave to run at the release. */
        private final List<Runnable> whenEnded = new java.util.concurrent.CopyOnWriteArrayList<>();

        ConfirmedHold(HeldLock hold, java.util.function.Supplier<Runnable> confirm) {
            this.hold = hold;
            this.confirm = confirm;
        }

        @Override
        public void confirmBeforeCommit() {
            whenEnded.add(confirm.get());
        }

        /** The transaction has ended (its holder releases after it): undoes what the confirmations left. */
        private void transactionEnded() {
            List<Runnable> ended = new ArrayList<>(whenEnded);
            whenEnded.removeAll(ended);
            ended.forEach(Runnable::run);
        }

        @Override
        public String key() {
            return hold.key();
        }

        @Override
        public long fencingToken() {
            return hold.fencingToken();
        }

        @Override
        public String owner() {
            return hold.owner();
        }

        @Override
        public Instant acquiredAt() {
            return hold.acquiredAt();
        }

        @Override
        public boolean isHeld() {
            return hold.isHeld();
        }

        @Override
        public boolean isShared() {
            return hold.isShared();
        }

        @Override
        public HeldLock onLost(Consumer<LockLostException> listener) {
            hold.onLost(listener);
            return this;
        }

        @Override
        public void assertHeld() {
            hold.assertHeld();
        }

        @Override
        public void updateData(byte[] data) {
            hold.updateData(data);
        }

        @Override
        public boolean release() {
            try {
                return hold.release();
            } finally {
                transactionEnded();
            }
        }

        @Override
        public void close() {
            try {
                hold.close();
            } finally {
                transactionEnded();
            }
        }

        @Override
        public String toString() {
            return "TransactionLock[" + hold + "]";
        }
    }

    /** Takes the lock in the database with one attempt; null when someone else holds it. */
    protected abstract D tryLockInDatabase(LockRequest request);

    /** Takes the lock in the database, waiting until {@code deadlineNanos} (System.nanoTime); null when the wait ran out. */
    protected abstract D lockInDatabase(LockRequest request, long deadlineNanos);

    /**
     * Releases the lock in the database, now or (hold-at-least) later. The returned stage completes
     * when no one in this JVM may take the key again without asking the database, with what the
     * release found. Must not throw: a lock that cannot be released is reported and left to its
     * session or lease to end.
     */
    protected abstract CompletableFuture<Released> releaseInDatabase(D lock);

    /**
     * What a release found: the lock was still this client's until then ({@link #HELD}), or the
     * database had already dropped it, and why. A release that finds the lock gone tells its holder,
     * whose work under it may not have been exclusive.
     */
    protected record Released(Reason reason, String lostReason, Throwable cause) {

        /** The lock was this client's until the release. */
        public static final Released HELD = new Released(null, null, null);

        /** The database no longer had the lock as this client's when it was released. */
        public static Released gone(Reason reason, String detail, Throwable cause) {
            return new Released(Objects.requireNonNull(reason), detail, cause);
        }
    }

    /**
     * Releases everything in the database and frees the connections; called once by {@link #close()}
     * with the locks this client held.
     */
    protected abstract void closeDatabase(List<D> held);

    /**
     * Ends every wait in the database or for a wake-up at once, so that close() never waits for one;
     * called after the client was marked closed, before close() waits for calls in flight.
     */
    protected void stopWaits() {
    }

    /**
     * How long close() waits for database calls already in flight (an acquire whose grant must be
     * released again, a release) before it disposes of the sessions under them: the longest such a
     * call can take, which is the sessions' network timeout.
     */
    protected abstract Duration inFlightBound();

    /**
     * Gives back in the database locks this client stopped trusting (lease mode: a lease whose
     * heartbeats were not confirmed in time), so the key is free at once if the database answers
     * again. Called after they were reported lost, once their holders' listeners have run (on the
     * event thread), or by the mode itself when a release failed. Each release must only ever remove
     * that one acquisition: by then the same client may hold the key again.
     */
    protected void releaseUntrusted(List<D> locks) {
    }

    /**
     * Called at once when locks are reported lost for want of trust, under the client's lock (so
     * before any of their holders' onLost listeners can run; an observer's code may run meanwhile)
     * and before {@link #releaseUntrusted} is called:
     * the mode stops renewing them, and notes the releases to make so that close() makes them even if
     * it comes first (a listener may close the client). Must not block.
     */
    protected void stoppedTrusting(List<D> locks) {
    }

    /**
     * Called under the client's lock when the holds of {@code lock} are marked lost, by whichever
     * thread marks them (a mode's report, a holder's trust check, a caller joining the key); their
     * telling is queued in the same turn. Must not block.
     */
    protected void markedLost(D lock) {
    }

    /** The lease a lock was taken with, where the mode has leases; a re-entry may not ask for another. */
    protected Optional<Duration> leaseOf(D lock) {
        return Optional.empty();
    }

    /**
     * Whether this process may still trust that it holds the lock, by its own clock, without asking
     * the database. Lease mode says no once no heartbeat was confirmed within the lease minus a margin.
     */
    protected boolean isTrusted(D lock) {
        return true;
    }

    /** Why {@link #isTrusted} said no, for the {@link LockLostException}. */
    protected String untrustedReason(D lock) {
        return "it can no longer be trusted";
    }

    /** The category of {@link #untrustedReason}: whether heartbeats failed, or none was confirmed in time. */
    protected Reason untrustedCategory(D lock) {
        return Reason.TRUST_EXPIRED;
    }

    /**
     * Replaces the data stored with a held lock. Only lease mode stores data; the default refuses.
     *
     * @return false when the database no longer shows the lock as ours
     */
    protected boolean updateDataInDatabase(D lock, byte[] data) {
        throw new UnsupportedOperationException("a " + mode().name().toLowerCase()
                + " lock carries no data: lock data is stored in lease mode only");
    }

    /**
     * Runs {@code task} every {@code period} on the client's scheduler. A task that throws is logged
     * and runs again next time: a watchdog or heartbeat must never stop silently.
     */
    protected final void every(Duration period, String what, Runnable task) {
        long nanos = Math.max(1, period.toNanos());
        scheduler.scheduleWithFixedDelay(() -> {
            try {
                task.run();
            } catch (Throwable t) {
                log.warn("{} failed; it runs again in {}", what, period, t);
            }
        }, nanos, nanos, TimeUnit.NANOSECONDS);
    }

    /**
     * Not API, for semaphores: the numbers of permits that holders of semaphore {@code key} use now,
     * read from their markers in the database (see {@link PermitKeys}).
     */
    public abstract java.util.Set<Integer> semaphoreSizes(String key);

    /** Not API, for semaphores: one snapshot per permit of semaphore {@code key} held now, by anyone. */
    public abstract List<dev.pglock.core.LockInfo> permitHolders(String key);

    /** Mode-specific checks of a request against the client's settings. */
    protected void validate(LockRequest request) {
    }

    /**
     * Not API, for semaphores: gives back a hold of this client that was never handed out to its
     * caller (a permit whose marker was lost while it was taken) without its hold-at-least, when no
     * other hold joined it: no work ran under it (see {@link DatabaseLock#markUnused}).
     */
    public final void closeUnused(HeldLock held) {
        if (held instanceof AbstractLockClient<?>.Hold hold && hold.client() == this) {
            state.lock();
            try {
                if (hold.entry.holds.size() == 1 && hold.entry.lock != null) {
                    hold.entry.lock.markUnused();
                }
            } finally {
                state.unlock();
            }
        }
        held.close();
    }

    /**
     * Not API, for semaphores: the mode's checks of a semaphore's request, at the call, before its
     * marker is taken: a refusal names the semaphore's key, not a permit's.
     */
    public final void validatePermitRequest(LockRequest request) {
        ensureOpen();
        validate(request);
    }

    /** The message {@link HeldLock#fencingToken()} throws with when this client has no fencing tokens. */
    protected String noFencingTokenMessage() {
        return "this client has no fencing tokens";
    }

    @Override
    public final String owner() {
        return owner;
    }

    /**
     * For tests only, not API: runs {@code hook} on the acquiring thread after the database granted a
     * lock and before this client publishes the grant, so a test can make something happen in exactly
     * that window (a session dying, close() being called).
     */
    public final void afterGrantHookForTests(Runnable hook) {
        this.afterGrant = hook;
    }

    /** Not API: the builders call this once, before the client is used. */
    public final void observeWith(LockObserver observer) {
        this.observer = Objects.requireNonNull(observer, "observer must not be null");
    }

    /** The observer to tell about heartbeats; never null. */
    protected final LockObserver observer() {
        return observer;
    }

    /** Tells the observer about a heartbeat round or a session check, never letting it throw here. */
    protected final void observeHeartbeat(long startedNanos, boolean succeeded) {
        Duration took = Duration.ofNanos(System.nanoTime() - startedNanos);
        quietly("heartbeat", () -> observer.heartbeat(mode(), took, succeeded));
    }

    private static void quietly(String what, Runnable call) {
        try {
            call.run();
        } catch (RuntimeException | Error e) {
            log.warn("the lock observer's {} callback threw; ignored", what, e);
        }
    }

    @Override
    public final Optional<HeldLock> tryAcquire(LockRequest request) {
        return Optional.ofNullable(observedAcquire(request));
    }

    @Override
    public final HeldLock acquire(LockRequest request) {
        HeldLock held = observedAcquire(request);
        if (held != null) {
            return held;
        }
        if (Thread.currentThread().isInterrupted()) {
            throw new LockNotAcquiredException(request.key(), request.waitAtMost(),
                    "interrupted while waiting for lock '" + request.key() + "'", new InterruptedException());
        }
        throw LockNotAcquiredException.of(this, request, "");
    }

    /** {@link #acquireOrNull}, told to the observer; pglock's own keys (a semaphore's permits and markers) are not. */
    private HeldLock observedAcquire(LockRequest request) {
        Objects.requireNonNull(request, "request must not be null");
        if (observer == LockObserver.NONE || request.key().indexOf(PermitKeys.SEPARATOR) >= 0) {
            return acquireOrNull(request);
        }
        return observed(request, () -> acquireOrNull(request), held -> held);
    }

    /**
     * Not API: runs {@code acquire} as one acquisition of {@code request} told to the observer, whose
     * held section is that of the hold {@code heldBy} finds in the result. Semaphores tell each permit
     * this way, with the semaphore's key, and not each try of each permit.
     */
    public final <T extends HeldLock> T observed(LockRequest request, java.util.function.Supplier<T> acquire,
            java.util.function.Function<T, HeldLock> heldBy) {
        LockObserver current = observer;
        if (current == LockObserver.NONE) {
            return acquire.get();
        }
        LockObserver.Acquisition acquisition;
        try {
            acquisition = current.acquiring(mode(), request);
        } catch (RuntimeException | Error e) {
            log.warn("the lock observer's acquiring callback threw; ignored", e);
            acquisition = LockObserver.Acquisition.NONE;
        }
        T held;
        try {
            held = acquire.get();
        } catch (RuntimeException | Error e) {
            LockObserver.Acquisition failed = acquisition;
            RuntimeException told = e instanceof RuntimeException r ? r : new IllegalStateException(e);
            quietly("failed", () -> failed.failed(told));
            throw e;
        }
        if (held == null) {
            quietly("notAcquired", acquisition::notAcquired);
            return null;
        }
        LockObserver.Holding holding;
        try {
            holding = acquisition.acquired(held); // an Error too: the caller must get the lock it holds
        } catch (RuntimeException | Error e) {
            log.warn("the lock observer's acquired callback threw; ignored", e);
            holding = null;
        }
        ((Hold) heldBy.apply(held)).observe(holding);
        return held;
    }

    private HeldLock acquireOrNull(LockRequest request) {
        Objects.requireNonNull(request, "request must not be null");
        ensureOpen();
        validate(request);
        long deadline = deadline(request.waitAtMost());
        // A grant found lost before it could be returned (its session died, its lease could not be
        // trusted) is never handed out: try again while the wait allows, at most twice more.
        for (int attempt = 1; ; attempt++) {
            Outcome outcome = acquireOnce(request, deadline);
            if (outcome.hold != null || !outcome.lostAtGrant || attempt == 3) {
                return outcome.hold;
            }
            if (!request.waitAtMost().isZero() && deadline - System.nanoTime() <= 0) {
                return null;
            }
        }
    }

    /** What one attempt came to: a hold, nothing, or a grant that was lost before it was returned. */
    private record Outcome(HeldLock hold, boolean lostAtGrant) {
        static final Outcome NONE = new Outcome(null, false);
        static final Outcome LOST_AT_GRANT = new Outcome(null, true);
    }

    private Outcome acquireOnce(LockRequest request, long deadline) {
        Thread me = Thread.currentThread();
        Entry claimed = null;
        Hold joining = null;
        List<Hold> untrusted = List.of();
        D untrustedLock = null;
        state.lock();
        try {
            while (true) {
                ensureOpen();
                Entry entry = entries.get(request.key());
                if (entry != null && !entry.busy && !isTrusted(entry.lock)) {
                    // Held here but no longer trusted, and not yet found so by the checks that run on a
                    // timer: nobody may join or re-enter it. It is lost now, and the key is free here.
                    untrustedLock = entry.lock;
                    untrusted = removeLost(entry, untrustedCategory(entry.lock), untrustedReason(entry.lock), null);
                    stoppedTrusting(List.of(untrustedLock)); // before its holders' listeners can run
                    entry = null;
                }
                if (entry == null) {
                    claimed = new Entry(request);
                    entries.put(request.key(), claimed);
                    inFlight++;
                    break;
                }
                Hold joined = entry.join(me, request);
                if (joined != null && joined.handedOut) {
                    return new Outcome(joined, false); // a re-entry: its outer hold answers for it
                }
                if (joined != null) {
                    joining = joined;
                    break;
                }
                long left = deadline - System.nanoTime();
                if (left <= 0) {
                    return Outcome.NONE;
                }
                try {
                    entry.changed().awaitNanos(left);
                } catch (InterruptedException e) {
                    me.interrupt();
                    return Outcome.NONE;
                }
            }
        } finally {
            state.unlock();
            if (untrustedLock != null) {
                reportUntrusted(untrusted, List.of(untrustedLock));
            }
        }
        return joining != null ? confirmJoin(joining) : lockClaimed(request, claimed, deadline, me);
    }

    /**
     * Hands out a hold that joins a lock another caller holds, once the mode confirmed the lock where
     * its record alone would not do (see {@link #confirmHeld}); a lock found lost is not joined, and
     * the caller tries afresh.
     */
    private Outcome confirmJoin(Hold joined) {
        Released found;
        try {
            found = confirmHeld(joined.entry.lock);
        } catch (RuntimeException | Error e) {
            giveBackJoin(joined, e);
            throw e;
        }
        state.lock();
        try {
            if (joined.lost != null) {
                return Outcome.LOST_AT_GRANT; // the mode told the lock's holds, this one too, which nobody had yet
            }
            if (!closed && (found == null || found.lostReason() == null)) {
                joined.handedOut = true;
                return new Outcome(joined, false);
            }
        } finally {
            state.unlock();
        }
        // Closing, or found lost but not marked so: given back as any hold is (the last one of the lock
        // releases it in the database), never handed out.
        giveBackJoin(joined, null);
        ensureOpen();
        return Outcome.LOST_AT_GRANT;
    }

    /** Releases a join that was never handed out, as any hold is released; a failure is added to {@code to}. */
    private void giveBackJoin(Hold joined, Throwable to) {
        try {
            release(joined, true);
        } catch (RuntimeException | Error e) {
            if (to != null) {
                to.addSuppressed(e);
            } else {
                log.warn("giving back a join of lock '{}' failed", joined.key(), e);
            }
        }
    }

    /**
     * Whether releasing {@code hold} asks {@link #confirmHeld}: it is not the lock's last hold, and no
     * other hold of the same thread remains (its work was not a re-entry inside another's).
     */
    private boolean releaseNeedsConfirming(Hold hold) {
        Entry entry = hold.entry;
        state.lock();
        try {
            Thread thread = hold.thread;
            // Once per hold: a second release of it running at the same time does not ask, and throws
            // (or is quiet) once it sees the first one's flag, so no check runs after the hold has left
            // the books. A join never handed out (given back) is not asked for either: nobody worked
            // under it.
            boolean ask = confirmsHolds() && !hold.released && !hold.confirming && hold.handedOut && hold.lost == null
                    && !entry.busy
                    && entry.holds.size() > 1
                    && (thread == null || entry.holds.stream().noneMatch(h -> h != hold && h.thread == thread));
            hold.confirming |= ask;
            return ask;
        } finally {
            state.unlock();
        }
    }

    /**
     * Whether {@code lock} is still held in the database, asked where this client's own record would
     * otherwise answer for it: when another caller joins a shared lock held here, and when a hold
     * that is not the last one is released (a re-entry by the holding thread is answered for by its
     * outer hold). Null when the record is enough (a lease within its trust cannot have been taken
     * over); else {@link Released#HELD}, or the loss found, which the mode reports to the lock's
     * holds. Default: null.
     */
    protected Released confirmHeld(D lock) {
        return null;
    }

    /** Whether {@link #confirmHeld} asks the database (default false: it answers null). */
    protected boolean confirmsHolds() {
        return false;
    }

    /** We alone in this JVM may now ask the database for the key. */
    private Outcome lockClaimed(LockRequest request, Entry claimed, long deadline, Thread me) {
        D taken = null;
        boolean published = false;
        try {
            taken = takeInDatabase(request, deadline);
            if (taken == null) {
                return Outcome.NONE;
            }
            Runnable hook = afterGrant;
            if (hook != null) {
                hook.run();
            }
            D lock = taken;
            Hold hold = null;
            state.lock();
            try {
                if (!closed && refused == null) {
                    claimed.lock = lock;
                    claimed.busy = false;
                    claimed.signalAll(); // shared joiners waiting for the outcome may join now
                    hold = claimed.add(new Hold(claimed, request.isDetached() ? null : me, request.isShared()));
                    published = true;
                }
            } finally {
                state.unlock();
            }
            if (hold == null) {
                // close() began while we were taking it (close() waits for us, so the sessions are still
                // there to give the lock back on), or the client now refuses further use.
                lock.markUnused(); // never handed out
                releaseQuietly(lock);
                if (closed) {
                    throw closedException();
                }
                throw new IllegalStateException(refused);
            }
            // The lock may have been lost between the grant and the publication above (its session
            // died and the watchdog skipped it as busy; a slow answer used up the lease's trust):
            // checked after publishing, so either that report or this check sees it. Never returned.
            if (hold.lost == null && !isTrusted(lock)) {
                state.lock();
                try {
                    if (claimed.holds.size() == 1) { // never handed out, and nobody joined it meanwhile
                        lock.markUnused();
                    }
                } finally {
                    state.unlock();
                }
                declareUntrusted(List.of(lock));
            }
            state.lock();
            try {
                if (hold.lost != null) {
                    return Outcome.LOST_AT_GRANT; // never handed out: not counted as lost
                }
                hold.handedOut = true;
            } finally {
                state.unlock();
            }
            return new Outcome(hold, false);
        } finally {
            state.lock();
            try {
                if (!published) {
                    entries.remove(request.key(), claimed);
                    claimed.signalAll();
                }
                inFlight--;
                settled.signalAll();
            } finally {
                state.unlock();
            }
        }
    }

    /**
     * Asks the mode for the lock. A wait that ends without the lock for a reason that is not the
     * database's fault is "not acquired", never a database failure: an interrupt while borrowing a
     * connection (the interrupt flag stays set), or a server {@code statement_timeout} shorter than
     * the wait (SQLState 57014; the mode has already cleaned the session it ran on).
     */
    private D takeInDatabase(LockRequest request, long deadline) {
        try {
            return request.waitAtMost().isZero() ? tryLockInDatabase(request) : lockInDatabase(request, deadline);
        } catch (LockDatabaseException e) {
            if (e.getCause() instanceof InterruptedException) {
                Thread.currentThread().interrupt();
                return null;
            }
            if (QUERY_CANCELED.equals(e.sqlState()) && !closed) {
                log.debug("the wait for lock '{}' was cancelled by the server (statement_timeout?): not acquired",
                        request.key());
                return null;
            }
            throw e;
        }
    }

    /**
     * Not API: {@code held}, a hold of this client, is no longer its thread's from now on: no thread
     * re-enters it, as if it had been taken detached. For a hold the caller hands over to work that
     * goes on elsewhere (a future that keeps the lock until it completes), so that the caller's
     * thread, or the next task on a pooled thread, cannot join work still running. Anything else is
     * left as it is.
     */
    public final void detach(HeldLock held) {
        if (held instanceof AbstractLockClient<?>.Hold hold) {
            state.lock();
            try {
                hold.thread = null;
            } finally {
                state.unlock();
            }
        }
    }

    /** Reports the locks lost because this process can no longer trust them, then gives them back. */
    protected final void declareUntrusted(List<D> locks) {
        List<Hold> holds;
        state.lock();
        try {
            holds = markLost(locks::contains, untrustedCategory(locks.get(0)), untrustedReason(locks.get(0)), null);
            stoppedTrusting(locks); // in the same turn: their tellings, queued above, wait for the lock
        } finally {
            state.unlock();
        }
        reportUntrusted(holds, locks);
    }

    /**
     * Untrusted {@code locks}, whose {@code holds} were just marked lost and which the mode stopped
     * renewing (stoppedTrusting, under the same turn of the lock): their holders are told, and only
     * then are they given back (see {@link #reportLost}).
     */
    private void reportUntrusted(List<Hold> holds, List<D> locks) {
        reportLost(holds, () -> releaseUntrusted(locks));
    }

    private void releaseQuietly(D lock) {
        try {
            releaseInDatabase(lock);
        } catch (RuntimeException e) {
            log.warn("releasing lock '{}' failed; it ends with its session or lease", lock.key(), e);
        }
    }

    private void forget(String key, Entry entry) {
        state.lock();
        try {
            entries.remove(key, entry);
            entry.signalAll();
        } finally {
            state.unlock();
        }
    }

    private boolean release(Hold hold, boolean quietlyIfReleased) {
        Entry entry = hold.entry;
        // A hold that is not the last, whose work was not a re-entry inside another hold's: the lock is
        // confirmed for it, as the last hold's release confirms it in the database. Asked while the hold
        // is still on the books, so the lock's last release (which may end or reuse its session) comes
        // after this check, never during it; two holds released at once both ask, and the later one to
        // leave the books is the last.
        Released confirmed = null;
        boolean confirming = releaseNeedsConfirming(hold); // this call set the hold's flag
        if (confirming) {
            try {
                confirmed = confirmHeld(entry.lock);
            } catch (RuntimeException | Error e) { // the release goes on: it must not leave the hold on the books
                log.warn("confirming lock '{}' at the release of one of its holds failed; released unconfirmed",
                        entry.lock.key(), e);
            }
        }
        boolean outerStillHeld = false;
        boolean untrusted = false;
        boolean lostMeanwhile = false;
        boolean foundByCheck;
        state.lock();
        try {
            if (confirming) {
                hold.confirming = false;
            } else if (hold.confirming) {
                // Another release of this hold is confirming the lock: that one releases it, this one is
                // the second release (quiet for close()).
                if (quietlyIfReleased) {
                    return false;
                }
                throw new IllegalStateException("lock '" + entry.lock.key() + "' is being released by this"
                        + " HeldLock on another thread; each acquisition is released once");
            }
            // A loss marked while this release confirmed the lock was left for it to tell (see
            // removeLost), and so is one its own check found before the mode marked it (another thread
            // ending the session first): the listeners run here, before release() returns, as the last
            // release's do.
            foundByCheck = confirming && confirmed != null && confirmed.lostReason() != null;
            if (hold.lost != null) {
                if (!confirming) {
                    return false;
                }
                lostMeanwhile = true;
            } else if (hold.released) {
                if (quietlyIfReleased) {
                    return false;
                }
                throw new IllegalStateException("lock '" + entry.lock.key() + "' was already released by this"
                        + " HeldLock; each acquisition is released once");
            }
            // A hold that is not the last one answers for the lock's trust here, as the database release
            // of the last one does: its work ran on the lock too.
            untrusted = !lostMeanwhile && !foundByCheck && entry.holds.size() > 1 && !entry.busy
                    && !isTrusted(entry.lock);
            if (!untrusted && !lostMeanwhile) {
                hold.released = true;
                entry.holds.remove(hold);
                settled.signalAll();
                outerStillHeld = !entry.holds.isEmpty();
                if (!outerStillHeld) {
                    entry.busy = true;
                    inFlight++;
                }
            }
        } finally {
            state.unlock();
        }
        if (lostMeanwhile) {
            hold.fireLost();
            return false;
        }
        if (untrusted) {
            declareUntrusted(List.of(entry.lock)); // every hold of it is lost, this one too, and told
            return false;
        }
        if (outerStillHeld) {
            if (foundByCheck) {
                // Found lost by this release's check, not yet marked so (the mode marks the holds of a lock
                // it finds lost, and may be doing so on another thread): told here.
                hold.lost = new Loss(confirmed.reason(), confirmed.lostReason(), confirmed.cause());
                log.warn("lock '{}' was found lost when a hold of it was released ({}): the work done under it may"
                        + " not have been exclusive", entry.lock.key(), confirmed.lostReason());
                hold.fireLost();
                return false;
            }
            hold.endHolding(null); // observer code, never under the client's lock
            return true;
        }
        D lock = entry.lock;
        Duration holdAtLeast = entry.request.holdAtLeast();
        if (!holdAtLeast.isZero() && !lock.isUnused()) { // a grant never handed out goes back without it
            Instant until = Durations.plusAtMost(lock.acquiredAt(), holdAtLeast); // "ever" saturates
            Instant now = Instant.now();
            if (until.isAfter(now)) {
                if (keptUntil.size() >= CONTENDED_MAX) {
                    keptUntil.values().removeIf(kept -> !kept.isAfter(now));
                }
                keptUntil.put(lock.key(), until);
            }
        }
        CompletableFuture<Released> done;
        try {
            done = releaseInDatabase(lock);
        } catch (RuntimeException e) {
            log.warn("releasing lock '{}' failed; it ends with its session or lease", lock.key(), e);
            done = CompletableFuture.completedFuture(Released.HELD);
        } finally {
            state.lock();
            try {
                inFlight--;
                settled.signalAll();
            } finally {
                state.unlock();
            }
        }
        done.whenComplete((ignored, error) -> forget(lock.key(), entry));
        Released found = done.getNow(null); // a hold-at-least release completes later: nothing found now
        if (found != null && found.lostReason() != null) {
            // Lost while its holder worked, and no heartbeat had noticed yet: the holder hears it now,
            // on this thread, as it would have from the heartbeat a moment later.
            hold.lost = new Loss(found.reason(), found.lostReason(), found.cause());
            log.warn("lock '{}' was found lost when it was released ({}): the work done under it may not have"
                    + " been exclusive", lock.key(), found.lostReason());
            hold.fireLost();
            return false;
        }
        hold.endHolding(null);
        return true;
    }

    /**
     * Reports the locks that match as lost: their holds stop being held and hear why, and the keys
     * are free again in this JVM. Called by a mode when a session dies or a lease is not renewed.
     * An entry being taken or released is left to the thread doing that: it settles it.
     */
    protected final void lost(Predicate<D> which, Reason category, String reason, Throwable cause) {
        reportLost(markLost(which, category, reason, cause), null);
    }

    /**
     * {@link #lost}, then {@code then} once their holders were told (on the event thread, after their
     * listeners returned), or once as long as close() waits for listeners has passed (on the
     * scheduler's thread), whichever comes first: for a mode that gives the locks back itself, so that
     * none is freed in the database before its holders heard, nor kept for ever by a listener that
     * does not return. {@code then} runs once. When no hold is to be told, it is not run and this
     * answers false: the caller gives the locks back at once.
     */
    protected final boolean lost(Predicate<D> which, Reason category, String reason, Throwable cause, Runnable then) {
        Objects.requireNonNull(then, "then");
        List<Hold> holds = markLost(which, category, reason, cause);
        if (holds.isEmpty()) {
            return false;
        }
        reportLost(holds, null);
        afterQueuedTells(then);
        return true;
    }

    /**
     * Runs {@code then} once every loss told so far has been told (on the event thread, after the
     * listeners queued before it returned), or once as long as close() waits for listeners has
     * passed (on the scheduler's thread), whichever comes first; once. Losses are queued for telling
     * when they are marked, under the client's lock (see removeLost), so a loss another thread
     * marked before this call is told before {@code then} runs.
     */
    protected final void afterQueuedTells(Runnable then) {
        Objects.requireNonNull(then, "then");
        java.util.concurrent.atomic.AtomicBoolean ran = new java.util.concurrent.atomic.AtomicBoolean();
        java.util.concurrent.atomic.AtomicReference<java.util.concurrent.Future<?>> bound =
                new java.util.concurrent.atomic.AtomicReference<>();
        Runnable once = () -> {
            if (ran.compareAndSet(false, true)) {
                java.util.concurrent.Future<?> timer = bound.get();
                if (timer != null) {
                    timer.cancel(false); // nothing left for it to do
                }
                then.run();
            }
        };
        try {
            bound.set(scheduler.schedule(once, listenerWaitBound().toNanos(), TimeUnit.NANOSECONDS));
        } catch (RejectedExecutionException closing) {
            // the client is closing: the mode's closeDatabase() gives them back
        }
        reportLost(List.of(), once);
    }

    /** The part of {@link #lost} under {@link #state}: the holds to tell. */
    private List<Hold> markLost(Predicate<D> which, Reason category, String reason, Throwable cause) {
        List<Hold> lostHolds = new ArrayList<>();
        state.lock();
        try {
            for (Entry entry : List.copyOf(entries.values())) {
                if (entry.lock != null && !entry.busy && which.test(entry.lock)) {
                    lostHolds.addAll(removeLost(entry, category, reason, cause));
                }
            }
        } finally {
            state.unlock();
        }
        return lostHolds;
    }

    /** Under {@link #state}: the entry's key is free here again, and each of its holds is lost. */
    private List<Hold> removeLost(Entry entry, Reason category, String reason, Throwable cause) {
        markedLost(entry.lock);
        entries.remove(entry.lock.key(), entry);
        entry.signalAll();
        settled.signalAll();
        List<Hold> toTell = new ArrayList<>(entry.holds.size());
        for (Hold hold : entry.holds) {
            hold.lost = new Loss(category, reason, cause);
            if (!hold.confirming) {
                toTell.add(hold); // one whose release is confirming the lock is told by that release
                // Queued here, under the lock, so that what runs after the tellings queued so far
                // (afterQueuedTells) never runs before a loss another thread has marked is told.
                try {
                    events.execute(hold::fireLost);
                    hold.tellQueued = true;
                } catch (RejectedExecutionException closing) {
                    // told on the caller's thread by reportLost, outside the lock
                }
            }
        }
        if (!entry.holds.isEmpty()) {
            log.warn("lock '{}' was lost: {}", entry.lock.key(), reason);
        }
        return toTell;
    }

    /**
     * Tells each hold's listeners, on the event thread (queued already by removeLost; on this thread
     * when the client is closing), then runs {@code then}, when given, after them on the same thread:
     * a lock is given back in the database only once its holders here have heard they lost it (the
     * event thread runs its tasks in order), so no other client gets the key before they did.
     */
    private void reportLost(List<Hold> holds, Runnable then) {
        for (Hold hold : holds) {
            if (!hold.tellQueued) {
                hold.fireLost(); // the client is closing: its event thread takes no more
            }
        }
        if (then != null) {
            try {
                events.execute(then);
            } catch (RejectedExecutionException closing) {
                then.run();
            }
        }
    }

    /** The locks this client holds in the database now (not those being taken or released). */
    protected final List<D> heldLocks() {
        state.lock();
        try {
            List<D> held = new ArrayList<>();
            for (Entry entry : entries.values()) {
                if (entry.lock != null && !entry.busy) {
                    held.add(entry.lock);
                }
            }
            return held;
        } finally {
            state.unlock();
        }
    }

    @Override
    public final LockClientStatus status() {
        return status(false);
    }

    @Override
    public final LockClientStatus probe() {
        return status(true);
    }

    private LockClientStatus status(boolean probe) {
        int held = 0;
        state.lock();
        try {
            for (Entry entry : entries.values()) {
                if (entry.lock != null && !entry.busy && !PermitKeys.isMarker(entry.request.key())) {
                    held++; // a semaphore's marker is bookkeeping beside its permits, not a lock of its own
                }
            }
        } finally {
            state.unlock();
        }
        long last = lastCheckNanos();
        Optional<Duration> since = last == 0 ? Optional.empty() : Optional.of(Duration.ofNanos(System.nanoTime() - last));
        String problem;
        if (closed) {
            problem = "the lock client is closed";
        } else if (refused != null) {
            problem = refused;
        } else {
            problem = problem();
            if (problem == null && probe) {
                problem = probeProblem();
            }
        }
        return new LockClientStatus(mode(), held, lockSessionsOpen(), waitingConnections(), lostCount.get(), since,
                Optional.ofNullable(problem));
    }

    /** Lock sessions open now. */
    protected abstract int lockSessionsOpen();

    /** Connections of waiting callers (advisory) or the LISTEN connection (lease) in use now. */
    protected abstract int waitingConnections();

    /** When the heartbeat or session check last succeeded (System.nanoTime), 0 if never. */
    protected abstract long lastCheckNanos();

    /** Why the client cannot do its work now, as far as it knows without asking the database; or null. */
    protected abstract String problem();

    /**
     * Why the database does not answer: one trivial statement on an idle lock session (never one a
     * caller is using or waits for); null when it answered or no session was idle.
     */
    protected abstract String probeProblem();

    /**
     * The locks this client has in the database now, including those being released (a release kept
     * back by hold-at-least); not those still being taken. For describing its own locks by key.
     */
    protected final List<D> locksInDatabase() {
        state.lock();
        try {
            List<D> locks = new ArrayList<>();
            for (Entry entry : entries.values()) {
                if (entry.lock != null) {
                    locks.add(entry.lock);
                }
            }
            return locks;
        } finally {
            state.unlock();
        }
    }

    @Override
    public final boolean isClosed() {
        return closed;
    }

    protected final void ensureOpen() {
        if (closed) {
            throw closedException();
        }
        String refusal = refused;
        if (refusal != null) {
            throw new IllegalStateException(refusal);
        }
    }

    /**
     * From now on every call but close() throws an IllegalStateException with {@code reason}: the
     * mode found that the database cannot keep its locks (advisory locks behind transaction pooling).
     */
    protected final void refuseFurtherUse(String reason) {
        if (refused == null) {
            refused = reason;
            log.error("this {} lock client refuses further use: {}", mode().name().toLowerCase(), reason);
        }
    }

    /** Whether {@link #refuseFurtherUse} was called. */
    protected final boolean refused() {
        return refused != null;
    }

    private IllegalStateException closedException() {
        return new IllegalStateException("this " + mode().name().toLowerCase() + " LockClient (owner " + owner
                + ") is closed");
    }

    /**
     * Closes with no grace period: every lock still held is reported lost to its holder, then released.
     * See {@link #close(Duration)}.
     */
    @Override
    public final void close() {
        close(Duration.ZERO);
    }

    /**
     * Stops granting at once (acquires, waiting ones included, end as closed), waits up to {@code
     * timeout} for every lock still held to be released by its holder, then reports the ones still
     * held lost (their onLost listeners run on this thread, and assertHeld throws) before it releases
     * them and frees the connections. A lock is therefore never freed under a holder that has not
     * been told. Database calls already in flight finish first (at most the sessions' network
     * timeout), so an acquire racing close() gives its grant back instead of leaving it held.
     */
    @Override
    public final void close(Duration timeout) {
        Objects.requireNonNull(timeout, "timeout must not be null");
        state.lock();
        try {
            if (closed) {
                awaitFirstClose();
                return;
            }
            closed = true;
            closingThread = Thread.currentThread();
            for (Entry entry : entries.values()) {
                entry.signalAll();
            }
        } finally {
            state.unlock();
        }
        try {
            closeMarked(timeout);
        } finally {
            closeDone.countDown(); // whatever happened: a later close() must not wait for ever
        }
    }

    /** close() once it is marked closed. */
    private void closeMarked(Duration timeout) {
        // A cancel opens a socket of its own: on an interrupted virtual thread that would fail.
        PlatformThreads.run(() -> {
            stopWaits();
            return null;
        });
        List<Hold> released = new ArrayList<>();
        List<D> held = new ArrayList<>();
        long graceEnd = deadline(timeout);
        // Listeners already queued run during the grace period too: their wait ends with it, or
        // listenerWaitBound() after close() began, whichever is later.
        long listenersEnd = Math.max(graceEnd, deadline(listenerWaitBound()));
        // A call in flight may be a claim that runs for up to the bound, then the give-back of its
        // grant, for up to the bound again.
        long inFlightEnd = Math.max(graceEnd, deadline(inFlightBound().multipliedBy(2)));
        boolean interrupted = false;
        state.lock();
        try {
            try {
                // Holders finish their work and release (their releases run normally, sessions still open).
                while (holdCount() > 0 && graceEnd - System.nanoTime() > 0) {
                    settled.awaitNanos(graceEnd - System.nanoTime());
                }
            } catch (InterruptedException e) {
                interrupted = true; // stop waiting for the holders, but still tell, release and free (restored after)
            }
            // Calls in flight settle: a grant made while closing is given back by its own thread, on
            // the sessions, so this is not cut short by an interrupt (the sessions would be gone and
            // the grant stay held).
            while (inFlight > 0 && inFlightEnd - System.nanoTime() > 0) {
                try {
                    settled.awaitNanos(inFlightEnd - System.nanoTime());
                } catch (InterruptedException e) {
                    interrupted = true;
                }
            }
            for (Entry entry : entries.values()) {
                if (entry.lock != null) {
                    held.add(entry.lock);
                    if (!entry.holds.isEmpty() && !PermitKeys.isMarker(entry.lock.key())) {
                        // One line per lock its work did not release in time: what a shutdown cut short.
                        log.warn("lock '{}' was still held when the {} lock client closed (after"
                                + " waiting {} for its release); its holder is told it lost the lock, then it is released",
                                entry.lock.key(), mode().name().toLowerCase(), timeout);
                    }
                }
                for (Hold hold : entry.holds) {
                    hold.lost = new Loss(Reason.CLIENT_CLOSED, "the lock client was closed while the lock was still held", null);
                    released.add(hold);
                }
            }
            entries.clear();
        } finally {
            state.unlock();
        }
        // An interrupt (of the wait above, or from before close()) must not cost the releases: with the
        // flag set, every interruptible wait below (for a session's connection, for a pool) fails at
        // once, and a session that cannot be unlocked is aborted, so its locks outlive close() until
        // the server notices. Cleared here, restored when close() returns.
        interrupted |= Thread.interrupted();
        try {
            released.forEach(Hold::fireLost); // told before the lock is freed
        } finally {
            interrupted |= Thread.interrupted(); // a listener's interrupt of this thread, too
            try {
                interrupted |= awaitQueuedEvents(listenersEnd);
                closeDatabase(held);
            } finally {
                scheduler.shutdownNow();
                events.shutdown(); // listeners already queued still run
                if (interrupted || Thread.interrupted()) {
                    Thread.currentThread().interrupt();
                }
            }
        }
    }

    /** Counted down when the first close() has freed everything. */
    private final java.util.concurrent.CountDownLatch closeDone = new java.util.concurrent.CountDownLatch(1);
    /** The thread running the first close(). */
    private volatile Thread closingThread;

    /**
     * Set while pglock runs an application's callback on a thread (an onLost listener, a leader's
     * onElected and onRevoked): a close() made there returns at once, since the first close() may be
     * waiting for that very callback.
     */
    static final ThreadLocal<Boolean> IN_CALLBACK = new ThreadLocal<>();

    /**
     * A later close() returns once the first has freed everything, so that whoever calls it can rely
     * on nothing being held any more; at once when the first may be waiting for its caller: its own
     * thread, one running a callback of pglock's (see IN_CALLBACK: the listeners it runs, here or on
     * the event thread), or one holding a lock of this client, which the first close() waits for
     * during its grace period. Under the state lock, which it lets go of
     * while it waits; an interrupt ends the wait, with the flag set again.
     */
    private void awaitFirstClose() {
        Thread me = Thread.currentThread();
        if (me == closingThread || Boolean.TRUE.equals(IN_CALLBACK.get())) {
            return;
        }
        for (Entry entry : entries.values()) {
            for (Hold hold : entry.holds) {
                if (hold.thread == me) {
                    return;
                }
            }
        }
        state.unlock();
        try {
            closeDone.await();
        } catch (InterruptedException e) {
            Thread.currentThread().interrupt();
        } finally {
            state.lock();
        }
    }

    /**
     * Waits, until {@code deadline} at most, for what the event thread was given before close(): the
     * listeners of locks lost earlier and the releases queued behind them (see {@link #reportLost}),
     * so that those releases are made after their holders heard, while the database side is still
     * open. When close() runs in a listener, on the event thread itself, what is queued behind that
     * listener is run first, in order, on a thread of its own (a listener it runs may wait for the
     * closing one), and waited for the same way. Returns whether it was interrupted (the flag is left
     * clear for the releases that follow).
     */
    private boolean awaitQueuedEvents(long deadline) {
        Thread running = eventThread;
        if (running == null) {
            return false; // nothing was ever queued
        }
        java.util.concurrent.Future<?> done;
        if (Thread.currentThread() == running) {
            List<Runnable> queued = new ArrayList<>();
            events.getQueue().drainTo(queued);
            if (queued.isEmpty()) {
                return false;
            }
            java.util.concurrent.FutureTask<Void> behind = new java.util.concurrent.FutureTask<>(
                    () -> queued.forEach(this::runQuietly), null);
            Thread t = new Thread(behind, running.getName() + "-closing");
            t.setDaemon(true);
            t.start();
            done = behind;
        } else {
            try {
                done = events.submit(() -> { });
            } catch (RejectedExecutionException e) {
                return false;
            }
        }
        try {
            done.get(Math.max(0, deadline - System.nanoTime()), TimeUnit.NANOSECONDS);
        } catch (InterruptedException e) {
            return true;
        } catch (java.util.concurrent.TimeoutException e) {
            log.warn("an onLost listener was still running when the client closed; closing without waiting for it");
        } catch (java.util.concurrent.ExecutionException e) {
            // runQuietly lets nothing through
        }
        return false;
    }

    /**
     * How long close() waits for listeners already queued: the in-flight bound, and at least as long
     * as a leader candidate's listener waits for its onRevoked ({@link LeaderCandidate#REVOKED_WAIT}).
     */
    private Duration listenerWaitBound() {
        Duration inFlight = inFlightBound();
        return inFlight.compareTo(LeaderCandidate.REVOKED_WAIT) > 0 ? inFlight : LeaderCandidate.REVOKED_WAIT;
    }

    private void runQuietly(Runnable task) {
        try {
            task.run();
        } catch (RuntimeException | Error e) {
            log.warn("a task of the event thread failed while the client closed", e);
        }
    }

    /** Under {@link #state}: how many acquisitions are held here now. */
    private int holdCount() {
        int count = 0;
        for (Entry entry : entries.values()) {
            count += entry.holds.size();
        }
        return count;
    }

    private static long deadline(Duration wait) {
        return System.nanoTime() + Durations.nanosAtMost(wait);
    }

    // Per-hold atomics as fields, not objects: a lock and its release allocate as little as they can.
    private static final java.lang.invoke.VarHandle HOLDING;
    private static final java.lang.invoke.VarHandle LOSS_OBSERVED;

    static {
        try {
            java.lang.invoke.MethodHandles.Lookup lookup = java.lang.invoke.MethodHandles.lookup();
            HOLDING = lookup.findVarHandle(AbstractLockClient.Hold.class, "holding", LockObserver.Holding.class);
            LOSS_OBSERVED = lookup.findVarHandle(AbstractLockClient.Hold.class, "lossObserved", boolean.class);
        } catch (ReflectiveOperationException e) {
            throw new ExceptionInInitializerError(e);
        }
    }

    /** Why a hold ended without its holder releasing it. */
    private record Loss(Reason category, String reason, Throwable cause) {
    }

    /** One key held, or being taken or released, by this client. Guarded by {@link #state}. */
    private final class Entry {
        /** Waited on by threads of this client that want the key; created by the first such thread. */
        private Condition changed;
        final List<Hold> holds = new ArrayList<>();
        /** The database lock; null while it is being taken. */
        D lock;
        /** True while one thread talks to the database about this key: nobody else may. */
        boolean busy = true;
        /** The request the lock was taken with in the database; joins and re-entries must fit it. */
        final LockRequest request;

        Entry(LockRequest request) {
            this.request = request;
        }

        /** Under {@link #state}: the condition to wait on for a change of this entry. */
        Condition changed() {
            if (changed == null) {
                changed = state.newCondition();
            }
            return changed;
        }

        /** Under {@link #state}: wakes the threads waiting for a change of this entry, if any. */
        void signalAll() {
            if (changed != null) {
                changed.signalAll();
            }
        }

        /** A hold for {@code thread} on the lock already held here, or null when it must wait. */
        Hold join(Thread caller, LockRequest request) {
            if (busy) {
                return null;
            }
            // A detached request, or a detached hold, is never a re-entry: only a thread that took the
            // key synchronously (and is still inside its work) may take it again at once.
            Thread thread = request.isDetached() ? null : caller;
            boolean heldByThread = thread != null && holds.stream().anyMatch(h -> h.thread == thread);
            if (lock.isShared()) {
                if (!request.isShared()) {
                    if (heldByThread) {
                        throw new IllegalStateException("thread '" + caller.getName() + "' holds lock '"
                                + request.key() + "' shared and asks for it exclusively: an upgrade would wait for"
                                + " itself. Release the shared lock first");
                    }
                    return null;
                }
                requireFits(request, heldByThread);
                return join(new Hold(this, thread, true), heldByThread);
            }
            if (!heldByThread) {
                return null;
            }
            requireFits(request, true);
            return join(new Hold(this, thread, request.isShared()), true);
        }

        /**
         * A re-entry or a join shares the database acquisition, so it cannot change the lease, the
         * hold-at-least or the data that acquisition was taken with; asking for other values is refused
         * rather than silently dropped. Asking for nothing (the defaults) always fits.
         */
        private void requireFits(LockRequest request, boolean reentry) {
            String how = reentry ? "a re-entrant acquisition by the holding thread" : "a shared acquisition joining"
                    + " the shared lock this client holds";
            Optional<Duration> lease = leaseOf(lock);
            // Leases count whole milliseconds (the mode reports its lease so): the same request always fits.
            if (request.lease().isPresent() && lease.isPresent()
                    && request.lease().get().toMillis() != lease.get().toMillis()) {
                throw new IllegalStateException("lock '" + request.key() + "' is held here with leaseFor " + lease.get()
                        + "; " + how + " asks for leaseFor " + request.lease().get() + " and cannot change it."
                        + " Ask for the same lease, or for none");
            }
            if (!request.holdAtLeast().isZero() && !request.holdAtLeast().equals(this.request.holdAtLeast())) {
                throw new IllegalStateException("lock '" + request.key() + "' is held here with holdAtLeast "
                        + this.request.holdAtLeast() + "; " + how + " asks for holdAtLeast " + request.holdAtLeast()
                        + " and cannot change it: only the outermost release frees the key. Ask for the same, or"
                        + " for none");
            }
            if (request.data() != null && !java.util.Arrays.equals(request.data(), this.request.data())) {
                throw new IllegalStateException("lock '" + request.key() + "' is held here; " + how + " carries"
                        + " other data, which it cannot store. Use HeldLock.updateData on the held lock instead");
            }
        }

        Hold add(Hold hold) {
            holds.add(hold);
            return hold;
        }

        /**
         * Under {@link #state}: a joining or re-entrant hold. A re-entry is handed to its caller at
         * once; a join by another caller once the lock is confirmed (see confirmJoin).
         */
        Hold join(Hold hold, boolean reentry) {
            hold.handedOut = reentry;
            return add(hold);
        }
    }

    /** One acquisition, as the caller sees it. */
    private final class Hold implements HeldLock {
        final Entry entry;
        /**
         * The thread that may re-enter it; null for a detached acquisition, or once handed over (see
         * {@link #detach}). Any thread may release it. Guarded by {@link #state}.
         */
        Thread thread;
        final boolean shared;
        /** Guarded by {@link #state}; null until the first listener. */
        private List<Consumer<LockLostException>> listeners;
        /** Written under {@link #state}; volatile so that {@link #observe} may read it without. */
        volatile boolean released;
        /** Set under {@link #state} by removeLost once its loss is queued for telling on the event thread. */
        boolean tellQueued;
        /** Set once, under {@link #state}; read without it as a hint. */
        volatile Loss lost;
        /** What hears the end of this held section; null when nothing does, or once it was told. See HOLDING. */
        private volatile LockObserver.Holding holding;
        /**
         * Whether a caller was given this hold; set under {@link #state} while it is not lost. A grant
         * lost before it was handed out (and taken again) is not a lost lock anyone had.
         */
        volatile boolean handedOut;
        /** Guarded by {@link #state}: a release of this hold asks the mode to confirm the lock (see release()). */
        boolean confirming;
        /** Set by the one call of {@link #fireLost} that reports the loss to the observer. See LOSS_OBSERVED. */
        private volatile boolean lossObserved;

        Hold(Entry entry, Thread thread, boolean shared) {
            this.entry = entry;
            this.thread = thread;
            this.shared = shared;
        }

        /** The client this hold belongs to. */
        AbstractLockClient<D> client() {
            return AbstractLockClient.this;
        }

        private D lock() {
            return entry.lock;
        }

        @Override
        public String key() {
            return lock().key();
        }

        @Override
        public long fencingToken() {
            Long token = lock().fencingToken();
            if (token == null) {
                throw new IllegalStateException(noFencingTokenMessage());
            }
            return token;
        }

        @Override
        public String owner() {
            return owner;
        }

        @Override
        public Instant acquiredAt() {
            return lock().acquiredAt();
        }

        @Override
        public boolean isHeld() {
            checkTrust();
            state.lock();
            try {
                return !released && lost == null;
            } finally {
                state.unlock();
            }
        }

        /** A lock we can no longer trust is lost now, not at the next watchdog tick. */
        private void checkTrust() {
            D lock = entry.lock;
            if (lost == null && !isTrusted(lock)) {
                declareUntrusted(List.of(lock));
            }
        }

        @Override
        public boolean isShared() {
            return shared;
        }

        @Override
        public HeldLock onLost(Consumer<LockLostException> listener) {
            Objects.requireNonNull(listener, "listener must not be null");
            Loss loss;
            state.lock();
            try {
                loss = lost;
                if (loss == null) {
                    if (listeners == null) {
                        listeners = new ArrayList<>(2);
                    }
                    listeners.add(listener);
                    return this;
                }
            } finally {
                state.unlock();
            }
            listener.accept(exception(loss));
            return this;
        }

        @Override
        public void assertHeld() {
            checkTrust();
            Loss loss = lost;
            if (loss != null) {
                throw exception(loss);
            }
            state.lock();
            try {
                if (released) {
                    throw new IllegalStateException("lock '" + key() + "' was released by its holder");
                }
            } finally {
                state.unlock();
            }
        }

        @Override
        public boolean release() {
            return AbstractLockClient.this.release(this, false);
        }

        @Override
        public void close() {
            AbstractLockClient.this.release(this, true);
        }

        @Override
        public void updateData(byte[] data) {
            assertHeld();
            if (!updateDataInDatabase(entry.lock, data == null ? null : data.clone())) {
                lost(candidate -> candidate == entry.lock, Reason.TAKEN_OVER, "the database no longer shows it as ours", null);
                assertHeld();
            }
        }

        /** Starts telling {@code observer} about this held section; a loss that came first ends it at once. */
        void observe(LockObserver.Holding observer) {
            if (observer == null) {
                return;
            }
            holding = observer;
            Loss loss = lost;
            if (loss != null) {
                endHolding(exception(loss));
            } else if (released) {
                endHolding(null); // released by another thread before the observer was attached
            }
        }

        /** Tells the held section's observer, once, that it ended: released ({@code lost} null) or lost. */
        void endHolding(LockLostException lost) {
            LockObserver.Holding h = (LockObserver.Holding) HOLDING.getAndSet(this, null);
            if (h != null) {
                quietly("ended", () -> h.ended(lost));
            }
        }

        void fireLost() {
            Boolean outer = IN_CALLBACK.get();
            IN_CALLBACK.set(Boolean.TRUE); // the observer's and the listeners' code
            try {
                tellLost();
            } finally {
                IN_CALLBACK.set(outer);
            }
        }

        private void tellLost() {
            LockLostException reported = exception(lost);
            if (handedOut && !PermitKeys.isMarker(entry.request.key())
                    && LOSS_OBSERVED.compareAndSet(this, false, true)) {
                lostCount.incrementAndGet();
                String semaphore = PermitKeys.semaphoreOf(key()); // a permit is told as its semaphore's key
                String told = semaphore != null ? semaphore : key();
                quietly("lost", () -> observer.lost(mode(), told, reported.reason()));
            }
            endHolding(reported);
            List<Consumer<LockLostException>> toCall;
            state.lock();
            try {
                toCall = listeners == null ? List.of() : List.copyOf(listeners);
                listeners = null;
            } finally {
                state.unlock();
            }
            LockLostException exception = exception(lost);
            for (var listener : toCall) {
                try {
                    listener.accept(exception);
                } catch (Throwable e) { // an Error too: the other holders are told all the same
                    log.warn("an onLost listener of lock '{}' threw", key(), e);
                }
            }
        }

        private LockLostException exception(Loss loss) {
            return new LockLostException(key(), loss.category(), loss.reason(), loss.cause());
        }

        @Override
        public String toString() {
            return "HeldLock[key=" + key() + ", owner=" + owner + ", shared=" + shared + ", held=" + isHeld() + "]";
        }
    }
}
