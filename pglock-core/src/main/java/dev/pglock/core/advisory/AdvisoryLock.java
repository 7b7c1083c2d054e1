package dev.pglock.core.advisory;

import dev.pglock.core.internal.DatabaseLock;
import dev.pglock.core.internal.LockSession;
import java.time.Instant;

/** An advisory lock this client holds: its id, the session that holds it, and until when it must stay held. */
final class AdvisoryLock extends DatabaseLock {

    final long lockId;
    final LockSession session;
    /** System.nanoTime before which a release only schedules the unlock (hold-at-least). */
    final long holdUntilNanos;

    AdvisoryLock(String key, boolean shared, Long fencingToken, long lockId, LockSession session, long holdUntilNanos) {
        super(key, shared, fencingToken, Instant.now());
        this.lockId = lockId;
        this.session = session;
        this.holdUntilNanos = holdUntilNanos;
    }
}
