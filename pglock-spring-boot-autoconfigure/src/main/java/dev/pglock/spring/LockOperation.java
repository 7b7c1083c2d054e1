package dev.pglock.spring;

import dev.pglock.core.LockMode;
import dev.pglock.core.LockRequest;
import java.lang.reflect.Method;
import java.time.Duration;
import java.util.Optional;

/**
 * What {@link DistributedLock} on one method means, resolved and checked once: durations parsed,
 * placeholders resolved, the key expression parsed. Null durations and mode mean "the default".
 */
record LockOperation(
        Method method,
        String description,
        String keyExpression,
        String fixedKey,
        Duration waitAtMost,
        Duration leaseFor,
        Duration holdAtLeast,
        boolean shared,
        LockMode mode,
        DistributedLock.WhenLocked whenLocked) {

    /** The request for one call, on top of the template's defaults. */
    LockRequest request(LockTemplate template, String key) {
        LockRequest request = template.request(key);
        if (waitAtMost != null) {
            request = request.waitAtMost(waitAtMost);
        }
        if (leaseFor != null) {
            request = request.leaseFor(leaseFor);
        }
        if (holdAtLeast != null) {
            request = request.holdAtLeast(holdAtLeast);
        }
        return shared ? request.shared() : request;
    }

    /** Whether a call that did not get the lock returns quietly instead of throwing. */
    boolean skipsWhenLocked() {
        return whenLocked == DistributedLock.WhenLocked.SKIP
                || (whenLocked == DistributedLock.WhenLocked.DEFAULT && method.getReturnType() == void.class);
    }

    /** What a skipped call returns. */
    Object skippedResult() {
        return method.getReturnType() == Optional.class ? Optional.empty() : null;
    }
}
