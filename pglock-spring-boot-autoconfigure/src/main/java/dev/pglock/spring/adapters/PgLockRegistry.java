package dev.pglock.spring.adapters;

import dev.pglock.core.HeldLock;
import dev.pglock.core.LockClient;
import dev.pglock.core.LockRequest;
import java.time.Duration;
import java.util.ArrayDeque;
import java.util.Deque;
import java.util.Map;
import java.util.Objects;
import java.util.Optional;
import java.util.concurrent.ConcurrentHashMap;
import java.util.concurrent.TimeUnit;
import java.util.concurrent.locks.Condition;
import java.util.concurrent.locks.Lock;
import org.springframework.integration.support.locks.ExpirableLockRegistry;
import org.springframework.integration.support.locks.RenewableLockRegistry;

/**
 * A Spring Integration {@link RenewableLockRegistry} on a pglock {@link LockClient}, so that
 * {@code LockRegistryLeaderInitiator}, aggregators and {@code executeLocked} work on pglock: replace
 * a {@code JdbcLockRegistry} bean with this one (the starter registers it when Spring Integration is
 * on the classpath and the application defines no other {@code LockRegistry}).
 *
 * <p>Differences from {@code JdbcLockRegistry}, all in the user's favour: a waiting thread is woken
 * when the lock is released (no 100 ms polling), expiry uses the database clock, and a lock that is
 * lost while held is known at once ({@code HeldLock.onLost}) rather than at {@code unlock()}.
 * {@link #renewLock} has nothing to do (heartbeats renew every held lock); it checks that the
 * calling thread holds the lock, as Spring Integration's registries do.
 *
 * <p>Keys are Strings (as {@code JdbcLockRegistry} requires). Locks are re-entrant per thread, and
 * {@link Lock#unlock()} by a thread that does not hold the lock throws
 * {@link IllegalStateException}. A thread whose lock was lost cannot re-enter it: {@code tryLock}
 * answers false and {@code lock()} throws, and the thread's next attempt takes the key afresh.
 * {@link Lock#newCondition()} is not supported.
 */
public final class PgLockRegistry implements RenewableLockRegistry<Lock>, ExpirableLockRegistry<Lock> {

    /** How long {@link Lock#lock()} waits per attempt before asking again (it never gives up). */
    private static final Duration FOREVER_STEP = Duration.ofHours(1);

    /** For tests: runs in tryLock() after the check for a lost hold, before the take. */
    static volatile Runnable beforeTakeForTests;
    /**
     * How long an interruptible wait waits per attempt: in advisory mode a wait blocks in the driver,
     * which cannot see an interrupt, so an interrupt is seen within this. Each attempt queues anew
     * (and, in advisory mode, borrows its connection anew), so it is not shorter.
     */
    private static final Duration INTERRUPTIBLE_STEP = Duration.ofSeconds(5);

    private final LockClient client;
    private final Map<String, PgLock> locks = new ConcurrentHashMap<>();

    /** @param client the lock client to take the registry's locks with */
    public PgLockRegistry(LockClient client) {
        this.client = Objects.requireNonNull(client, "client must not be null");
    }

    @Override
    public Lock obtain(Object lockKey) {
        return locks.computeIfAbsent(key(lockKey), PgLock::new);
    }

    private static String key(Object lockKey) {
        if (!(lockKey instanceof String key)) {
            throw new IllegalArgumentException("lockKey must be a String, not "
                    + (lockKey == null ? "null" : lockKey.getClass().getName() + " (" + lockKey + ")"));
        }
        return key;
    }

    /** Nothing to renew (heartbeats do); throws when the calling thread does not hold the lock. */
    @Override
    public void renewLock(Object lockKey) {
        PgLock lock = locks.get(key(lockKey));
        if (lock == null || !lock.isHeldByCurrentThread()) {
            throw new IllegalStateException("could not renew lock '" + lockKey + "': the current thread does not"
                    + " hold it");
        }
        lock.assertHeld();
    }

    /** As {@link #renewLock(Object)}: pglock's lease is set when the lock is taken. */
    @Override
    public void renewLock(Object lockKey, Duration timeToLive) {
        renewLock(lockKey);
    }

    /**
     * Forgets the lock objects that nobody holds or waits for and nobody used within {@code age} ms
     * (they are cheap; the database holds nothing for them).
     */
    @Override
    public void expireUnusedOlderThan(long age) {
        long now = System.nanoTime();
        locks.values().removeIf(lock -> !lock.isLocked() && lock.waiting.get() == 0
                && now - lock.lastUsedNanos > TimeUnit.MILLISECONDS.toNanos(Math.max(0, age)));
    }

    @Override
    public String toString() {
        return "PgLockRegistry" + locks.values();
    }

    /** One key's lock, re-entrant per thread. */
    private final class PgLock implements Lock {
        private final String key;
        /** Each holding thread's acquisitions, innermost last. */
        private final Map<Thread, Deque<HeldLock>> holds = new ConcurrentHashMap<>();
        /** Threads taking it now: its object is not expired meanwhile (see expireUnusedOlderThan). */
        final java.util.concurrent.atomic.AtomicInteger waiting = new java.util.concurrent.atomic.AtomicInteger();
        volatile long lastUsedNanos = System.nanoTime();

        PgLock(String key) {
            this.key = key;
        }

        boolean isHeldByCurrentThread() {
            Deque<HeldLock> mine = holds.get(Thread.currentThread());
            return mine != null && !mine.isEmpty();
        }

        boolean isLocked() {
            return !holds.isEmpty();
        }

        void assertHeld() {
            holds.get(Thread.currentThread()).peekLast().assertHeld();
        }

