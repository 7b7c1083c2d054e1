package dev.pglock.core.lease;

import dev.pglock.core.internal.DatabaseLock;
import java.time.Instant;

/** A lease this client holds, and until when (by this JVM's monotonic clock) it may trust it without news. */
final class LeaseLock extends DatabaseLock {

    /** This acquisition's entry in the row's holders: {@code owner#n}, unique per acquisition. */
    final String holder;
    final long leaseMillis;
    final long holdAtLeastMillis;
    /** System.nanoTime after which, without a confirmed heartbeat, the lease is no longer trusted. */
    volatile long trustedUntilNanos;
    /**
     * The same end by the wall clock, which goes on while the machine is suspended (the monotonic clock
     * of Linux, CLOCK_MONOTONIC, does not): whichever clock says the trust ended first ends it.
     */
    volatile long trustedUntilWallMillis;
    /** Set once the acquisition is released (its last hold ended) or given up. */
    volatile boolean ended;
    /** Set when a renewal found the row no longer this acquisition's: lost, whoever reports it first. */
    volatile boolean foundGone;

    LeaseLock(String key, String holder, boolean shared, long fencingToken, Instant acquiredAt, long leaseMillis,
            long holdAtLeastMillis, long trustedUntilNanos, long trustedUntilWallMillis) {
        super(key, shared, fencingToken, acquiredAt);
        this.holder = holder;
        this.leaseMillis = leaseMillis;
        this.holdAtLeastMillis = holdAtLeastMillis;
        this.trustedUntilNanos = trustedUntilNanos;
        this.trustedUntilWallMillis = trustedUntilWallMillis;
    }
}
