package dev.pglock.core;

import java.time.Duration;

/**
 * Hears what a lock client does, for metrics and tracing: each acquisition from start to outcome,
 * each held section from grant to release or loss, each heartbeat, each lost lock. Registered on a
 * builder ({@code PgLock.lease(ds).observer(...)}); the Spring Boot starter registers one that feeds
 * Micrometer when it is on the classpath.
 *
 * <p>Every method has a default that does nothing. Callbacks run on the client's threads: the
 * acquiring thread for {@link #acquiring} and its outcome, the releasing thread or the client's event
 * thread for the end of a held section, the heartbeat thread for {@link #heartbeat}. They must be
 * quick and must not call back into the client; an exception they throw is logged and ignored, never
 * passed to the caller.
 */
public interface LockObserver {

    /** Observes nothing. */
    LockObserver NONE = new LockObserver() {
    };

    /**
     * An acquisition starts, on the acquiring thread, before the client looks at the key.
     *
     * @return what hears how it ends; exactly one of its methods is called, on the same thread
     */
    default Acquisition acquiring(LockMode mode, LockRequest request) {
        return Acquisition.NONE;
    }

    /**
     * One heartbeat round ended: in lease mode the renewal of every held lock, in advisory mode the
     * watchdog's check of the lock sessions.
     *
     * @param succeeded false when a statement of the round failed
     */
    default void heartbeat(LockMode mode, Duration took, boolean succeeded) {
    }

    /** A hold was lost (reported to its holder's {@code onLost} at the same time), with why. */
    default void lost(LockMode mode, String key, LockLostException.Reason reason) {
    }

    /** The outcome of one acquisition. */
    interface Acquisition {

        /** Hears nothing. */
        Acquisition NONE = new Acquisition() {
        };

        /**
         * The lock was acquired.
         *
         * @return what hears the end of the held section; its {@link Holding#ended} is called once
         */
        default Holding acquired(HeldLock lock) {
            return Holding.NONE;
        }

        /** Someone else holds the lock, and the request's wait ran out (or it asked for none). */
        default void notAcquired() {
        }

        /** The acquisition threw (a database failure, a closed client, bad input). */
        default void failed(RuntimeException error) {
        }
    }

    /** One held section. */
    interface Holding {

        /** Hears nothing. */
        Holding NONE = lostOrNull -> {
        };

        /**
         * The holder released the lock ({@code lost} is null), or it was lost.
         */
        void ended(LockLostException lost);
    }
}
