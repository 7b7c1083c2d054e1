package dev.pglock.core;

import java.time.Duration;
import java.util.Optional;

/**
 * What a lock client can tell about itself without taking a lock or a connection: how many locks it
 * holds, how many connections it uses, when its heartbeat (lease mode) or session check (advisory
 * mode) last succeeded, and what is wrong, if anything. See {@link LockClient#status()}.
 *
 * @param mode the client's mode
 * @param heldLocks keys held now (a key held shared or re-entered several times counts once)
 * @param lockSessions lock sessions open now (pinned connections the client runs its statements on)
 * @param waitingConnections connections of callers waiting in the server now (advisory mode) or the
 *     LISTEN connection (lease mode, 1 while someone waits)
 * @param lostLocks holds reported lost since the client was built
 * @param sinceLastCheck how long ago the heartbeat or session check last succeeded; empty when none
 *     has run yet
 * @param problem why the client cannot do its work now, in a sentence; empty when it can
 */
public record LockClientStatus(LockMode mode, int heldLocks, int lockSessions, int waitingConnections,
        long lostLocks, Optional<Duration> sinceLastCheck, Optional<String> problem) {

    /** Whether nothing is wrong. */
    public boolean isHealthy() {
        return problem.isEmpty();
    }
}
