package dev.pglock.spring;

import dev.pglock.core.HeldLock;
import dev.pglock.core.LeaderCallbacks;
import dev.pglock.core.Leadership;
import dev.pglock.core.LockClient;
import java.nio.charset.StandardCharsets;
import java.util.Objects;
import java.util.Optional;
import java.util.concurrent.CountDownLatch;
import org.springframework.context.ApplicationEventPublisher;
import org.springframework.context.SmartLifecycle;

/**
 * This application as a leader candidate for one key, started and stopped with the context (the
 * starter creates it from {@code pglock.leader.key}). Among the replicas, the one that holds the key
 * leads; {@link #isLeader()} says whether this one does. Election and revocation are published as
 * {@link LeaderElectedEvent} and {@link LeaderRevokedEvent} (and, with Spring Integration on the
 * classpath, as its {@code OnGrantedEvent} and {@code OnRevokedEvent}). In lease mode the leader
 * advertises {@code pglock.leader.data} (say, its address) with the lock, where any process reads it
 * with {@code LockClient.get(key)}.
 */
public class LeaderElection implements SmartLifecycle {

    private final LockClient client;
    private final String key;
    private final String data;
    private final ApplicationEventPublisher events;
    private volatile Leadership leadership;
    /** The lock whose election was announced, until its revocation is: the events come in pairs. */
    private final java.util.concurrent.atomic.AtomicReference<HeldLock> announced =
            new java.util.concurrent.atomic.AtomicReference<>();

    /**
     * @param data what the leader advertises with its lock in lease mode; null for nothing
     */
    public LeaderElection(LockClient client, String key, String data, ApplicationEventPublisher events) {
        this.client = Objects.requireNonNull(client, "client must not be null");
        this.key = Objects.requireNonNull(key, "key must not be null");
        this.data = data;
        this.events = Objects.requireNonNull(events, "events must not be null");
    }

    /** The key whose holder leads. */
    public String key() {
        return key;
    }

    /** Whether this application leads now. */
    public boolean isLeader() {
        Leadership current = leadership;
        return current != null && current.isLeader();
    }

    /** The lock this application leads with, while it leads (its fencing token orders leaders). */
    public Optional<HeldLock> lock() {
        Leadership current = leadership;
        return current == null ? Optional.empty() : current.lock();
    }

    /** Steps down if leading, so another replica can take over; this one stands again a moment later. */
    public void yieldLeadership() {
        Leadership current = leadership;
        if (current != null) {
            current.yieldLeadership();
        }
    }

    @Override
    public synchronized void start() {
        if (leadership != null) {
            return;
        }
        // The candidate's thread starts inside lead() and may be elected before lead() returns: its
        // announcement waits until the candidacy is stored, so that an event listener sees isLeader()
        // and lock() answer for it, and its yieldLeadership() takes effect.
        CountDownLatch stored = new CountDownLatch(1);
        Thread starting = Thread.currentThread();
        LeaderCallbacks announcing = new LeaderCallbacks() {
            @Override
            public void onElected(HeldLock lock) {
                // A client whose lead() calls back before it returns runs this on the starting thread: it
                // announces at once (waiting would hang start()), before the candidacy is stored.
                if (Thread.currentThread() != starting) {
                    try {
                        stored.await();
                    } catch (InterruptedException e) {
                        Thread.currentThread().interrupt(); // the candidate steps down at its next wait
                        return;
                    }
                    if (leadership == null) {
                        return; // lead() threw: no candidacy to announce
                    }
                }
                if (data != null && client.mode() == dev.pglock.core.LockMode.LEASE) {
                    lock.updateData(data.getBytes(StandardCharsets.UTF_8)); // a failure steps down, unannounced
                }
                announced.set(lock); // before the listeners run: one that throws still hears the revocation
                events.publishEvent(new LeaderElectedEvent(LeaderElection.this, lock));
            }

            @Override
            public void onRevoked(HeldLock lock) {
                if (announced.compareAndSet(lock, null)) {
                    events.publishEvent(new LeaderRevokedEvent(LeaderElection.this, lock));
                }
            }
        };
        try {
            leadership = client.lead(key, announcing);
        } finally {
            stored.countDown();
        }
    }

    @Override
    public synchronized void stop() {
        Leadership current = leadership;
        leadership = null;
        if (current != null) {
            current.close();
        }
    }

    @Override
    public boolean isRunning() {
        return leadership != null;
    }

    /** Starts after the lock clients and stops before them (they stop in a later phase). */
    @Override
    public int getPhase() {
        // Stops after the web server and the schedulers, well before the lock clients (PgLockClients.PHASE),
        // so its onRevoked runs with them open; starts once those are up.
        return SmartLifecycle.DEFAULT_PHASE - 4095;
    }

    /** A change of this application's leadership. */
    public abstract static class LeaderEvent extends org.springframework.context.ApplicationEvent {
        private final transient HeldLock lock;

        LeaderEvent(LeaderElection source, HeldLock lock) {
            super(source);
            this.lock = lock;
        }

        /** The leadership's lock ({@code isHeld()} is false once it was lost). */
        public HeldLock lock() {
            return lock;
        }

        /** The candidacy it happened to. */
        public LeaderElection election() {
            return (LeaderElection) getSource();
        }
    }

    /** Published when this application became the leader. */
    public static class LeaderElectedEvent extends LeaderEvent {
        public LeaderElectedEvent(LeaderElection source, HeldLock lock) {
            super(source, lock);
        }
    }

    /** Published when this application stopped leading (stepped down, lost the lock, or is stopping). */
    public static class LeaderRevokedEvent extends LeaderEvent {
        public LeaderRevokedEvent(LeaderElection source, HeldLock lock) {
            super(source, lock);
        }
    }
}
