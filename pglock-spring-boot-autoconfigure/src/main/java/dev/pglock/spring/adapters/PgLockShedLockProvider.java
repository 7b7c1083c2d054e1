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
 * hold-at-least (kept by the database clock, as ShedLock does); {@code lockAtMostFor} is the lease in
 * lease mode. With pglock a live holder keeps its lock by heartbeats for as long as it runs, so
 * {@code lockAtMostFor} only bounds how long a lock outlives a holder that died (ShedLock instead
 * lets another node in once it passes, even under a holder still running). A lease shorter than
 * three heartbeats is raised to that, the shortest lease that survives a missed heartbeat. In
 * advisory mode {@code lockAtMostFor} plays no part: a dead holder's session ends at once.
 * Acquisitions are detached: ShedLock never re-enters a lock, and a second attempt from the same
 * thread is refused like anyone else's.
 */
public final class PgLockShedLockProvider implements LockProvider {

    private final LockClient client;
    private final Duration shortestLease;

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
        }
        return client.tryAcquire(request).map(PgSimpleLock::new);
    }

    /** One ShedLock lock: a pglock acquisition. */
    private static final class PgSimpleLock implements SimpleLock {
        private final HeldLock held;

        PgSimpleLock(HeldLock held) {
            this.held = held;
        }

        /** Releases it; with {@code lockAtLeastFor}, the key stays taken until that has passed. */
        @Override
        public void unlock() {
            held.close();
        }

        /**
         * pglock's heartbeats already keep the lock for as long as it is held, so extending only
         * checks that it still is: the same lock, or empty when it was lost.
         */
        @Override
        public Optional<SimpleLock> extend(Duration lockAtMostFor, Duration lockAtLeastFor) {
            return held.isHeld() ? Optional.of(this) : Optional.empty();
        }
    }
}
