package dev.pglock.spring;

import dev.pglock.core.LockMode;
import dev.pglock.core.LockRequest;
import java.lang.reflect.Method;
import java.time.Duration;
import java.util.Optional;
import java.util.concurrent.CompletableFuture;

/**
 * What {@link DistributedLock} on one method means, resolved and checked once: durations parsed,
 * placeholders resolved, the key expression parsed, the return type classified. Null durations and
 * mode mean "the default": the template's ({@code pglock.wait}, {@code pglock.hold-at-least}), or for a
 * {@code @Scheduled} method {@code defaultWait} and {@code defaultHoldAtLeast}
 * ({@code pglock.scheduled.*}), so a wait meant for service calls never makes scheduled replicas queue.
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
        int permits,
        LockMode mode,
        DistributedLock.WhenLocked whenLocked,
        boolean scheduled,
        boolean inTransaction,
        Shape shape,
        Duration defaultWait,
        Duration defaultHoldAtLeast) {

    /** How long the method's work runs, seen from its return type. */
    enum Shape {
        /** Done when the method returns. */
        SYNCHRONOUS,
        /** Done when the returned {@code CompletionStage} completes. */
        COMPLETION_STAGE,
        /** Starts on subscription, done when the returned publisher terminates or is cancelled. */
        REACTIVE
    }

    /** The request for one call, on top of the template's defaults. */
    LockRequest request(LockTemplate template, String key) {
        LockRequest request = template.request(key);
        if (defaultWait != null) {
            request = request.waitAtMost(defaultWait);
        }
        if (defaultHoldAtLeast != null && !(inTransaction && template.client().mode() == LockMode.ADVISORY)) {
            request = request.holdAtLeast(defaultHoldAtLeast);
        }
        if (waitAtMost != null) {
            request = request.waitAtMost(waitAtMost);
        }
        if (leaseFor != null) {
            request = request.leaseFor(leaseFor);
        }
        if (holdAtLeast != null) {
            request = request.holdAtLeast(holdAtLeast);
        }
        if (shape != Shape.SYNCHRONOUS) {
            request = request.detached(); // the work leaves the thread: never re-entered by it
        }
        return shared ? request.shared() : request;
    }

    /** Whether a call that did not get the lock returns quietly instead of throwing. */
    boolean skipsWhenLocked() {
        return whenLocked == DistributedLock.WhenLocked.SKIP
                || (whenLocked == DistributedLock.WhenLocked.DEFAULT && scheduled);
    }

    /** What a skipped synchronous call returns: an empty optional, a {@code CompletionStage} completed with null, or null. */
    Object skippedResult() {
        Class<?> type = method.getReturnType();
        if (type == Optional.class) {
            return Optional.empty();
        }
        if (type == java.util.OptionalInt.class) {
            return java.util.OptionalInt.empty();
        }
        if (type == java.util.OptionalLong.class) {
            return java.util.OptionalLong.empty();
        }
        if (type == java.util.OptionalDouble.class) {
            return java.util.OptionalDouble.empty();
        }
        if (shape == Shape.COMPLETION_STAGE) {
            return CompletableFuture.completedFuture(null);
        }
        return null;
    }
}
