package dev.pglock.core.internal;

import dev.pglock.core.HeldLock;
import dev.pglock.core.LeaderCallbacks;
import dev.pglock.core.Leadership;
import dev.pglock.core.LockClient;
import dev.pglock.core.LockRequest;
import java.time.Duration;
import java.util.Objects;
import java.util.Optional;
import java.util.concurrent.CountDownLatch;
import java.util.concurrent.TimeUnit;
import org.slf4j.Logger;
import org.slf4j.LoggerFactory;

/**
 * A leader candidate on any lock client: one daemon thread waits for the key, calls onElected, waits
 * until the lock is lost, given up or the candidacy ends, calls onRevoked, and stands again.
 */
public final class LeaderCandidate implements Leadership {

    private static final Logger log = LoggerFactory.getLogger(LeaderCandidate.class);
    /** How long one wait for the lock lasts before the thread looks whether it should stop. */
    private static final Duration WAIT_STEP = Duration.ofSeconds(2);
    /**
     * How long a lost lock's listener waits for onRevoked to return. A lease this client stopped
     * trusting is given back only after its listeners ran, so while this one waits no other candidate
     * can be elected (until the lease ends in the database anyway); bounded, because the listeners of
     * every other lock of the client wait behind it, and so does a closing client.
     */
    static final Duration REVOKED_WAIT = Duration.ofSeconds(10);

    /** For tests: runs on the candidate's thread with each lock it got, before it leads with it. */
    static volatile java.util.function.Consumer<HeldLock> beforeLeadingForTests;
    /**
     * The least a candidate whose onElected failed waits before standing again: else, with nobody else
     * standing, or (lease mode) with the others asleep until a notification, a callback that always
     * fails takes and gives back the lock in a tight loop, and may keep healthy candidates from leading.
     */
    static final Duration PAUSE_AFTER_FAILURE = Duration.ofSeconds(1);

    private final LockClient client;
    private final String key;
    private final LeaderCallbacks callbacks;
    private final Duration pauseAfterYield;
    private final Object monitor = new Object();
    private final Thread thread;
    /** Guarded by {@link #monitor}. */
    private HeldLock leading;
    private boolean stepDown;
    /** Guarded by {@link #monitor}: onRevoked runs (close() then does not interrupt). */
    private boolean revoking;
    private volatile boolean closed;

    /**
     * Starts standing at once.
     *
     * @param pauseAfterYield how long a candidate that yielded waits before standing again
     */
    public LeaderCandidate(LockClient client, String key, LeaderCallbacks callbacks, Duration pauseAfterYield) {
        this.client = client;
        this.key = LockRequest.of(key).key(); // the key's own checks, at the call
        this.callbacks = Objects.requireNonNull(callbacks, "callbacks must not be null");
        this.pauseAfterYield = pauseAfterYield;
        this.thread = new Thread(this::run, "pglock-leader-" + key);
        thread.setDaemon(true);
        thread.start();
    }

    @Override
    public String key() {
        return key;
    }

    @Override
    public boolean isLeader() {
        synchronized (monitor) {
            return leading != null && leading.isHeld();
        }
    }

    @Override
    public Optional<HeldLock> lock() {
        synchronized (monitor) {
            return Optional.ofNullable(leading);
        }
    }

    @Override
    public void yieldLeadership() {
        synchronized (monitor) {
            if (leading != null) {
                stepDown = true;
                monitor.notifyAll();
            }
        }
    }

    @Override
    public void close() {
        closed = true;
        synchronized (monitor) {
            monitor.notifyAll();
            // Ends a wait for the lock or a pause; never one inside onRevoked (see lead()), which
            // then returns to a loop that sees closed, nor the callback that closes (onElected).
            if (!revoking && Thread.currentThread() != thread) {
                thread.interrupt();
            }
        }
        if (Thread.currentThread() == thread) {
            return; // called from a callback: the loop sees closed once it returns
        }
        try {
            thread.join(WAIT_STEP.plusSeconds(3).toMillis());
        } catch (InterruptedException e) {
            Thread.currentThread().interrupt();
        }
    }

    private void run() {
        // This thread runs nothing but the application's callbacks and pglock's own calls: a close()
        // of the client made in onRevoked must not wait for the close that waits for onRevoked.
        AbstractLockClient.IN_CALLBACK.set(Boolean.TRUE);
        while (!closed && !client.isClosed()) {
            HeldLock held;
            try {
                held = client.tryAcquire(LockRequest.of(key).detached().waitAtMost(WAIT_STEP)).orElse(null);
            } catch (RuntimeException e) {
                if (closed || client.isClosed()) {
                    return;
                }
                log.warn("leader candidate for '{}': taking the lock failed ({}); standing again", key, e.getMessage());
                pause(WAIT_STEP);
                continue;
            }
            Thread.interrupted(); // an interrupt from close() ended a wait; the loop looks at closed
            if (held == null) {
                continue;
            }
            if (closed) {
                held.close();
                return;
            }
            lead(held);
        }
    }

