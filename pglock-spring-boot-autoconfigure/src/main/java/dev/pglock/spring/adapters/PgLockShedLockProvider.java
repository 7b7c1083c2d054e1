package dev.pglock.spring.adapters;

import dev.pglock.core.HeldLock;
import dev.pglock.core.LockClient;
import dev.pglock.core.LockMode;
import dev.pglock.core.LockRequest;
import java.time.Duration;
import java.util.Objects;
import java.util.Optional;
import net.javacrumbs.shedlock.core.LockConfiguration;
import net.javacrumbs.shedlock.core.LockProvider;
import net.javacrumbs.shedlock.core.SimpleLock;

/**
 * A ShedLock {@link LockProvider} on a pglock {@link LockClient}, so that {@code @SchedulerLock}
 * methods run on pglock by replacing one bean (the starter registers it when ShedLock is on the
 * classpath and the application defines no other {@code LockProvider}).
 *
 * <p>How ShedLock's settings map: the lock name is the key; {@code lockAtLeastFor} is pglock's
 * hold-at-least: in lease mode kept by the database clock in the row, as ShedLock does, so it outlives
 * a restart; in advisory mode kept by this process on its session, so a process that stops or whose
 * session ends frees the key at once (logged once at WARN: pick lease mode when it must outlive a
 * restart). An extension's {@code lockAtLeastFor} counts too: unlocked before it has passed, the key
 * is given back when it has (timed by this process). {@code lockAtMostFor} is the lease in
 * lease mode. With pglock a live holder keeps its lock by heartbeats for as long as it runs, so
 * {@code lockAtMostFor} only bounds how long a lock outlives a holder that died (ShedLock instead
 * lets another node in once it passes, even under a holder still running). A lease shorter than
 * three heartbeats is raised to that, the shortest lease that survives a missed heartbeat. In
 * advisory mode {@code lockAtMostFor} plays no part: a dead holder's session ends at once.
 * Acquisitions are detached: ShedLock never re-enters a lock, and a second attempt from the same
 * thread is refused like anyone else's.
 */
public final class PgLockShedLockProvider implements LockProvider {

    private static final org.slf4j.Logger log = org.slf4j.LoggerFactory.getLogger(PgLockShedLockProvider.class);

    private final LockClient client;
    private final Duration shortestLease;
    private final java.util.concurrent.atomic.AtomicBoolean warnedOfAdvisoryHold = new java.util.concurrent.atomic.AtomicBoolean();

    /**
     * @param client the lock client to take ShedLock's locks with
     * @param heartbeatInterval the client's heartbeat interval (lease mode: the shortest lease is three of them)
     */
    public PgLockShedLockProvider(LockClient client, Duration heartbeatInterval) {
        this.client = Objects.requireNonNull(client, "client must not be null");
        this.shortestLease = heartbeatInterval.multipliedBy(3);
    }

    @Override
    public Optional<SimpleLock> lock(LockConfiguration configuration) {
        LockRequest request = LockRequest.of(configuration.getName()).detached()
                .holdAtLeast(configuration.getLockAtLeastFor());
        if (client.mode() == LockMode.LEASE) {
            Duration lease = configuration.getLockAtMostFor();
            if (lease.compareTo(shortestLease) < 0) {
                lease = shortestLease;
            }
            if (lease.compareTo(configuration.getLockAtLeastFor()) < 0) {
                lease = configuration.getLockAtLeastFor();
            }
            request = request.leaseFor(lease);
        } else if (!configuration.getLockAtLeastFor().isZero() && warnedOfAdvisoryHold.compareAndSet(false, true)) {
            log.warn("ShedLock lock '{}' asks for lockAtLeastFor {}: in advisory mode this process keeps it, and"
                    + " a process that stops (a restart, a rolling deploy) frees the key at once, where ShedLock's"
                    + " table keeps it; use pglock.mode=lease if it must outlive a restart (said once)",
                    configuration.getName(), configuration.getLockAtLeastFor());
        }
        return client.tryAcquire(request).map(PgSimpleLock::new);
    }

    /** One ShedLock lock: a pglock acquisition. */
    private static final class PgSimpleLock implements SimpleLock {
        private final HeldLock held;
        /** The end of the last extension's lockAtLeastFor on this process's clock; 0: none. */
        private volatile long keptUntilNanos;

        PgSimpleLock(HeldLock held) {
            this.held = held;
        }

        /**
         * Releases it; with {@code lockAtLeastFor}, the key stays taken until that has passed (the
         * request's own by pglock's hold-at-least, an extension's by holding on until it ends).
         */
        @Override
        public void unlock() {
            long left = keptUntilNanos == 0 ? 0 : keptUntilNanos - System.nanoTime();
            if (left <= 0) {
                held.close();
                return;
            }
            java.util.concurrent.CompletableFuture.delayedExecutor(left, java.util.concurrent.TimeUnit.NANOSECONDS)
                    .execute(held::close);
        }

        /**
         * pglock's heartbeats already keep the lock for as long as it is held, so extending checks that
         * it still is (the same lock, or empty when it was lost) and notes the new lockAtLeastFor.
         */
        @Override
        public Optional<SimpleLock> extend(Duration lockAtMostFor, Duration lockAtLeastFor) {
            if (!held.isHeld()) {
                return Optional.empty();
            }
            // As ShedLock does, the last extension's lockAtLeastFor counts, from that extension.
            long nanos = dev.pglock.core.internal.Durations.nanosAtMost(lockAtLeastFor);
            keptUntilNanos = nanos <= 0 ? 0 : System.nanoTime() + nanos;
            return Optional.of(this);
        }
    }
}