        /**
         * Whether the calling thread's lock on the key was lost while it held it; its holds are then
         * dropped. It does not hold the key, so a re-entry would be a fresh acquisition counted as a
         * re-entry, and the caller's matching unlock() would give that back while it believes it still
         * holds the outer one (Spring Integration's leader initiator re-takes its lock every heartbeat
         * and unlocks once: it would go on leading with the key free). So such a re-entry fails.
         * tryLock answers false and drops the lost holds ({@code drop}), as a caller told false does
         * not unlock, so the thread's next attempt starts afresh; lock() throws and keeps them, so the
         * caller's outer unlock() still says the lock was lost.
         */
        private boolean lostByCurrentThread(boolean drop) {
            Thread me = Thread.currentThread();
            Deque<HeldLock> mine = holds.get(me);
            if (mine == null || mine.isEmpty() || mine.peekFirst().isHeld()) {
                return false;
            }
            if (drop) {
                holds.remove(me);
                lastUsedNanos = System.nanoTime();
                // A hold taken after the first was lost (the loss came between an earlier check and
                // its take, which then took the key afresh) still holds the key: given back, or it
                // would stay with this client, renewed, until the client closes.
                for (HeldLock hold : mine) {
                    if (hold.isHeld()) {
                        hold.release();
                    }
                }
            }
            return true;
        }

        private IllegalStateException lostBeforeReentry() {
            return new IllegalStateException("lock '" + key + "' was lost while thread '"
                    + Thread.currentThread().getName() + "' held it: it is not re-entered (the work done under it"
                    + " may not have been exclusive); unlock() it, then lock it again to take it afresh");
        }

        private boolean take(Duration wait) {
            waiting.incrementAndGet();
            try {
                Optional<HeldLock> held = client.tryAcquire(LockRequest.of(key).waitAtMost(wait));
                held.ifPresent(h -> holds.computeIfAbsent(Thread.currentThread(), t -> new ArrayDeque<>()).addLast(h));
                return held.isPresent();
            } finally {
                lastUsedNanos = System.nanoTime();
                waiting.decrementAndGet();
            }
        }

        /**
         * Waits up to {@code wait} in steps of {@link #INTERRUPTIBLE_STEP}; an interrupt seen after a
         * step, even one that took the lock, gives it back and throws: the caller was told to give up.
         */
        private boolean takeInterruptibly(long waitNanos) throws InterruptedException {
            waiting.incrementAndGet(); // for the whole wait, not only each step: never expired between steps
            try {
                return takeInSteps(waitNanos);
            } finally {
                waiting.decrementAndGet();
            }
        }

        private boolean takeInSteps(long waitNanos) throws InterruptedException {
            long deadline = System.nanoTime() + waitNanos;
            while (true) {
                if (Thread.interrupted()) {
                    throw new InterruptedException("interrupted while waiting for lock '" + key + "'");
                }
                long left = deadline - System.nanoTime();
                boolean taken = take(Duration.ofNanos(Math.max(0, Math.min(left, INTERRUPTIBLE_STEP.toNanos()))));
                if (Thread.interrupted()) {
                    if (taken) {
                        try {
                            unlock();
                        } catch (IllegalStateException lost) {
                            // lost meanwhile: nothing left to give back
                        }
                    }
                    throw new InterruptedException("interrupted while waiting for lock '" + key + "'");
                }
                if (taken) {
                    return true;
                }
                if (deadline - System.nanoTime() <= 0) {
                    return false;
                }
            }
        }

        @Override
        public void lock() {
            if (lostByCurrentThread(false)) {
                throw lostBeforeReentry();
            }
            boolean interrupted = Thread.interrupted();
            try {
                while (!take(FOREVER_STEP)) {
                    if (Thread.interrupted()) {
                        interrupted = true; // lock() ignores interrupts, and restores the flag at the end
                    }
                }
            } finally {
                if (interrupted) {
                    Thread.currentThread().interrupt();
                }
            }
        }

        @Override
        public void lockInterruptibly() throws InterruptedException {
            if (lostByCurrentThread(false)) {
                throw lostBeforeReentry();
            }
            takeInterruptibly(Long.MAX_VALUE / 4);
        }

        @Override
        public boolean tryLock() {
            if (lostByCurrentThread(true)) {
                return false;
            }
            Runnable hook = beforeTakeForTests;
            if (hook != null) {
                hook.run();
            }
            return take(Duration.ZERO);
        }

        @Override
        public boolean tryLock(long time, TimeUnit unit) throws InterruptedException {
            return !lostByCurrentThread(true) && takeInterruptibly(Math.max(0, unit.toNanos(time)));
        }

        @Override
        public void unlock() {
            Thread me = Thread.currentThread();
            Deque<HeldLock> mine = holds.get(me);
            if (mine == null || mine.isEmpty()) {
                throw new IllegalStateException("lock '" + key + "' is not held by thread '" + me.getName()
                        + "': only the thread that locked it may unlock it");
            }
            HeldLock held = mine.removeLast();
            if (mine.isEmpty()) {
                holds.remove(me);
            }
            if (!held.release()) {
                throw new IllegalStateException("lock '" + key + "' was lost before it was unlocked: the work done"
                        + " under it may not have been exclusive");
            }
        }

        @Override
        public Condition newCondition() {
            throw new UnsupportedOperationException("pglock's registry locks have no conditions");
        }

        @Override
        public String toString() {
            return "PgLockRegistry.Lock[key=" + key + ", locked=" + isLocked() + ", waiting=" + waiting.get() + "]";
        }
    }
}