    /**
     * onRevoked from inside onElected (see lead()), run uninterrupted as lead()'s own call is: a
     * concurrent close() of the candidacy must not cut a wait that pauses the leader's work.
     */
    private void revokeUninterrupted(HeldLock held) {
        boolean interrupted;
        synchronized (monitor) {
            revoking = true;
            interrupted = Thread.interrupted();
        }
        try {
            revoke(held);
        } finally {
            synchronized (monitor) {
                revoking = false;
            }
            if (interrupted) {
                Thread.currentThread().interrupt();
            }
        }
    }

    private void revoke(HeldLock held) {
        try {
            callbacks.onRevoked(held);
        } catch (Throwable e) {
            log.warn("leader candidate for '{}': onRevoked threw", key, e);
        }
    }

    /** Leads until the lock is lost, given up or the candidacy ends; then steps down. */
    private void lead(HeldLock held) {
        java.util.function.Consumer<HeldLock> hook = beforeLeadingForTests;
        if (hook != null) {
            hook.accept(held);
        }
        CountDownLatch revoked = new CountDownLatch(1);
        java.util.concurrent.atomic.AtomicBoolean revokeCalled = new java.util.concurrent.atomic.AtomicBoolean();
        held.onLost(lost -> {
            boolean inElected;
            synchronized (monitor) {
                monitor.notifyAll();
                inElected = leading == held;
            }
            if (Thread.currentThread() == thread) {
                // Found lost by this candidate's own release, after onRevoked ran; or, while it leads, by
                // a close() of the client that its onElected called: that close() frees the key once this
                // returns, so onRevoked runs here, inside it, and not again after onElected.
                if (inElected && revokeCalled.compareAndSet(false, true)) {
                    revokeUninterrupted(held);
                }
                return;
            }
            // Also when the client closes: its close() runs this before it frees the key, and its
            // grace period, if any, ended before (the candidate holds the lock until it is revoked).
            try {
                revoked.await(REVOKED_WAIT.toMillis(), TimeUnit.MILLISECONDS);
            } catch (InterruptedException e) {
                Thread.currentThread().interrupt();
            }
        });
        if (!held.isHeld()) {
            // Lost between the grant and the listener above (a pause longer than the lease, a killed
            // session): another candidate may lead already. Not elected: given back, and the
            // candidate stands again. The listener, run on this thread or another (a heartbeat, a
            // closing client), must not wait for an onRevoked that never comes.
            revoked.countDown();
            held.close();
            return;
        }
        boolean closing;
        synchronized (monitor) {
            // A close() that came since run() looked (it sets closed before it takes the monitor to
            // interrupt): not elected, the lock given back. One that comes after this finds a leader,
            // and ends its leading as any close() does.
            closing = closed;
            if (!closing) {
                leading = held;
                stepDown = false;
            }
        }
        if (closing) {
            revoked.countDown();
            held.close();
            return;
        }
        boolean yielded = false;
        boolean failed = false;
        try {
            callbacks.onElected(held);
            synchronized (monitor) {
                while (!closed && !stepDown && held.isHeld()) {
                    monitor.wait(TimeUnit.SECONDS.toMillis(1)); // isHeld() also notices a lease no longer trusted
                }
                yielded = stepDown;
            }
        } catch (InterruptedException e) {
            // close(): step down below
        } catch (Throwable e) { // an Error, or a checked exception thrown sneakily, too: the candidacy goes on
            failed = true;
            log.warn("leader candidate for '{}': onElected threw; stepping down, and standing again in {}", key,
                    pauseAfterFailure(), e);
        } finally {
            boolean interrupted;
            synchronized (monitor) {
                leading = null;
                revoking = true;
                interrupted = Thread.interrupted(); // see below
            }
            // Told before the lock is given back: no other candidate can be elected while this one's
            // onRevoked still runs (pausing its leader's work), so two never lead at once. The same
            // for a lease this client stopped trusting: its listener above waits for this. Run
            // uninterrupted: close() interrupts this thread to end a wait, and an onRevoked that pauses
            // its leader's work by waiting would otherwise return at once and let the lock go while
            // that work still runs. The interrupt is cleared above, under the monitor, and close()
            // does not interrupt while revoking is set; it is restored after.
            try {
                if (revokeCalled.compareAndSet(false, true)) {
                    revoke(held);
                }
            } finally {
                revoked.countDown();
                held.close(); // quiet when it was lost
                synchronized (monitor) {
                    revoking = false;
                }
                if (interrupted) {
                    Thread.currentThread().interrupt();
                }
            }
        }
        if (yielded) {
            pause(pauseAfterYield);
        } else if (failed) {
            pause(pauseAfterFailure());
        }
    }

    private Duration pauseAfterFailure() {
        return pauseAfterYield.compareTo(PAUSE_AFTER_FAILURE) > 0 ? pauseAfterYield : PAUSE_AFTER_FAILURE;
    }

    private void pause(Duration pause) {
        synchronized (monitor) {
            long end = System.nanoTime() + pause.toNanos();
            long left;
            while (!closed && (left = end - System.nanoTime()) > 0) {
                try {
                    monitor.wait(Math.max(1, TimeUnit.NANOSECONDS.toMillis(left)));
                } catch (InterruptedException e) {
                    return;
                }
            }
        }
    }
}
