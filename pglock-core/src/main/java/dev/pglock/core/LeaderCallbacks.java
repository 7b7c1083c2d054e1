package dev.pglock.core;

/**
 * What a leader candidate is told (see {@link LockClient#lead}). Both run on the candidate's own
 * thread, always in the order elected, revoked, elected, revoked, ... One exception nests them: when
 * onElected itself closes the client, or releases the leadership and finds it lost, onRevoked runs
 * inside that call, before it returns (so before the key is freed), and not again after onElected.
 */
public interface LeaderCallbacks {

    /**
     * This candidate became the leader. {@code lock} is the leadership: its fencing token orders
     * leaders, {@code updateData} (lease mode) can advertise this process to others, and
     * {@code isHeld()} says whether it still leads. Return promptly; long work belongs on another thread.
     */
    void onElected(HeldLock lock);

    /**
     * This candidate is no longer the leader: it stepped down ({@link Leadership#yieldLeadership()}),
     * ended its candidacy, or lost the lock ({@code lock.isHeld()} is false then). Work done for the
     * leadership must stop. When it steps down or ends its candidacy, the lock is given back only once
     * this returns, so no other candidate is elected while it runs.
     */
    default void onRevoked(HeldLock lock) {
    }
}
