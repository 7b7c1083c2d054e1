package dev.pglock.core.internal;

import dev.pglock.core.HeldLock;
import dev.pglock.core.LockClient;
import dev.pglock.core.LockLostException;
import dev.pglock.core.LockNotAcquiredException;
import dev.pglock.core.LockRequest;
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

    private final ReentrantLock state = new ReentrantLock();
    private final Map<String, Entry> entries = new HashMap<>();
    private final String owner;
    /** Runs heartbeats, watchdog checks and delayed releases; one daemon thread per client. */
    protected final ScheduledExecutorService scheduler;
    /** Calls onLost listeners, so that slow user code never delays a watchdog or heartbeat. */
    private final ExecutorService events;
    private volatile boolean closed;

    protected AbstractLockClient(String owner, String threadNamePrefix) {
        this.owner = owner;
        int number = clientCounter.incrementAndGet();
        this.scheduler = Executors.newSingleThreadScheduledExecutor(r -> {
            Thread t = new Thread(r, threadNamePrefix + "-" + number);
            t.setDaemon(true);
            return t;
        });
        this.events = Executors.newSingleThreadExecutor(r -> {
            Thread t = new Thread(r, threadNamePrefix + "-" + number + "-events");
            t.setDaemon(true);
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

    /** Takes the lock in the database with one attempt; null when someone else holds it. */
    protected abstract D tryLockInDatabase(LockRequest request);

    /** Takes the lock in the database, waiting until {@code deadlineNanos} (System.nanoTime); null when the wait ran out. */
    protected abstract D lockInDatabase(LockRequest request, long deadlineNanos);

    /**
     * Releases the lock in the database, now or (hold-at-least) later. The returned stage completes
     * when no one in this JVM may take the key again without asking the database. Must not throw:
     * a lock that cannot be released is reported and left to its session or lease to end.
     */
    protected abstract CompletableFuture<Void> releaseInDatabase(D lock);

    /**
     * Releases everything in the database and frees the connections; called once by {@link #close()}
     * with the locks this client held.
     */
    protected abstract void closeDatabase(List<D> held);

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

    /** Mode-specific checks of a request against the client's settings. */
    protected void validate(LockRequest request) {
    }

    /** The message {@link HeldLock#fencingToken()} throws with when this client has no fencing tokens. */
    protected String noFencingTokenMessage() {
        return "this client has no fencing tokens";
    }

    @Override
    public final String owner() {
        return owner;
    }

    @Override
    public final Optional<HeldLock> tryAcquire(LockRequest request) {
        return Optional.ofNullable(acquireOrNull(request));
    }

    @Override
    public final HeldLock acquire(LockRequest request) {
        HeldLock held = acquireOrNull(request);
        if (held != null) {
            return held;
        }
        if (Thread.currentThread().isInterrupted()) {
            throw new LockNotAcquiredException(request.key(), request.waitAtMost(),
                    "interrupted while waiting for lock '" + request.key() + "'", new InterruptedException());
        }
        throw new LockNotAcquiredException(request.key(), request.waitAtMost());
    }

    private HeldLock acquireOrNull(LockRequest request) {
        Objects.requireNonNull(request, "request must not be null");
        ensureOpen();
        validate(request);
        long deadline = deadline(request.waitAtMost());
        Thread me = Thread.currentThread();
        Entry claimed;
        state.lock();
        try {
            while (true) {
                ensureOpen();
                Entry entry = entries.get(request.key());
                if (entry == null) {
                    claimed = new Entry(state.newCondition());
                    entries.put(request.key(), claimed);
                    break;
                }
                Hold joined = entry.join(me, request);
                if (joined != null) {
                    return joined;
                }
                long left = deadline - System.nanoTime();
                if (left <= 0) {
                    return null;
                }
                try {
                    entry.changed.awaitNanos(left);
                } catch (InterruptedException e) {
                    me.interrupt();
                    return null;
                }
            }
        } finally {
            state.unlock();
        }
        return lockClaimed(request, claimed, deadline, me);
    }

    /** We alone in this JVM may now ask the database for the key. */
    private HeldLock lockClaimed(LockRequest request, Entry claimed, long deadline, Thread me) {
        D taken = null;
        try {
            taken = request.waitAtMost().isZero() ? tryLockInDatabase(request) : lockInDatabase(request, deadline);
        } finally {
            if (taken == null) {
                forget(request.key(), claimed);
            }
        }
        if (taken == null) {
            return null;
        }
        D lock = taken;
        Hold hold = null;
        state.lock();
        try {
            if (!closed) {
                claimed.lock = lock;
                claimed.busy = false;
                claimed.changed.signalAll(); // shared joiners waiting for the outcome may join now
                hold = claimed.add(new Hold(claimed, me, request.isShared()));
            } else {
                entries.remove(request.key(), claimed);
            }
        } finally {
            state.unlock();
        }
        if (hold == null) {
            releaseInDatabase(lock);
            throw closedException();
        }
        // A session may have died between the grant and the publication above, after its loss was
        // reported: checked after publishing, so either that report or this check sees the lock.
        if (!isTrusted(lock)) {
            lost(candidate -> candidate == lock, untrustedReason(lock), null);
        }
        return hold;
    }

    private void forget(String key, Entry entry) {
        state.lock();
        try {
            entries.remove(key, entry);
            entry.changed.signalAll();
        } finally {
            state.unlock();
        }
    }

    private boolean release(Hold hold, boolean quietlyIfReleased) {
        Entry entry = hold.entry;
        state.lock();
        try {
            if (hold.lost != null) {
                return false;
            }
            if (hold.released) {
                if (quietlyIfReleased) {
                    return false;
                }
                throw new IllegalStateException("lock '" + entry.lock.key() + "' was already released by this"
                        + " HeldLock; each acquisition is released once");
            }
            if (hold.thread != Thread.currentThread()) {
                throw new IllegalStateException("lock '" + entry.lock.key() + "' was acquired by thread '"
                        + hold.thread.getName() + "' and cannot be released by thread '"
                        + Thread.currentThread().getName() + "'; it stays held");
            }
            hold.released = true;
            entry.holds.remove(hold);
            if (!entry.holds.isEmpty()) {
                return true;
            }
            entry.busy = true;
        } finally {
            state.unlock();
        }
        D lock = entry.lock;
        CompletableFuture<Void> done;
        try {
            done = releaseInDatabase(lock);
        } catch (RuntimeException e) {
            log.warn("releasing lock '{}' failed; it ends with its session or lease", lock.key(), e);
            done = CompletableFuture.completedFuture(null);
        }
        done.whenComplete((ignored, error) -> forget(lock.key(), entry));
        return true;
    }

    /**
     * Reports the locks that match as lost: their holds stop being held and hear why, and the keys
     * are free again in this JVM. Called by a mode when a session dies or a lease is not renewed.
     * An entry being taken or released is left to the thread doing that: it settles it.
     */
    protected final void lost(Predicate<D> which, String reason, Throwable cause) {
        List<Hold> lostHolds = new ArrayList<>();
        state.lock();
        try {
            for (var it = entries.entrySet().iterator(); it.hasNext(); ) {
                Entry entry = it.next().getValue();
                if (entry.lock != null && !entry.busy && which.test(entry.lock)) {
                    it.remove();
                    entry.changed.signalAll();
                    for (Hold hold : entry.holds) {
                        hold.lost = new Loss(reason, cause);
                        lostHolds.add(hold);
                    }
                    if (!entry.holds.isEmpty()) {
                        log.warn("lock '{}' was lost: {}", entry.lock.key(), reason);
                    }
                }
            }
        } finally {
            state.unlock();
        }
        for (Hold hold : lostHolds) {
            try {
                events.execute(hold::fireLost);
            } catch (RejectedExecutionException closing) {
                hold.fireLost();
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

    protected final boolean isClosed() {
        return closed;
    }

    protected final void ensureOpen() {
        if (closed) {
            throw closedException();
        }
    }

    private IllegalStateException closedException() {
        return new IllegalStateException("this " + mode().name().toLowerCase() + " LockClient (owner " + owner
                + ") is closed");
    }

    @Override
    public final void close() {
        List<Hold> released = new ArrayList<>();
        List<D> held = new ArrayList<>();
        state.lock();
        try {
            if (closed) {
                return;
            }
            closed = true;
            for (Entry entry : entries.values()) {
                entry.changed.signalAll();
                if (entry.lock != null) {
                    held.add(entry.lock);
                }
                for (Hold hold : entry.holds) {
                    hold.lost = new Loss("the lock client was closed", null);
                    released.add(hold);
                }
            }
            entries.clear();
        } finally {
            state.unlock();
        }
        try {
            closeDatabase(held);
        } finally {
            scheduler.shutdownNow();
            released.forEach(Hold::fireLost);
            events.shutdown(); // listeners already queued still run
        }
    }

    private static long deadline(Duration wait) {
        long now = System.nanoTime();
        long nanos;
        try {
            nanos = wait.toNanos();
        } catch (ArithmeticException e) {
            nanos = Long.MAX_VALUE / 4;
        }
        return now + Math.min(nanos, Long.MAX_VALUE / 4);
    }

    /** Why a hold ended without its holder releasing it. */
    private record Loss(String reason, Throwable cause) {
    }

    /** One key held, or being taken or released, by this client. Guarded by {@link #state}. */
    private final class Entry {
        final Condition changed;
        final List<Hold> holds = new ArrayList<>();
        /** The database lock; null while it is being taken. */
        D lock;
        /** True while one thread talks to the database about this key: nobody else may. */
        boolean busy = true;

        Entry(Condition changed) {
            this.changed = changed;
        }

        /** A hold for {@code thread} on the lock already held here, or null when it must wait. */
        Hold join(Thread thread, LockRequest request) {
            if (busy) {
                return null;
            }
            boolean heldByThread = holds.stream().anyMatch(h -> h.thread == thread);
            if (lock.isShared()) {
                if (!request.isShared()) {
                    if (heldByThread) {
                        throw new IllegalStateException("thread '" + thread.getName() + "' holds lock '"
                                + request.key() + "' shared and asks for it exclusively: an upgrade would wait for"
                                + " itself. Release the shared lock first");
                    }
                    return null;
                }
                return add(new Hold(this, thread, true));
            }
            return heldByThread ? add(new Hold(this, thread, request.isShared())) : null;
        }

        Hold add(Hold hold) {
            holds.add(hold);
            return hold;
        }
    }

    /** One acquisition, as the caller sees it. */
    private final class Hold implements HeldLock {
        final Entry entry;
        final Thread thread;
        final boolean shared;
        final List<Consumer<LockLostException>> listeners = new ArrayList<>();
        /** Guarded by {@link #state}. */
        boolean released;
        /** Set once, under {@link #state}; read without it as a hint. */
        volatile Loss lost;

        Hold(Entry entry, Thread thread, boolean shared) {
            this.entry = entry;
            this.thread = thread;
            this.shared = shared;
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
                lost(candidate -> candidate == lock, untrustedReason(lock), null);
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
                lost(candidate -> candidate == entry.lock, "the database no longer shows it as ours", null);
                assertHeld();
            }
        }

        void fireLost() {
            List<Consumer<LockLostException>> toCall;
            state.lock();
            try {
                toCall = List.copyOf(listeners);
                listeners.clear();
            } finally {
                state.unlock();
            }
            LockLostException exception = exception(lost);
            for (var listener : toCall) {
                try {
                    listener.accept(exception);
                } catch (RuntimeException e) {
                    log.warn("an onLost listener of lock '{}' threw", key(), e);
                }
            }
        }

        private LockLostException exception(Loss loss) {
            return new LockLostException(key(), loss.reason(), loss.cause());
        }

        @Override
        public String toString() {
            return "HeldLock[key=" + key() + ", owner=" + owner + ", shared=" + shared + ", held=" + isHeld() + "]";
        }
    }
}
