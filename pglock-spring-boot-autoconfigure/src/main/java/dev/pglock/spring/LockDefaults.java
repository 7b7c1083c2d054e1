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
 */
public record LockDefaults(LockMode mode, Duration waitAtMost, Duration lease, Duration holdAtLeast,
        Duration heartbeatInterval) {
}
