package dev.pglock.spring;

import dev.pglock.core.LockMode;
import java.time.Duration;

/**
 * The application's lock settings that every {@link DistributedLock} is checked against at
 * start-up, so that a combination the client would refuse on every call stops the start instead.
 *
 * @param mode the default mode
 * @param waitAtMost the default wait
 * @param lease the default lease (lease mode)
 * @param holdAtLeast the default hold-at-least
 * @param heartbeatInterval the heartbeat interval (lease mode: a lease must be longer than twice it)
 * @param scheduledWait the default wait of a {@code @Scheduled} locked method
 * @param scheduledHoldAtLeast the default hold-at-least of a {@code @Scheduled} locked method
 */
public record LockDefaults(LockMode mode, Duration waitAtMost, Duration lease, Duration holdAtLeast,
        Duration heartbeatInterval, Duration scheduledWait, Duration scheduledHoldAtLeast) {

    /** Defaults where {@code @Scheduled} methods get the same as every other call. */
    public LockDefaults(LockMode mode, Duration waitAtMost, Duration lease, Duration holdAtLeast,
            Duration heartbeatInterval) {
        this(mode, waitAtMost, lease, holdAtLeast, heartbeatInterval, waitAtMost, holdAtLeast);
    }
}
