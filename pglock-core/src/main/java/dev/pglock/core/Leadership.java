package dev.pglock.core;

import java.util.Optional;

/**
 * A running leader candidacy (see {@link LockClient#lead}): the candidate waits for the key's lock,
 * leads while it holds it, and stands again after it lost or gave it up, until closed.
 */
public interface Leadership extends AutoCloseable {

    /** The key whose holder leads. */
    String key();

    /** Whether this candidate leads now. */
    boolean isLeader();

    /** The lock this candidate leads with, while it leads. */
    Optional<HeldLock> lock();

    /**
     * Steps down if leading: the lock is released (so another candidate can take over), the candidate
     * is told {@code onRevoked}, and it stands again after a pause of one heartbeat interval.
     */
    void yieldLeadership();

    /** Ends the candidacy: steps down if leading, and stops standing. */
    @Override
    void close();
}
